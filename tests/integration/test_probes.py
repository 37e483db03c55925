"""The probes under real gunicorn, over real HTTP, against a real redis-server.

One stack (supervisor + gunicorn + RQ worker, stand-in runner) serves the whole module;
the tests that break something (Redis stopped, runner stopped, master killed) wait for it
to recover before they end, so the next test finds it healthy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM_ARGS
from tests.support.ports import free_port, wait_for
from tests.support.probe_stack import ProbeStack
from tests.support.redis_server import RedisServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
THRESHOLD = 3.0  # KSR_STUCK_THRESHOLD of the stack


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    # The module's own server (what private_redis gives one test): the outage test stops it.
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeStack]:
    s = ProbeStack(tmp_path_factory.mktemp("stack"), redis_url=own_redis.url, port=free_port()).start()
    try:
        wait_for(lambda: s.get("/healthz")[0] == 200, timeout=60, what="the probe stack to come up")
    except TimeoutError:
        s.stop()
        pytest.fail("probe stack did not come up:\n" + s.log_tail(), pytrace=False)
    yield s
    rc = s.stop()
    assert rc == 0, s.log_tail()


@pytest.fixture
def healthy(stack: ProbeStack, own_redis: RedisServer) -> ProbeStack:
    if not own_redis.running:
        own_redis.start()
    wait_for(lambda: stack.get("/readyz")[0] == 200, timeout=30, what="/readyz 200 before the test")
    (stack.control / "leader").write_text("probe-test-0 4")
    wait_for(lambda: stack.json("/status")[1]["leading"], timeout=10, what="leadership on the board")
    return stack


def test_healthz_is_live_with_no_reasons(healthy: ProbeStack):
    status, doc = healthy.json("/healthz")
    assert (status, doc) == (200, {"live": True, "reasons": []})


def test_readyz_checks_redis_and_runner(healthy: ProbeStack):
    status, doc = healthy.json("/readyz")
    assert status == 200 and doc["ready"] is True
    assert doc["checks"]["redis"] == {"ok": True, "error": None}
    assert doc["checks"]["runner"] == {"ok": True, "error": None}
    assert "kubernetes" not in doc["checks"]  # KSR_EXECUTOR=local


def test_status_reports_leadership_streams_jobs_and_errors(healthy: ProbeStack, own_redis: RedisServer):
    r = own_redis.client()
    r.delete("t:jobs:high", "t:jobs:high:dead", "t:jobs:low")
    r.xgroup_create("t:jobs:high", "ksr", id="0", mkstream=True)
    for n in range(3):
        r.xadd("t:jobs:high", {"payload": f'{{"n": {n}}}'})
    r.xreadgroup("ksr", "probe-test-0", {"t:jobs:high": ">"}, count=1)  # one pending, two to go
    r.xadd("t:jobs:high:dead", {"payload": "x", "reason": "test"})
    (healthy.control / "error").write_text("kube create failed: 500 for test")
    wait_for(lambda: healthy.json("/status")[1]["last_errors"], timeout=10, what="the error on /status")

    status, doc = healthy.json("/status")
    assert status == 200
    assert doc["identity"] == "probe-test-0"
    assert (doc["leading"], doc["leader"], doc["term"]) == (True, "probe-test-0", 4)
    assert doc["streams"]["t:jobs:high"] == {"length": 3, "pending": 1, "lag": 2, "dead": 1}
    assert doc["streams"]["t:jobs:low"] == {"length": 0, "pending": 0, "lag": None, "dead": 0}
    assert isinstance(doc["active_jobs"], int)
    assert doc["last_errors"][0]["text"] == "kube create failed: 500 for test"
    assert doc["runner"]["state"] == "running" and doc["live"] is True
    assert set(doc["loops"]) == {"reader", "watcher"}
    assert set(doc["children"]) == {"probes", "rq-worker"}

    (healthy.control / "leader").write_text("probe-test-1 5")
    wait_for(lambda: healthy.json("/status")[1]["leader"] == "probe-test-1", timeout=10, what="a new leader")
    status, doc = healthy.json("/status")
    assert (doc["leading"], doc["term"]) == (False, 5)


def test_metrics_from_all_processes_pass_promtool(healthy: ProbeStack):
    if shutil.which("promtool") is None:
        pytest.fail("promtool missing: scripts/install-system-deps promtool", pytrace=False)
    (healthy.control / "leader").write_text("probe-test-0 6")
    wait_for(lambda: b"ksr_leader 1.0" in healthy.get("/metrics")[1], timeout=10, what="ksr_leader 1")
    status, body, ctype = healthy.get("/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    text = body.decode()
    for needle in (
        'ksr_messages_total{outcome="dispatched"}',
        "ksr_messages_processed_total",
        "ksr_messages_failed_total",
        'ksr_kube_requests_total{code="201",verb="create"}',
        "ksr_dispatch_latency_seconds_bucket",
        'ksr_loop_heartbeat_timestamp_seconds{loop="reader"}',
        "ksr_leader_transitions_total",
        "ksr_active_jobs",
    ):
        assert needle in text, needle
    assert "pid=" not in text  # single-writer gauges are livemax: one series per pod
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_redis_outage_fails_readiness_not_liveness_and_recovers(healthy: ProbeStack, own_redis: RedisServer):
    gunicorn_pid = healthy.json("/status")[1]["children"]["probes"]["pid"]
    own_redis.stop()
    started = time.monotonic()
    wait_for(lambda: healthy.get("/readyz")[0] == 503, timeout=5, what="/readyz 503 with Redis down")
    assert time.monotonic() - started < 5
    status, doc = healthy.json("/readyz")
    assert status == 503 and doc["checks"]["redis"]["ok"] is False and doc["reasons"][0].startswith("redis:")
    # liveness holds through the outage (sampled over more than the stuck threshold)
    deadline = time.monotonic() + THRESHOLD + 1
    for _ in range(200):
        assert healthy.get("/healthz")[0] == 200
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)  # pacing the samples, not synchronisation
    status, doc = healthy.json("/status")
    assert status == 200 and "streams_error" in doc

    own_redis.start()
    wait_for(lambda: healthy.get("/readyz")[0] == 200, timeout=10, what="/readyz 200 after Redis returns")
    assert healthy.get("/healthz")[0] == 200
    assert healthy.json("/status")[1]["children"]["probes"]["pid"] == gunicorn_pid  # no restart


def test_stopped_runner_fails_liveness_within_the_threshold(healthy: ProbeStack):
    healthy.signal(signal.SIGSTOP)  # the supervising process: runner and its heartbeats freeze
    try:
        started = time.monotonic()
        wait_for(lambda: healthy.get("/healthz")[0] == 503, timeout=THRESHOLD + 2, what="/healthz 503")
        assert time.monotonic() - started <= THRESHOLD + 1.5
        status, doc = healthy.json("/healthz")
        assert status == 503 and any("last beat" in reason for reason in doc["reasons"])
    finally:
        healthy.signal(signal.SIGCONT)
    wait_for(lambda: healthy.get("/healthz")[0] == 200, timeout=10, what="/healthz 200 after SIGCONT")


def test_killed_gunicorn_master_is_restarted(healthy: ProbeStack):
    old = healthy.json("/status")[1]["children"]["probes"]
    os.kill(old["pid"], signal.SIGKILL)

    def restarted() -> bool:
        probes = healthy.json("/status")[1]["children"]["probes"]
        return probes["pid"] not in (None, old["pid"]) and probes["restarts"] == old["restarts"] + 1

    wait_for(restarted, timeout=30, what="a new gunicorn master")
    wait_for(
        lambda: healthy.get("/healthz")[0] == 200 and healthy.get("/readyz")[0] == 200,
        timeout=30,
        what="the endpoints back",
    )
    assert healthy.get("/metrics")[0] == 200
    assert healthy.json("/status")[1]["children"]["probes"]["last_exit"] == -signal.SIGKILL


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium missing: scripts/install-system-deps chromium", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="ksr-chromium-") as profile:
        argv = [
            binary,
            *CHROMIUM_ARGS,
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def test_status_page_in_headless_chromium(healthy: ProbeStack, tmp_path: Path):
    status, body, ctype = healthy.get("/")
    assert status == 200 and ctype.startswith("text/html")
    assert b"<script" in body and b"src=" not in body and b"href=" not in body  # self-contained

    dom = chromium("--virtual-time-budget=3000", "--dump-dom", healthy.url + "/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'id="leader">probe-test-0</dd>' in html, html[:3000]
    assert 'id="role" class="role-leader">leader</dd>' in html
    assert 'id="term">4</dd>' in html
    assert 'data-stream="t:jobs:high"' in html

    shot = tmp_path / "status-page.png"
    result = chromium("--virtual-time-budget=3000", f"--screenshot={shot}", "--window-size=1200,800", healthy.url + "/")
    assert result.returncode == 0 and shot.stat().st_size > 1000, result.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "status-page.png")


def test_readyz_fails_when_the_kubernetes_api_does_not_answer(private_redis: RedisServer, tmp_path: Path):
    # KSR_EXECUTOR=kubernetes: readiness asks the API server for /version (nothing listens here)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    s = ProbeStack(
        tmp_path / "kstack",
        redis_url=private_redis.url,
        port=free_port(),
        extra_env={"KSR_EXECUTOR": "kubernetes", "KUBECONFIG": str(kubeconfig)},
    ).start()
    try:
        wait_for(lambda: s.get("/healthz")[0] == 200, timeout=60, what="the stack")
        status, doc = s.json("/readyz")
        assert status == 503, doc
        assert doc["checks"]["kubernetes"]["ok"] is False and doc["checks"]["redis"]["ok"] is True
        assert doc["reasons"] == [f"kubernetes: {doc['checks']['kubernetes']['error']}"]
    finally:
        assert s.stop() == 0


@pytest.mark.kube
def test_readyz_follows_the_real_kubernetes_api(own_kube, private_redis: RedisServer, tmp_path: Path):
    kube = own_kube  # it stops the apiserver: a bed of its own (it makes no namespace)
    s = ProbeStack(
        tmp_path / "kstack",
        redis_url=private_redis.url,
        port=free_port(),
        extra_env={"KSR_EXECUTOR": "kubernetes", "KUBECONFIG": kube.kubeconfig},
    ).start()
    try:
        wait_for(lambda: s.get("/readyz")[0] == 200, timeout=60, what="/readyz 200 with the API server up")
        assert s.json("/readyz")[1]["checks"]["kubernetes"] == {"ok": True, "error": None}
        kube.stop_apiserver()
        try:
            wait_for(lambda: s.get("/readyz")[0] == 503, timeout=10, what="/readyz 503 with the API server down")
            assert s.get("/healthz")[0] == 200  # the API server is not our liveness
        finally:
            kube.start_apiserver()
        wait_for(lambda: s.get("/readyz")[0] == 200, timeout=30, what="/readyz 200 again")
    finally:
        assert s.stop() == 0


def test_status_and_its_page_show_the_next_due_time_and_the_schedules(private_redis: RedisServer, tmp_path: Path):
    import json as _json

    schedules = tmp_path / "schedules.yaml"
    template = {"service": "s", "job": {"prefixName": "p", "namespace": "default", "image": "busybox"}}
    entry = {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "stream": "t:jobs:low"}
    schedules.write_text(_json.dumps({"schedules": [{**entry, "message": template}]}))
    r = private_redis.client()
    due = int(time.time() + 3600) * 1000
    r.zadd("t:jobs:low:scheduled", {"held-1": due, "held-2": due + 60_000})
    r.hset("ksr:schedules:last", "nightly", 1_796_092_200_000 - 7_200_000)  # 2026-12-01T00:30:00Z
    from runner.store.pause import PauseStore

    hostile = "<img src=x onerror=alert(1)>"  # `by` is free text an operator typed: text, never HTML
    PauseStore(r).suspend_schedule("nightly", at_ms=1_796_092_200_000, by=hostile)
    PauseStore(r).pause_stream("t:jobs:low", at_ms=1_796_092_200_000, by="ops")
    s = ProbeStack(
        tmp_path / "sstack", redis_url=private_redis.url, port=free_port(), extra_env={"KSR_SCHEDULES": str(schedules)}
    ).start()
    try:
        wait_for(lambda: s.get("/healthz")[0] == 200, timeout=60, what="the stack")
        sched = s.json("/status")[1]["scheduling"]
        assert sched["waiting"] == 2
        assert sched["next_due"] == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(due / 1000))
        assert 3590 < sched["next_due_in"] <= 3600
        (row,) = sched["schedules"]
        assert (row["name"], row["cron"], row["timezone"], row["stream"]) == (
            "nightly",
            "30 2 * * *",
            "Europe/Berlin",
            "t:jobs:low",
        )
        assert row["next_run"][11:19] == "02:30:00" and row["last_tick_utc"] == "2026-12-01T00:30:00+00:00"
        assert row["suspended"] == {"at": "2026-12-01T02:30:00+00:00", "by": hostile}
        assert s.json("/status")[1]["paused"] == {"t:jobs:low": {"at": "2026-12-01T02:30:00+00:00", "by": "ops"}}
        dom = chromium("--virtual-time-budget=3000", "--dump-dom", s.url + "/")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert 'id="scheduled-waiting">2</dd>' in dom.stdout
        assert f'id="next-due">{sched["next_due"]} (in ' in dom.stdout
        assert 'data-schedule="nightly"' in dom.stdout and row["next_run_utc"] in dom.stdout
        assert (
            '<td class="suspended">since 2026-12-01T02:30:00+00:00 by &lt;img src=x onerror=alert(1)&gt;</td>'
            in dom.stdout
        )
        assert '<td class="reading">paused since 2026-12-01T02:30:00+00:00 by ops</td>' in dom.stdout
        assert "<img" not in dom.stdout
    finally:
        assert s.stop() == 0
