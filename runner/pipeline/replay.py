"""Replaying what did not run: pending entries back to their stream, dead letters back to theirs.

`ksr pending replay` and `ksr dead replay` are thin commands over this module. It sits in
pipeline/, above store/, because a dead entry goes back through the pipeline's own admission
(the message schema and policy.py) before it is re-added.

A pending entry (delivered to the group, never acked: its consumer died) is re-added to the
end of its stream and the old one acked in one Lua step (lua/replay_pending.lua), so the new
entry starts with a fresh delivery counter. Safe while a leader runs: if it is still working
on the old entry, the state store recognises the message id and no second Job is made.

A dead entry is re-validated with the current settings (schema and policy), what is still
invalid is refused, and then the message's state record decides (`decide_replay`):

- a record with a Job: the message already ran; the runner would drop the replay as a
  duplicate, so it is refused (submit it under a new id to run it again);
- a record without a Job in a terminal state (`dead`: the dead letter of a message with an
  id; `cancelled` before it was read): the record is released so the replay can run;
- a record without a Job, not terminal (claimed, then a crash): the runner resumes it;
- no record, and the message is younger than KSR_STATE_TTL: it never got one (a dead
  letter without a usable id, or one from before dead letters wrote `dead`): safe to replay;
- no record, and the message is older than KSR_STATE_TTL: the record may have expired, so
  whether a Job already ran for it cannot be told any more: refused without `force`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import redis

from election.clock import SYSTEM_CLOCK
from runner.durations import format_age
from runner.errors import InvalidMessage
from runner.message import parse_message
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from runner.store import scripts
from runner.store.deadletter import DeadEntry, replay_dead
from runner.store.errors import redis_errors
from runner.store.record import StateRecord
from runner.store.replies import text
from runner.store.state import StateStore
from runner.store.streams import entry_time_ms

__all__ = [
    "DeadReplay",
    "PendingReplay",
    "ReplayDecision",
    "decide_replay",
    "replay_dead_entry",
    "replay_pending",
]

# -- pending entries ---------------------------------------------------------------------


class PendingReplay(NamedTuple):
    outcome: str  # REPLAYED | GONE (its stream entry was deleted: acked only) | NOTPENDING (left alone)
    new_entry_id: str | None


def replay_pending(
    client: redis.Redis, *, stream: str, group: str, entry_id: str, min_idle_ms: int = 0
) -> PendingReplay:
    """Re-add pending entry `entry_id` of `stream` at its end and ack the old one, if it is
    still pending for `group` and idle at least `min_idle_ms` when the script runs."""
    with redis_errors():
        outcome, new_id = scripts.load(client, "replay_pending")(
            keys=[stream], args=[group, entry_id, int(min_idle_ms)]
        )
    return PendingReplay(text(outcome), text(new_id) or None)


# -- dead letters ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayDecision:
    allowed: bool
    release: bool  # release the state record first so the replayed message is not a duplicate
    reason: str


def decide_replay(
    entry: DeadEntry, record: StateRecord | None, *, ttl_seconds: int, force: bool, now: float | None = None
) -> ReplayDecision:
    """Whether a (valid) dead entry may be replayed, given its message's state record. Pure."""
    if record is not None:
        if record.has_job:
            return ReplayDecision(
                False,
                False,
                f"message already has Job {record.namespace or '?'}/{record.job_name} "
                f"(state {record.state or '?'}); the runner would drop the replay as a "
                "duplicate: submit it under a new id to run it again",
            )
        if record.is_terminal:
            return ReplayDecision(True, True, f"state record ({record.state}, no Job) released")
        return ReplayDecision(True, False, f"state record {record.state or '?'} without a Job: the runner resumes it")
    born_ms = entry_time_ms(entry.original_id) or entry.dead_at or 0
    age = (SYSTEM_CLOCK.time() if now is None else now) - born_ms / 1000
    if age < ttl_seconds:
        return ReplayDecision(True, False, "no state record: the message never got one")
    if force:
        return ReplayDecision(True, False, "no state record and older than KSR_STATE_TTL; replayed with --force")
    return ReplayDecision(
        False,
        False,
        f"no state record and the message is {format_age(age)} old, older than KSR_STATE_TTL "
        f"({ttl_seconds}s): its record may have expired, so a Job may already have run for it "
        "and a replay could not be deduplicated; pass --force to replay anyway",
    )


@dataclass(frozen=True)
class DeadReplay:
    message_id: str | None  # None when the payload is (still) invalid
    replayed: bool
    new_entry_id: str | None
    reason: str


def replay_dead_entry(
    client: redis.Redis, settings: Settings, entry: DeadEntry, *, force: bool, store: StateStore | None = None
) -> DeadReplay:
    """Re-validate `entry`, decide with its state record, release that record when the
    decision says so, and move the entry back to its stream."""
    try:
        message = parse_message(entry.payload, max_bytes=settings.streams.max_message_bytes)
        check_policy(message, settings)
    except InvalidMessage as e:
        return DeadReplay(None, False, None, f"still invalid: {e}")
    store = store or StateStore.from_settings(client, settings)
    decision = decide_replay(entry, store.get(message.id), ttl_seconds=settings.state.ttl_seconds, force=force)
    if not decision.allowed:
        return DeadReplay(message.id, False, None, decision.reason)
    if decision.release:
        store.release(message.id)
    new_id = replay_dead(client, entry.original_stream, entry.dead_id)
    if new_id is None:
        return DeadReplay(message.id, False, None, "gone: replayed or purged by someone else meanwhile")
    return DeadReplay(message.id, True, new_id, decision.reason)
