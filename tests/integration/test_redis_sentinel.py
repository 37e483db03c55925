"""Sentinel through the connection factory, against real redis-server and redis-sentinel
processes (one primary, two replicas, three sentinels): the CLI finds the primary, a wrong
master name fails at start naming KSR_REDIS_MASTER, WAIT really waits for the replicas
(on the write's own connection), and a client follows a SIGKILLed primary to the promoted
replica within the bound docs/redis.md states."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from election.errors import LockUnavailable
from election.record import LeaderRecord
from election.redis_lock import RedisLock
from runner.client import Client
from runner.settings import Settings
from runner.store.connection import connect
from runner.store.replication import NotReplicated, Replication
from runner.store.state import ClaimStatus, StateStore
from tests.support.fixtures import _unavailable
from tests.support.messages import message
from tests.support.pipeline import ROOT
from tests.support.ports import wait_for
from tests.support.sentinel import MASTER, SentinelBed

RECONNECT_BOUND = 10.0  # seconds from SIGKILL to a command answered by the new primary (docs/redis.md)


@pytest.fixture(scope="module")
def bed():
    try:
        started = SentinelBed().start()
    except Exception as e:
        _unavailable("redis-sentinel", str(e))
    yield started
    started.close()


def env_of(bed: SentinelBed, **extra: str) -> dict[str, str]:
    return {
        "POD_NAME": "sentinel-test",
        "POD_NAMESPACE": "default",
        "HOME": "/nonexistent",
        "REDIS_URL": "redis://127.0.0.1/0",
        "KSR_REDIS_SENTINELS": bed.sentinels,
        "KSR_REDIS_MASTER": MASTER,
        "KSR_LOCK": "lease",
        "KSR_EXECUTOR": "local",
        **extra,
    }


def ksr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env={**full, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def on_every_replica(bed: SentinelBed, key: str) -> bool:
    primary = bed.primary_port()
    return all(s.client().exists(key) == 1 for s in bed.servers if s.port != primary)


def test_the_cli_reaches_the_primary_through_sentinel(bed):
    result = ksr(env_of(bed), "status", "--json")
    assert result.returncode == 0, result.stderr
    assert f"master '{MASTER}' of sentinels" in ksr(env_of(bed), "status").stdout


def test_an_unknown_master_name_fails_at_start_naming_the_variable(bed):
    result = ksr(env_of(bed, KSR_REDIS_MASTER="no-such-master"), "status")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: KSR_REDIS_MASTER: no sentinel of KSR_REDIS_SENTINELS monitors it")


def test_the_redis_lock_with_sentinel_is_refused_at_start_naming_both_variables(bed, tmp_path):
    result = ksr(env_of(bed, KSR_LOCK="redis", KSR_RUNTIME_DIR=str(tmp_path)), "run")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: KSR_LOCK: KSR_LOCK=redis cannot be used with KSR_REDIS_SENTINELS")
    assert "KSR_LOCK=lease" in line


def test_claims_records_and_terms_are_on_the_replicas_when_they_return(bed):
    settings = Settings.from_env(env_of(bed, KSR_REDIS_MIN_REPLICAS="2"))
    client = connect(settings.redis, socket_timeout=5.0, retries=3)
    mid = f"wait-{uuid.uuid4().hex[:8]}"
    store = StateStore.from_settings(client, settings)
    assert store.replication.replicas == 2
    assert store.claim(mid, stream="ksr:jobs:default", entry_id="1-0").status is ClaimStatus.NEW
    assert on_every_replica(bed, f"ksr:msg:{mid}")  # WAIT 2 returned: both replicas have it already
    store.advance_term(7)
    assert all(s.client().get("ksr:term") == b"7" for s in bed.servers)
    # More replicas than exist: the claim still returns after the timeout, and says so.
    short = StateStore(client, ttl_seconds=60, replication=Replication(replicas=3, timeout=0.2))
    started = time.monotonic()
    assert short.claim(mid + "-b", stream="ksr:jobs:default", entry_id="2-0").status is ClaimStatus.NEW
    assert 0.2 <= time.monotonic() - started < 3.0
    assert short.replication.short_writes == 1
    client.close()


def _on_every_replica_stream(bed: SentinelBed, stream: str, entry_id: str) -> bool:
    primary = bed.primary_port()
    return all(s.client().xrange(stream, entry_id, entry_id) for s in bed.servers if s.port != primary)


def test_the_producer_api_and_ksr_submit_wait_for_the_replicas(bed, tmp_path):
    settings = Settings.from_env(env_of(bed, KSR_REDIS_MIN_REPLICAS="2"))
    producer = Client(settings)
    mid = producer.submit(message(f"produce-{uuid.uuid4().hex[:8]}", "default"))
    (entry_id, _), *_ = producer.redis.xrevrange("ksr:jobs:default", count=1)
    assert json.loads(producer.redis.xrange("ksr:jobs:default", entry_id, entry_id)[0][1][b"payload"])["id"] == mid
    assert _on_every_replica_stream(bed, "ksr:jobs:default", entry_id.decode())  # WAIT 2 returned
    # More replicas than exist: the entry is added all the same, and the producer is told.
    short = Client(Settings.from_env(env_of(bed, KSR_REDIS_MIN_REPLICAS="3", KSR_REDIS_WAIT_TIMEOUT="0.2")))
    with pytest.raises(NotReplicated, match=r"reached 2 of 3 replicas within 0.2s \(KSR_REDIS_MIN_REPLICAS") as e:
        short.submit(message("produce-short", "default"))
    (short_id,) = e.value.entry_ids
    assert short.redis.xrange("ksr:jobs:default", short_id, short_id)
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(message("submit-short", "default")) + "\n")
    result = ksr(env_of(bed, KSR_REDIS_MIN_REPLICAS="3", KSR_REDIS_WAIT_TIMEOUT="0.2"), "submit", str(path))
    assert result.returncode == 1, result.stderr
    (printed,) = result.stdout.split()  # the entry id: it was added
    assert short.redis.xrange("ksr:jobs:default", printed, printed)
    assert "1 of 1 submitted messages reached only 2 of 3 replicas" in result.stderr
    assert "KSR_REDIS_MIN_REPLICAS" in result.stderr
    producer.close()
    short.close()


def test_a_redis_lock_write_short_of_its_replicas_counts_as_failed(bed):
    settings = Settings.from_env(env_of(bed))
    client = connect(settings.redis, socket_timeout=2.0, retries=0)
    now = datetime.datetime.now(datetime.UTC)
    record = LeaderRecord(holder="a", lease_duration=15.0, acquire_time=now, renew_time=now, transitions=0)
    ok = RedisLock(client, name=f"l-{uuid.uuid4().hex[:6]}", min_replicas=2, wait_timeout=1.0)
    stored = ok.create(record)
    assert on_every_replica(bed, ok.key)
    assert ok.update(stored).version == "2"
    unreachable = RedisLock(client, name=f"l-{uuid.uuid4().hex[:6]}", min_replicas=3, wait_timeout=0.2)
    with pytest.raises(LockUnavailable, match="acknowledged by 2 of 3 replicas"):
        unreachable.create(record)
    client.close()


def test_the_runner_client_follows_a_killed_primary_within_the_bound(bed):
    from runner.pipeline.wiring import redis_client

    settings = Settings.from_env(env_of(bed))
    client = redis_client(settings)  # the runner's own: retries=3 with backoff
    client.set("before", "1")
    old_port = bed.primary_port()
    killed_at: list[float] = []

    def write_answered() -> bool:
        try:
            client.set("after", "1")
        except Exception:
            return False
        return client.info("replication")["role"] == "master" and bed.primary_port() != old_port

    import threading

    killer = threading.Thread(target=lambda: (killed_at.append(time.monotonic()), bed.kill_primary()), daemon=True)
    killer.start()
    wait_for(lambda: killed_at, timeout=5, what="the kill")
    wait_for(write_answered, timeout=RECONNECT_BOUND, interval=0.05, what="a write on the new primary")
    reconnect = time.monotonic() - killed_at[0]
    killer.join(90)
    print(f"reconnect after SIGKILL of the primary: {reconnect:.2f}s")
    assert reconnect < RECONNECT_BOUND
    client.close()
