"""The console's routes. Every page renders from templates/console/ with autoescape on; a
page asked with `X-Console-Partial: 1` renders only its <main>, which console.js swaps in
every few seconds (refresh without reloading). Ids travel in query strings built by
url_for, so they are URL-encoded whatever they hold. Every action is a POST behind
auth.Gate.action_refusal, after a confirm page (GET, changes nothing) that says what will
change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import redis
from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, session, url_for

from election.clock import SYSTEM_CLOCK
from probes.console import actions, reads
from probes.console.auth import CSRF_FIELD, Gate
from probes.console.chart import throughput_chart
from runner.errors import KsrError
from runner.schedules.config import Schedule
from runner.settings import Settings
from runner.settings.variables import SECTIONS

__all__ = ["CSP", "PREFIX", "register_console"]

log = logging.getLogger(__name__)

PREFIX = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
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
MAX_ID_LENGTH = 1024  # a search longer than any id the runner accepts is cut, not refused


def register_console(
    app: Flask, settings: Settings, client: redis.Redis, *, schedules: Sequence[Schedule], schedules_error: str | None
) -> None:
    c = settings.console
    gate = Gate(token=c.token, actions=c.actions, read_auth=c.read_auth)
    app.secret_key = gate.secret_key()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_PATH=PREFIX)
    bp = Blueprint("console", __name__, url_prefix=PREFIX, static_folder="../static", static_url_path="/static")
    schedule_names = {s.name for s in schedules}

    def page(template: str, active: str, **context: Any) -> str:
        partial = request.headers.get("X-Console-Partial") == "1"
        authenticated = gate.authenticated(request)
        return render_template(
            f"console/{template}",
            partial=partial,
            nav=NAV,
            active=active,
            gate=gate,
            authenticated=authenticated,
            operator=gate.operator(request) if authenticated else None,
            csrf_field=CSRF_FIELD,
            csrf=gate.csrf_token() if gate.actions_enabled and authenticated else "",
            may_act=gate.actions_enabled and authenticated,
            identity=settings.identity.pod_name,
            ms_time=reads.ms_time,
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
        if request.endpoint != "console.static":
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
                outcome = actions.Outcome(str(e), False)
                return page("result.html", "overview", outcome=outcome, back=None), 400

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

    def choice(name: str, allowed: Sequence[str]) -> str:
        value = field(name)
        if value not in allowed:
            abort(Response(f"{name}: must be one of {', '.join(allowed)}\n", 400, content_type="text/plain"))
        return value

    def confirm(
        title: str,
        target: str,
        fields: dict[str, str],
        *,
        post_to: str,
        explain: str,
        back: str,
        danger: bool = False,
        new_id: bool = False,
    ) -> Any:
        """The page before an action: what it will change, and the POST (with the CSRF token)."""
        return page(
            "confirm.html",
            "",
            title=title,
            target=target,
            fields=fields,
            post_to=url_for(post_to),
            explain=explain,
            back=back,
            danger=danger,
            new_id=new_id,
        )

    # -- login -------------------------------------------------------------------------------

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        target = request.values.get("next") or url_for("console.overview")
        if not target.startswith(PREFIX + "/") or target.startswith(PREFIX + "//"):  # no open redirect
            target = url_for("console.overview")
        if request.method == "POST":
            if gate.token_matches(request.form.get("token")):
                gate.log_in(request.form.get("who", ""))
                return redirect(target)
            error = "wrong token" if gate.login_possible else "no token is configured (KSR_CONSOLE_TOKEN)"
        return page("login.html", "", error=error, next=target), (401 if error else 200)

    @bp.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("console.login"))

    # -- overview ----------------------------------------------------------------------------

    @bp.get("/")
    def overview() -> Any:
        data = reads.overview(client, settings, schedules, now=SYSTEM_CLOCK.time())
        chart = throughput_chart(data["throughput"])
        return page("overview.html", "overview", data=data, chart=chart, schedules_error=schedules_error)

    @bp.get("/overview.json")
    def overview_json() -> Any:
        return reads.overview(client, settings, schedules, now=SYSTEM_CLOCK.time())

    @bp.get("/streams/confirm")
    def stream_confirm() -> Any:
        stream = request.args.get("stream", "")
        verb = request.args.get("action", "")
        if stream not in settings.streams.streams or verb not in ("pause", "resume"):
            abort(404)
        explain = (
            "The leader stops reading it from its next read; entries keep arriving and wait, their age shown here."
            if verb == "pause"
            else "The leader reads it again; what waited is read in order."
        )
        fields = {"stream": stream, "action": verb}
        return confirm(
            f"{verb.capitalize()} stream",
            stream,
            fields,
            post_to="console.stream_act",
            explain=explain,
            back=url_for("console.overview"),
        )

    @bp.post("/streams/act")
    @action
    def stream_act() -> Any:
        stream = choice("stream", settings.streams.streams)
        verb = choice("action", ("pause", "resume"))
        act = actions.pause_stream if verb == "pause" else actions.resume_stream
        return done(act(client, settings, stream=stream, by=gate.operator(request)), url_for("console.overview"))

    # -- messages ----------------------------------------------------------------------------

    @bp.get("/messages")
    def messages() -> Any:
        wanted = request.args.get("id", "")[:MAX_ID_LENGTH]
        if wanted:
            return redirect(url_for("console.message", id=wanted))
        listing = reads.message_list(
            client,
            settings,
            state=request.args.get("state"),
            stream=request.args.get("stream"),
            service=request.args.get("service"),
            namespace=request.args.get("namespace"),
            since=request.args.get("since"),
            cursor=request.args.get("before"),
            now=SYSTEM_CLOCK.time(),
        )
        return page(
            "messages.html",
            "messages",
            listing=listing,
            states=reads.STATE_CHOICES,
            sinces=tuple(reads.SINCE_CHOICES),
            streams=settings.streams.streams,
        )

    @bp.get("/message")
    def message() -> Any:
        message_id = request.args.get("id", "")[:MAX_ID_LENGTH]
        if not message_id:
            return redirect(url_for("console.messages"))
        detail = reads.message_detail(client, settings, message_id)
        return page("message.html", "messages", m=detail), (404 if detail.where == "unknown" else 200)

    @bp.get("/message/confirm")
    def message_confirm() -> Any:
        message_id = request.args.get("id", "")[:MAX_ID_LENGTH]
        verb = request.args.get("action", "")
        detail = reads.message_detail(client, settings, message_id)
        back = url_for("console.message", id=message_id)
        if verb == "cancel" and detail.cancellable:
            explain = f"It is {detail.where}: it will not run (a running Job is deleted by the leader); the producer gets callback 99 Cancelled."
            return confirm(
                "Cancel message",
                message_id,
                {"id": message_id},
                post_to="console.message_cancel",
                explain=explain,
                back=back,
                danger=True,
            )
        if verb == "replay" and detail.dead is not None and detail.dead.stream and detail.dead.entry_id:
            explain = "It goes back through admission (schema and policy as now configured) to its stream."
            fields = {"stream": detail.dead.stream, "dead_id": detail.dead.entry_id, "id": message_id}
            return confirm(
                "Replay dead letter", message_id, fields, post_to="console.message_replay", explain=explain, back=back
            )
        if verb == "resend" and detail.resendable:
            explain = (
                "Its payload goes to its stream again under a new id (runAt / delaySeconds dropped: it runs "
                "now); the old id stays finished. Leave the new id empty for "
                f"{message_id}.resend-<unix ms>."
            )
            return confirm(
                "Re-send message",
                message_id,
                {"id": message_id},
                post_to="console.message_resend",
                explain=explain,
                back=back,
                new_id=True,
            )
        if verb == "redeliver":
            status = request.args.get("status", "")
            row = next((c for c in detail.callbacks if str(c.status) == status and c.redeliverable), None)
            if row is not None:
                explain = (
                    f"Callback {row.status} ({row.delivery}, {row.attempts} attempts) goes to the message's "
                    "webhook once more, with the same body, by the message's one courier; its attempts are "
                    "noted after the earlier ones."
                )
                return confirm(
                    "Re-deliver callback",
                    f"{message_id} callback {row.status}",
                    {"id": message_id, "status": str(row.status)},
                    post_to="console.message_redeliver",
                    explain=explain,
                    back=back,
                )
        abort(404)

    @bp.post("/message/redeliver")
    @action
    def message_redeliver() -> Any:
        message_id, status = field("id"), field("status")
        outcome = actions.redeliver(client, settings, message_id=message_id, status=status, by=gate.operator(request))
        return done(outcome, url_for("console.message", id=message_id))

    @bp.post("/message/resend")
    @action
    def message_resend() -> Any:
        message_id = field("id")
        new_id = request.form.get("new_id", "").strip()[:MAX_ID_LENGTH] or None
        outcome = actions.resend(client, settings, message_id=message_id, new_id=new_id, by=gate.operator(request))
        return done(outcome, url_for("console.message", id=new_id or message_id))

    @bp.post("/message/cancel")
    @action
    def message_cancel() -> Any:
        message_id = field("id")
        outcome = actions.cancel(client, settings, message_id=message_id, by=gate.operator(request))
        return done(outcome, url_for("console.message", id=message_id))

    @bp.post("/message/replay")
    @action
    def message_replay() -> Any:
        stream, dead_id = choice("stream", settings.streams.streams), field("dead_id")
        outcome = actions.replay_dead_one(client, settings, stream=stream, dead_id=dead_id, by=gate.operator(request))
        back = (
            url_for("console.message", id=request.form.get("id", ""))
            if request.form.get("id")
            else url_for("console.dead")
        )
        return done(outcome, back)

    # -- dead letters, failures, pending ----------------------------------------------------------

    @bp.get("/dead")
    def dead() -> Any:
        return page("dead.html", "dead", groups=reads.dead_groups(client, settings))

    @bp.get("/dead/confirm")
    def dead_confirm() -> Any:
        stream = request.args.get("stream", "")
        reason = request.args.get("reason", "")
        verb = request.args.get("action", "")
        if stream not in settings.streams.streams or verb not in ("replay", "purge"):
            abort(404)
        entries = reads.dead_entries(client, settings, stream, reason=reason)
        return page(
            "dead_confirm.html",
            "dead",
            stream=stream,
            reason=reason,
            verb=verb,
            entries=entries[:50],
            count=len(entries),
        )

    @bp.post("/dead/act")
    @action
    def dead_act() -> Any:
        stream, reason = choice("stream", settings.streams.streams), field("reason")
        verb = choice("action", ("replay", "purge"))
        act = actions.replay_reason if verb == "replay" else actions.purge_reason
        outcome = act(client, settings, stream=stream, reason=reason, by=gate.operator(request))
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
            client,
            settings,
            stream=choice("stream", settings.streams.streams),
            entry_id=field("entry_id"),
            by=gate.operator(request),
        )
        return done(outcome, url_for("console.pending"))

    # -- schedules, config -------------------------------------------------------------------

    @bp.get("/schedules", endpoint="schedules")
    def schedules_page() -> Any:
        data = reads.schedules_view(client, settings, schedules, now=SYSTEM_CLOCK.time())
        return page("schedules.html", "schedules", scheduling=data, schedules_error=schedules_error)

    @bp.post("/schedules/act")
    @action
    def schedule_act() -> Any:
        name, verb = field("name"), choice("action", ("suspend", "resume"))
        by = gate.operator(request)
        if verb == "suspend":
            outcome = actions.suspend_schedule(client, settings, name=name, known=schedule_names, by=by)
        else:
            outcome = actions.resume_schedule(client, settings, name=name, by=by)
        return done(outcome, url_for("console.schedules"))

    @bp.get("/config")
    def config() -> Any:
        masked = settings.masked()
        sections = [(s.title, [(v.name, masked[v.name], v.secret) for v in s.variables]) for s in SECTIONS]
        return page("config.html", "config", sections=sections)

    app.register_blueprint(bp)
