"""`ksr pause` / `ksr resume` with a real runner (local executor, Redis lock) in this process:
a paused stream's new messages are not read while another stream's are, its backlog ages in
`ksr status`, ksr_stream_paused says so, and resume reads what waited, in order."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner, Result

from runner import metrics
from runner.cli import main
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

LOW = "ksr:jobs:low"
DEFAULT = "ksr:jobs:default"


@pytest.fixture
def env(redis_server, redis_client, tmp_path):  # type: ignore[no-untyped-def]
    return base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, KSR_RUNTIME_DIR=str(tmp_path))


def ksr(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def paused_gauge(stream: str) -> float | None:
    """ksr_stream_paused as this process's runner (a thread here) last set it."""
    metrics.get()
    assert metrics._local_registry is not None, "the runner thread's metrics are this process's"
    return metrics._local_registry.get_sample_value("ksr_stream_paused", {"stream": stream})


def quick(mid: str) -> dict:  # type: ignore[type-arg]
    return message(mid, "default", command=["/bin/sh", "-c", "exit 0"])


def test_a_paused_stream_is_not_read_and_resume_reads_it_in_order(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    bad = ksr(env, "pause", "ksr:jobs:nope")
    assert bad.exit_code == 2 and "not one of KSR_STREAMS" in bad.output
    paused = ksr(env, "pause", LOW, "--by", "ops")
    assert (paused.exit_code, paused.stdout) == (0, f"paused {LOW}\n")
    assert ksr(env, "pause", LOW).stdout == f"{LOW} was paused already\n"
    with runner_thread(env):
        for n in range(3):
            xadd(redis_client, LOW, quick(f"low-{n}"))
        # Ticks go on: messages of the stream not paused, sent after, run to their end.
        for n in range(3):
            xadd(redis_client, DEFAULT, quick(f"def-{n}"))
        wait_for(
            lambda: all(redis_client.hget(f"ksr:msg:def-{n}", "state") == b"completed" for n in range(3)),
            timeout=30,
            what="the default stream's messages completed",
        )
        assert [redis_client.exists(f"ksr:msg:low-{n}") for n in range(3)] == [0, 0, 0]
        assert redis_client.xpending(LOW, "ksr")["pending"] == 0  # not even delivered
        doc = json.loads(ksr(env, "status", "--json").stdout)
        assert doc["paused"][LOW]["by"] == "ops" and DEFAULT not in doc["paused"]
        assert doc["streams"][LOW]["lag"] == 3 and LOW in doc["oldest_waiting"]
        assert "paused since" in ksr(env, "status").stdout
        wait_for(lambda: paused_gauge(LOW) == 1, timeout=15, what="ksr_stream_paused 1 for the paused stream")
        assert paused_gauge(DEFAULT) == 0

        resumed = ksr(env, "resume", LOW)
        assert (resumed.exit_code, resumed.stdout) == (0, f"resumed {LOW}\n")
        wait_for(
            lambda: all(redis_client.hget(f"ksr:msg:low-{n}", "state") == b"completed" for n in range(3)),
            timeout=30,
            what="the resumed stream's messages completed",
        )
        wait_for(lambda: paused_gauge(LOW) == 0, timeout=15, what="ksr_stream_paused back to 0 on resume")
    claimed = [int(redis_client.hget(f"ksr:msg:low-{n}", "claimed_at") or 0) for n in range(3)]
    assert claimed == sorted(claimed)  # read in the order they were sent
    assert ksr(env, "resume", LOW).stdout == f"{LOW} was not paused\n"
