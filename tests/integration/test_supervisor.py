"""The process model of `ksr run`: shutdown, a dying runner, dying children.

Each test runs its own stack (real supervisor, gunicorn and RQ worker; stand-in runner,
see probe_stack.py) on the test's own redis-server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from runner.process.supervisor import Backoff
from tests.support.ports import free_port, wait_for
from tests.support.probe_stack import ProbeStack
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
                "rq.cli worker"
            )
            >= 0
        ),
        timeout=10,
        what="an rq worker process",
    )


@pytest.mark.parametrize("failures,delay", [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (100, 30.0)])
def test_backoff_doubles_up_to_the_cap(failures, delay):
    assert Backoff(base=0.5, cap=30.0).delay(failures) == delay
