"""Delayed messages' timing, pure: when the DelayGate holds a message and until when, and how
long the scheduler's turn sleeps (the earliest of the next due message, the next cron tick
and KSR_SCHEDULE_POLL). Judged on a clock the test sets (in the runner, Redis's TIME), with a
store that records instead of Redis; the store's scripts are tests/integration/
test_schedule_store.py's, the real pipeline's delays tests/integration/test_scheduling.py's."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from runner.errors import InvalidMessage
from runner.message import parse_message
from runner.pipeline.delay import MOVED_FIELD, DelayGate
from runner.pipeline.scheduler import Scheduler
from runner.signals import ScheduledMoved, ScheduledWaiting, Signals
from runner.store.schedule import MOVE_BATCH
from runner.store.streams import Entry
from tests.support.messages import message

NOW = 1_800_000_000.0
STREAM = "ksr:jobs:default"


class Store:
    """The scheduled store: what was held, and a backlog of due messages per stream."""

    def __init__(self, *, backlog: int = 0, next_due: float | None = None, known: bool = False) -> None:
        self.streams = [STREAM, "ksr:jobs:low"]
        self.held: list[tuple[str, float]] = []
        self.backlog = backlog
        self._next_due = next_due
        self.known = known  # the id has a record already: schedule() answers None
        self.moves: list[tuple[str, float]] = []

    def schedule(self, stream: str, message_id: str, *, due: float, payload: str, term: int | None) -> bool | None:
        if self.known:
            return None
        self.held.append((message_id, due))
        return True

    def move_due(self, stream: str, *, now: float, term: int | None, limit: int = MOVE_BATCH) -> int:
        self.moves.append((stream, now))
        moved = min(limit, self.backlog) if stream == STREAM else 0
        if stream == STREAM:
            self.backlog -= moved
        return moved

    def next_due(self) -> float | None:
        return self._next_due

    def waiting(self) -> dict[str, int]:
        return {STREAM: len(self.held)}


class Clock:
    """Redis's TIME as the runner reads it: counted, so a test sees when it was not read."""

    def __init__(self, now: float = NOW) -> None:
        self.now, self.reads = now, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def _rfc3339(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat().replace("+00:00", "Z")


def _entry(entry_ms: int, *, moved: bool = False, **timing: Any) -> tuple[Entry, Any]:
    raw = {**message("m1", "ns"), **timing}
    payload = json.dumps(raw)
    fields = {b"payload": payload.encode()}
    if moved:
        fields[MOVED_FIELD] = b"1"
    return Entry(STREAM, f"{entry_ms}-0", fields, 1, False), parse_message(payload)


def _gate(store: Store, clock: Clock, woken: list[int]) -> DelayGate:
    return DelayGate(store, max_ahead=600, on_held=lambda: woken.append(1), wall_clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sent_ago,timing,held_until",
    [
        (2.0, {"delaySeconds": 5}, NOW + 3),  # counts from the entry, not from the read
        (5.0, {"delaySeconds": 5}, None),  # due now: runs at once
        (60.0, {"delaySeconds": 5}, None),  # due a minute ago (a backlog): runs at once
        (-3600.0, {"delaySeconds": 5}, NOW + 5),  # the id an hour ahead of Redis: counts from now
        (0.0, {"runAt": _rfc3339(NOW + 30)}, NOW + 30),
        (0.0, {"runAt": _rfc3339(NOW - 1)}, None),
    ],
)
def test_the_gate_holds_a_message_until_it_is_due(sent_ago: float, timing: dict, held_until: float | None) -> None:
    store, clock, woken = Store(), Clock(), []
    entry, msg = _entry(int((NOW - sent_ago) * 1000), **timing)
    held = _gate(store, clock, woken).hold(entry, msg, 1)
    assert held is (held_until is not None)
    assert store.held == ([("m1", pytest.approx(held_until))] if held_until else [])
    assert woken == ([1] if held_until else []), "the scheduler is woken for a new hold only"


def test_the_gate_reads_no_clock_for_a_message_without_timing_or_one_moved_back() -> None:
    store, clock, woken = Store(), Clock(), []
    gate = _gate(store, clock, woken)
    assert gate.hold(*_entry(int(NOW * 1000)), 1) is False
    assert gate.hold(*_entry(int(NOW * 1000), moved=True, delaySeconds=60), 1) is False  # due by definition
    assert clock.reads == 0 and store.held == []


def test_the_gate_leaves_a_known_id_to_the_claim_and_refuses_one_too_far_ahead() -> None:
    store, clock, woken = Store(known=True), Clock(), []
    assert _gate(store, clock, woken).hold(*_entry(int(NOW * 1000), delaySeconds=60), 1) is False
    assert woken == []
    with pytest.raises(InvalidMessage, match="delaySeconds"):
        _gate(Store(), clock, woken).hold(*_entry(int(NOW * 1000), delaySeconds=601), 1)


class Beat:
    def __init__(self, next_tick: float | None) -> None:
        self.next_tick = next_tick
        self.runs: list[float] = []

    def run(self, now: float, term: int | None) -> float | None:
        self.runs.append(now)
        return self.next_tick


def _scheduler(store: Store, clock: Clock, beat: Beat | None, seen: list[Any]) -> Scheduler:
    return Scheduler(
        store=store,  # type: ignore[arg-type]
        beat=beat,  # type: ignore[arg-type]
        cancels=None,
        poll=5.0,
        signals=Signals([seen.append]),
        wall_clock=clock,
    )


@pytest.mark.parametrize(
    "next_due,next_tick,sleep",
    [
        (None, None, 5.0),  # nothing held, no schedules: the poll
        (NOW + 2, None, 2.0),  # the next due message
        (NOW + 2, NOW + 1.5, 1.5),  # the next tick, earlier
        (NOW + 60, NOW + 30, 5.0),  # both later than the poll: the poll (another replica may write)
        (NOW - 1, None, 0.0),  # already due (written meanwhile): no sleep, never negative
    ],
)
def test_a_turn_sleeps_until_the_earliest_of_due_tick_and_poll(
    next_due: float | None, next_tick: float | None, sleep: float
) -> None:
    store, clock, beat, seen = Store(next_due=next_due), Clock(), Beat(next_tick), []
    assert _scheduler(store, clock, beat, seen).run_once(1) == pytest.approx(sleep)
    assert beat.runs == [NOW] and {now for _, now in store.moves} == {NOW}, "one reading of the clock judges all"
    assert ScheduledWaiting(0, next_due) in seen


def test_a_backlog_is_moved_batch_by_batch_within_one_turn_and_stops_when_told() -> None:
    store, clock, seen = Store(backlog=2 * MOVE_BATCH + 7), Clock(), []
    _scheduler(store, clock, None, seen).run_once(1)
    assert store.backlog == 0
    assert [s.count for s in seen if isinstance(s, ScheduledMoved)] == [MOVE_BATCH, MOVE_BATCH, 7]
    store, seen = Store(backlog=5 * MOVE_BATCH), []
    turns = iter([True, True, False])
    _scheduler(store, clock, None, seen).run_once(1, keep_going=lambda: next(turns, False))
    assert store.backlog == 3 * MOVE_BATCH, "a leader told to stop moves no further batch"
