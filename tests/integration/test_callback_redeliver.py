"""Re-delivery of one callback (runner/operate/redeliver.py, lua/cb_redeliver.lua), as
`ksr callbacks redeliver ID STATUS` and the console's "re-deliver" button, over messages a
real runner (local executor) finished and a real RQ worker delivered to real receivers:
the second callback carries the same body, is noted after the first in the attempt log and
counted; every refusal says why, exits 1 and changes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from probes.app import create_app
from runner.cli import main
from runner.settings import Settings
from runner.store.record import StateRecord
from tests.support.console import STREAM, TOKEN, env_for
from tests.support.messages import message
from tests.support.pipeline import rq_worker, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer

OK, CONSOLE, NO_HOOK, GONE, RETRYING = "rd-ok", "rd-console", "rd-nohook", "rd-gone", "rd-retry"


@dataclass
class Deployment:
    env: dict[str, str]
    conn: redis.Redis
    ok: Receiver  # answers 200
    retrying: Receiver  # answers 503 to callback 2: it is retried all along


def record(conn: redis.Redis, message_id: str) -> StateRecord:
    return StateRecord.from_reply(conn.hgetall(f"ksr:msg:{message_id}"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One redis-server, runner and worker for the module; they keep running, so a
    re-delivery is delivered by the same worker as the first delivery."""
    tmp = tmp_path_factory.mktemp("redeliver")
    metrics_dir = tmp / "metrics"
    metrics_dir.mkdir()
    with ExitStack() as stack:
        server = RedisServer().start()
        stack.callback(server.close)
        ok, gone, retrying = Receiver().start(), Receiver().start(), Receiver().start()
        for r in (ok, gone, retrying):
            stack.callback(r.close)
        gone.answer = 410
        retrying.answers = {2: 503}
        env = {
            **env_for(server.url, tmp),
            "KSR_RUNTIME_DIR": str(tmp / "runtime"),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "KSR_CALLBACK_MAX_ATTEMPTS": "500",  # rd-retry's 2 must stay in flight through the module
        }
        conn = server.client()
        stack.enter_context(rq_worker(env))
        stack.enter_context(runner_thread(env))
        for mid, hook in ((OK, ok.url), (CONSOLE, ok.url), (NO_HOOK, None), (GONE, gone.url), (RETRYING, retrying.url)):
            xadd(conn, STREAM, message(mid, "default", webhook=hook, command=["true"]))
        ok.wait_for_callbacks([OK, CONSOLE], timeout=60, what="callbacks 0, 1, 2 delivered")
        wait_for(
            lambda: (
                record(conn, GONE).callback_outcome(2) == "gone"
                and record(conn, RETRYING).callback_attempts(2) >= 1
                and record(conn, NO_HOOK).state is not None
                and record(conn, NO_HOOK).is_terminal
            ),
            timeout=60,
            what="the gone, retried and webhook-less messages",
        )
        yield Deployment(env, conn, ok, retrying)


def ksr(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def delivered_count(env: dict[str, str], status: int) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=env["PROMETHEUS_MULTIPROC_DIR"])
    return sum(
        s.value
        for m in registry.collect()
        if m.name == "ksr_callbacks"
        for s in m.samples
        if s.name == "ksr_callbacks_total" and s.labels == {"status": str(status), "outcome": "delivered"}
    )


def requests_of(receiver: Receiver, message_id: str, status: int) -> list[dict[str, Any]]:
    with receiver._mutex:
        return [r for r in receiver.requests if r["body"]["id"] == message_id and r["body"]["status"] == status]


def last_audit(conn: redis.Redis) -> dict[str, Any]:
    (_, fields), *_ = conn.xrevrange("ksr:events", count=1)
    entry = {k.decode(): v.decode() for k, v in fields.items()}
    return {**entry, "detail": json.loads(entry.get("detail", "{}"))}


def test_callback_2_is_delivered_again_with_the_same_body_noted_and_counted(deployment: Deployment):
    env, conn = deployment.env, deployment.conn
    first = requests_of(deployment.ok, OK, 2)
    assert len(first) == 1
    counted = delivered_count(env, 2)
    done = ksr(env, "callbacks", "redeliver", OK, "2", "--by", "ops-alice", "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert (doc["id"], doc["status"], doc["redelivered"]) == (OK, 2, True) and doc["courier"]

    wait_for(lambda: len(requests_of(deployment.ok, OK, 2)) == 2, timeout=30, what="the second callback 2")
    wait_for(lambda: record(conn, OK).callback_outcome(2) == "delivered", timeout=30, what="cbd_2 delivered again")
    again = requests_of(deployment.ok, OK, 2)[1]
    assert again["body"] == first[0]["body"]
    assert again["headers"]["webhook-id"] == first[0]["headers"]["webhook-id"] == f"{OK}:2"
    # Only 2 was sent again: 0 and 1 stay as they were.
    assert [len(requests_of(deployment.ok, OK, s)) for s in (0, 1)] == [1, 1]

    rec = record(conn, OK)
    notes = rec.callback_attempt_log(2)
    assert [(n.number, n.outcome, n.http_status) for n in notes] == [(1, "delivered", 200), (2, "delivered", 200)]
    assert notes[0].at_ms < notes[1].at_ms
    assert rec.callback_attempts(2) == 2 and rec.callback_tries(2) == 1
    assert rec.callback_owner is None  # the courier released the lease
    assert not conn.zscore("ksr:callbacks:owed", f"2:{OK}")
    wait_for(lambda: delivered_count(env, 2) == counted + 1, timeout=10, what="the re-delivery counted")

    audit = last_audit(conn)
    assert (audit["action"], audit["id"], audit["by"]) == ("callback.redeliver", OK, "ops-alice")
    assert audit["detail"]["status"] == 2 and audit["detail"]["courier"] == doc["courier"]

    shown = ksr(env, "jobs", "show", OK)
    assert shown.exit_code == 0, shown.output
    lines = [line for line in shown.output.splitlines() if "callback 2 attempt" in line]
    assert len(lines) == 2 and "attempt 1" in lines[0] and "attempt 2" in lines[1], shown.output


@pytest.mark.parametrize(
    ("message_id", "status", "reason", "says"),
    [
        ("rd-never-seen", "2", "unknown", "no state record for message rd-never-seen"),
        (OK, "3", "not_marked", f"callback 3 of {OK} was never owed"),
        (NO_HOOK, "2", "no_webhook", f"message {NO_HOOK} has no webhook"),
        (GONE, "0", "gone", "answered 410 Gone"),
        (GONE, "2", "gone", "answered 410 Gone"),
        (RETRYING, "2", "in_flight", f"callback 2 of {RETRYING} is still in flight"),
    ],
)
def test_a_refused_redelivery_exits_1_naming_why_and_changes_nothing(
    deployment: Deployment, message_id: str, status: str, reason: str, says: str
):
    env, conn = deployment.env, deployment.conn
    before = record(conn, message_id)
    done = ksr(env, "callbacks", "redeliver", message_id, status)
    assert done.exit_code == 1 and says in done.output, done.output
    after = record(conn, message_id)
    assert f"cbr_{status}" not in after
    assert after.callback_outcome(int(status)) == before.callback_outcome(int(status))
    audit = last_audit(conn)
    assert (audit["action"], audit["id"], audit["detail"]["refused"]) == ("callback.redeliver", message_id, reason)

    as_json = ksr(env, "callbacks", "redeliver", message_id, status, "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {
        "id": message_id,
        "status": int(status),
        "redelivered": False,
        "reason": reason,
    }


def test_a_callback_being_retried_stays_with_its_courier(deployment: Deployment):
    """Callback 2 of rd-retry answers 503 all along: its retries go on as before the refusal."""
    env, conn = deployment.env, deployment.conn
    tried = record(conn, RETRYING).callback_attempts(2)
    assert ksr(env, "callbacks", "redeliver", RETRYING, "2").exit_code == 1
    wait_for(
        lambda: record(conn, RETRYING).callback_attempts(2) > tried, timeout=30, what="the next retry of callback 2"
    )
    rec = record(conn, RETRYING)
    assert rec.callback_outcome(2) is None and rec.callback_redelivery(2) is None


def test_a_status_that_is_not_a_callback_is_a_usage_error(deployment: Deployment):
    done = ksr(deployment.env, "callbacks", "redeliver", OK, "7")
    assert done.exit_code == 2 and "Invalid value for 'STATUS'" in done.output, done.output


# -- the console ---------------------------------------------------------------------------------


def console(env: dict[str, str]) -> FlaskClient:
    return create_app(
        Settings.from_env({**env, "KSR_CONSOLE_ACTIONS": "true", "KSR_CONSOLE_TOKEN": TOKEN})
    ).test_client()


def test_the_console_redelivers_through_the_confirm_with_token_and_csrf(deployment: Deployment):
    env, conn = deployment.env, deployment.conn
    page_of = f"/ui/message?id={CONSOLE}"
    anonymous = console(env)
    form = {"id": CONSOLE, "status": "1"}
    assert anonymous.post("/ui/message/redeliver", data=form).status_code == 401  # no token

    client = console(env)
    assert client.post("/ui/login", data={"token": TOKEN, "who": "bob"}).status_code == 302
    page = client.get(page_of).get_data(as_text=True)
    # Each ended callback offers it; the gone, in-flight and webhook-less ones do not.
    assert all(f'id="redeliver-{s}"' in page for s in (0, 1, 2))
    for other in (GONE, RETRYING, NO_HOOK):
        assert 'id="redeliver-' not in client.get(f"/ui/message?id={other}").get_data(as_text=True)

    confirm = client.get(f"/ui/message/confirm?id={CONSOLE}&action=redeliver&status=1")
    assert confirm.status_code == 200
    text = confirm.get_data(as_text=True)
    assert "Re-deliver callback?" in text and f"{CONSOLE} callback 1" in text
    csrf = re.search(r'name="csrf" value="([^"]+)"', text).group(1)  # type: ignore[union-attr]
    assert client.get(f"/ui/message/confirm?id={RETRYING}&action=redeliver&status=2").status_code == 404

    assert client.post("/ui/message/redeliver", data=form).status_code == 403  # no CSRF token
    assert client.post("/ui/message/redeliver", data={**form, "csrf": csrf[::-1]}).status_code == 403
    assert len(requests_of(deployment.ok, CONSOLE, 1)) == 1  # nothing changed
    assert "cbr_1" not in record(conn, CONSOLE)

    r = client.post("/ui/message/redeliver", data={**form, "csrf": csrf})
    assert r.status_code == 200 and f"callback 1 of {CONSOLE} owed again" in r.get_data(as_text=True)
    wait_for(lambda: len(requests_of(deployment.ok, CONSOLE, 1)) == 2, timeout=30, what="callback 1 again")
    audit = last_audit(conn)
    assert (audit["action"], audit["id"], audit["by"]) == ("callback.redeliver", CONSOLE, "bob@127.0.0.1")

    refused = client.post("/ui/message/redeliver", data={"id": GONE, "status": "2", "csrf": csrf})
    assert refused.status_code == 200 and "answered 410 Gone" in refused.get_data(as_text=True)


def test_a_message_whose_courier_holds_the_lease_is_refused_as_busy(deployment: Deployment):
    """A live owner lease (written as lib_owner.lua writes it: a courier at work on the
    message) refuses a re-delivery of an ended status too: never two couriers at once."""
    env, conn = deployment.env, deployment.conn
    seconds, micros = conn.time()
    now_ms = seconds * 1000 + micros // 1000
    key = f"ksr:msg:{CONSOLE}"
    conn.hset(key, "cb_owner", f"someone-else {now_ms + 60_000} {now_ms}")
    try:
        done = ksr(env, "callbacks", "redeliver", CONSOLE, "0")
        assert done.exit_code == 1 and "courier someone-else is delivering" in done.output, done.output
        assert record(conn, CONSOLE).callback_outcome(0) == "delivered" and "cbr_0" not in record(conn, CONSOLE)
    finally:
        conn.hdel(key, "cb_owner")
    # A lapsed lease is no obstacle (its holder is gone): the re-delivery takes it over.
    conn.hset(key, "cb_owner", f"lapsed {now_ms - 1} {now_ms - 60_000}")
    done = ksr(env, "callbacks", "redeliver", CONSOLE, "0")
    assert done.exit_code == 0, done.output
    wait_for(lambda: len(requests_of(deployment.ok, CONSOLE, 0)) == 2, timeout=30, what="callback 0 again")
