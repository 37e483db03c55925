"""`ksr dead list|show|replay|purge` against a real redis-server: replay after a policy fix."""

from __future__ import annotations

import json
import time

import pytest
import redis
from click.testing import CliRunner

from runner.cli import main
from runner.store.deadletter import dead_letter
from runner.store.state import StateStore
from runner.store.streams import Entry
from tests.support.messages import VALID
from tests.support.redis_server import RedisServer

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    redis_client.xgroup_create(STREAM, "ksr", id="0", mkstream=True)
    return {
        "REDIS_URL": redis_server.url,
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "POD_NAMESPACE": "default",
        "KSR_ALLOWED_NAMESPACES": "default",
    }


def message(message_id: str, namespace: str) -> bytes:
    doc = {k: v for k, v in VALID.items() if k != "webhook"}  # no DNS lookups in tests
    return json.dumps({**doc, "id": message_id, "job": {**VALID["job"], "namespace": namespace}}).encode()


def bury(
    r: redis.Redis,
    payload: bytes,
    *,
    entry_id: str | None = None,
    reason: str = "policy",
    error: str = "job.namespace: namespace 'team-a' is not allowed",
) -> str:
    entry = Entry(STREAM, entry_id or f"{int(time.time() * 1000)}-0", {b"payload": payload}, 1, False)
    return dead_letter(r, entry, group="ksr", reason=reason, error=error)


def invoke(env: dict[str, str], *args: str, **extra_env: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env={**env, **extra_env})


def test_list_and_show(env: dict[str, str], redis_client: redis.Redis) -> None:
    dead_id = bury(redis_client, message("m-1", "team-a"))
    bury(redis_client, b"garbage", reason="invalid", error="payload: not valid JSON")
    result = invoke(env, "dead", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["message_id"], r["reason"]) for r in rows] == [("m-1", "policy"), (None, "invalid")]
    assert "(unparsable)" in invoke(env, "dead", "list").stdout
    shown = invoke(env, "dead", "show", dead_id)
    assert shown.exit_code == 0, shown.output
    assert "job.namespace: namespace 'team-a' is not allowed" in shown.stdout
    assert '"namespace": "team-a"' in shown.stdout and "no record" in shown.stdout
    doc = json.loads(invoke(env, "dead", "show", dead_id, "--json").stdout)
    assert doc["payload"]["id"] == "m-1" and doc["state_record"] is None
    missing = invoke(env, "dead", "show", "1-1")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: dead entry 1-1 not found")


def test_replay_refused_until_the_policy_allows_it(env: dict[str, str], redis_client: redis.Redis) -> None:
    dead_id = bury(redis_client, message("m-1", "team-a"))
    refused = invoke(env, "dead", "replay", dead_id)
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()  # one line naming the field
    assert line.startswith(f"Error: dead entry {dead_id} not replayed: still invalid: job.namespace:")
    assert redis_client.xlen(STREAM) == 0 and redis_client.xlen(STREAM + ":dead") == 1

    done = invoke(env, "dead", "replay", dead_id, "--json", KSR_ALLOWED_NAMESPACES="default,team-a")
    assert done.exit_code == 0, done.output
    (doc,) = json.loads(done.stdout)
    assert doc["replayed"] and doc["message_id"] == "m-1"
    ((new_id, fields),) = redis_client.xrange(STREAM)
    assert new_id.decode() == doc["new_entry_id"] and fields[b"payload"] == message("m-1", "team-a")
    assert redis_client.xlen(STREAM + ":dead") == 0


def test_replay_refuses_a_message_that_already_has_a_job(env: dict[str, str], redis_client: redis.Redis) -> None:
    dead_id = bury(redis_client, message("m-1", "default"), reason="poison", error="poison")
    store = StateStore(redis_client, ttl_seconds=3600)
    store.claim("m-1", stream=STREAM, entry_id="1-0")
    store.record_job("m-1", job_name="my-job-abc", namespace="default", job_uid="u1")
    result = invoke(env, "dead", "replay", dead_id)
    assert result.exit_code == 1
    assert "already has Job default/my-job-abc" in result.stderr


def test_replay_releases_a_terminal_record_without_a_job(env: dict[str, str], redis_client: redis.Redis) -> None:
    dead_id = bury(redis_client, message("m-1", "default"), reason="api_rejected", error="spec: invalid")
    store = StateStore(redis_client, ttl_seconds=3600)
    store.claim("m-1", stream=STREAM, entry_id="1-0")
    redis_client.hset(store.key("m-1"), "state", "dead")  # as the dead letter leaves it
    result = invoke(env, "dead", "replay", dead_id)
    assert result.exit_code == 0, result.output
    assert store.get("m-1") is None  # the next claim is NEW
    assert redis_client.xlen(STREAM) == 1


def test_replay_of_an_old_message_without_record_needs_force(env: dict[str, str], redis_client: redis.Redis) -> None:
    two_minutes_ago = int((time.time() - 120) * 1000)
    dead_id = bury(
        redis_client, message("m-1", "default"), entry_id=f"{two_minutes_ago}-0", reason="poison", error="poison"
    )
    refused = invoke(env, "dead", "replay", dead_id, KSR_STATE_TTL="100")
    assert refused.exit_code == 1
    assert "may have expired" in refused.stderr and "--force" in refused.stderr
    assert redis_client.xlen(STREAM) == 0
    assert invoke(env, "dead", "replay", dead_id).exit_code == 0  # default TTL (7 days): never had a record
    dead_id = bury(
        redis_client, message("m-2", "default"), entry_id=f"{two_minutes_ago}-1", reason="poison", error="poison"
    )
    forced = invoke(env, "dead", "replay", dead_id, "--force", KSR_STATE_TTL="100")
    assert forced.exit_code == 0, forced.output
    assert redis_client.xlen(STREAM) == 2


def test_purge(env: dict[str, str], redis_client: redis.Redis) -> None:
    first = bury(redis_client, b"{}")
    bury(redis_client, b"{}")
    dry = invoke(env, "dead", "purge", first)
    assert dry.exit_code == 0 and "would remove 1" in dry.stdout and redis_client.xlen(STREAM + ":dead") == 2
    assert invoke(env, "dead", "purge", first, "--yes").exit_code == 0
    assert redis_client.xlen(STREAM + ":dead") == 1
    assert invoke(env, "dead", "purge").exit_code == 2  # ids or --all
    result = invoke(env, "dead", "purge", "--all", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["streams"] == {STREAM: {"matched": 1, "removed": 1}}
    assert redis_client.xlen(STREAM + ":dead") == 0


def test_list_by_reason_and_count_per_reason(env: dict[str, str], redis_client: redis.Redis) -> None:
    now = int(time.time() * 1000)
    bury(redis_client, message("p-1", "team-a"), entry_id=f"{now}-0")
    bury(redis_client, message("p-2", "team-a"), entry_id=f"{now}-1")
    bury(redis_client, b"garbage", entry_id=f"{now}-2", reason="invalid", error="payload: not valid JSON")
    rows = json.loads(invoke(env, "dead", "list", "--reason", "policy", "--json").stdout)
    assert [r["message_id"] for r in rows] == ["p-1", "p-2"]
    assert json.loads(invoke(env, "dead", "list", "--reason", "poison", "--json").stdout) == []
    counts = invoke(env, "dead", "reasons", "--json")
    assert counts.exit_code == 0, counts.output
    assert json.loads(counts.stdout) == {"policy": 2, "invalid": 1}
    table = invoke(env, "dead", "reasons").stdout.splitlines()
    assert table[1].split() == ["policy", "2"] and table[2].split() == ["invalid", "1"]


def test_replay_by_reason_and_all_with_a_summary(env: dict[str, str], redis_client: redis.Redis) -> None:
    now = int(time.time() * 1000)
    bury(redis_client, message("p-1", "default"), entry_id=f"{now}-0")
    bury(redis_client, message("p-2", "team-a"), entry_id=f"{now}-1")  # still refused by policy
    bury(redis_client, message("i-1", "default"), entry_id=f"{now}-2", reason="invalid", error="x")
    usage = invoke(env, "dead", "replay", "--reason", "policy", "--all")
    assert usage.exit_code == 2 and "one of the three" in usage.output
    result = invoke(env, "dead", "replay", "--reason", "policy", "--progress")
    assert result.exit_code == 1, result.output
    assert "summary: 1 replayed, 1 refused (1 still invalid)" in result.stderr
    assert "replaying dead entries" in result.stderr  # the progress bar
    assert [json.loads(f[b"payload"])["id"] for _, f in redis_client.xrange(STREAM)] == ["p-1"]
    assert redis_client.xlen(STREAM + ":dead") == 2
    rest = invoke(env, "dead", "replay", "--all", KSR_ALLOWED_NAMESPACES="default,team-a")
    assert rest.exit_code == 0, rest.output
    assert "summary: 2 replayed, 0 refused" in rest.stderr
    assert redis_client.xlen(STREAM + ":dead") == 0 and redis_client.xlen(STREAM) == 3
