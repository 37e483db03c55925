"""`ksr jobs list`, `ksr status [--watch]`, `ksr health`, `ksr config` against real servers."""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from click.testing import CliRunner

from election.record import LeaderRecord
from election.redis_lock import RedisLock
from runner.cli import main
from runner.store.events import append_event
from runner.store.state import StateStore
from tests.support.redis_server import RedisServer

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server: RedisServer, redis_client: redis.Redis) -> dict[str, str]:
    return {
        "REDIS_URL": redis_server.url,
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "KSR_LOCK": "redis",
        "KSR_EXECUTOR": "local",
    }


def running_job(r: redis.Redis, message_id: str) -> None:
    store = StateStore(r, ttl_seconds=3600)
    store.claim(message_id, stream=STREAM, entry_id="1-0")
    store.record_job(message_id, job_name=f"job-{message_id}", namespace="default", job_uid="u")


def test_jobs_list(env: dict[str, str], redis_client: redis.Redis) -> None:
    running_job(redis_client, "m-1")
    result = CliRunner().invoke(main, ["jobs", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["message_id"], row["job_name"], row["namespace"], row["state"]) == (
        "m-1",
        "job-m-1",
        "default",
        "created",
    )
    assert row["age_seconds"] < 60
    table = CliRunner().invoke(main, ["jobs", "list"], env=env).stdout
    assert "job-m-1" in table and "created" in table


def test_status_json_with_the_redis_lock_leader(env: dict[str, str], redis_client: redis.Redis) -> None:
    now = _dt.datetime.now(_dt.UTC)
    RedisLock(redis_client, name="ksr-leader").create(
        LeaderRecord(holder="pod-a", lease_duration=15, acquire_time=now, renew_time=now, transitions=3)
    )
    redis_client.xgroup_create(STREAM, "ksr", id="0", mkstream=True)
    redis_client.xadd(STREAM, {"payload": b"{}"})
    running_job(redis_client, "m-1")
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["leader"] == "pod-a" and doc["term"] == 3 and doc["leader_expired"] is False
    assert doc["streams"][STREAM] == {"length": 1, "pending": 0, "lag": 1, "dead": 0}
    assert doc["active_jobs"] == 1
    text = CliRunner().invoke(main, ["status"], env=env).stdout
    assert "pod-a (term 3" in text and STREAM in text


def test_status_leader_unknown_for_a_lease_without_kubeconfig(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["status", "--json"], env={**env, "KSR_LOCK": "lease", "KUBECONFIG": ""})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["leader"] == "unknown"


def test_status_watch_counts_the_last_minute(env: dict[str, str], redis_client: redis.Redis) -> None:
    redis_client.xgroup_create(STREAM, "ksr", id="0", mkstream=True)
    for _ in range(4):
        redis_client.xadd(STREAM, {"payload": b"{}"})
    for n in range(3):
        running_job(redis_client, f"m-{n}")
        append_event(redis_client, message_id=f"m-{n}", status=0, detail={})
    append_event(redis_client, message_id="m-0", status=2, detail={"duration": 1})
    append_event(redis_client, message_id="m-1", status=3, detail={})
    result = CliRunner().invoke(main, ["status", "--watch", "--count", "1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    rows = {r["stream"]: r for r in json.loads(line)["watch"]}
    row = rows[STREAM]
    assert (row["ready"], row["done"], row["failed"], row["rate_per_min"]) == (4, 1, 1, 3.0)
    assert row["eta_seconds"] == pytest.approx(80.0)
    assert rows["ksr:jobs:low"]["ready"] is None or rows["ksr:jobs:low"]["ready"] == 0
    drawn = CliRunner().invoke(main, ["status", "-w", "--count", "2", "--interval", "10ms"], env=env)
    assert drawn.exit_code == 0, drawn.output
    assert drawn.stdout.count("READY") == 2 and "1m20s" in drawn.stdout


class _Probe(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, object]]] = {}

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path, (404, {}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[str, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {"answers": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_health(probe_server: tuple[str, type[_Probe]]) -> None:
    url, handler = probe_server
    handler.answers.update(
        {"/healthz": (200, {"live": True, "reasons": []}), "/readyz": (200, {"ready": True, "reasons": []})}
    )
    ok = CliRunner().invoke(main, ["health", "--url", url])
    assert ok.exit_code == 0 and "healthy" in ok.stdout
    handler.answers["/readyz"] = (503, {"ready": False, "reasons": ["redis: ConnectionError: refused"]})
    bad = CliRunner().invoke(main, ["health", "--url", url, "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["reasons"] == ["readyz: redis: ConnectionError: refused"]
    assert CliRunner().invoke(main, ["health", "--url", url, "--probe", "live"]).exit_code == 0


def test_health_default_url_from_http_server_port(probe_server: tuple[str, type[_Probe]]) -> None:
    url, handler = probe_server
    port = url.rsplit(":", 1)[1]
    handler.answers.update({"/healthz": (200, {}), "/readyz": (200, {})})
    assert CliRunner().invoke(main, ["health"], env={"HTTP_SERVER_PORT": port}).exit_code == 0
