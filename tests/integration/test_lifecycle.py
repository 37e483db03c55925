"""The lifecycle table (runner.lifecycle.TRANSITIONS) walked against a real redis-server,
row by row: from every state (and from no record), every script that moves a message is
tried towards its target. A move the table gives that script happens; any other is refused
and leaves the message where it was. So the Lua scripts implement exactly the table."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from runner.lifecycle import TRANSITIONS, State
from runner.store.deadletter import DeadRecord, Leftovers, dead_letter
from runner.store.schedule import ScheduledStore, scheduled_key
from runner.store.state import JOB_ENDS, CallbackMark, ClaimStatus, IllegalTransition, StateStore
from runner.store.streams import Entry
from runner.store.waiting import WaitingCreates
from tests.support.clocks import clock_at
from tests.support.messages import message

STREAM = "ksr:jobs:default"
MID = "m-1"
NOW = 1_800_000_000.0
WITH_JOB = {State.CREATED, State.RUNNING, State.COMPLETED, State.FAILED, State.EXCEPTION, State.CANCELLED}


@dataclass
class Parts:
    redis: redis.Redis
    state: StateStore
    scheduled: ScheduledStore
    waiting: WaitingCreates

    def entry(self) -> Entry:
        return Entry(STREAM, "1-0", {b"payload": json.dumps(message(MID, "default")).encode()}, 1, False)

    def where(self) -> State | None:
        """Where the message is, as the runner would tell: its record's state (WAITING
        while its claim waits in the waiting set), else held (SCHEDULED), else nowhere."""
        record = self.state.get(MID)
        if record is not None:
            waits = self.redis.zscore(self.waiting.index, self.waiting.member(self.entry())) is not None
            return State.WAITING if record.state is State.CLAIMED and waits else record.state
        return State.SCHEDULED if self.scheduled.find(MID) else None


@pytest.fixture
def parts(redis_client: redis.Redis) -> Parts:
    return Parts(
        redis_client,
        StateStore(redis_client, ttl_seconds=3600, clock=clock_at(NOW)),
        ScheduledStore(redis_client, streams=(STREAM,)),
        WaitingCreates(redis_client, index="ksr:waiting", group="ksr", clock=clock_at(NOW)),
    )


def put(parts: Parts, source: State | None) -> None:
    """The message in `source`, written as the runner leaves it there."""
    if source is State.SCHEDULED:
        assert parts.scheduled.schedule(
            STREAM, MID, due=NOW - 1, payload=json.dumps(message(MID, "default")), term=None
        )
        return
    if source is None:
        return
    fields = {"state": (source.recorded or source).value, "stream": STREAM, "entry_id": "1-0"}
    if source in WITH_JOB:
        fields |= {"job_name": "job-1", "namespace": "default", "job_uid": "u-1"}
    parts.redis.hset(parts.state.key(MID), mapping=fields)
    if source is State.WAITING:
        parts.waiting.defer(parts.entry(), message_id=MID, due=NOW + 60, error="403 quota", term=0)
    if source.recorded and not source.terminal and source in WITH_JOB:
        parts.redis.sadd(parts.state.active_key, MID)
    assert parts.where() is source, "the set-up puts the message where the row starts"


def _refused_on_illegal(move: Callable[[], object]) -> str:
    try:
        move()
    except IllegalTransition:
        return "refused"
    return "ok"


def _claim(parts: Parts) -> str:
    claim = parts.state.claim(MID, stream=STREAM, entry_id="2-0")
    return "ok" if claim.status is ClaimStatus.NEW else "refused"


def _record(parts: Parts) -> str:
    return _refused_on_illegal(
        lambda: parts.state.record_job(MID, job_name="job-1", namespace="default", job_uid="u-1")
    )


def _update(target: State) -> Callable[[Parts], str]:
    def move(parts: Parts) -> str:
        write = parts.state.finish if target.terminal else parts.state.set_state
        return _refused_on_illegal(lambda: write(MID, target))

    return move


def _end_with_callback(target: State) -> Callable[[Parts], str]:
    status = {State.COMPLETED: 2, State.FAILED: 3, State.EXCEPTION: 99}[target]

    def move(parts: Parts) -> str:
        mark = CallbackMark(status=status, detail="{}")
        return _refused_on_illegal(lambda: parts.state.finish_with_callback(MID, target, mark))

    return move


def _start_with_callback(parts: Parts) -> str:
    mark = CallbackMark(status=1, detail="{}")
    return _refused_on_illegal(lambda: parts.state.start_with_callback(MID, mark, pod_name="p", started_at=1))


def _claim_after_cancel_request(parts: Parts) -> str:
    parts.redis.hset(parts.state.key(MID), "cancel_requested", int(NOW * 1000))
    claim = parts.state.claim(MID, stream=STREAM, entry_id="2-0")
    cancelled = claim.status is ClaimStatus.DUPLICATE and claim.record.state is State.CANCELLED
    return "ok" if cancelled else "refused"


def _release(parts: Parts) -> str:
    try:
        return "ok" if parts.state.release(MID) else "refused"
    except IllegalTransition:
        return "refused"


def _cancel(parts: Parts) -> str:
    outcome = parts.scheduled.cancel(MID, now=NOW, ttl_seconds=3600)
    return "ok" if outcome.kind == "CANCELLED" else "refused"


def _schedule(parts: Parts) -> str:
    held = parts.scheduled.schedule(STREAM, MID, due=NOW + 60, payload=json.dumps(message(MID, "default")), term=None)
    return "ok" if held else "refused"


def _move_due(parts: Parts) -> str:
    return "ok" if parts.scheduled.move_due(STREAM, now=NOW, term=None) == 1 else "refused"


def _dead_letter(parts: Parts) -> str | None:
    entry = parts.entry()
    member = parts.waiting.member(entry)
    dead_letter(
        parts.redis,
        entry,
        group="ksr",
        reason="poison",
        error="delivered too often",
        leftovers=Leftovers(
            message_id=MID,
            record_key=parts.state.key(MID),
            active_key=parts.state.active_key,
            waiting_index=parts.waiting.index,
            waiting_member=member,
            waiting_key=parts.waiting.key(member),
        ),
        record=DeadRecord(ttl_seconds=3600),
        now=NOW,
    )
    return None  # the script answers the dead entry's id whatever the record was


# (script, the target it moves towards, how to ask it); update.lua is asked for every state
# but a Job's own ends, which mark_callback.lua makes with the callback, as it makes the
# move to running with callback 1.
ACTIONS: list[tuple[str, State | None, Callable[[Parts], str | None]]] = [
    ("claim", State.CLAIMED, _claim),
    ("claim", State.CANCELLED, _claim_after_cancel_request),
    ("record_job", State.CREATED, _record),
    *[("update", target, _update(target)) for target in State if target.recorded is target and target not in JOB_ENDS],
    *[("mark_callback", target, _end_with_callback(target)) for target in sorted(JOB_ENDS)],
    ("mark_callback", State.RUNNING, _start_with_callback),
    ("release", None, _release),
    ("cancel", State.CANCELLED, _cancel),
    ("schedule", State.SCHEDULED, _schedule),
    ("move_due", None, _move_due),
    ("dead_letter", State.DEAD, _dead_letter),
]
SOURCES: list[State | None] = [None, *State]

# A cancel request (`cancel_requested`, written by cancel.lua) exists only on a live record:
# the claim that reads one is walked from those states alone.
ONLY_FROM: dict[tuple[str, State | None], set[State | None]] = {
    ("claim", State.CANCELLED): {State.CLAIMED, State.WAITING, State.CREATED, State.RUNNING},
}


def _rows() -> list[object]:
    rows = []
    for source in SOURCES:
        for script, target, move in ACTIONS:
            if source not in ONLY_FROM.get((script, target), {source}):
                continue
            rows.append(pytest.param(source, script, target, move, id=f"{source or 'none'}-{script}-{target}"))
    return rows


def _legal(source: State | None, target: State | None, script: str) -> bool:
    return any(t.source is source and t.target is target and t.script == script for t in TRANSITIONS)


@pytest.mark.parametrize(("source", "script", "target", "move"), _rows())
def test_a_script_takes_exactly_the_moves_the_table_gives_it(
    parts: Parts, source: State | None, script: str, target: State | None, move: Callable[[Parts], str | None]
) -> None:
    put(parts, source)
    legal = _legal(source, target, script)
    answer = move(parts)
    if answer is not None:
        assert answer == ("ok" if legal else "refused"), f"{script} answered {answer}"
    expected = target if legal else source
    assert parts.where() is expected, f"{source} -> {target} by {script}: legal={legal}"


def test_every_scripted_row_is_walked() -> None:
    """No row of the table escapes the walk above (a new script needs an action there)."""
    walked = {(script, target) for script, target, _ in ACTIONS}
    unwalked = [t for t in TRANSITIONS if t.script and (t.script, t.target) not in walked]
    assert [(t.source, t.target, t.script) for t in unwalked] == [
        (State.CLAIMED, State.WAITING, "defer_create")  # a place: the record stays claimed (test_pipeline_quota)
    ]


def test_a_refused_move_writes_nothing(parts: Parts) -> None:
    """A refusal is whole: no field, no TTL, no active-set change."""
    put(parts, State.COMPLETED)
    parts.redis.expire(parts.state.key(MID), 100)
    before = dict(parts.state.get(MID) or {})
    with pytest.raises(IllegalTransition) as info:
        parts.state.set_state(MID, State.RUNNING, pod_name="p", started_at=1)
    assert (info.value.current, info.value.target) == (State.COMPLETED, State.RUNNING)
    with pytest.raises(IllegalTransition):
        parts.state.record_job(MID, job_name="job-2", namespace="default", job_uid="u-2")
    assert dict(parts.state.get(MID) or {}) == before
    assert 0 < parts.state.ttl(MID) <= 100 and parts.state.active_ids() == set()
    assert parts.redis.zcard(scheduled_key(STREAM)) == 0


def test_update_never_makes_a_record_from_nothing(parts: Parts) -> None:
    """A finish for a record that expired must not leave a hash the claim would read as claimed."""
    with pytest.raises(IllegalTransition) as info:
        parts.state.finish(MID, State.COMPLETED)
    assert info.value.current is None
    assert parts.state.get(MID) is None
