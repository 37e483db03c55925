"""Delayed messages at read time: when a message carrying `runAt` / `delaySeconds` is due,
and holding it until then (runner.store.schedule), so the dispatcher acks it without a Job.

`delaySeconds` counts from when the entry was sent as Redis saw it (`sent_at`): its id
time, so a redelivery or a takeover never pushes it further, unless that id lies ahead of
Redis's clock. Redis keeps stream ids monotonic, so after the Redis host's clock stepped
back every new id carries the old, later time until the clock catches up; then the entry
was sent at the latest now, and the delay counts from Redis's clock at read time.
The clock is Redis's TIME in the runner (runner.store.redis_time), the same clock the
scheduler moves due messages by. A message due now or in the past runs at once. An entry
that the mover put back (field `scheduled_for`) is due by definition and is never held again.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.durations import format_age
from runner.errors import InvalidMessage
from runner.message import Message
from runner.store.schedule import ScheduledStore
from runner.store.streams import Entry

__all__ = ["DelayGate", "due_time", "sent_at"]

MOVED_FIELD = b"scheduled_for"


def sent_at(entry_id: str, *, now: float) -> float:
    """When the entry `entry_id` was sent (Unix time), judged by Redis's clock `now`: the
    id's time, or `now` when the id lies ahead of it (Redis's clock stepped back)."""
    return min(int(entry_id.split("-", 1)[0]) / 1000.0, now)


def due_time(message: Message, *, added_at: float, now: float, max_ahead: float) -> float | None:
    """When `message` may run (Unix time), None when it carries no timing; InvalidMessage
    (naming the field) when that lies more than `max_ahead` seconds ahead of `now`."""
    if message.run_at is not None:
        due, field = message.run_at, "runAt"
    elif message.delay_seconds is not None:
        due, field = added_at + message.delay_seconds, "delaySeconds"
    else:
        return None
    if due - now > max_ahead:
        raise InvalidMessage(
            field,
            f"due {format_age(due - now)} ahead, more than KSR_SCHEDULE_MAX_AHEAD ({format_age(max_ahead)}) allows",
        )
    return due


class DelayGate:
    def __init__(
        self,
        store: ScheduledStore,
        *,
        max_ahead: float,
        on_held: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.max_ahead = max_ahead
        self._on_held = on_held  # wakes the scheduler: the new message may be due first
        self._now = wall_clock  # Redis's TIME in the runner: the clock the scheduler moves by

    def hold(self, entry: Entry, message: Message, term: int) -> bool:
        """True when the message is now held (or already was): ack the entry, no Job yet."""
        if MOVED_FIELD in entry.fields or (message.run_at is None and message.delay_seconds is None):
            return False  # no timing: no clock read (a Redis round trip per message)
        now = self._now()
        added_at = sent_at(entry.entry_id, now=now)
        due = due_time(message, added_at=added_at, now=now, max_ahead=self.max_ahead)
        if due is None or due <= now:
            return False
        payload = entry.fields[b"payload"].decode("utf-8")  # parsed already: present and UTF-8
        held = self.store.schedule(entry.stream, message.id, due=due, payload=payload, term=term)
        if held is None:  # the id has a record: a duplicate or a cancelled one, the claim decides
            return False
        self._on_held()
        return True
