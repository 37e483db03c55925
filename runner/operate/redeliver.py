"""Re-deliver one callback of a message once more (the producer lost it): its ended
delivery is owed again and a courier takes the owner lease, through the callbacks' own
machinery (CallbackQueue.redeliver, lua/cb_redeliver.lua), so the message still has one
courier and its callbacks go one at a time. The same body bytes are sent (the detail kept
in the record); the attempts are noted after the earlier ones (cbl_<s>)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from runner.callbacks.enqueue import CallbackQueue
from runner.lifecycle import CallbackStatus
from runner.operate.audit import record_action
from runner.operate.errors import UnknownTarget
from runner.settings import Settings
from runner.store.record import StateRecord

__all__ = ["NotRedeliverable", "Redelivered", "may_redeliver", "redeliver_callback"]

STATUSES = tuple(int(s) for s in CallbackStatus)
ENDED = frozenset({"delivered", "failed", "expired"})  # cbd_<s> a re-delivery may follow ("gone" may not)


class NotRedeliverable(UnknownTarget):
    """The callback is not one that may be sent again now; `reason` says why (unknown,
    not_marked, no_webhook, gone, in_flight, busy)."""

    exit_code = 1

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, param="id" if reason == "unknown" else "status")
        self.reason = reason


@dataclass(frozen=True)
class Redelivered:
    message_id: str
    status: int
    courier: str  # the RQ job that delivers it


def may_redeliver(record: StateRecord, status: int) -> bool:
    """Whether a re-delivery of `status` would be accepted now, for a page or a list to
    offer it; cb_redeliver.lua judges again when it is asked (and says why not)."""
    outcome = record.callback_outcome(status)
    url = record.webhook
    return bool(url) and outcome in ENDED and record.gone_url != url and not _holder_live(record)


def _holder_live(record: StateRecord) -> bool:
    # The lease's deadline is Redis time; a page only hides the button while one is written.
    return record.callback_owner is not None


def check_status(status: int) -> int:
    if status not in STATUSES:
        raise UnknownTarget(
            f"status {status!r} is not a callback status ({', '.join(map(str, STATUSES))})", param="status"
        )
    return status


def redeliver_callback(conn: redis.Redis, settings: Settings, message_id: str, status: int, *, by: str) -> Redelivered:
    """Refused (NotRedeliverable, nothing changed) unless the callback was marked, the
    message has a webhook, the delivery ended (delivered, failed or expired), its URL did
    not answer 410 and no courier holds the message; each refusal is audited too."""
    check_status(status)
    answer, named = CallbackQueue(conn, settings).redeliver(message_id, status)
    if answer != "GRANTED":
        reason, why = _refusal(answer, message_id, status, named)
        record_action(
            conn, settings, target=message_id, action="callback.redeliver", by=by, status=status, refused=reason
        )
        raise NotRedeliverable(why, reason=reason)
    record_action(conn, settings, target=message_id, action="callback.redeliver", by=by, status=status, courier=named)
    return Redelivered(message_id, status, named)


def _refusal(answer: str, message_id: str, status: int, named: str) -> tuple[str, str]:
    cb = f"callback {status} of {message_id}"
    if answer == "MISSING":
        return "unknown", f"no state record for message {message_id} (unknown id, or its record expired)"
    if answer == "NOT_MARKED":
        return "not_marked", f"{cb} was never owed (status {status} never marked): nothing to re-deliver"
    if answer == "NO_WEBHOOK":
        return "no_webhook", f"message {message_id} has no webhook: it has no callbacks to re-deliver"
    if answer == "GONE":
        return "gone", f"{cb}: {named} answered 410 Gone (the receiver said stop): not sent again"
    if answer == "IN_FLIGHT":
        return "in_flight", f"{cb} is still in flight (its delivery has not ended): wait for it to end"
    return "busy", f"{cb}: courier {named} is delivering the message's callbacks now: try again when it ends"
