"""A recurring schedule (`* * * * *`) across SIGKILLed leaders: three `ksr run` replicas,
each with its own KSR_RUNTIME_DIR, against the real control plane. The leader dies right
after a tick, then the next one dies just before a tick so that it passes with no leader
(catchUp: latest). One Job per tick, none doubled, none lost."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import pytest

from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env
from tests.support.pods import leader_of, replica_pods
from tests.support.ports import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def _tick_time(tick_id: str) -> float:
    return datetime.strptime(tick_id.removeprefix("every-minute-"), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def _tick_id(ts: float) -> str:
    return f"every-minute-{datetime.fromtimestamp(ts, tz=UTC):%Y%m%dT%H%M%SZ}"


@pytest.fixture
def replicas(redis_server, redis_client, kube, namespace, tmp_path):
    template = {k: v for k, v in message("x", namespace).items() if k != "id"}
    schedules = tmp_path / "schedules.yaml"
    entry = {"name": "every-minute", "cron": "* * * * *", "catchUp": "latest", "catchUpWindow": 120}
    schedules.write_text(json.dumps({"schedules": [{**entry, "message": template}]}))
    env = base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_SCHEDULES=str(schedules)
    )
    with replica_pods(env, tmp_path) as pods:
        yield pods


def _until(ts: float) -> None:
    wait_for(lambda: time.time() >= ts, timeout=max(1.0, ts - time.time() + 5), interval=0.1, what=f"time {ts}")


def test_one_job_per_tick_across_sigkilled_leaders(replicas, kube, namespace):
    alive = list(replicas)
    leader = leader_of(alive, 60)
    first = math.ceil(time.time() / 60 + 0.1) * 60  # a tick at least 6 s away: seen first by this leader
    ticks = [first, first + 60, first + 120]
    wait_for(lambda: _tick_id(ticks[0]) in job_message_ids(kube, namespace), timeout=90, what="tick 1's Job")
    leader.kill_container()  # right after a tick: the next leader fires tick 2 on time
    alive.remove(leader)
    leader = leader_of(alive, 30)
    wait_for(lambda: _tick_id(ticks[1]) in job_message_ids(kube, namespace), timeout=90, what="tick 2's Job")
    _until(ticks[2] - 1.5)
    leader.kill_container()  # tick 3 passes with no leader: caught up by the last replica
    alive.remove(leader)
    leader_of(alive, 30)
    try:
        wait_for(lambda: _tick_id(ticks[2]) in job_message_ids(kube, namespace), timeout=60, what="tick 3's Job")
    except TimeoutError:
        for p in replicas:
            print(p.name, p.tail(3000))
        raise
    _until(ticks[2] + 5)
    # A slow start-up can let the replicas fire a tick before the test picked its first:
    # that one counts too. One Job per minute from the earliest, none doubled or skipped.
    ids = job_message_ids(kube, namespace)
    earliest = min(ticks[0], *(_tick_time(i) for i in ids))
    assert ids == [_tick_id(t) for t in range(int(earliest), int(ticks[2]) + 1, 60)]
