"""`ksr jobs show` and `ksr jobs list` against a real redis-server: every place a message can
be (dead letters included), the ordered ms timeline, "no webhook", the list's filters."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
from click.testing import CliRunner, Result

from runner.cli import main
from runner.store.deadletter import dead_letter
from runner.store.record import Field
from runner.store.streams import Entry
from tests.support.messages import message
from tests.support.redis_server import RedisServer

STREAM = "ksr:jobs:default"
ISO_MS = re.compile(r"^  (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00)  (\S+)")


@pytest.fixture
def env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    redis_client.xgroup_create(STREAM, "ksr", id="0", mkstream=True)
    return {
        "REDIS_URL": redis_server.url,
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "POD_NAMESPACE": "default",
        "KSR_LOCK": "redis",
        "KSR_EXECUTOR": "local",
    }


def ksr(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def timeline_lines(out: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(ISO_MS.match, out.splitlines()) if m]


def test_a_dead_letter_without_a_record_is_found(env: dict[str, str], redis_client: redis.Redis) -> None:
    """It said `unknown` (exit 1): only the record, the held set and the unread entries were looked at."""
    payload = json.dumps(message("d-1", "team-a")).encode()
    entry = Entry(STREAM, f"{int(time.time() * 1000)}-0", {b"payload": payload}, 1, False)
    dead_id = dead_letter(redis_client, entry, group="ksr", reason="policy", error="job.namespace: 'team-a' refused")
    result = ksr(env, "jobs", "show", "d-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"d-1: dead letter in {STREAM}:dead ({dead_id}): policy"
    assert "job.namespace: 'team-a' refused" in result.stdout
    assert [kind for _, kind in timeline_lines(result.stdout)] == ["added", "dead_lettered"]
    doc = json.loads(ksr(env, "jobs", "show", "d-1", "--json").stdout)
    (place,) = doc["places"]
    assert (place["place"], place["reason"], place["entry_id"]) == ("dead", "policy", dead_id)


def test_a_message_s_text_reaches_the_terminal_escaped(env: dict[str, str], redis_client: redis.Redis) -> None:
    """An error text or a service from a message is the producer's: an ESC in it moved the
    operator's cursor (`\\x1b[2J` cleared the screen, a CSI could rewrite earlier lines)."""
    payload = json.dumps(message("esc-1", "team-a")).encode()
    entry = Entry(STREAM, f"{int(time.time() * 1000)}-0", {b"payload": payload}, 1, False)
    dead_letter(redis_client, entry, group="ksr", reason="invalid", error="job.env.\x1b[2J\x9bA\x07: bad name")
    out = ksr(env, "jobs", "show", "esc-1").stdout
    assert "job.env.\\x1b[2J\\u009bA\\x07: bad name" in out
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)
    listed = ksr(env, "dead", "list").stdout
    assert "\x1b" not in listed and "\x9b" not in listed


def test_the_timeline_is_in_time_order_with_milliseconds(env: dict[str, str], redis_client: redis.Redis) -> None:
    """`finished_at` was printed before `started_at` (fields in a fixed order), in whole seconds."""
    redis_client.hset(
        "ksr:msg:t-1",
        mapping={
            "state": "completed",
            "stream": STREAM,
            "entry_id": "1700000000100-0",
            "claimed_at": "1700000000200",
            "created_at": "1700000000300",
            "started_at": "1700000000450",
            "updated_at": "1700000000700",
            "finished_at": "1700000000700",
            "job_name": "job-t1",
            "namespace": "default",
        },
    )
    result = ksr(env, "jobs", "show", "t-1")
    assert result.exit_code == 0, result.output
    lines = timeline_lines(result.stdout)
    assert lines == [
        ("2023-11-14T22:13:20.100+00:00", "added"),
        ("2023-11-14T22:13:20.200+00:00", "claimed"),
        ("2023-11-14T22:13:20.300+00:00", "job_created"),
        ("2023-11-14T22:13:20.450+00:00", "pod_started"),
        ("2023-11-14T22:13:20.700+00:00", "ended"),
    ]
    doc = json.loads(ksr(env, "jobs", "show", "t-1", "--json").stdout)
    assert [(m["kind"], m["at_ms"]) for m in doc["timeline"]][3:] == [
        ("pod_started", 1700000000450),
        ("ended", 1700000000700),
    ]


def test_callbacks_of_a_message_without_a_webhook_say_no_webhook(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    """They said `in flight` for ever: nothing is ever delivered without a webhook."""
    redis_client.hset(
        "ksr:msg:n-1",
        mapping={
            "state": "created",
            "stream": STREAM,
            "entry_id": "1700000000100-0",
            "job_name": "job-n1",
            "created_at": "1700000000300",
            Field.marked(0): "1700000000300",
        },
    )
    result = ksr(env, "jobs", "show", "n-1")
    assert result.exit_code == 0, result.output
    assert "in flight" not in result.stdout
    assert "callback 0   no webhook (an event only)" in result.stdout
    doc = json.loads(ksr(env, "jobs", "show", "n-1", "--json").stdout)
    assert [c["delivery"] for c in doc["callbacks"]] == ["no webhook"]


def test_jobs_list_filters_newest_first(env: dict[str, str], redis_client: redis.Redis) -> None:
    from runner.lifecycle import State
    from runner.store.events import append_event
    from runner.store.state import StateStore

    store = StateStore(redis_client, ttl_seconds=3600)
    for n, (stream, service, ns, state) in enumerate(
        [
            (STREAM, "a", "ns1", State.COMPLETED),
            ("ksr:jobs:low", "b", "ns1", State.FAILED),
            (STREAM, "b", "ns2", State.COMPLETED),
        ]
    ):
        mid = f"l-{n}"
        store.claim(mid, stream=stream, entry_id="1-0")
        store.record_job(mid, job_name=f"job-{n}", namespace=ns, job_uid="u", service=service)
        store.finish(mid, state)
        append_event(redis_client, message_id=mid, status=2 if state is State.COMPLETED else 3, detail={})
    store.claim("live-1", stream=STREAM, entry_id="2-0")  # a live Job with no event: listed too
    store.record_job("live-1", job_name="job-live", namespace="ns1", job_uid="u", service="a")

    def ids(*args: str) -> list[str]:
        result = ksr(env, "jobs", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["message_id"] for r in json.loads(result.stdout)]

    assert ids() == ["live-1", "l-2", "l-1", "l-0"]
    assert ids("--state", "completed") == ["l-2", "l-0"]
    assert ids("--stream", "ksr:jobs:low") == ["l-1"]
    assert ids("--service", "b", "--namespace", "ns2") == ["l-2"]
    assert ids("--since", "1h", "--state", "failed") == ["l-1"]
    assert ids("--since", "2999-01-01T00:00:00+00:00") == []
    assert ids("--limit", "2") == ["live-1", "l-2"]
    bad = ksr(env, "jobs", "list", "--since", "yesterday")
    assert bad.exit_code == 2 and "'--since'" in bad.output
    naive = ksr(env, "jobs", "list", "--since", "2026-01-01T00:00:00")
    assert naive.exit_code == 2 and "UTC offset" in naive.output
