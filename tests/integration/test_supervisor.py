"""The process model of `ksr run`: shutdown, a dying runner, dying children.

Each test runs its own stack (real supervisor, gunicorn and RQ worker; stand-in runner,
see probe_stack.py) on the test's own redis-server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from runner.process.supervisor import Backoff
from tests.support.pipeline import base_env, ksr_run
from tests.support.ports import free_port, wait_for
from tests.support.probe_stack import ProbeStack
from tests.support.procs import descendants, kill_tree
from tests.support.redis_server import RedisServer

GRACE = 5.0  # KSR_SHUTDOWN_GRACE of the stacks


@pytest.fixture
def make_stack(private_redis: RedisServer, tmp_path) -> Iterator[Callable[..., ProbeStack]]:
    stacks: list[ProbeStack] = []

    def make(**env: str) -> ProbeStack:
        s = ProbeStack(tmp_path / f"stack{len(stacks)}", redis_url=private_redis.url, port=free_port(), extra_env=env)
        stacks.append(s.start())
        try:
            wait_for(lambda: s.get("/healthz")[0] == 200, timeout=60, what="the probe stack to come up")
        except TimeoutError:
            pytest.fail("probe stack did not come up:\n" + s.log_tail(), pytrace=False)
        return s

    yield make
    for s in stacks:
        s.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited all the same
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_pids(stack: ProbeStack) -> list[int]:
    return [c["pid"] for c in stack.json("/status")[1]["children"].values()]


def test_sigterm_stops_runner_then_children_and_exits_0(make_stack):
    stack = make_stack()
    pids = child_pids(stack)
    assert all(alive(pid) for pid in pids)
    started = time.monotonic()
    stack.signal(signal.SIGTERM)
    assert stack.proc is not None
    rc = stack.proc.wait(GRACE + 10)
    assert rc == 0, stack.log_tail()
    assert time.monotonic() - started < GRACE
    assert (stack.control / "released").read_text() == "probe-test-0"  # the runner ran its release
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5, what="children gone")


def test_dying_runner_fails_the_probes_and_the_exit_code(make_stack):
    stack = make_stack()
    (stack.control / "raise").write_text("")
    wait_for(lambda: stack.get("/healthz")[0] == 503, timeout=10, what="/healthz 503 after the runner died")
    status, doc = stack.json("/healthz")
    assert any(
        r.startswith("runner failed: runner raised RuntimeError: stand-in runner told to fail") for r in doc["reasons"]
    )
    assert stack.get("/readyz")[0] == 503
    status, doc = stack.json("/status")
    assert doc["runner"]["state"] == "failed" and doc["leading"] is False
    assert "stand-in runner told to fail" in doc["last_errors"][0]["text"]
    assert stack.proc is not None and stack.proc.poll() is None  # still serving the failing probes
    stack.signal(signal.SIGTERM)
    assert stack.proc.wait(GRACE + 10) == 1


def test_runner_that_ignores_stop_is_abandoned_after_the_grace(make_stack):
    stack = make_stack(KSR_SHUTDOWN_GRACE="2")
    (stack.control / "ignore-stop").write_text("")
    pids = child_pids(stack)
    started = time.monotonic()
    stack.signal(signal.SIGTERM)
    assert stack.proc is not None
    rc = stack.proc.wait(20)
    elapsed = time.monotonic() - started
    assert rc == 1, stack.log_tail()
    assert 2 <= elapsed < 2 + 8  # the grace, then the children's own
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=5, what="children gone")


def test_dead_rq_worker_is_restarted(make_stack):
    stack = make_stack()
    old = stack.json("/status")[1]["children"]["rq-worker"]
    os.kill(old["pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = stack.json("/status")[1]["children"]["rq-worker"]
        return now["restarts"] == 1 and now["pid"] not in (None, old["pid"])

    wait_for(restarted, timeout=20, what="the RQ worker restarted")
    new_pid = stack.json("/status")[1]["children"]["rq-worker"]["pid"]
    wait_for(
        lambda: (
            subprocess.run(["ps", "-o", "args=", "-p", str(new_pid)], capture_output=True, text=True).stdout.find(
                "runner.callbacks.worker"
            )
            >= 0
        ),
        timeout=10,
        what="an rq worker process",
    )


@pytest.mark.parametrize("failures,delay", [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (100, 30.0)])
def test_backoff_doubles_up_to_the_cap(failures, delay):
    assert Backoff(base=0.5, cap=30.0).delay(failures) == delay


def test_children_die_with_a_sigkilled_supervisor(make_stack):
    """Outside a container nobody kills the rest of the tree: each child, and each process
    it forks (gunicorn workers, RQ's scheduler), must follow its parent."""
    stack = make_stack()

    # gunicorn master + 2 workers, the RQ worker and its scheduler process
    def full_tree() -> list[int] | None:
        found = descendants(stack.pid)
        return found if len(found) >= 5 else None

    tree = wait_for(full_tree, timeout=30, what="the full tree")
    stack.signal(signal.SIGKILL)  # the main process only
    wait_for(
        lambda: not [p for p in tree if alive(p)],
        timeout=10,
        what=f"every descendant of the killed supervisor gone ({tree})",
    )


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_second_runner_on_one_runtime_dir_is_refused_and_a_dead_ones_lock_is_not(private_redis, tmp_path):
    runtime = tmp_path / "runtime"
    env = base_env(
        redis_url=private_redis.url,
        namespace="default",
        kubeconfig=None,
        HOME=str(tmp_path),
        KSR_RUNTIME_DIR=str(runtime),
        KSR_HTTP_HOST="127.0.0.1",
    )
    first_port = free_port()
    first = ksr_run({**env, "POD_NAME": "first", "HTTP_SERVER_PORT": str(first_port)}, log_path=tmp_path / "first.log")
    started: list[subprocess.Popen[bytes]] = [first]
    try:
        wait_for(lambda: _healthy(first_port), timeout=60, what="the first runner up")
        metric_files = wait_for(
            lambda: sorted(p.name for p in (runtime / "metrics").glob("*.db")),
            timeout=30,
            what="the first runner's metric files",
        )

        second = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "run"],
            env={**os.environ, **env, "POD_NAME": "second", "HTTP_SERVER_PORT": str(free_port())},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(second)
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("a second `ksr run` on the same KSR_RUNTIME_DIR was not refused within 30s")
        assert second.returncode == 2, err[-2000:]
        lines = (out + err).strip().splitlines()
        assert len(lines) == 1, out + err
        assert "KSR_RUNTIME_DIR" in lines[0] and str(runtime) in lines[0] and str(first.pid) in lines[0]
        # The first one keeps its files and its board.
        assert set(metric_files) <= {p.name for p in (runtime / "metrics").glob("*.db")}
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{first_port}/status", timeout=5).read())
        assert status["identity"] == "first" and status["runner"]["state"] == "running"

        kill_tree(first.pid)  # a crash: the kernel drops its lock
        first.wait(10)
        third_port = free_port()
        third = ksr_run(
            {**env, "POD_NAME": "third", "HTTP_SERVER_PORT": str(third_port)}, log_path=tmp_path / "third.log"
        )
        started.append(third)
        wait_for(lambda: _healthy(third_port), timeout=60, what="a restart on the dead runner's directory")
    finally:
        for proc in started:
            kill_tree(proc.pid)  # its children live in sessions of their own: the whole tree
            proc.wait(10)
