"""The console (probes/console/) as Flask serves it, over a real redis-server holding what a
real runner left (tests/support/console.py's workload): each page's data, the search in
every place, the filters, the hostile strings rendered inert, and every action refused
without the token or the CSRF token (nothing changed), done with them.

The same app under gunicorn, in Chromium: tests/e2e/test_console_browser.py."""

from __future__ import annotations

import datetime
import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from probes.app import create_app
from runner import __version__
from runner.settings import Settings
from runner.store.presence import PresenceKeys, read_heartbeats
from tests.support.console import HOSTILE_COMMAND, STREAM, TOKEN, Workload, beat, env_for, make_workload
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    # The module's own server: its db 0 holds the workload all read tests share (nothing
    # here writes to it); each action test makes its own in another db.
    s = RedisServer().start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def base(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("console")
    return {**env_for(server.url, tmp), "KSR_RUNTIME_DIR": str(tmp / "runtime")}


@pytest.fixture(scope="module")
def workload(server: RedisServer, base: dict[str, str]) -> Workload:
    conn = server.client()
    w = make_workload(base, conn)
    settings = Settings.from_env(base)
    # The runner's own heartbeat (runner/pipeline/presence.py), before the test's replace it:
    # its last, written as it stepped down at the clean stop.
    (own,) = read_heartbeats(conn, PresenceKeys.for_prefix(settings.state.key_prefix))
    assert (own.identity, own.version, own.leading, own.leading_since) == ("console-a", __version__, False, None)
    assert own.started <= own.last_seen
    now = time.time()
    beat(conn, settings, "console-a", leading=True, now=now)
    beat(conn, settings, "console-b", leading=False, now=now)
    return w


def app_for(env: dict[str, str], **extra: str) -> FlaskClient:
    return create_app(Settings.from_env({**env, **extra})).test_client()


@pytest.fixture(scope="module")
def reader(base: dict[str, str], workload: Workload) -> FlaskClient:
    return app_for(base)


def body(client: FlaskClient, path: str, status: int = 200) -> str:
    r = client.get(path)
    assert r.status_code == status, (path, r.status_code, r.get_data(as_text=True)[:500])
    return r.get_data(as_text=True)


def main_of(page: str) -> str:
    return page.split('<main id="main"', 1)[1].split("</main>", 1)[0]


# -- read pages --------------------------------------------------------------------------------


def test_the_overview_shows_leader_replicas_streams_jobs_and_throughput(reader: FlaskClient):
    page = main_of(body(reader, "/ui/"))
    assert '<div class="v" id="leader">console-a</div>' in page
    assert "term 3" in page
    replicas = re.findall(r"<tr><td>(console-[ab])</td><td><span class=\"pill[^\"]*\">(leader|follower)</span>", page)
    assert replicas == [("console-a", "leader"), ("console-b", "follower")]
    row = page.split(f'data-stream="{STREAM}"', 1)[1].split("</tr>", 1)[0]
    assert '<a href="/ui/dead">3</a>' in row  # three dead letters: policy, bad id, not UTF-8
    assert '<div class="v" id="active-jobs">0 <small>/ 500</small>' in page
    # The leader counted 3 Jobs dispatched (ok, failed, hostile), 2 completed, 1 failed.
    assert re.findall(r'class="key (\w+)">\w+ (\d+)', page) == [
        ("dispatched", "3"),
        ("completed", "2"),
        ("failed", "1"),
    ]
    assert page.count("<polyline") == 3
    assert "nightly" in page and "30 2 * * *" in page


def test_the_overview_of_a_follower_replica_names_the_leader(base: dict[str, str], workload: Workload):
    follower = app_for(base, POD_NAME="console-b")
    page = body(follower, "/ui/")
    assert "served by <b>console-b</b>" in page
    assert '<div class="v" id="leader">console-a</div>' in page


def test_search_finds_a_finished_message_with_its_timeline_in_ms_order(reader: FlaskClient, workload: Workload):
    r = reader.get(f"/ui/messages?id={workload.ok_id}")
    assert r.status_code == 302 and r.headers["Location"] == f"/ui/message?id={workload.ok_id}"
    page = body(reader, r.headers["Location"])
    assert '<span class="pill state-finished" id="where">finished</span>' in page
    stamps = [int(t) for t in re.findall(r'data-at="(\d+)"', page)]
    kinds = re.findall(r'data-kind="(\w+)"', page)
    assert stamps == sorted(stamps) and len(stamps) >= 8
    for first, then in (("added", "claimed"), ("claimed", "job_created"), ("job_created", "pod_started")):
        assert kinds.index(first) < kinds.index(then)
    assert kinds.index("pod_started") < kinds.index("ended")
    attempts = re.findall(r'data-kind="callback_attempt".*?<td>(\d+)</td>\s*<td class="n">(\d+) ms</td>', page, re.S)
    assert [a[0] for a in attempts] == ["200", "200", "200"]  # callbacks 0, 1, 2, each answered at once
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", page)
    assert re.search(r'id="job-name">local/job-[0-9a-f]+<', page)


def test_the_payload_is_shown_with_env_values_masked(reader: FlaskClient, workload: Workload):
    page = body(reader, f"/ui/message?id={workload.ok_id}")
    payload = html.unescape(page.split('id="payload" class="payload">', 1)[1].split("</pre>", 1)[0])
    assert '"name": "DB_PASSWORD"' in payload and '"value": "***"' in payload
    assert workload.secret_value not in page


@pytest.mark.parametrize(
    ("which", "where", "state"),
    [("dead_id", "finished", "dead"), ("failed_id", "finished", "failed"), ("hostile_id", "dead", None)],
)
def test_search_finds_a_message_where_it_is(
    reader: FlaskClient, workload: Workload, which: str, where: str, state: str | None
):
    page = body(reader, "/ui/message?id=" + quote(getattr(workload, which), safe=""))
    assert f'id="where">{where}</span>' in page
    assert (f'id="record-state">{state}</b>' in page) if state else ('id="record-state"' not in page)


def test_an_id_found_nowhere_is_a_404_saying_so(reader: FlaskClient, workload: Workload):
    page = body(reader, "/ui/message?id=no-such-id", status=404)
    assert "Not found" in page


def test_the_recent_list_is_newest_first_and_the_filters_narrow_it(reader: FlaskClient, workload: Workload):
    ids = re.findall(r'<tr data-id="([^"]*)">', body(reader, "/ui/messages"))
    assert set(ids) == {workload.ok_id, workload.failed_id, workload.dead_id, workload.hostile_payload_id}
    stamps = re.findall(r'<td class="mono">(\d{4}-[^<]+Z)</td>', body(reader, "/ui/messages"))
    # Ordered by event id (Redis's clock at the XADD); the time shown is the writer's, taken
    # just before: two trackers' events can swap by a few ms, never by a second.
    times = [datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in stamps]
    assert len(times) == 4 and all(a >= b - 1.0 for a, b in zip(times, times[1:]))
    assert re.findall(r'<tr data-id="([^"]*)">', body(reader, "/ui/messages?state=failed")) == [workload.failed_id]
    assert re.findall(r'<tr data-id="([^"]*)">', body(reader, "/ui/messages?service=billing")) == [workload.failed_id]
    assert re.findall(r'<tr data-id="([^"]*)">', body(reader, "/ui/messages?state=dead")) == [workload.dead_id]
    assert re.findall(r'<tr data-id="([^"]*)">', body(reader, "/ui/messages?namespace=nowhere")) == []
    assert len(re.findall(r"<tr data-id=", body(reader, "/ui/messages?since=15m"))) == 4


def test_dead_letters_are_grouped_by_reason_with_counts(reader: FlaskClient, workload: Workload):
    page = body(reader, "/ui/dead")
    groups = dict(re.findall(r'data-reason="(\w+)">.*?<td class="n">(\d+)</td>', page, re.S))
    assert groups == {"invalid": "2", "policy": "1"}
    assert "replay…" not in page  # read-only: no action offered


def test_failures_pending_schedules_and_config_render(reader: FlaskClient, workload: Workload):
    failures = body(reader, "/ui/failures")
    assert workload.failed_id in failures
    assert "nothing pending" in body(reader, "/ui/pending")
    schedules = body(reader, "/ui/schedules")
    assert 'data-schedule="nightly"' in schedules and ">active<" in schedules
    config = body(reader, "/ui/config")
    assert "KSR_CONSOLE_TOKEN" in config


def test_the_static_files_and_headers_allow_nothing_from_elsewhere(reader: FlaskClient):
    r = reader.get("/ui/")
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self'")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    page = r.get_data(as_text=True)
    assert re.findall(r'(?:src|href)="(https?:)?//', page) == []
    css = reader.get("/ui/static/console.css")
    assert css.status_code == 200 and css.mimetype == "text/css" and b"polyline" not in css.data
    assert reader.get("/ui/static/console.js").status_code == 200


def test_a_partial_request_renders_the_main_only(reader: FlaskClient):
    r = reader.get("/ui/", headers={"X-Console-Partial": "1"})
    text = r.get_data(as_text=True)
    assert r.status_code == 200 and "<html" not in text and 'id="leader"' in text


# -- hostile strings ---------------------------------------------------------------------------


def test_a_hostile_id_and_payload_render_as_text(reader: FlaskClient, workload: Workload):
    for path in (
        "/ui/message?id=" + quote(workload.hostile_id, safe=""),
        f"/ui/message?id={workload.hostile_payload_id}",
        "/ui/dead",
        "/ui/messages",
    ):
        page = body(reader, path)
        assert "<script>window" not in page and "<img src=x" not in page, path
    page = body(reader, "/ui/message?id=" + quote(workload.hostile_id, safe=""))
    assert html.unescape(page.split('id="message-id">', 1)[1].split("</span>", 1)[0]) == workload.hostile_id
    page = body(reader, f"/ui/message?id={workload.hostile_payload_id}")
    payload = html.unescape(page.split('id="payload" class="payload">', 1)[1].split("</pre>", 1)[0])
    assert HOSTILE_COMMAND.replace('"', '\\"').replace("\x1b", "\\u001b") in payload


def test_a_dead_letter_that_is_not_utf8_renders_replaced(reader: FlaskClient, workload: Workload):
    page = body(reader, "/ui/dead/confirm?stream=" + quote(STREAM) + "&reason=invalid&action=replay")
    assert "not valid UTF-8" in page and "<script>window" not in page


def test_a_very_long_search_is_cut_not_an_error(reader: FlaskClient):
    assert body(reader, "/ui/message?id=" + "a" * 100_000, status=404).count("a" * 1024) >= 1


# -- actions -------------------------------------------------------------------------------


@pytest.fixture
def own_db(server: RedisServer, base: dict[str, str], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A db of this test's own (1..15, by test name), with a small workload of its own."""
    db = 1 + sum(map(ord, request.node.name)) % 15
    url = f"{server.url.rsplit('/', 1)[0]}/{db}"
    conn = server.client(db)
    conn.flushdb()
    env = {**base, "REDIS_URL": url}
    w = make_workload(env, conn, prefix="a")
    yield {"env": env, "conn": conn, "w": w}
    conn.flushdb()


def acting(env: dict[str, str], **extra: str) -> FlaskClient:
    return app_for(env, KSR_CONSOLE_ACTIONS="true", KSR_CONSOLE_TOKEN=TOKEN, **extra)


def log_in(client: FlaskClient) -> str:
    r = client.post("/ui/login", data={"token": TOKEN, "who": "alice"})
    assert r.status_code == 302
    page = body(client, "/ui/dead/confirm?stream=" + quote(STREAM) + "&reason=policy&action=replay")
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def replay_form(csrf: str | None) -> dict[str, str]:
    form = {"stream": STREAM, "reason": "policy", "action": "replay"}
    return form if csrf is None else {**form, "csrf": csrf}


def test_actions_are_refused_without_the_token_or_the_csrf_token_and_change_nothing(own_db: dict[str, Any]):
    env, conn = own_db["env"], own_db["conn"]
    before = (conn.xlen(STREAM + ":dead"), conn.xlen(STREAM))
    disabled = app_for(env)  # actions off
    assert disabled.post("/ui/dead/act", data=replay_form(None)).status_code == 403
    client = acting(env, KSR_ALLOWED_NAMESPACES="default,forbidden-ns")
    assert client.post("/ui/dead/act", data=replay_form(None)).status_code == 401  # not logged in
    assert (
        client.post("/ui/dead/act", data=replay_form("x"), headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    assert client.post("/ui/login", data={"token": "wrong-token-wrong-token", "who": "eve"}).status_code == 401
    csrf = log_in(client)
    assert client.post("/ui/dead/act", data=replay_form(None)).status_code == 403  # no CSRF token
    assert client.post("/ui/dead/act", data=replay_form(csrf[::-1])).status_code == 403  # a wrong one
    assert client.post("/ui/message/cancel", data={"id": own_db["w"].ok_id}).status_code == 403
    assert (conn.xlen(STREAM + ":dead"), conn.xlen(STREAM)) == before


def test_replay_of_a_reason_with_the_csrf_token_puts_it_back_and_says_who(own_db: dict[str, Any]):
    env, conn, w = own_db["env"], own_db["conn"], own_db["w"]
    client = acting(env, KSR_ALLOWED_NAMESPACES="default,forbidden-ns")  # the policy changed since
    csrf = log_in(client)
    page = body(client, "/ui/dead/confirm?stream=" + quote(STREAM) + "&reason=policy&action=replay")
    assert "Replay 1 dead letter?" in page
    r = client.post("/ui/dead/act", data=replay_form(csrf))
    assert r.status_code == 200 and "replayed 1, refused 0" in r.get_data(as_text=True)
    assert conn.xlen(STREAM + ":dead") == 2
    payloads = [f[b"payload"] for _, f in conn.xrange(STREAM) if b"payload" in f]
    assert sum(1 for p in payloads if f'"id": "{w.dead_id}"'.encode() in p) == 2  # the first try and the replay
    (_, audit), *_ = conn.xrevrange("ksr:events", count=1)
    assert audit[b"action"] == b"dead.replay" and audit[b"by"].startswith(b"alice@")


def test_a_bearer_token_acts_without_a_cookie(own_db: dict[str, Any]):
    env, conn, w = own_db["env"], own_db["conn"], own_db["w"]
    client = acting(env, KSR_ALLOWED_NAMESPACES="default,forbidden-ns")
    dead_id = next(i.decode() for i, f in conn.xrange(STREAM + ":dead") if f[b"reason"] == b"policy")
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "script"}
    r = client.post("/ui/message/replay", data={"stream": STREAM, "dead_id": dead_id}, headers=headers)
    assert r.status_code == 200 and r.get_data(as_text=True).startswith(f"replayed {dead_id} to {STREAM} as ")
    # A finished message cannot be cancelled: refused, and the answer says why.
    r = client.post("/ui/message/cancel", data={"id": w.ok_id}, headers=headers)
    assert r.status_code == 409 and "finished" in r.get_data(as_text=True)


def test_pause_and_resume_of_a_stream_and_a_schedule(own_db: dict[str, Any]):
    env, conn = own_db["env"], own_db["conn"]
    client = acting(env)
    csrf = log_in(client)
    assert "Pause stream?" in body(client, "/ui/streams/confirm?stream=" + quote(STREAM) + "&action=pause")
    r = client.post("/ui/streams/act", data={"stream": STREAM, "action": "pause", "csrf": csrf})
    assert f"paused {STREAM}" in r.get_data(as_text=True)
    assert conn.hexists("ksr:paused:streams", STREAM)
    assert "paused by alice@" in body(client, "/ui/")
    client.post("/ui/streams/act", data={"stream": STREAM, "action": "resume", "csrf": csrf})
    assert not conn.hexists("ksr:paused:streams", STREAM)
    r = client.post("/ui/schedules/act", data={"name": "nightly", "action": "suspend", "csrf": csrf})
    assert "suspended nightly" in r.get_data(as_text=True) and conn.hexists("ksr:paused:schedules", "nightly")
    r = client.post("/ui/schedules/act", data={"name": "typo", "action": "suspend", "csrf": csrf})
    assert r.status_code == 400 and "'typo' is not a schedule of KSR_SCHEDULES" in html.unescape(
        r.get_data(as_text=True)
    )
    r = client.post("/ui/streams/act", data={"stream": "other", "action": "pause", "csrf": csrf})
    assert r.status_code == 400 and not conn.hexists("ksr:paused:streams", "other")


# -- reading behind the token, switched off ----------------------------------------------------


def test_read_auth_sends_a_browser_to_the_login_and_a_script_gets_401(base: dict[str, str], workload: Workload):
    client = app_for(base, KSR_CONSOLE_TOKEN=TOKEN, KSR_CONSOLE_READ_AUTH="true")
    r = client.get("/ui/messages")
    assert r.status_code == 302 and r.headers["Location"].startswith("/ui/login?next=")
    assert client.get("/ui/", headers={"X-Console-Partial": "1"}).status_code == 401
    assert client.get("/ui/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/ui/static/console.css").status_code == 200
    r = client.post("/ui/login", data={"token": TOKEN, "who": "bob", "next": "//evil.example/"})
    assert r.headers["Location"] == "/ui/"  # no open redirect
    assert client.get("/ui/").status_code == 200


def test_the_console_can_be_switched_off(base: dict[str, str], workload: Workload):
    client = app_for(base, KSR_CONSOLE_ENABLED="false")
    assert client.get("/ui/").status_code == 404
    assert client.get("/status").status_code == 200


def test_the_cli_and_the_console_pause_through_the_same_action(own_db: dict[str, Any]):
    """runner/operate is the one implementation: the same flag, the same audit entry, only `by` differs."""
    from click.testing import CliRunner

    from runner.cli import main

    env, conn = own_db["env"], own_db["conn"]
    done = CliRunner().invoke(main, ["pause", STREAM, "--by", "cli-user"], env=env)
    assert done.exit_code == 0, done.output
    (_, by_cli), *_ = conn.xrevrange("ksr:events", count=1)
    assert json.loads(conn.hget("ksr:paused:streams", STREAM))["by"] == "cli-user"
    assert CliRunner().invoke(main, ["resume", STREAM], env=env).exit_code == 0
    client = acting(env)
    csrf = log_in(client)
    client.post("/ui/streams/act", data={"stream": STREAM, "action": "pause", "csrf": csrf})
    (_, by_console), *_ = conn.xrevrange("ksr:events", count=1)
    assert json.loads(conn.hget("ksr:paused:streams", STREAM))["by"].startswith("alice@")
    strip = {b"by", b"ts", b"detail"}
    assert {k: v for k, v in by_cli.items() if k not in strip} == {
        k: v for k, v in by_console.items() if k not in strip
    }
    assert by_cli[b"action"] == b"stream.pause" and by_cli[b"id"] == STREAM.encode()


def test_resend_of_a_finished_message_through_the_confirm(own_db: dict[str, Any]):
    env, conn, w = own_db["env"], own_db["conn"], own_db["w"]
    client = acting(env)
    csrf = log_in(client)
    assert 'id="resend"' in body(client, f"/ui/message?id={w.failed_id}")
    assert 'id="resend"' not in body(client, f"/ui/message?id={w.dead_id}")  # a dead letter is replayed
    page = body(client, f"/ui/message/confirm?id={w.failed_id}&action=resend")
    assert "Re-send message?" in page and 'name="new_id"' in page
    r = client.post("/ui/message/resend", data={"id": w.failed_id, "new_id": "a-again", "csrf": csrf})
    assert r.status_code == 200 and f"re-sent {w.failed_id} as a-again to {STREAM}" in r.get_data(as_text=True)
    (_, fields), *_ = conn.xrevrange(STREAM, count=1)
    assert json.loads(fields[b"payload"])["id"] == "a-again"
    assert client.post("/ui/message/resend", data={"id": w.failed_id}).status_code == 403  # no CSRF token
    assert client.get(f"/ui/message/confirm?id={w.dead_id}&action=resend").status_code == 404


def test_search_finds_every_live_place_and_cancel_takes_a_held_message_out(own_db: dict[str, Any]):
    """Not read yet, read and pending, held until due, claimed, with a Job: written as the
    store layer writes them (runner/store), found by the console's search."""
    from runner.store.schedule import ScheduledStore, scheduled_key
    from runner.store.state import StateStore
    from tests.support.messages import message

    env, conn = own_db["env"], own_db["conn"]
    settings = Settings.from_env(env)
    store = StateStore.from_settings(conn, settings)
    low = "ksr:jobs:low"
    assert any(g["name"] == b"ksr" for g in conn.xinfo_groups(low))  # the workload's runner made it
    conn.xadd(low, {"payload": json.dumps(message("p-pending", "default"))})
    conn.xreadgroup("ksr", "console-a", {low: ">"}, count=1)  # delivered, never acked
    conn.xadd(low, {"payload": json.dumps(message("p-unread", "default"))})
    held = ScheduledStore(conn, streams=settings.streams.streams)
    held.schedule(low, "p-held", due=time.time() + 3600, payload=json.dumps(message("p-held", "default")), term=None)
    store.claim("p-claimed", stream=low, entry_id="1700000000000-0")
    store.claim("p-running", stream=low, entry_id="1700000000001-0")
    store.record_job("p-running", job_name="job-p-running", namespace="default", job_uid="u")
    client = acting(env)
    expected = {
        "p-unread": ("pending", "unread"),
        "p-pending": ("pending", "pending"),
        "p-held": ("scheduled", "scheduled"),
        "p-claimed": ("pending", "claimed"),
        "p-running": ("running", "running"),
    }
    csrf = log_in(client)
    for mid, (where, place) in expected.items():
        page = body(client, f"/ui/message?id={mid}")
        assert f'id="where">{where}</span>' in page, mid
        assert f'<span class="pill">{place}</span>' in page, mid
        assert 'id="cancel"' in page, mid  # each can still be stopped
    assert "Cancel message?" in body(client, "/ui/message/confirm?id=p-held&action=cancel")
    r = client.post("/ui/message/cancel", data={"id": "p-held", "csrf": csrf})
    assert "cancelled p-held (scheduled)" in r.get_data(as_text=True)
    assert conn.zscore(scheduled_key(low), "p-held") is None
    r = client.post("/ui/message/cancel", data={"id": "never-seen", "csrf": csrf})
    assert "no message never-seen known" in html.unescape(r.get_data(as_text=True))
    assert not conn.exists("ksr:msg:never-seen")
