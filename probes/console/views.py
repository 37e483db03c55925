"""The console's routes. Every page renders from templates/console/ with autoescape on; a
page asked with `X-Console-Partial: 1` renders only its <main>, which console.js swaps in
every few seconds (refresh without reloading). Ids travel in query strings built by
url_for, so they are URL-encoded whatever they hold."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import redis
from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, url_for

from election.clock import SYSTEM_CLOCK
from probes.console import actions, reads
from probes.console.auth import CSRF_FIELD, Gate
from probes.console.chart import throughput_chart
from runner.errors import KsrError
from runner.schedules.config import Schedule
from runner.settings import Settings
from runner.settings.variables import SECTIONS

__all__ = ["register_console"]

log = logging.getLogger(__name__)

PREFIX = "/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
NAV = (
    ("overview", "Overview"),
    ("messages", "Messages"),
    ("dead", "Dead letters"),
    ("failures", "Failures"),
    ("pending", "Pending"),
    ("schedules", "Schedules"),
    ("config", "Config"),
)


def register_console(
    app: Flask, settings: Settings, client: redis.Redis, *, schedules: Sequence[Schedule], schedules_error: str | None
) -> None:
    c = settings.console
    gate = Gate(token=c.token, actions=c.actions, read_auth=c.read_auth)
    app.secret_key = gate.secret_key()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH=PREFIX)
    bp = Blueprint("console", __name__, url_prefix=PREFIX, static_folder="../static", static_url_path="/static")

    def page(template: str, active: str, **context: Any) -> str:
        partial = request.headers.get("X-Console-Partial") == "1"
        return render_template(
            f"console/{template}",
            partial=partial,
            nav=NAV,
            active=active,
            gate=gate,
            authenticated=gate.authenticated(request),
            operator=gate.operator(request) if gate.authenticated(request) else None,
            csrf_field=CSRF_FIELD,
            csrf=gate.csrf_token() if gate.actions_enabled else "",
            identity=settings.identity.pod_name,
            **context,
        )

    @bp.before_request
    def check_read() -> Any:
        if request.endpoint in ("console.login", "console.static"):
            return None
        if not gate.may_read(request):
            if request.method == "GET" and request.headers.get("X-Console-Partial") != "1":
                return redirect(url_for("console.login", next=request.full_path))
            return Response("log in with the operators' token first\n", 401, content_type="text/plain")
        return None

    @bp.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def action(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refusal = gate.action_refusal(request)
            if refusal is not None:
                status, why = refusal
                return Response(why + "\n", status, content_type="text/plain")
            try:
                return fn(*args, **kwargs)
            except KsrError as e:
                return page("result.html", "overview", outcome=actions.Outcome(str(e), False), back=request.referrer), 400

        return guarded

    def done(outcome: actions.Outcome, back: str) -> Any:
        if request.headers.get("Authorization"):  # a script: a plain answer
            return Response(outcome.summary + "\n", 200 if outcome.ok else 409, content_type="text/plain")
        return page("result.html", "overview", outcome=outcome, back=back)

    def field(name: str) -> str:
        value = request.form.get(name, "")
        if not value:
            abort(Response(f"{name}: required\n", 400, content_type="text/plain"))
        return value

    def stream_field() -> str:
        stream = field("stream")
        if stream not in settings.streams.streams:
            abort(Response(f"stream: {stream!r} is not one of KSR_STREAMS\n", 400, content_type="text/plain"))
        return stream

    # -- login -------------------------------------------------------------------------------

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        target = request.values.get("next") or url_for("console.overview")
        if not target.startswith(PREFIX + "/"):  # no open redirect
            target = url_for("console.overview")
        if request.method == "POST":
            if gate.token_matches(request.form.get("token")):
                gate.log_in(request.form.get("who", ""))
                return redirect(target)
            error = "wrong token" if gate.login_possible else "no token is configured (KSR_CONSOLE_TOKEN)"
        return page("login.html", "", error=error, next=target), (401 if error else 200)

    @bp.post("/logout")
    def logout() -> Any:
        from flask import session

        session.clear()
        return redirect(url_for("console.login"))

    # -- pages -------------------------------------------------------------------------------

    @bp.get("/")
    def overview() -> Any:
        data = reads.overview(client, settings, schedules, now=SYSTEM_CLOCK.time())
        return page(
            "overview.html",
            "overview",
            data=data,
            chart=throughput_chart(data["throughput"]),
            schedules_error=schedules_error,
        )

    @bp.get("/overview.json")
    def overview_json() -> Any:
        data = reads.overview(client, settings, schedules, now=SYSTEM_CLOCK.time())
        return data

    @bp.get("/dead")
    def dead() -> Any:
        return page("dead.html", "dead", groups=reads.dead_groups(client, settings.streams.streams))

    @bp.get("/dead/confirm")
    def dead_confirm() -> Any:
        stream = request.args.get("stream", "")
        reason = request.args.get("reason", "")
        verb = request.args.get("action", "")
        if stream not in settings.streams.streams or verb not in ("replay", "purge"):
            abort(404)
        entries = reads.dead_entries(client, stream, reason=reason)
        return page("dead_confirm.html", "dead", stream=stream, reason=reason, verb=verb, entries=entries[:50], count=len(entries))

    @bp.post("/dead/act")
    @action
    def dead_act() -> Any:
        stream, reason, verb = stream_field(), field("reason"), field("action")
        by = gate.operator(request)
        if verb == "replay":
            outcome = actions.replay_reason(client, settings, stream=stream, reason=reason, by=by)
        elif verb == "purge":
            outcome = actions.purge_reason(client, settings, stream=stream, reason=reason, by=by)
        else:
            abort(Response("action: must be replay or purge\n", 400, content_type="text/plain"))
        return done(outcome, url_for("console.dead"))

    @bp.get("/failures")
    def failures() -> Any:
        groups = reads.failure_groups(client, settings.streams.events_stream)
        return page("failures.html", "failures", groups=groups, scanned=reads.FAILURE_SCAN_EVENTS)

    @bp.get("/pending")
    def pending() -> Any:
        return page("pending.html", "pending", rows=reads.pending_rows(client, settings))

    @bp.post("/pending/replay")
    @action
    def pending_replay() -> Any:
        outcome = actions.replay_pending_entry(
            client, settings, stream=stream_field(), entry_id=field("entry_id"), by=gate.operator(request)
        )
        return done(outcome, url_for("console.pending"))

    @bp.get("/schedules", endpoint="schedules")
    def schedules_page() -> Any:
        data = reads.overview(client, settings, schedules, now=SYSTEM_CLOCK.time())["scheduling"]
        return page("schedules.html", "schedules", scheduling=data, schedules_error=schedules_error)

    @bp.get("/config")
    def config() -> Any:
        masked = settings.masked()
        sections = [(s.title, [(v.name, masked[v.name], v.secret) for v in s.variables]) for s in SECTIONS]
        return page("config.html", "config", sections=sections)

    @bp.get("/messages")
    def messages() -> Any:
        return page("messages.html", "messages", query=request.args.get("id", ""))

    @bp.post("/messages/cancel")
    @action
    def cancel() -> Any:
        message_id = field("id")
        outcome = actions.cancel(client, settings, message_id=message_id, by=gate.operator(request))
        return done(outcome, url_for("console.messages", id=message_id))

    app.register_blueprint(bp)
