"""The state record `ksr:msg:<id>`: every field name of that hash, and its parsing.

`StateStore` (runner.store.state) writes the record; everyone else reads it as a
`StateRecord`, never as a dict of strings. The hash holds strings only:

    state          a runner.lifecycle.State: claimed | created | running | completed | failed |
                   exception | cancelled | dead (StateRecord.state parses it)
    cancel_stage, cancelled_at (ms), cancel_requested (ms)   a cancel (runner.store.schedule, docs/scheduling.md)
    dead_reason, dead_error, dead_id                 a dead letter (runner.store.deadletter): its reason,
                                                     error and dead entry id; with finished_at
    stream, entry_id, claimed_at (ms), term          claim()
    job_name, namespace, job_uid, created_at (ms)    record_job(); with webhook, service, executor
    pod_name, pod_uid, started_at (ms)               the tracker, when the pod starts
    updated_at, finished_at (ms)                     set_state() / finish()
    cb_<s>         ms the callback for status <s> was marked sent (first caller wins)
    detail_<s>     its detail JSON, kept so takeover can send it again
    cbj_<s>        RQ job id of the latest job of that callback's chain
    cba_<s>        attempts started (counted before each one, so a killed worker's counts)
    cbl_<s>        JSON list of the last ATTEMPT_LOG_MAX attempts' notes (CallbackAttempt): when,
                   HTTP status, how long, outcome, next retry; written by the courier, which
                   holds the message's owner lease, so one writer at a time
    cbd_<s>        delivered | gone | failed | expired: the callback is finished
    cbd_gone_url   the URL that answered 410: nothing more is sent to it for this message
    cb_owner       "<RQ job id> <deadline ms> <since ms>": the one job that may deliver the
                   message's callbacks (lua/lib_owner.lua; docs/callbacks.md, "One owner")
    cb_seq         a counter that keeps the owner's job ids unique

Every time in the record is Unix milliseconds. Records written before that was so hold
`started_at` in seconds with 3 decimals; `started_at_ms` tells the two apart by magnitude
(docs/redis-keys.md).

The Lua scripts of runner/store/lua/ use the same names (claim.lua tests `state` and
`job_name`). Absent text fields read as "", absent or unreadable numbers as None: one odd
record must not stop the loops that read every active record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from runner.lifecycle import CallbackStatus, State
from runner.store.replies import text_fields

__all__ = [
    "ATTEMPT_LOG_MAX",
    "FINAL_OUTCOMES",
    "CallbackAttempt",
    "Field",
    "StateRecord",
    "attempt_log_with",
    "unix_ms",
]

# A time below this, read as ms, would be before 1973: it is an old record's seconds.
_SECONDS_BELOW = 10**11
FINAL_OUTCOMES = frozenset({"delivered", "gone", "failed", "expired"})  # values of cbd_<s>
ATTEMPT_LOG_MAX = 10  # attempt notes kept per status (cbl_<s>): the record stays small
_NOTE_DETAIL_MAX = 200  # characters of an attempt's why (a receiver's words can be long)


class Field:
    """The names of the record's fields."""

    STATE = "state"
    STREAM = "stream"
    ENTRY_ID = "entry_id"
    CLAIMED_AT = "claimed_at"
    TERM = "term"
    JOB_NAME = "job_name"
    NAMESPACE = "namespace"
    JOB_UID = "job_uid"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    FINISHED_AT = "finished_at"
    WEBHOOK = "webhook"
    SERVICE = "service"
    EXECUTOR = "executor"
    POD_NAME = "pod_name"
    POD_UID = "pod_uid"
    STARTED_AT = "started_at"
    GONE_URL = "cbd_gone_url"
    DEAD_REASON = "dead_reason"
    DEAD_ERROR = "dead_error"
    DEAD_ID = "dead_id"
    OWNER = "cb_owner"

    @staticmethod
    def marked(status: int) -> str:
        return f"cb_{int(status)}"

    @staticmethod
    def detail(status: int) -> str:
        return f"detail_{int(status)}"

    @staticmethod
    def chain(status: int) -> str:
        return f"cbj_{int(status)}"

    @staticmethod
    def outcome(status: int) -> str:
        return f"cbd_{int(status)}"

    @staticmethod
    def attempts(status: int) -> str:
        return f"cba_{int(status)}"

    @staticmethod
    def attempt_log(status: int) -> str:
        return f"cbl_{int(status)}"

    @staticmethod
    def redelivery(status: int) -> str:
        return f"cbr_{int(status)}"


@dataclass(frozen=True)
class CallbackAttempt:
    """One webhook attempt as the courier noted it: `number` (cba_<s> when it started),
    `at_ms` (Unix ms it started), `duration_ms`, `http_status` (None: no answer), `outcome`
    (delivered | retry | gone | failed | expired), `detail` (why, plain text, cut short) and
    `next_retry_ms` (Unix ms of the next attempt, for a retry)."""

    number: int
    at_ms: int
    duration_ms: int
    http_status: int | None
    outcome: str
    detail: str = ""
    next_retry_ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.number,
            "at": self.at_ms,
            "ms": self.duration_ms,
            "http": self.http_status,
            "outcome": self.outcome,
            "detail": self.detail[:_NOTE_DETAIL_MAX],
            "next": self.next_retry_ms,
        }

    @classmethod
    def from_json(cls, doc: Any) -> CallbackAttempt | None:
        """None for a note that is not one of ours (never raises: a record is read by loops)."""
        if not isinstance(doc, dict):
            return None
        try:
            http, nxt = doc.get("http"), doc.get("next")
            return cls(
                number=int(doc["n"]),
                at_ms=int(doc["at"]),
                duration_ms=int(doc["ms"]),
                http_status=None if http is None else int(http),
                outcome=str(doc.get("outcome") or ""),
                detail=str(doc.get("detail") or ""),
                next_retry_ms=None if nxt is None else int(nxt),
            )
        except (KeyError, TypeError, ValueError):
            return None


def attempt_log_with(notes: list[CallbackAttempt], note: CallbackAttempt) -> str:
    """The cbl_<s> value after `note`: the last ATTEMPT_LOG_MAX notes, oldest first, as JSON."""
    kept = [*notes, note][-ATTEMPT_LOG_MAX:]
    return json.dumps([n.as_json() for n in kept], separators=(",", ":"))


_MARKED = Field.marked(0)[:-1]  # "cb_"


class StateRecord(Mapping[str, str]):
    """One state record, read-only. It is a Mapping of the raw fields (for display, JSON
    output and equality with a dict); code reads the typed properties below."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        self._fields = dict(fields or {})

    @classmethod
    def from_reply(cls, reply: Any) -> StateRecord:
        """From HGETALL (a dict of bytes) or a Lua reply (a flat list)."""
        return cls(text_fields(reply))

    # -- Mapping -----------------------------------------------------------------------
    def __getitem__(self, name: str) -> str:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"StateRecord({self._fields!r})"

    # -- the message and its Job -------------------------------------------------------
    @property
    def state(self) -> State | None:
        """The record's state; None when the field is absent or not a state of ours."""
        return State.parse(self._text(Field.STATE))

    @property
    def is_terminal(self) -> bool:
        state = self.state
        return state is not None and state.terminal

    @property
    def stream(self) -> str:
        return self._text(Field.STREAM)

    @property
    def entry_id(self) -> str:
        return self._text(Field.ENTRY_ID)

    @property
    def term(self) -> int | None:
        return self._int(Field.TERM)

    @property
    def job_name(self) -> str:
        return self._text(Field.JOB_NAME)

    @property
    def has_job(self) -> bool:
        return bool(self.job_name)

    @property
    def namespace(self) -> str:
        return self._text(Field.NAMESPACE)

    @property
    def service(self) -> str:
        return self._text(Field.SERVICE)

    @property
    def job_uid(self) -> str:
        return self._text(Field.JOB_UID)

    @property
    def webhook(self) -> str | None:
        return self._text(Field.WEBHOOK) or None

    @property
    def executor(self) -> str:
        """Who runs the Job; records from before the local executor existed are Kubernetes'."""
        return self._text(Field.EXECUTOR) or "kubernetes"

    @property
    def pod_name(self) -> str:
        return self._text(Field.POD_NAME)

    @property
    def pod_uid(self) -> str:
        return self._text(Field.POD_UID)

    @property
    def claimed_at_ms(self) -> int | None:
        return self._int(Field.CLAIMED_AT)

    @property
    def created_at_ms(self) -> int | None:
        return self._int(Field.CREATED_AT)

    @property
    def started_at_ms(self) -> int | None:
        """When its pod started (ms), also from a record that holds it in seconds (before
        every time in the record was ms)."""
        return unix_ms(self._text(Field.STARTED_AT))

    def created_at(self, *, default: float) -> float:
        """When the Job was recorded, in Unix seconds (`default` when it was not)."""
        ms = self.created_at_ms
        return ms / 1000.0 if ms else default

    # -- callbacks ---------------------------------------------------------------------
    def callbacks(self, *, owed: bool = False) -> list[CallbackStatus]:
        """Statuses whose callback was marked sent (`cb_<s>`), ascending. With `owed`, only
        those not finished yet (no final `cbd_<s>`): takeover re-enqueues these, and a later
        status waits for them."""
        marked = sorted(
            int(k[len(_MARKED) :]) for k in self._fields if k.startswith(_MARKED) and k[len(_MARKED) :].isdigit()
        )
        return [
            CallbackStatus(s)
            for s in marked
            if s in CallbackStatus._value2member_map_ and (not owed or self.callback_outcome(s) is None)
        ]

    def callback_outcome(self, status: int) -> str | None:
        """delivered | gone | failed | expired once the callback finished, else None."""
        value = self._fields.get(Field.outcome(status))
        return value if value in FINAL_OUTCOMES else None

    def callback_chain(self, status: int) -> str | None:
        """The RQ job id of the latest job of the callback's chain."""
        return self._fields.get(Field.chain(status)) or None

    def callback_first_owed(self, status: int) -> float | None:
        """Unix seconds the callback was marked sent (`cb_<s>`): its retry horizon counts from it."""
        ms = self._int(Field.marked(status))
        return ms / 1000.0 if ms and ms > 10**9 else None

    def callback_attempts(self, status: int) -> int:
        """Attempts started so far (`cba_<s>`)."""
        return self._int(Field.attempts(status)) or 0

    def callback_redelivery(self, status: int) -> tuple[int, float] | None:
        """(attempts counted before, Unix seconds) of an operator's last re-delivery of the
        callback (`cbr_<s>`, runner.operate.redeliver), or None."""
        before, _, at = (self._fields.get(Field.redelivery(status)) or "").partition(" ")
        if not (before.isdigit() and at.isdigit()):
            return None
        return int(before), int(at) / 1000.0

    def callback_tries(self, status: int) -> int:
        """Attempts of the current delivery: since the last re-delivery, else all of them.
        The attempt limit (KSR_CALLBACK_MAX_ATTEMPTS) counts these."""
        redelivery = self.callback_redelivery(status)
        return self.callback_attempts(status) - (redelivery[0] if redelivery else 0)

    def callback_owed_since(self, status: int) -> float | None:
        """When the current delivery began (Unix seconds): the re-delivery, else the mark.
        The retry horizon counts from it."""
        redelivery = self.callback_redelivery(status)
        return redelivery[1] if redelivery else self.callback_first_owed(status)

    def callback_attempt_log(self, status: int) -> list[CallbackAttempt]:
        """The notes of the last attempts (cbl_<s>), oldest first; [] when none or unreadable."""
        try:
            raw = json.loads(self._fields.get(Field.attempt_log(status)) or "[]")
        except ValueError:
            return []
        notes = [CallbackAttempt.from_json(doc) for doc in raw] if isinstance(raw, list) else []
        return [n for n in notes if n is not None]

    def callback_detail(self, status: int) -> dict[str, Any]:
        """The detail kept when the callback was marked ({} when none or unreadable)."""
        try:
            detail = json.loads(self._fields.get(Field.detail(status)) or "{}")
        except ValueError:
            return {}
        return detail if isinstance(detail, dict) else {}

    @property
    def callback_owner(self) -> str | None:
        """The RQ job id holding the owner lease of the message's callbacks (lapsed or not)."""
        value = self._fields.get(Field.OWNER) or ""
        return value.split(" ", 1)[0] or None

    @property
    def gone_url(self) -> str | None:
        """The webhook URL that answered 410 for this message."""
        return self._fields.get(Field.GONE_URL) or None

    # -- parsing -----------------------------------------------------------------------
    def _text(self, name: str) -> str:
        return self._fields.get(name, "")

    def _int(self, name: str) -> int | None:
        try:
            return int(self._fields[name])
        except (KeyError, ValueError):
            return None


def unix_ms(value: str | None) -> int | None:
    """A Unix time in ms from a record's text: ms as written now, or seconds (with decimals)
    as records from before wrote some; None when absent or unreadable."""
    try:
        number = float(value or "")
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return int(number * 1000) if number < _SECONDS_BELOW else int(number)
