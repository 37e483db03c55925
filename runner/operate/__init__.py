"""Operator actions: the one implementation that `ksr` (runner/cli/) and the console
(probes/console/) both call, so the two can never disagree on what an action does.

Each action validates its target (an error naming it: UnknownTarget), does the work through
the same store and pipeline functions the runner uses, and writes what was done, by whom,
to the events stream (audit.py: an entry with `action` and `by`, no `status`).

    replay_dead(conn, settings, entries, force=, by=)  -> list[DeadOutcome]   (dead.py)
    purge_dead_entries(conn, settings, stream=, ids=, by=) -> int               (dead.py)
    replay_pending_entry / ack_pending_entry(conn, settings, stream=, entry_id=, by=) (pending.py)
    cancel_message(conn, settings, message_id, force=, by=) -> Cancellation       (cancel.py)
    resend_message(conn, settings, message_id, new_id=, by=) -> Resent          (resend.py)
    redeliver_callback(conn, settings, message_id, status, by=) -> Redelivered  (redeliver.py)
    pause_stream / resume_stream / suspend_schedule / resume_schedule             (pause.py)

This package is the only part of the runner's flows that probes may import (setup.cfg,
contract probes-read): the console acts only as the CLI does.
"""

from __future__ import annotations

from runner.operate.audit import record_action
from runner.operate.cancel import AlreadyFinished, UnknownMessage, cancel_message
from runner.operate.dead import DeadOutcome, purge_dead_entries, replay_dead
from runner.operate.errors import UnknownTarget
from runner.operate.pause import check_stream, pause_stream, resume_schedule, resume_stream, suspend_schedule
from runner.operate.pending import ack_pending_entry, replay_pending_entry
from runner.operate.redeliver import NotRedeliverable, Redelivered, may_redeliver, redeliver_callback
from runner.operate.resend import NotResendable, Resent, resend_message

__all__ = [
    "AlreadyFinished",
    "DeadOutcome",
    "NotRedeliverable",
    "NotResendable",
    "Redelivered",
    "Resent",
    "UnknownMessage",
    "UnknownTarget",
    "ack_pending_entry",
    "cancel_message",
    "check_stream",
    "may_redeliver",
    "pause_stream",
    "purge_dead_entries",
    "record_action",
    "redeliver_callback",
    "replay_dead",
    "replay_pending_entry",
    "resend_message",
    "resume_schedule",
    "resume_stream",
    "suspend_schedule",
]
