"""The runner with the local executor and the Redis lock (what `ksr dev` runs without a
cluster): trimming and backpressure, against a real Redis."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for


def env_for(redis_server, **extra: str) -> dict[str, str]:
    return base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, **extra)


def test_the_leader_trims_done_entries(redis_server, redis_client):
    # That a trim never passes an entry the group still owes is tested on StreamReader.trim.
    stream = "ksr:jobs:default"
    env = env_for(redis_server, KSR_STREAM_MAXLEN="5")
    with runner_thread(env):
        for i in range(20):
            xadd(redis_client, stream, message(f"trim-{i}", "default", command=["true"]))
        wait_for(
            lambda: len(redis_client.keys("ksr:msg:*")) == 20 and redis_client.scard("ksr:active") == 0,
            timeout=60,
            what="20 jobs done",
        )
        wait_for(lambda: redis_client.xlen(stream) <= 5, timeout=20, what="the stream trimmed to 5")
    assert redis_client.xlen(stream) >= 5  # towards maxlen, not below it


def test_backpressure_holds_reading_at_the_cap(redis_server, redis_client):
    env = env_for(redis_server, KSR_MAX_ACTIVE_JOBS="2", QUEUE_WORKER_POOL_SIZE="4", KSR_READ_COUNT="1")
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], int(redis_client.scard("ksr:active")))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    with runner_thread(env):
        sampler.start()
        for i in range(6):
            xadd(
                redis_client, "ksr:jobs:default", message(f"slow-{i}", "default", command=["/bin/sh", "-c", "sleep 1"])
            )
        wait_for(
            lambda: (
                redis_client.exists(*[f"ksr:msg:slow-{i}" for i in range(6)]) == 6
                and redis_client.scard("ksr:active") == 0
            ),
            timeout=60,
            what="six slow jobs done",
        )
        stop.set()
        sampler.join(5)
    assert peak[0] == 2  # it reached the cap and never went past it


def test_a_failure_between_record_and_launch_still_runs_the_local_job(redis_server, redis_client, monkeypatch):
    """Redis fails once right after the Job is recorded (before callback 0 is enqueued and the
    local launch): the entry stays pending, comes back as a duplicate, and the job still runs."""
    from runner.errors import RedisUnavailable
    from runner.jobs.tracker import Tracker

    real_send = Tracker.send
    failures = []

    def send_failing_once(self, transition):
        if not failures:
            failures.append(transition.message_id)
            raise RedisUnavailable("injected: Redis went away after the record")
        return real_send(self, transition)

    monkeypatch.setattr(Tracker, "send", send_failing_once)
    env = env_for(redis_server, POLLING_INTERVAL="0.5")
    with runner_thread(env):
        xadd(redis_client, "ksr:jobs:default", message("late-launch", "default", command=["true"]))
        wait_for(
            lambda: redis_client.hget("ksr:msg:late-launch", "state") == b"completed",
            timeout=30,
            what="the local job completed after the retry",
        )
    assert failures == ["late-launch"]
    assert redis_client.xpending("ksr:jobs:default", "ksr")["pending"] == 0


def _alive(pid: int) -> bool:
    """Running (a zombie, or a pid gone, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_local_job_ends_with_its_main_process_and_takes_its_background_children(redis_server, redis_client, tmp_path):
    """As in a container: the job is done when its main process is, however long a process
    it started in the background would run; and that process ends with it."""
    pids = tmp_path / "bg.pid"
    script = f"sleep 300 & echo $! > {pids}; echo started a background sleep >&2"
    env = env_for(redis_server, POLLING_INTERVAL="0.5")
    with runner_thread(env):
        xadd(
            redis_client,
            "ksr:jobs:default",
            message("bg-1", "default", command=["/bin/sh", "-c", script], activeDeadlineSeconds=120),
        )
        wait_for(
            lambda: redis_client.hget("ksr:msg:bg-1", "state") == b"completed",
            timeout=20,
            what="bg-1 completed when its shell exited (not at its deadline)",
        )
        background = int(pids.read_text())
        wait_for(lambda: not _alive(background), timeout=5, what=f"the background sleep {background} killed")


def test_a_cancel_ends_the_whole_group_of_a_job_that_ignores_sigterm(redis_server, redis_client, tmp_path):
    from runner.client import Client
    from runner.settings import Settings

    pids = tmp_path / "job.pids"
    script = f"trap '' TERM; sleep 300 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    env = env_for(redis_server, POLLING_INTERVAL="0.5")
    with runner_thread(env):
        xadd(
            redis_client,
            "ksr:jobs:default",
            message("stubborn-1", "default", command=["/bin/sh", "-c", script], activeDeadlineSeconds=600),
        )
        wait_for(pids.exists, timeout=20, what="the job's shell and its background sleep")
        job_pids = [int(p) for p in pids.read_text().split()]
        assert Client(Settings.from_env(dict(env)), redis_client=redis_client).cancel("stubborn-1").stage == "running"
        # SIGTERM is ignored: SIGKILL after the 5 s grace ends both.
        wait_for(lambda: not any(_alive(p) for p in job_pids), timeout=15, what=f"job processes {job_pids} ended")
        wait_for(lambda: redis_client.hget("ksr:msg:stubborn-1", "state") == b"cancelled", timeout=10, what="cancelled")
