"""Cancel a message wherever it is (scheduled, waiting in a stream, running: the leader
deletes its Job); the producer's library does the work (runner.client)."""

from __future__ import annotations

import redis

from runner.client import AlreadyFinished, Cancellation, Client
from runner.inspect import Layout, find
from runner.operate.audit import record_action
from runner.operate.errors import UnknownTarget
from runner.settings import Settings

__all__ = ["AlreadyFinished", "UnknownMessage", "cancel_message"]


class UnknownMessage(UnknownTarget):
    exit_code = 1


def cancel_message(conn: redis.Redis, settings: Settings, message_id: str, *, force: bool, by: str) -> Cancellation:
    """UnknownMessage for an id seen nowhere (a typo would block that id for KSR_STATE_TTL)
    unless `force`; AlreadyFinished (runner.client) for a message that ended."""
    if not force and not find(conn, message_id, layout=Layout.from_settings(settings)):
        raise UnknownMessage(
            f"no message {message_id} known (no record, not held, not in a stream or its dead letters)", param="id"
        )
    try:
        done = Client(settings, redis_client=conn).cancel(message_id)
    except AlreadyFinished:
        record_action(conn, settings, target=message_id, action="cancel", by=by, outcome="already finished")
        raise
    record_action(conn, settings, target=message_id, action="cancel", by=by, outcome=done.stage, force=force)
    return done
