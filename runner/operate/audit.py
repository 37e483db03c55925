"""Who did what: every operator action is an entry of the events stream (no `status`, so
no producer takes it for a transition of its message; runner.inspect.recent skips it)."""

from __future__ import annotations

import getpass
import socket
from typing import Any

import redis

from runner.settings import Settings
from runner.store.events import append_operator_event

__all__ = ["operator_name", "record_action"]


def operator_name(given: str | None = None) -> str:
    """`given`, or the CLI user's `login@host`."""
    if given:
        return given
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "?"
    return f"{login}@{socket.gethostname()}"


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
