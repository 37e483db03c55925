"""Re-send a finished message under a new id: its payload, as a place still holds it, goes
to its stream again with `id` replaced (and no runAt / delaySeconds: it runs now), through
the producer's own submit (schema check, replication; the leader applies the policy). The old id
keeps its record, so it stays a duplicate; the new one is a message of its own."""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.client import Client
from runner.inspect import Layout, find, read_record
from runner.lifecycle import TERMINAL_STATES, State
from runner.operate.audit import record_action
from runner.operate.errors import UnknownTarget
from runner.settings import Settings

__all__ = ["NotResendable", "Resent", "resend_message"]


class NotResendable(UnknownTarget):
    """Known, but not a finished message with a payload (or the new id is taken)."""

    exit_code = 1


@dataclass(frozen=True)
class Resent:
    message_id: str  # the new id
    stream: str


def resend_message(
    conn: redis.Redis,
    settings: Settings,
    message_id: str,
    *,
    new_id: str | None,
    by: str,
    clock: Clock = SYSTEM_CLOCK,
) -> Resent:
    """A dead letter is replayed, not re-sent (its id never ran); a live message is not
    re-sent while it runs. `new_id` defaults to `<id>.resend-<unix ms>`."""
    layout = Layout.from_settings(settings)
    record = read_record(conn, message_id, layout)
    if record is None or record.state not in TERMINAL_STATES or record.state is State.DEAD:
        state = "no record" if record is None else f"state {record.state}"
        raise NotResendable(
            f"message {message_id} has not finished ({state}): only a finished message is re-sent "
            "(a dead letter is replayed)",
            param="id",
        )
    payload = next((s.payload for s in find(conn, message_id, layout=layout, record=record) if s.payload), None)
    if payload is None:
        raise NotResendable(f"message {message_id}: no place holds its payload any more", param="id")
    doc = json.loads(payload)
    doc.pop("runAt", None)
    doc.pop("delaySeconds", None)
    doc["id"] = new_id or f"{message_id}.resend-{int(clock.time() * 1000)}"
    if read_record(conn, doc["id"], layout) is not None:
        raise NotResendable(f"id {doc['id']} has a record already: choose another", param="new_id")
    stream = record.stream if record.stream in settings.streams.streams else settings.streams.default_stream
    sent = Client(settings, redis_client=conn).submit(doc, stream=stream)
    record_action(conn, settings, target=message_id, action="resend", by=by, new_id=sent, stream=stream)
    return Resent(sent, stream)
