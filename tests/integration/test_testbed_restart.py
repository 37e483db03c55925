"""The bed starts clean after an interrupted run, or says why not (issue 19).

Each test starts beds of its own in its own tmp dir (never the shared `kube` bed):
a killed test run (its bed dies with it, its directory stays), a killed `up` script
(its components outlive it), and a bed whose kwok is gone, which the start-up check
must name.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import ROOT, testbed
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

KUBE_TESTENV = [sys.executable, str(ROOT / "scripts" / "kube-testenv")]
# A test run holding a bed of its own, as the `kube` fixture does, until it is killed.
OWNER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from testenv import bed
bed.up(Path(sys.argv[2]), owned=True, progress=lambda m: None)
sys.stdin.read()
"""


@pytest.fixture
def bed_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "bed"
    yield directory
    testbed.down(directory)  # whatever a test left running there


def _state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "state.json").read_text())


def _pids(directory: Path) -> dict[str, int]:
    return {name: info["pid"] for name, info in _state(directory)["procs"].items() if info["pid"]}


def _ready(directory: Path, owner: subprocess.Popen[bytes]) -> bool:
    if owner.poll() is not None:
        pytest.fail(f"the bed's owner exited with {owner.returncode} before its bed was up")
    return bool(_state(directory)["ready"])


def _alive(pid: int) -> bool:
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())  # a zombie has none
    except OSError:
        return False


def _node_uids(bed: testbed.Bed) -> set[str]:
    status, body = bed.request("GET", "/api/v1/nodes")
    assert status == 200, body
    return {n["metadata"]["uid"] for n in body["items"]}


def _run_job(bed: testbed.Bed, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a one-pod Job in `default`; return it and its pods once it is Complete."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:latest", "command": ["true"]}],
                }
            },
        },
    }
    status, body = bed.request("POST", "/apis/batch/v1/namespaces/default/jobs", job)
    assert status == 201, body

    def complete() -> dict[str, Any] | None:
        _, got = bed.request("GET", f"/apis/batch/v1/namespaces/default/jobs/{name}")
        done = any(c["type"] == "Complete" and c["status"] == "True" for c in got["status"].get("conditions", []))
        return got if done else None

    # A sound bed completes it in about two seconds; a stale one took over 40 (kwok waiting out old Leases).
    done = wait_for(complete, timeout=25, interval=0.2, what=f"Job {name} Complete")
    _, pods = bed.request("GET", f"/api/v1/namespaces/default/pods?labelSelector=job-name%3D{name}")
    return done, pods["items"]


def _assert_ran_once(job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
    assert job["status"]["succeeded"] == 1
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    assert pods[0]["spec"]["nodeName"] in ("kwok-node-0", "kwok-node-1")


def test_killed_test_run_takes_its_bed_down_and_the_next_up_starts_fresh(bed_dir: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(ROOT / "scripts"), str(bed_dir)], stdin=subprocess.PIPE)
    try:
        wait_for(lambda: _ready(bed_dir, owner), timeout=120, interval=0.2, what="the owner's bed up")
        old = testbed.Bed.load(bed_dir)
        old_nodes, old_pids = _node_uids(old), _pids(bed_dir)
        owner.kill()  # SIGKILL: no teardown runs
        owner.wait(10)
    finally:
        owner.kill()
    # The kernel ends an owned bed with its owner: nothing keeps ports or CPU.
    wait_for(lambda: not any(_alive(p) for p in old_pids.values()), timeout=10, what="the owner's bed gone")
    assert (bed_dir / "etcd").is_dir()  # what a killed run leaves: pid files and etcd data

    logged: list[str] = []
    started = time.monotonic()
    bed = testbed.up(bed_dir, progress=logged.append, owned=True)
    print(f"up on the stale directory: {time.monotonic() - started:.1f}s", file=sys.stderr)

    found = next(m for m in logged if m.startswith("found stale state"))
    assert f"etcd pid {old_pids['etcd']} recorded but gone" in found
    assert f"kwok pid {old_pids['kwok']} recorded but gone" in found
    assert f"its owner (pid {owner.pid}) is gone" in found
    assert "etcd data of an earlier start" in found
    assert any(m.startswith("start-up check: a Job ran to Complete") for m in logged)
    assert _node_uids(bed).isdisjoint(old_nodes)  # the nodes are this start's, not the old run's
    _assert_ran_once(*_run_job(bed, "after-killed-run"))


def test_up_after_a_killed_up_script_stops_what_it_left(bed_dir: Path) -> None:
    script = subprocess.Popen([*KUBE_TESTENV, "up", "--dir", str(bed_dir)], stdout=subprocess.DEVNULL)
    try:

        def started() -> object:
            assert script.poll() is None, (
                f"the up script exited with {script.returncode} before starting kube-apiserver"
            )
            return _pids(bed_dir).get("kube-apiserver")

        # 120 s: once, under a loaded 4-process run, the state file had not appeared in 60 s
        wait_for(started, timeout=120, interval=0.02, what="kube-apiserver started")
        script.kill()  # a timed-out script: its components run in sessions of their own and outlive it
        script.wait(10)
    finally:
        script.kill()
    left = _pids(bed_dir)
    assert _state(bed_dir).get("ready") in (False, None)  # None: a state file of the old format
    assert _alive(left["etcd"]) and _alive(left["kube-apiserver"])

    logged: list[str] = []
    bed = testbed.up(bed_dir, progress=logged.append, owned=True)

    found = next(m for m in logged if m.startswith("found stale state"))
    assert "the last `up` never finished" in found
    assert f"etcd pid {left['etcd']} still running" in found
    assert f"kube-apiserver pid {left['kube-apiserver']} still running" in found
    assert not any(_alive(p) for p in left.values())
    _assert_ran_once(*_run_job(bed, "after-killed-script"))


def test_up_refuses_while_another_up_starts_the_same_directory(bed_dir: Path) -> None:
    bed_dir.mkdir()
    with open(bed_dir / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as an `up` under way holds it
        with pytest.raises(SystemExit, match=r"another `up` is starting the bed in .*/bed right now"):
            testbed.up(bed_dir, progress=lambda m: None, owned=True)
    assert sorted(p.name for p in bed_dir.iterdir()) == ["up.lock"]  # nothing started, nothing removed


def test_a_bed_in_use_is_refused_and_check_names_kwok_when_it_does_not_run(bed_dir: Path) -> None:
    bed = testbed.up(bed_dir, progress=lambda m: None, owned=True)
    pids = _pids(bed_dir)
    with pytest.raises(SystemExit, match=r"the bed in .*/bed is up and answering \(etcd \d+, kube-apiserver"):
        testbed.up(bed_dir, progress=lambda m: None, owned=True)
    assert _pids(bed_dir) == pids and all(_alive(p) for p in pids.values())  # refused, not replaced

    bed.stop("kwok")

    started = time.monotonic()
    check = [*KUBE_TESTENV, "check", "--dir", str(bed_dir), "--check-timeout", "8"]  # the warm scheduler binds in 1 s
    result = subprocess.run(check, capture_output=True, text=True, timeout=60)
    print(f"failing check: {time.monotonic() - started:.1f}s", file=sys.stderr)

    assert result.returncode == 1, result.stderr
    assert "check failed: start-up check: Job default/ksr-testenv-check not complete after 8s" in result.stderr
    assert "was bound to kwok-node-" in result.stderr
    assert "but never started: kwok did not run it; not running: kwok" in result.stderr

    # The check deletes its Job even when it fails.
    def gone() -> bool:
        return bed.request("GET", "/apis/batch/v1/namespaces/default/jobs/ksr-testenv-check")[0] == 404

    wait_for(gone, timeout=10, what="the check's Job deleted")
