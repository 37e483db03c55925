"""Pause / resume a stream (the leader stops reading it from its next read) and suspend /
resume a cron schedule (it fires nothing, and never catches up); runner.store.pause holds
the flags, docs/operations.md says how the leader honours them."""

from __future__ import annotations

from collections.abc import Collection

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.operate.audit import record_action
from runner.operate.errors import UnknownTarget
from runner.settings import Settings
from runner.store.pause import PauseStore, pause_namespace

__all__ = ["check_stream", "pause_stream", "resume_schedule", "resume_stream", "suspend_schedule"]


def check_stream(settings: Settings, stream: str) -> None:
    if stream not in settings.streams.streams:
        raise UnknownTarget(
            f"{stream!r} is not one of KSR_STREAMS ({', '.join(settings.streams.streams)})", param="stream"
        )


def _store(conn: redis.Redis, settings: Settings) -> PauseStore:
    return PauseStore(conn, namespace=pause_namespace(settings.state.active_key))


def pause_stream(conn: redis.Redis, settings: Settings, stream: str, *, by: str, clock: Clock = SYSTEM_CLOCK) -> bool:
    """True when it was not paused before."""
    check_stream(settings, stream)
    changed = _store(conn, settings).pause_stream(stream, at_ms=int(clock.time() * 1000), by=by)
    record_action(conn, settings, target=stream, action="stream.pause", by=by, changed=changed)
    return changed


def resume_stream(conn: redis.Redis, settings: Settings, stream: str, *, by: str) -> bool:
    """True when it was paused."""
    check_stream(settings, stream)
    changed = _store(conn, settings).resume_stream(stream)
    record_action(conn, settings, target=stream, action="stream.resume", by=by, changed=changed)
    return changed


def suspend_schedule(
    conn: redis.Redis, settings: Settings, name: str, *, known: Collection[str], by: str, clock: Clock = SYSTEM_CLOCK
) -> bool:
    """Suspend schedule `name`, one of `known` (KSR_SCHEDULES' names); True when it was not."""
    if name not in known:
        raise UnknownTarget(f"{name!r} is not a schedule of KSR_SCHEDULES", param="name")
    changed = _store(conn, settings).suspend_schedule(name, at_ms=int(clock.time() * 1000), by=by)
    record_action(conn, settings, target=f"schedule {name}", action="schedule.suspend", by=by, changed=changed)
    return changed


def resume_schedule(conn: redis.Redis, settings: Settings, name: str, *, by: str) -> bool:
    """True when it was suspended. Any name is accepted: a schedule removed from the file
    while suspended can still be cleared."""
    changed = _store(conn, settings).resume_schedule(name)
    record_action(conn, settings, target=f"schedule {name}", action="schedule.resume", by=by, changed=changed)
    return changed
