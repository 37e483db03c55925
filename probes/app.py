"""The probes: /healthz, /readyz, /metrics, /status and the status page `/`.

Served by gunicorn workers, which only read: the runner's status board (a file written by
the main process), Redis (PING, XLEN, XINFO) and the Kubernetes API's /version. They never
elect, read streams through the group or create anything.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, jsonify, render_template

from runner import metrics
from runner.errors import ConfigError, KsrError
from runner.process.statusboard import read_status, runtime_paths
from runner.schedules.config import load_schedules
from runner.schedules.overview import scheduling_overview
from runner.settings import Settings
from runner.store.connection import connect
from runner.store.pause import PauseStore, pause_namespace
from runner.store.replies import text

__all__ = ["create_app", "liveness", "readiness_from_board"]

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 1.0  # seconds; a readiness probe must answer well inside its own timeout
KUBE_TIMEOUT = 2.0
KUBE_CACHE_SECONDS = 2.0
DEAD_SUFFIX = ":dead"  # as runner.store.streams.DEAD_SUFFIX; not imported to keep workers light


# -- judgements (pure, so they are tested without servers) ------------------------------------


def liveness(board: dict[str, Any] | None, *, threshold: float, board_error: str | None = None) -> list[str]:
    """Reasons the runner is not live; empty when it is. A Redis outage is no reason: the
    runner reconnects by itself and keeps beating while it retries."""
    if board is None:
        return [f"no status board from the runner ({board_error or 'missing'})"]
    reasons = []
    runner = board.get("runner", {})
    state = runner.get("state")
    if state in ("failed", "stopped"):
        reasons.append(f"runner {state}: {runner.get('reason') or 'no reason given'}")
    loops = board.get("loops", {})
    for name, beat in sorted(loops.items()):
        if beat["age"] > threshold:
            reasons.append(f"loop {name} last beat {beat['age']:.1f}s ago (threshold {threshold:g}s)")
    if not loops and state != "stopping" and board.get("uptime", 0.0) > threshold:
        reasons.append(f"no loop has beaten in the {board['uptime']:.0f}s since the runner started")
    elector = board.get("elector", {})
    if board.get("leading") and not elector.get("healthy", True):
        reasons.append("this replica leads but its elector has not renewed the lease in time")
    return reasons


def readiness_from_board(board: dict[str, Any] | None, board_error: str | None = None) -> str | None:
    """Why the runner side is not ready, or None."""
    if board is None:
        return f"no status board from the runner ({board_error or 'missing'})"
    state = board.get("runner", {}).get("state")
    if state != "running":
        return f"runner is {state}"
    if not board.get("elector", {}).get("running"):
        return "the elector is not running"
    return None


# -- dependencies -------------------------------------------------------------------------------


class KubeCheck:
    """GET /version on the Kubernetes API, answer cached for a couple of seconds."""

    def __init__(self, *, timeout: float, ttl: float = KUBE_CACHE_SECONDS) -> None:
        self._timeout = timeout
        self._ttl = ttl
        self._mutex = threading.Lock()
        self._checked_at: float | None = None
        self._error: str | None = None
        self._api: Any = None

    def __call__(self) -> str | None:
        with self._mutex:  # one request at a time; the others wait for its cached answer
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self._ttl:
                self._error = self._probe()
                self._checked_at = time.monotonic()
            return self._error

    def _probe(self) -> str | None:
        try:
            if self._api is None:
                self._api = _version_api()
            self._api.get_code(_request_timeout=self._timeout)
        except Exception as e:  # any failure means "not ready"; say which
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
        return None


def _version_api() -> Any:
    from kubernetes import client, config  # heavy: only when the executor is kubernetes

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.VersionApi()


def _redis_client(settings: Settings) -> redis.Redis:
    # No retries: a probe reports the outage, the runner's own client is the one that retries.
    # With Sentinel every new connection asks for the primary: /readyz follows a failover.
    return connect(settings.redis, socket_timeout=REDIS_TIMEOUT, connect_timeout=REDIS_TIMEOUT, retries=0)


def stream_stats(client: redis.Redis, streams: tuple[str, ...], group: str) -> dict[str, dict[str, int | None]]:
    """length, pending, lag, dead of each stream for `group`, read-only (XLEN, XINFO GROUPS)."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.xlen(stream + DEAD_SUFFIX)
    replies = pipe.execute(raise_on_error=False)
    out: dict[str, dict[str, int | None]] = {}
    for n, stream in enumerate(streams):
        length, groups, dead = replies[3 * n : 3 * n + 3]
        for reply in (length, dead):
            if isinstance(reply, Exception):
                raise reply
        ours: dict[Any, Any] = {}
        if not isinstance(groups, Exception):  # no such stream yet
            ours = next((g for g in groups if text(g.get("name")) == group), {})
        lag = ours.get("lag")
        out[stream] = {
            "length": int(length),
            "pending": int(ours.get("pending", 0)),
            "lag": None if lag is None else int(lag),
            "dead": int(dead),
        }
    return out


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return _dt.datetime.fromtimestamp(wall, _dt.UTC).isoformat(timespec="seconds")


# -- the app -----------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    paths = runtime_paths()
    if metrics.multiprocess_dir():
        metrics.setup_multiprocess()  # validate only; the supervisor wiped it at pod start
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    status_file = paths.status_file
    threshold = settings.server.stuck_threshold
    client = _redis_client(settings)
    # Checked when the runner starts; here a bad file only blanks the page's schedules.
    try:
        schedules = load_schedules(
            settings.schedule.schedules_file,
            streams=settings.streams.streams,
            default_stream=settings.streams.default_stream,
        )
        schedules_error = None
    except ConfigError as e:
        schedules, schedules_error = (), str(e)
    kube_check: Callable[[], str | None] | None = None
    if settings.kube.executor == "kubernetes":
        kube_check = KubeCheck(timeout=min(KUBE_TIMEOUT, settings.kube.client_timeout))

    def board() -> tuple[dict[str, Any] | None, str | None]:
        try:
            return read_status(status_file), None
        except FileNotFoundError:
            return None, f"{status_file} not written yet"
        except (OSError, ValueError) as e:
            return None, str(e)

    def redis_error() -> str | None:
        try:
            client.ping()
        except redis.RedisError as e:
            return f"redis: {type(e).__name__}: {e}"
        return None

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        doc, error = board()
        reasons = liveness(doc, threshold=threshold, board_error=error)
        return jsonify(live=not reasons, reasons=reasons), (503 if reasons else 200)

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks: dict[str, str | None] = {"redis": redis_error()}
        if kube_check is not None:
            checks["kubernetes"] = kube_check()
        doc, error = board()
        checks["runner"] = readiness_from_board(doc, error)
        reasons = [f"{k}: {v}" for k, v in checks.items() if v]
        body = jsonify(
            ready=not reasons, reasons=reasons, checks={k: {"ok": v is None, "error": v} for k, v in checks.items()}
        )
        return body, (503 if reasons else 200)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.get("/status")
    def status() -> Response:
        return jsonify(build_status())

    def build_status() -> dict[str, Any]:
        doc, error = board()
        doc = doc or {}
        out: dict[str, Any] = {
            "identity": doc.get("identity") or settings.identity.pod_name,
            "namespace": settings.identity.pod_namespace,
            "leading": bool(doc.get("leading", False)),
            "leader": doc.get("leader"),
            "term": doc.get("term"),
            "streams": {},
            "active_jobs": doc.get("active_jobs", 0),
            "last_errors": [
                {"time": _iso(e.get("wall")), "age": round(e.get("age", 0.0), 1), "text": e.get("text")}
                for e in reversed(doc.get("last_errors", []))
            ],
            "runner": doc.get("runner", {"state": "unknown", "reason": error}),
            "elector": doc.get("elector", {}),
            "loops": {
                k: {"age": round(v["age"], 2), "time": _iso(v.get("wall"))} for k, v in doc.get("loops", {}).items()
            },
            "children": doc.get("children", {}),
            "live": not liveness(doc or None, threshold=threshold, board_error=error),
            # working, but slower than it could (Kubernetes API throttling): statusboard.degraded_reasons
            "degraded": doc.get("degraded", []),
        }
        try:
            out["streams"] = stream_stats(client, settings.streams.streams, settings.streams.group)
            out["paused"] = {
                name: {"at": _iso(p.at_ms / 1000), "by": p.by or None}
                for name, p in PauseStore(client, namespace=pause_namespace(settings.state.active_key))
                .paused_streams()
                .items()
            }
        except redis.RedisError as e:
            out["streams_error"] = f"{type(e).__name__}: {e}"
        try:
            out["scheduling"] = scheduling_overview(
                client,
                streams=settings.streams.streams,
                schedules=schedules,
                pause_namespace=pause_namespace(settings.state.active_key),
            )
        except (redis.RedisError, KsrError) as e:
            out["scheduling"] = {"error": f"{type(e).__name__}: {e}"}
        if schedules_error:
            out["scheduling"]["error"] = schedules_error
        return out

    if settings.console.enabled:
        from probes.console import register_console

        register_console(app, settings, client, schedules=schedules, schedules_error=schedules_error)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", identity=settings.identity.pod_name)

    return app
