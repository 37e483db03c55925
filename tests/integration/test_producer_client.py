"""The producer distribution (clients/python, `ksr_client`) installed alone into a fresh
virtualenv, with redis-py and nothing else: the runner and the kubernetes client are not
importable there, and submit -> wait -> status -> cancel work against a real runner (real
redis-server, the runner with the local executor)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.messages import message
from tests.support.pipeline import ROOT, base_env, runner_thread

CLIENT_SOURCE = Path(ROOT) / "clients" / "python"


@pytest.fixture(scope="module")
def producer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding kube-stream-runner-client and redis only (`pip --no-deps`)."""
    work = tmp_path_factory.mktemp("producer")
    source = work / "src"  # a copy: the build writes into its tree, and tests may run at once
    shutil.copytree(CLIENT_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(source),
            f"redis=={redis.__version__}",  # the version the runner's tests use
        ],
        check=True,
        timeout=300,
    )
    return venv


def run_in(venv: Path, code: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """Run `code` with the venv's python (outside the checkout); its last stdout line is JSON."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", textwrap.dedent(code)],
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_distribution_brings_redis_and_nothing_of_the_runner(producer_venv: Path) -> None:
    seen = run_in(
        producer_venv,
        """
        import importlib.metadata, importlib.util, json, ksr_client
        print(json.dumps({
            "dists": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
            "missing": [m for m in ("kubernetes", "runner", "election", "rq", "flask") if importlib.util.find_spec(m) is None],
            "client": ksr_client.__file__,
        }))
        """,
    )
    assert seen["dists"] == ["kube-stream-runner-client", "redis"]
    assert seen["missing"] == ["kubernetes", "runner", "election", "rq", "flask"]
    assert seen["client"].startswith(str(producer_venv))  # the installed copy, not the checkout
    failed = subprocess.run([str(producer_venv / "bin" / "python"), "-c", "import kubernetes"], capture_output=True)
    assert failed.returncode == 1 and b"No module named 'kubernetes'" in failed.stderr


def test_its_install_is_a_small_part_of_the_runners(producer_venv: Path) -> None:
    client_bytes = _dist_bytes(producer_venv, ["kube-stream-runner-client", "redis"])
    runner_bytes = sum(_installed_size(name) for name in _closure("kube-stream-runner"))
    print(
        f"installed: client+redis {client_bytes / 1e6:.1f} MB, runner with its dependencies {runner_bytes / 1e6:.1f} MB"
    )
    assert client_bytes < 5_000_000 and client_bytes * 10 < runner_bytes


def _dist_bytes(venv: Path, names: list[str]) -> int:
    code = f"""
        import importlib.metadata, json
        total = 0
        for name in {names!r}:
            dist = importlib.metadata.distribution(name)
            total += sum(f.size or 0 for f in dist.files or [])
        print(json.dumps(total))
        """
    return int(run_in(venv, code))


def _closure(name: str) -> set[str]:
    """The runtime distributions `name` needs, itself included (no extras)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop().lower().replace("_", "-")
        if current in seen:
            continue
        try:
            requires = metadata.requires(current) or []
        except metadata.PackageNotFoundError:  # its marker left it out (python_version < ...)
            continue
        seen.add(current)
        for req in requires:
            if "extra ==" in req:
                continue
            found = re.match(r"[A-Za-z0-9._-]+", req)
            assert found is not None, req
            todo.append(found.group())
    return seen


def _installed_size(name: str) -> int:
    dist = metadata.distribution(name)
    if name in ("kube-stream-runner", "kube-stream-runner-client"):  # editable here: count the sources
        top = Path(ROOT) if name == "kube-stream-runner" else CLIENT_SOURCE
        dirs = ("runner", "election", "probes") if name == "kube-stream-runner" else ("ksr_client",)
        return sum(f.stat().st_size for d in dirs for f in (top / d).rglob("*.py"))
    return sum(f.size or 0 for f in dist.files or [])


# -- against a real runner --------------------------------------------------------------------

PRODUCER = """
import json, sys, time
from ksr_client import AlreadyFinished, Client
client = Client()  # REDIS_URL from the environment, the runner's defaults for the rest
out = {}
done = client.submit(json.loads(sys.argv[1]) if len(sys.argv) > 1 else %(done)r)
out["submitted"] = done
out["waited"] = client.wait(done, timeout=60).state
st = client.status(done)
out["status"] = [st.where, st.state, st.stream, st.record.get("job_name", "")]
try:
    client.cancel(done)
    out["cancel_finished"] = "no error"
except AlreadyFinished as e:
    out["cancel_finished"] = str(e)
held = client.submit(%(held)r, delay=3600)
deadline = time.monotonic() + 30  # the leader reads it, then holds it: wait for that, bounded
while client.status(held).where != "scheduled" and time.monotonic() < deadline:
    time.sleep(0.05)
out["held"] = [client.status(held).where, client.cancel(held).stage, client.wait(held, timeout=30).state]
bad = client.submit(%(bad)r)  # only the runner validates: it ends dead, and says why
st = client.wait(bad, timeout=60)
out["bad"] = [st.state, st.record.get("dead_reason", ""), st.record.get("dead_error", "")]
print(json.dumps(out))
"""


def test_submit_wait_status_cancel_against_a_real_runner(producer_venv: Path, redis_server, redis_client) -> None:
    done = message("prod-done-1", "default", command=["/bin/sh", "-c", "exit 0"])
    held = message("prod-held-1", "default", command=["/bin/sh", "-c", "exit 0"])
    bad = message("prod-bad-1", "default")
    del bad["job"]["image"]
    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None)
    with runner_thread(env):
        out = run_in(
            producer_venv,
            "import sys\n" + PRODUCER % {"done": done, "held": held, "bad": bad},
            env={"REDIS_URL": redis_server.url},
            timeout=180,
        )
    assert out["submitted"] == "prod-done-1"
    assert out["waited"] == "completed"
    where, state, stream, job_name = out["status"]
    assert (where, state, stream) == ("finished", "completed", "ksr:jobs:default") and job_name
    assert out["cancel_finished"] == "message prod-done-1 has already finished (completed); nothing to cancel"
    assert out["held"] == ["scheduled", "scheduled", "cancelled"]
    assert out["bad"][0] == "dead" and "job.image: required" in out["bad"][2], out["bad"]
    assert redis_client.hget("ksr:msg:prod-held-1", "state") == b"cancelled"
