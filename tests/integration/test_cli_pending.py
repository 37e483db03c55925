"""`ksr pending list|replay|ack` on entries left pending by a consumer that died before XACK."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from runner.cli import main
from runner.pipeline.replay import replay_pending
from runner.store.stream_reader import StreamReader
from tests.support.redis_server import RedisServer

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    return {"REDIS_URL": redis_server.url, "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low"}


def leave_pending(r: redis.Redis, *payloads: bytes, consumer: str = "pod-a") -> list[str]:
    """XADD the payloads and read them as `consumer`, who then 'dies' without acking."""
    for p in payloads:
        r.xadd(STREAM, {"payload": p})
    reader = StreamReader(r, streams=[STREAM], group="ksr", consumer=consumer, block_ms=0)
    reader.ensure_groups()
    return [e.entry_id for e in reader.read_batch()]


def run(env: dict[str, str], *args: str) -> object:
    return CliRunner().invoke(main, list(args), env=env)


def test_list_shows_message_ids_and_tolerates_bad_payloads(env: dict[str, str], redis_client: redis.Redis) -> None:
    ids = leave_pending(redis_client, b'{"id": "m-1"}', b"not json")
    result = CliRunner().invoke(main, ["pending", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["entry_id"], r["message_id"], r["consumer"], r["deliveries"]) for r in rows] == [
        (ids[0], "m-1", "pod-a", 1),
        (ids[1], None, "pod-a", 1),
    ]
    table = CliRunner().invoke(main, ["pending", "list"], env=env).stdout
    assert "m-1" in table and "(unparsable)" in table and "pod-a" in table


def test_list_filters(env: dict[str, str], redis_client: redis.Redis) -> None:
    leave_pending(redis_client, b'{"id": "m-1"}', consumer="pod-a")
    leave_pending(redis_client, b'{"id": "m-2"}', consumer="pod-b")
    rows = json.loads(CliRunner().invoke(main, ["pending", "list", "-c", "pod-b", "--json"], env=env).stdout)
    assert [r["message_id"] for r in rows] == ["m-2"]
    rows = json.loads(CliRunner().invoke(main, ["pending", "list", "--idle-over", "1h", "--json"], env=env).stdout)
    assert rows == []
    rows = json.loads(CliRunner().invoke(main, ["pending", "list", "-s", "ksr:jobs:low", "--json"], env=env).stdout)
    assert rows == []  # no group there yet: nothing pending, no error


def test_replay_dry_run_changes_nothing(env: dict[str, str], redis_client: redis.Redis) -> None:
    (entry_id,) = leave_pending(redis_client, b'{"id": "m-1"}')
    result = CliRunner().invoke(main, ["pending", "replay", "--all"], env=env)
    assert result.exit_code == 0, result.output
    assert "would-replay" in result.stdout and "dry run: would replay 1 entry" in result.stderr
    assert redis_client.xlen(STREAM) == 1
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 1


def test_replay_yes_readds_and_acks(env: dict[str, str], redis_client: redis.Redis) -> None:
    old = leave_pending(redis_client, b'{"id": "m-1"}', b'{"id": "m-2"}')
    result = CliRunner().invoke(main, ["pending", "replay", old[0], "--yes", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (doc,) = json.loads(result.stdout)
    assert doc["outcome"] == "replayed" and doc["message_id"] == "m-1"
    entries = redis_client.xrange(STREAM)
    assert [e.decode() for e, _ in entries] == [*old, doc["new_entry_id"]]
    assert entries[-1][1] == {b"payload": b'{"id": "m-1"}'}
    pending = redis_client.xpending_range(STREAM, "ksr", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [old[1]]  # the old one is acked
    # A new consumer reads the replayed entry as a first delivery.
    reader = StreamReader(redis_client, streams=[STREAM], group="ksr", consumer="pod-b", block_ms=0)
    reader.rescan_pending()
    (fresh,) = [e for e in reader.read_batch() if e.entry_id == doc["new_entry_id"]]
    assert fresh.deliveries == 1


def test_replay_of_an_entry_acked_meanwhile_is_left_alone(env: dict[str, str], redis_client: redis.Redis) -> None:
    (entry_id,) = leave_pending(redis_client, b'{"id": "m-1"}')
    redis_client.xack(STREAM, "ksr", entry_id)  # the leader finished it
    assert replay_pending(redis_client, stream=STREAM, group="ksr", entry_id=entry_id) == ("NOTPENDING", None)
    assert redis_client.xlen(STREAM) == 1


def test_replay_needs_a_selector_and_unknown_ids_fail(env: dict[str, str], redis_client: redis.Redis) -> None:
    leave_pending(redis_client, b'{"id": "m-1"}')
    result = CliRunner().invoke(main, ["pending", "replay"], env=env)
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["pending", "replay", "1-1", "--yes"], env=env)
    assert result.exit_code == 1
    assert (
        result.stderr.strip() == "Error: entry 1-1 is not pending in ksr:jobs:critical, ksr:jobs:default, ksr:jobs:low"
    )
    assert CliRunner().invoke(main, ["pending", "replay", "bogus"], env=env).exit_code == 2


def test_ack_dry_run_then_yes(env: dict[str, str], redis_client: redis.Redis) -> None:
    leave_pending(redis_client, b'{"id": "m-1"}', b'{"id": "m-2"}')
    result = CliRunner().invoke(main, ["pending", "ack", "--all"], env=env)
    assert result.exit_code == 0 and "dry run: would ack 2 entries" in result.stderr
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 2
    result = CliRunner().invoke(main, ["pending", "ack", "--all", "--yes", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [d["outcome"] for d in json.loads(result.stdout)] == ["acked", "acked"]
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
    assert redis_client.xlen(STREAM) == 2  # ack never re-adds
