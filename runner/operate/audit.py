"""Who did what: every operator action is an entry of the events stream (no `status`, so
no producer takes it for a transition of its message; runner.inspect.recent skips it)."""

from __future__ import annotations

from typing import Any

import redis

from runner.settings import Settings
from runner.store.events import append_operator_event

__all__ = ["record_action"]


def record_action(conn: redis.Redis, settings: Settings, *, target: str, action: str, by: str, **detail: Any) -> str:
    return append_operator_event(
        conn,
        target=target,
        action=action,
        by=by,
        detail=detail,
        stream=settings.streams.events_stream,
        maxlen=settings.streams.events_maxlen,
    )
