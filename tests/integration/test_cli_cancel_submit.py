"""`ksr cancel` of an id never seen, `ksr submit` of an id already known, `--at` without a
UTC offset, durations for people: against a real redis-server."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from click.testing import CliRunner, Result

from runner.cli import main
from runner.store.state import StateStore
from tests.support.messages import message
from tests.support.redis_server import RedisServer

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "POD_NAMESPACE": "default",
        "KSR_LOCK": "redis",
        "KSR_EXECUTOR": "local",
    }


def ksr(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def test_cancel_of_an_id_never_seen_exits_1_and_blocks_nothing(env: dict[str, str], redis_client: redis.Redis) -> None:
    """It exited 0 and wrote a `cancelled` record: the id was blocked for KSR_STATE_TTL."""
    result = ksr(env, "cancel", "typo-1")
    assert result.exit_code == 1, result.output
    assert "no message typo-1 known" in result.stderr and "--force" in result.stderr
    assert not redis_client.exists("ksr:msg:typo-1")
    forced = ksr(env, "cancel", "typo-1", "--force")
    assert forced.exit_code == 0, forced.output
    assert redis_client.hget("ksr:msg:typo-1", "state") == b"cancelled"


def test_cancel_of_a_message_not_read_yet_needs_no_force(env: dict[str, str], redis_client: redis.Redis) -> None:
    redis_client.xadd(STREAM, {"payload": json.dumps(message("unread-1", "default"))})
    result = ksr(env, "cancel", "unread-1")
    assert (result.exit_code, result.stdout) == (
        0,
        "cancelled unread-1: not read yet; the runner drops it when it does\n",
    )


def test_submit_of_a_known_id_warns_on_stderr_and_exits_0(env: dict[str, str], redis_client: redis.Redis) -> None:
    """It said nothing, though the runner drops the message as a duplicate."""
    store = StateStore(redis_client, ttl_seconds=3600)
    store.claim("known-1", stream=STREAM, entry_id="1-0")
    store.record_job("known-1", job_name="job-k", namespace="default", job_uid="u")
    body = json.dumps([message("known-1", "default"), message("fresh-1", "default")])
    result = ksr(env, "submit", "-", stdin=body)
    assert result.exit_code == 0, result.output
    assert "warning: known-1 already has a record (created): the runner drops it as a duplicate" in result.stderr
    assert "fresh-1" not in result.stderr
    assert len(result.stdout.splitlines()) == 2  # both submitted: the warning changes nothing
    assert redis_client.xlen(STREAM) == 2


def test_at_without_an_offset_is_a_usage_error_naming_at(env: dict[str, str], redis_client: redis.Redis) -> None:
    """It exited 1 naming `runAt`, a field the user never wrote."""
    naive = ksr(env, "submit", "--at", "2030-01-01T00:00:00", "-", stdin=json.dumps(message("t-1", "default")))
    assert naive.exit_code == 2, naive.output
    assert "'--at'" in naive.stderr and "UTC offset" in naive.stderr
    assert not redis_client.exists(STREAM)
    soon = datetime.fromtimestamp(time.time() + 3600, tz=timezone(timedelta(hours=1))).isoformat(timespec="seconds")
    good = ksr(env, "submit", "--at", soon, "-", stdin=json.dumps(message("t-1", "default")))
    assert good.exit_code == 0, good.output
    (entry,) = redis_client.xrange(STREAM)
    assert json.loads(entry[1][b"payload"])["runAt"] == soon


def test_scheduled_list_says_in_how_long_for_people(env: dict[str, str], redis_client: redis.Redis) -> None:
    """It printed `3599s`."""
    from runner.store.schedule import ScheduledStore

    now = float(redis_client.time()[0])
    ScheduledStore(redis_client, streams=[STREAM]).schedule(
        STREAM, "later-1", due=now + 3600 + 30, payload="{}", term=None
    )
    out = ksr(env, "scheduled", "list").stdout
    (row,) = out.splitlines()[1:]
    assert row.split()[-1] == "1h00m", out
