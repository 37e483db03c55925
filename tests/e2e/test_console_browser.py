"""The console in Debian's Chromium, driven by Playwright (its Python package only: the
browser is /usr/bin/chromium, never `playwright install`), against the real process model
(supervisor, gunicorn serving probes.app; tests/support/probe_stack.py) over a real Redis
holding a real runner's workload (tests/support/console.py).

The stack is replica B (`console-b`); the heartbeats say A leads: B's overview shows A.
Each test takes its screenshots; with KSR_CONSOLE_SCREENSHOTS=docs they are written to
docs/img/ (how docs/console.md's pictures are made), else to the test's tmp dir."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from runner.settings import Settings
from tests.support.browser import chromium
from tests.support.browser import log_in as browser_log_in
from tests.support.console import HOSTILE_COMMAND, STREAM, TOKEN, Workload, beat, env_for, make_workload
from tests.support.ports import free_port, wait_for
from tests.support.probe_stack import ProbeStack
from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.close()


@pytest.fixture(scope="module")
def workload(server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Workload, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("workload")
    env = env_for(server.url, tmp)
    conn = server.client()
    w = make_workload(env, conn)
    settings = Settings.from_env(env)
    now = time.time()
    beat(conn, settings, "console-a", leading=True, now=now)
    beat(conn, settings, "console-b", leading=False, now=now)
    return w, env


@pytest.fixture(scope="module")
def stack(
    server: RedisServer, workload: tuple[Workload, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProbeStack]:
    _, env = workload
    extra = {
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "KSR_SCHEDULES": env["KSR_SCHEDULES"],
        "KSR_CONSOLE_ACTIONS": "true",
        "KSR_CONSOLE_TOKEN": TOKEN,
        "KSR_ALLOWED_NAMESPACES": "default,forbidden-ns",  # the policy changed: the dead letter may go back
        "POD_NAME": "console-b",
        "KSR_WEBHOOK_ALLOW": "127.0.0.1",  # the stack's own RQ worker delivers a re-delivery to the receiver
    }
    s = ProbeStack(tmp_path_factory.mktemp("stack"), redis_url=server.url, port=free_port(), extra_env=extra)
    s.start()
    try:
        wait_for(lambda: s.get("/ui/")[0] == 200, timeout=60, what="the console under gunicorn")
    except TimeoutError:
        s.stop()
        pytest.fail("probe stack did not come up:\n" + s.log_tail(), pytrace=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    p = browser.new_page()
    yield p
    p.close()


def shot(page: Any, name: str, tmp_path: Path) -> None:
    target = DOCS_IMG if os.environ.get("KSR_CONSOLE_SCREENSHOTS") == "docs" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"console-{name}.png"), full_page=False)


def log_in(page: Any, stack: ProbeStack) -> None:
    browser_log_in(page, stack.url, TOKEN)


def test_replica_b_shows_leader_a_every_replica_and_the_streams(page: Any, stack: ProbeStack, tmp_path: Path):
    page.goto(stack.url + "/ui/")
    assert page.text_content("#leader") == "console-a"
    assert "served by console-b" in " ".join(page.text_content("header .who").split())
    rows = page.locator("#replicas tbody tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in rows] == [["console-a", "leader"], ["console-b", "follower"]]
    assert page.locator(f'#streams tr[data-stream="{STREAM}"]').count() == 1
    assert page.locator("figure.chart polyline").count() == 3
    shot(page, "overview", tmp_path)


def test_search_an_id_and_see_its_timeline_in_order(
    page: Any, stack: ProbeStack, workload: tuple[Workload, dict[str, str]], tmp_path: Path
):
    w, _ = workload
    page.goto(stack.url + "/ui/messages")
    assert page.locator("#messages tbody tr[data-id]").count() >= 3
    shot(page, "messages", tmp_path)
    page.fill("#search-id", w.ok_id)
    page.click("#search-go")
    page.wait_for_selector("#timeline")
    assert page.text_content("#message-id") == w.ok_id
    stamps = [int(x) for x in page.eval_on_selector_all("#timeline tr[data-at]", "rows => rows.map(r => r.dataset.at)")]
    kinds = page.eval_on_selector_all("#timeline tr[data-kind]", "rows => rows.map(r => r.dataset.kind)")
    assert stamps == sorted(stamps) and kinds[0] == "added" and "ended" in kinds
    assert kinds.index("job_created") < kinds.index("pod_started") < kinds.index("ended")
    assert kinds.count("callback_attempt") == 3
    assert w.secret_value not in page.content()
    shot(page, "message", tmp_path)


def test_replay_a_dead_letter_with_confirm_puts_it_back_on_its_stream(
    page: Any, stack: ProbeStack, server: RedisServer, workload: tuple[Workload, dict[str, str]], tmp_path: Path
):
    w, _ = workload
    conn = server.client()
    log_in(page, stack)
    page.goto(stack.url + "/ui/dead")
    shot(page, "dead", tmp_path)
    row = page.locator('#dead-groups tr[data-reason="policy"]')
    assert row.locator("td.n").inner_text() == "1"
    row.get_by_text("replay…").click()
    page.wait_for_selector("#confirm")
    assert page.text_content("h1") == "Replay 1 dead letter?"
    shot(page, "dead-confirm", tmp_path)
    before = conn.xlen(STREAM)
    page.click("#confirm")
    page.wait_for_selector("#outcome")
    assert page.text_content("#outcome") == "replayed 1, refused 0"
    assert conn.xlen(STREAM) == before + 1
    (_, fields), *_ = conn.xrevrange(STREAM, count=1)
    assert json.loads(fields[b"payload"])["id"] == w.dead_id
    assert not any(f[b"reason"] == b"policy" for _, f in conn.xrange(STREAM + ":dead"))


def test_hostile_strings_render_as_text_and_run_nothing(
    page: Any, stack: ProbeStack, workload: tuple[Workload, dict[str, str]], tmp_path: Path
):
    w, _ = workload
    page.goto(stack.url + "/ui/message?id=" + quote(w.hostile_id, safe=""))
    assert page.text_content("#message-id") == w.hostile_id
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#main img").count() == 0
    page.goto(stack.url + f"/ui/message?id={w.hostile_payload_id}")
    command = json.loads(page.text_content("#payload"))["job"]["command"][2]
    assert command == HOSTILE_COMMAND
    assert page.evaluate("window.__pwned") is None and page.locator("#main script").count() == 0
    shot(page, "hostile", tmp_path)
    page.goto(stack.url + "/ui/dead")
    assert page.evaluate("window.__pwned") is None


def test_a_schedule_is_suspended_after_the_browser_confirm(page: Any, stack: ProbeStack, server: RedisServer):
    conn = server.client()
    conn.hdel("ksr:paused:schedules", "nightly")
    log_in(page, stack)
    page.goto(stack.url + "/ui/schedules")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click('td[data-schedule="nightly"] button')
    assert asked == ["Suspend schedule nightly?"] and not conn.hexists("ksr:paused:schedules", "nightly")
    page.once("dialog", lambda d: d.accept())
    page.click('td[data-schedule="nightly"] button')
    page.wait_for_selector("#outcome")
    assert page.text_content("#outcome") == "suspended nightly"
    assert conn.hexists("ksr:paused:schedules", "nightly")
    conn.hdel("ksr:paused:schedules", "nightly")


def test_the_overview_refreshes_in_place_without_reloading(page: Any, stack: ProbeStack, server: RedisServer):
    conn = server.client()
    settings = Settings.from_env({"REDIS_URL": server.url})
    page.goto(stack.url + "/ui/")
    page.evaluate("window.__kept = 'same page'")
    assert page.locator("#replicas tbody tr").count() == 2
    beat(conn, settings, "console-c", leading=False, now=time.time())
    try:
        page.locator("#replicas tbody tr").nth(2).wait_for(timeout=20_000)  # the page's own refresh, every 5 s
        assert page.evaluate("window.__kept") == "same page"  # swapped in, not reloaded
        assert "updated " in page.text_content("#updated")
    finally:
        conn.delete("ksr:replica:console-c")
        conn.zrem("ksr:replicas", "console-c")


def test_a_phone_sees_every_page_without_sideways_scrolling(page: Any, stack: ProbeStack, tmp_path: Path):
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/ui/", "/ui/messages", "/ui/dead", "/ui/schedules", "/ui/message?id=c-ok"):
        page.goto(stack.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)  # wide tables scroll inside their own box
    shot(page, "phone", tmp_path)


def test_a_callback_is_redelivered_after_the_browser_confirm(
    page: Any, stack: ProbeStack, server: RedisServer, workload: tuple[Workload, dict[str, str]], tmp_path: Path
):
    """Last in the module: it adds an attempt to ok_id's timeline, which the search test counts."""
    w, _ = workload
    conn = server.client()
    key = f"ksr:msg:{w.ok_id}"
    # The workload's receiver is gone: one on its port again; the stack's worker delivers.
    receiver = Receiver(port=urlsplit(conn.hget(key, "webhook").decode()).port).start()  # type: ignore[union-attr]
    try:
        log_in(page, stack)
        page.goto(stack.url + "/ui/message?id=" + quote(w.ok_id))
        assert page.locator("#callbacks tbody tr").count() == 3
        page.click("#redeliver-2")
        page.wait_for_selector("#confirm")
        assert page.text_content("h1") == "Re-deliver callback?"
        shot(page, "redeliver-confirm", tmp_path)
        page.click("#confirm")
        page.wait_for_selector("#outcome")
        assert (page.text_content("#outcome") or "").startswith(f"callback 2 of {w.ok_id} owed again")
        wait_for(lambda: conn.hget(key, "cbd_2") == b"delivered", timeout=30, what="callback 2 delivered again")
        assert [(r["body"]["id"], r["body"]["status"]) for r in receiver.requests] == [(w.ok_id, 2)]
        page.goto(stack.url + "/ui/message?id=" + quote(w.ok_id))
        cells = page.locator('#callbacks tr[data-status="2"] td').all_inner_texts()
        assert cells[1:3] == ["delivered", "2"]
        kinds = page.eval_on_selector_all("#timeline tr[data-kind]", "rows => rows.map(r => r.dataset.kind)")
        assert kinds.count("callback_attempt") == 4
    finally:
        receiver.close()
