"""Two queues, so that a slow receiver cannot delay the others.

Every worker listens on the main queue (`KSR_CALLBACK_QUEUE`) first and on its slow lane
(`<KSR_CALLBACK_QUEUE>-slow`) second. A receiver whose attempt ran into its deadline is
marked slow for `SLOW_MARK_TTL` seconds (by scheme, host and port); its callbacks then go to
the slow lane, and a job of it already waiting on the main queue is moved there without an
attempt. A worker busy with a slow receiver takes the main queue first as soon as its
attempt ends, so a healthy receiver waits at most one attempt's deadline, however many
callbacks the slow one has. An answer well inside the deadline clears the mark.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from runner.settings import Settings
from runner.store.errors import redis_errors

SLOW_MARK_TTL = 300  # seconds; renewed by every attempt that hits the deadline


def main_queue(settings: Settings) -> str:
    return settings.callbacks.queue


def slow_queue(settings: Settings) -> str:
    return settings.callbacks.queue + "-slow"


def queues(settings: Settings) -> list[str]:
    """What a worker listens on, in priority order."""
    return [main_queue(settings), slow_queue(settings)]


def _mark_key(settings: Settings, url: str) -> str:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{(parts.hostname or '').lower()}:{parts.port or ''}"
    return settings.state.active_key.rsplit(":", 1)[0] + ":callbacks:slow:" + origin


def is_slow(conn: redis.Redis, settings: Settings, url: str) -> bool:
    with redis_errors():
        return bool(conn.exists(_mark_key(settings, url)))


def queue_for(conn: redis.Redis, settings: Settings, url: str) -> str:
    return slow_queue(settings) if is_slow(conn, settings, url) else main_queue(settings)


def mark_slow(conn: redis.Redis, settings: Settings, url: str) -> None:
    with redis_errors():
        conn.set(_mark_key(settings, url), "1", ex=SLOW_MARK_TTL)


def clear_slow(conn: redis.Redis, settings: Settings, url: str) -> None:
    with redis_errors():
        conn.delete(_mark_key(settings, url))
