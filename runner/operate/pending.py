"""Pending entries (delivered to the group, never acked): put back at the end of their
stream with a fresh delivery counter, or acked without running."""

from __future__ import annotations

import redis

from runner.operate.audit import record_action
from runner.operate.pause import check_stream
from runner.pipeline.replay import PendingReplay, replay_pending
from runner.settings import Settings
from runner.store.errors import redis_errors

__all__ = ["ack_pending_entry", "replay_pending_entry"]


def replay_pending_entry(
    conn: redis.Redis, settings: Settings, *, stream: str, entry_id: str, by: str, min_idle_ms: int = 0
) -> PendingReplay:
    check_stream(settings, stream)
    done = replay_pending(conn, stream=stream, group=settings.streams.group, entry_id=entry_id, min_idle_ms=min_idle_ms)
    record_action(
        conn,
        settings,
        target=f"{stream} {entry_id}",
        action="pending.replay",
        by=by,
        outcome=done.outcome,
        new_entry_id=done.new_entry_id,
    )
    return done


def ack_pending_entry(conn: redis.Redis, settings: Settings, *, stream: str, entry_id: str, by: str) -> bool:
    """True when it was pending and is acked now."""
    check_stream(settings, stream)
    with redis_errors():
        acked = bool(int(conn.xack(stream, settings.streams.group, entry_id)))
    record_action(conn, settings, target=f"{stream} {entry_id}", action="pending.ack", by=by, acked=acked)
    return acked
