"""Which of the tracker's callback marks carry the message's webhook for the record to keep:
only those on a record that has none of its own (a cancel or a refusal before the message was
read, a record a failover lost). Every other mark passes '' and mark_callback.lua writes
nothing for it (the courier reads the URL from the record: runner/callbacks/courier.py)."""

from __future__ import annotations

from typing import Any

import pytest

from election.clock import FakeClock
from runner.jobs.tracker import Tracker
from runner.lifecycle import CallbackStatus
from runner.settings import Settings
from runner.signals import Signals
from runner.store.record import StateRecord
from runner.store.state import CallbackMark, Marked

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})
URL = "http://127.0.0.1:9/hook"


class State:
    """One stored record (or none); every mark and state move recorded."""

    def __init__(self, record: dict[str, Any] | None) -> None:
        self.record = StateRecord(record) if record is not None else None
        self.marks: list[CallbackMark] = []

    def get(self, message_id: str) -> StateRecord | None:
        return self.record

    def mark_callback(self, message_id: str, callback: CallbackMark, *, term: int | None = None) -> Marked:
        self.marks.append(callback)
        return Marked(first=True)  # no courier granted: nothing to enqueue

    def set_state(self, *args: Any, **kwargs: Any) -> None:
        pass

    def finish(self, *args: Any, **kwargs: Any) -> None:
        pass


def tracker(state: State) -> Tracker:
    return Tracker(
        state=state,  # type: ignore[arg-type]
        callbacks=None,  # type: ignore[arg-type]
        settings=SETTINGS,
        signals=Signals([]),
        clock=FakeClock(),
    )


RUNNING_WITH_HOOK = {"state": "running", "job_name": "j", "job_uid": "u", "webhook": URL, "cb_0": "1", "cb_1": "1"}
CREATED_NO_HOOK = {"state": "created", "job_name": "j", "job_uid": "u"}


def kept(state: State) -> list[tuple[int, str]]:
    return [(int(m.status), m.webhook) for m in state.marks]


def test_a_mark_on_a_record_with_its_webhook_passes_none_to_keep():
    state = State(RUNNING_WITH_HOOK)
    tracker(state).completed("m", duration=1.0)
    assert kept(state) == [(CallbackStatus.COMPLETED, "")]


def test_a_cancel_of_a_record_without_a_webhook_keeps_the_messages_on_every_mark():
    state = State(CREATED_NO_HOOK)
    assert tracker(state).cancelled("m", stage="running", webhook=URL)
    assert kept(state) == [(CallbackStatus.CREATED, URL), (CallbackStatus.EXCEPTION, URL)]


def test_a_cancel_of_a_record_with_its_own_webhook_keeps_nothing():
    state = State({**CREATED_NO_HOOK, "webhook": URL, "cb_0": "1"})
    assert tracker(state).cancelled("m", stage="running", webhook=URL)
    assert kept(state) == [(CallbackStatus.EXCEPTION, "")]


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"state": "claimed"}, URL),  # the claim keeps no webhook
        ({"state": "claimed", "webhook": URL}, ""),
        (None, URL),  # no record: the script answers MISSING, the URL rides along unused
    ],
)
def test_a_refusal_keeps_the_webhook_only_where_the_record_lacks_it(stored, expected):
    state = State(stored)
    tracker(state).refused("m", webhook=URL, code="Refused", message="no")
    assert kept(state) == [(CallbackStatus.EXCEPTION, expected)]
    assert state.marks[0].owed_key, "the 99 is owed (to the URL), whichever record it lands in"


def test_created_on_a_record_that_lost_its_webhook_keeps_it():
    state = State(CREATED_NO_HOOK)
    tracker(state).created("m", job_name="j", job_uid="u", webhook=URL)
    assert kept(state) == [(CallbackStatus.CREATED, URL)]
