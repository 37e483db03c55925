"""`ksr status [--watch]`: streams, leader, active Jobs; looking, never touching.

`status` reads Redis only (stream stats, the Redis lock record, the active set); the Lease
is read only when KSR_LOCK=lease and KUBECONFIG is set, otherwise the leader is "unknown".
`--watch` adds, per stream, the Jobs done and failed and the dispatch rate over the last
minute, from the events stream (each event's message id is mapped to its stream through
the state record), and an ETA for the ready backlog at that rate.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import click
import redis

from election.clock import SYSTEM_CLOCK
from election.errors import ElectionError
from election.record import LeaderRecord
from election.redis_lock import RedisLock
from runner.cli._context import CliContext, cli_context, json_option
from runner.cli._output import DURATION, emit_json, format_ms_time, print_table
from runner.durations import format_age
from runner.errors import ConfigError
from runner.inspect import Layout, backlog
from runner.schedules.config import load_schedules
from runner.schedules.overview import scheduling_overview
from runner.settings import Settings
from runner.store.connection import describe
from runner.store.errors import redis_errors
from runner.store.events import read_events
from runner.store.pause import PauseStore, pause_namespace
from runner.store.record import Field
from runner.store.replies import text
from runner.store.state import StateStore

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
EVENTS_PAGE = 1000
HEALTH_TIMEOUT = 3.0
DONE, FAILED, DISPATCHED = "done", "failed", "dispatched"
_OUTCOME = {0: DISPATCHED, 2: DONE, 3: FAILED, 99: FAILED}


# -- status ---------------------------------------------------------------------------------------


def _iso(t: _dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds")


def _leader_doc(record: LeaderRecord | None, source: str) -> dict[str, Any]:
    if record is None:
        return {"leader": None, "term": None, "leader_source": source, "leader_renewed": None, "leader_expired": None}
    expired = None
    if record.renew_time is not None:
        age = (SYSTEM_CLOCK.now() - record.renew_time).total_seconds()
        expired = age > record.lease_duration
    return {
        "leader": record.holder,
        "term": record.transitions,
        "leader_source": source,
        "leader_renewed": _iso(record.renew_time),
        "leader_expired": expired,
    }


def leader_info(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Who leads, from the Redis lock record, or from the Lease when KUBECONFIG is set."""
    name = settings.election.lock_name
    try:
        if settings.lock == "redis":
            lock = RedisLock(client, name=name)
            return _leader_doc(lock.get(), lock.describe())
        kubeconfig = os.environ.get("KUBECONFIG")
        if not kubeconfig:
            return {
                **_leader_doc(None, "unknown (KSR_LOCK=lease; set KUBECONFIG to read the Lease)"),
                "leader": "unknown",
            }
        from election.lease_lock import LeaseLock, api_client_from_kubeconfig

        lease = LeaseLock(
            api_client_from_kubeconfig(kubeconfig),
            namespace=settings.identity.pod_namespace,
            name=name,
            request_timeout=HEALTH_TIMEOUT,
        )
        return _leader_doc(lease.get(), lease.describe())
    except (ElectionError, OSError, ValueError) as e:  # a missing or bad kubeconfig is ValueError-ish too
        return {**_leader_doc(None, f"unknown ({type(e).__name__}: {e})"), "leader": "unknown"}


def gather_status(obj: CliContext) -> dict[str, Any]:
    settings = obj.settings()
    client = obj.redis()
    stats = obj.inspection().stats()
    doc: dict[str, Any] = {
        "streams": {
            s: {"length": st.length, "pending": st.pending, "lag": st.lag, "dead": st.dead} for s, st in stats.items()
        },
        "active_jobs": len(StateStore.from_settings(client, settings).active_ids()),
        "group": settings.streams.group,
        "redis": describe(settings.redis),
    }
    doc["paused"] = {
        name: {"at": format_ms_time(p.at_ms), "by": p.by or None}
        for name, p in PauseStore(client, namespace=pause_namespace(settings.state.active_key)).paused_streams().items()
    }
    doc["oldest_waiting"] = {
        b.stream: format_ms_time(b.oldest_unread_ms or b.oldest_pending_ms)
        for b in backlog(client, layout=Layout.from_settings(settings))
        if b.oldest_unread_ms or b.oldest_pending_ms
    }
    doc.update(leader_info(settings, client))
    try:
        schedules = load_schedules(
            settings.schedule.schedules_file,
            streams=settings.streams.streams,
            default_stream=settings.streams.default_stream,
        )
        doc["scheduling"] = scheduling_overview(
            client,
            streams=settings.streams.streams,
            schedules=schedules,
            pause_namespace=pause_namespace(settings.state.active_key),
        )
    except ConfigError as e:  # the runner refuses it at start; here it is only reported
        doc["scheduling"] = {"error": str(e)}
    return doc


def _print_status(doc: dict[str, Any]) -> None:
    leader = doc["leader"] or "none"
    if doc.get("term") is not None:
        leader += f" (term {doc['term']}"
        if doc.get("leader_renewed"):
            leader += f", renewed {doc['leader_renewed']}"
        leader += ", expired)" if doc.get("leader_expired") else ")"
    click.echo(f"leader:      {leader}  [{doc['leader_source']}]")
    click.echo(f"active jobs: {doc['active_jobs']}")
    sched = doc.get("scheduling") or {}
    if "waiting" in sched:
        due = f", next due {sched['next_due']}" if sched.get("next_due") else ""
        suspended = [r["name"] for r in sched["schedules"] if r.get("suspended")]
        held = f" ({len(suspended)} suspended: {', '.join(suspended)})" if suspended else ""
        click.echo(f"scheduled:   {sched['waiting']} waiting{due}; {len(sched['schedules'])} recurring schedules{held}")
    elif sched.get("error"):
        click.echo(f"scheduled:   {sched['error']}")
    click.echo(f"redis:       {doc['redis']}  group {doc['group']}")
    click.echo("")
    paused, oldest = doc.get("paused", {}), doc.get("oldest_waiting", {})
    print_table(
        ["STREAM", "LENGTH", "PENDING", "LAG", "DEAD", "OLDEST WAITING", "READING"],
        [
            [
                s,
                v["length"],
                v["pending"],
                "?" if v["lag"] is None else v["lag"],
                v["dead"],
                oldest.get(s, "-"),
                f"paused since {paused[s]['at']}" + (f" by {paused[s]['by']}" if paused[s]["by"] else "")
                if s in paused
                else "yes",
            ]
            for s, v in doc["streams"].items()
        ],
    )


@dataclass
class _Seen:
    ts_ms: int
    stream: str
    outcome: str


class RateWindow:
    """Outcomes per stream over the last `seconds`, fed with events as they are read."""

    def __init__(self, seconds: float = WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self._seen: deque[_Seen] = deque()

    def add(self, ts_ms: int, stream: str, status: int) -> None:
        outcome = _OUTCOME.get(status)
        if outcome is not None:
            self._seen.append(_Seen(ts_ms, stream, outcome))

    def prune(self, now: float) -> None:
        cutoff = (now - self.seconds) * 1000
        while self._seen and self._seen[0].ts_ms < cutoff:
            self._seen.popleft()

    def counts(self, stream: str) -> dict[str, int]:
        out = {DISPATCHED: 0, DONE: 0, FAILED: 0}
        for seen in self._seen:
            if seen.stream == stream:
                out[seen.outcome] += 1
        return out


def eta_seconds(backlog: int | None, dispatched: int, window_seconds: float) -> float | None:
    """Seconds to drain `backlog` at the window's dispatch rate; 0 when empty, None if stalled/unknown."""
    if backlog is None:
        return None
    if backlog <= 0:
        return 0.0
    if dispatched <= 0:
        return None
    return backlog / (dispatched / window_seconds)


class _EventFeed:
    """Reads the events stream incrementally and maps message ids to their streams."""

    def __init__(self, client: redis.Redis, settings: Settings, window: RateWindow, now: float) -> None:
        self.client = client
        self.settings = settings
        self.window = window
        self.after = f"{int((now - window.seconds) * 1000)}-0"
        self._streams: dict[str, str] = {}

    def _stream_of(self, message_id: str) -> str:
        if message_id not in self._streams:
            with redis_errors():
                value = self.client.hget(self.settings.state.record_key(message_id), Field.STREAM)
            self._streams[message_id] = "(unknown)" if value is None else text(value)
        return self._streams[message_id]

    def poll(self) -> None:
        stream = self.settings.streams.events_stream
        while True:
            events = read_events(self.client, stream=stream, after=self.after, count=EVENTS_PAGE)
            for event in events:
                self.window.add(event.ts, self._stream_of(event.message_id), event.status)
            if events:
                self.after = events[-1].event_id
            if len(events) < EVENTS_PAGE:
                return


def watch_rows(doc: dict[str, Any], window: RateWindow) -> list[dict[str, Any]]:
    rows = []
    for stream, v in doc["streams"].items():
        c = window.counts(stream)
        ready = v["lag"]
        rows.append(
            {
                "stream": stream,
                "ready": ready,
                "pending": v["pending"],
                "done": c[DONE],
                "failed": c[FAILED],
                "dead": v["dead"],
                "rate_per_min": round(c[DISPATCHED] * 60 / window.seconds, 1),
                "eta_seconds": eta_seconds(ready, c[DISPATCHED], window.seconds),
            }
        )
    return rows


def _draw(doc: dict[str, Any], rows: list[dict[str, Any]], interval: float) -> None:
    click.clear()
    stamp = SYSTEM_CLOCK.now().astimezone().strftime("%H:%M:%S")  # local time
    click.echo(f"ksr status --watch  {stamp}  every {interval:g}s  (Ctrl-C to stop)")
    click.echo(
        f"leader: {doc['leader'] or 'none'}  term: {doc.get('term') if doc.get('term') is not None else '-'}  "
        f"active jobs: {doc['active_jobs']}"
    )
    click.echo("")

    def eta(r: dict[str, Any]) -> str:
        if r["ready"] is None:
            return "?"
        if r["eta_seconds"] is None:
            return "stalled"
        return format_age(r["eta_seconds"])

    print_table(
        ["STREAM", "READY", "PENDING", "DONE/1m", "FAILED/1m", "DEAD", "RATE/min", "ETA"],
        [
            [
                r["stream"],
                "?" if r["ready"] is None else r["ready"],
                r["pending"],
                r["done"],
                r["failed"],
                r["dead"],
                r["rate_per_min"],
                eta(r),
            ]
            for r in rows
        ],
    )


@click.command()
@json_option
@click.option("--watch", "-w", is_flag=True, help="Redraw a live view until Ctrl-C (or --count redraws).")
@click.option(
    "--interval", type=DURATION, default="2s", show_default=True, metavar="DURATION", help="Redraw period with --watch."
)
@click.option(
    "--count", type=click.IntRange(min=0), default=0, help="With --watch: stop after this many redraws (0: never)."
)
def status(as_json: bool, watch: bool, interval: float, count: int) -> None:
    """Streams, leader and active Jobs; --watch for a live view.

    Per stream: length, pending, lag, dead.
    With --watch, a live view per stream: ready, pending, done and failed in the last
    minute, dead, the dispatch rate over the last minute and an ETA for the ready backlog.
    With --json and --watch, one JSON document per line per sample.
    """
    obj = cli_context()
    if not watch:
        doc = gather_status(obj)
        if as_json:
            emit_json(doc)
        else:
            _print_status(doc)
        return
    window = RateWindow()
    feed = _EventFeed(obj.redis(), obj.settings(), window, SYSTEM_CLOCK.time())
    drawn = 0
    try:
        while True:
            doc = gather_status(obj)
            feed.poll()
            window.prune(SYSTEM_CLOCK.time())
            rows = watch_rows(doc, window)
            if as_json:
                click.echo(json.dumps({**doc, "watch": rows, "time": SYSTEM_CLOCK.time()}, sort_keys=True, default=str))
            else:
                _draw(doc, rows, interval)
            drawn += 1
            if count and drawn >= count:
                return
            SYSTEM_CLOCK.sleep(interval)
    except KeyboardInterrupt:
        return
