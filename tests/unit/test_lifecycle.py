"""The lifecycle table's own shape (no servers): every state reachable, ends that stay
ends, a table the record-level Lua can implement, and the record's times in one unit.
tests/integration/test_lifecycle.py walks the table against redis-server."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from runner.lifecycle import (
    LIVE_STATES,
    RECORD_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    Actor,
    CallbackStatus,
    DispatchOutcome,
    State,
    is_legal,
    lua_prelude,
    markdown_table,
    moves_of,
)
from runner.store.record import StateRecord, unix_ms


def test_the_states_keep_the_strings_redis_holds() -> None:
    assert [s.value for s in State] == [
        "scheduled",
        "waiting",
        "claimed",
        "created",
        "running",
        "completed",
        "failed",
        "exception",
        "cancelled",
        "dead",
    ]
    assert {s.value for s in LIVE_STATES} == {"claimed", "created", "running"}
    assert RECORD_STATES == LIVE_STATES | TERMINAL_STATES
    assert State.WAITING.recorded is State.CLAIMED and State.SCHEDULED.recorded is None


@pytest.mark.parametrize("state", list(State))
def test_every_state_is_reached_by_some_row(state: State) -> None:
    assert any(t.target is state for t in TRANSITIONS)


@pytest.mark.parametrize("state", sorted(LIVE_STATES | {State.SCHEDULED, State.WAITING}))
def test_every_state_that_is_not_an_end_has_a_way_to_one(state: State) -> None:
    seen, todo = set(), [state]
    while todo:
        here = todo.pop()
        seen.add(here)
        todo += [t.target for t in TRANSITIONS if t.source is here and t.target and t.target not in seen]
    assert seen & TERMINAL_STATES, f"{state} can never end"


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_an_end_is_left_only_by_being_forgotten(state: State) -> None:
    out = {(t.target, t.actor) for t in TRANSITIONS if t.source is state}
    forgotten = {(None, Actor.OPERATOR), (None, Actor.EXPIRY)}
    # A dead letter never ran: its id read again (a replay, a corrected resend) starts afresh.
    afresh = {(State.CLAIMED, Actor.DISPATCHER), (State.SCHEDULED, Actor.DISPATCHER)}
    assert out == (forgotten | afresh if state is State.DEAD else forgotten)


def test_the_record_level_scripts_can_implement_the_table() -> None:
    """A script sees only the record: two states the record cannot tell apart (no record /
    held; claimed / waiting) must get the same moves from it, or Lua would allow more."""
    by_script: dict[str, dict[State | None, set[State | None]]] = defaultdict(lambda: defaultdict(set))
    for t in TRANSITIONS:
        if t.script is None:
            continue
        target = t.target.recorded if t.target else None
        source = t.source.recorded if t.source else None
        if source is not target:
            by_script[t.script][t.source].add(target)
    for script, rows in by_script.items():
        assert rows.get(None, set()) == rows.get(State.SCHEDULED, set()), script
        assert rows.get(State.CLAIMED, set()) == rows.get(State.WAITING, set()), script


def test_a_script_gets_only_its_own_moves() -> None:
    assert moves_of("update") == {
        (State.CREATED, State.RUNNING),
        (State.CREATED, State.CANCELLED),
        (State.RUNNING, State.CANCELLED),
        (State.CLAIMED, State.CANCELLED),
    }
    # a Job's start and its own end go with their callback's mark and event, never apart
    ends = {State.COMPLETED, State.FAILED, State.EXCEPTION}
    started = {(State.CREATED, State.RUNNING)}
    assert moves_of("mark_callback") == started | {(s, t) for s in (State.CREATED, State.RUNNING) for t in ends}
    assert moves_of("claim") == {(None, State.CLAIMED), (State.DEAD, State.CLAIMED), (State.CLAIMED, State.CANCELLED)}
    assert moves_of("schedule") == {(State.DEAD, None)}  # a place: only a dead letter's record goes
    prelude = lua_prelude("claim")
    assert "local MOVES = {[''] = {['claimed'] = true}, ['claimed'] = {['cancelled'] = true}" in prelude
    assert "DEAD = 'dead'" in prelude and "['dead'] = true" in prelude


def test_who_may_take_a_move() -> None:
    assert is_legal(State.RUNNING, State.CANCELLED, actor=Actor.LEADER_CANCEL)
    assert not is_legal(State.RUNNING, State.CANCELLED, actor=Actor.CANCEL)  # a process only asks
    assert is_legal(None, State.CANCELLED, actor=Actor.CANCEL)
    assert not is_legal(State.COMPLETED, State.RUNNING)


def test_outcomes_and_statuses_are_closed_sets() -> None:
    assert {o for o in DispatchOutcome if o.failed} == {DispatchOutcome.INVALID, DispatchOutcome.DEAD_LETTERED}
    assert not DispatchOutcome.RETRIED.processed and DispatchOutcome.CANCELLED.processed
    assert [int(s) for s in CallbackStatus] == [0, 1, 2, 3, 99]
    assert {s for s in CallbackStatus if s.final} == {2, 3, 99}


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1800000000123", 1800000000123),  # written now: ms
        ("1800000000.123", 1800000000123),  # a record from before: seconds with 3 decimals
        ("1800000000", 1800000000000),
        ("", None),
        ("soon", None),
        ("inf", None),
        ("-5", None),
    ],
)
def test_a_record_time_reads_in_ms_whichever_unit_it_was_written_in(text: str, ms: int | None) -> None:
    assert unix_ms(text) == ms
    assert StateRecord({"started_at": text}).started_at_ms == ms


@pytest.mark.parametrize(
    ("value", "state", "terminal"),
    [("running", State.RUNNING, False), ("dead", State.DEAD, True), ("", None, False), ("Running", None, False)],
)
def test_a_record_s_state_is_parsed_to_the_enum(value: str, state: State | None, terminal: bool) -> None:
    record = StateRecord({"state": value})
    assert record.state is state and record.is_terminal is terminal


def test_docs_lifecycle_md_holds_the_table_as_the_code_has_it() -> None:
    text = (Path(__file__).parents[2] / "docs" / "lifecycle.md").read_text()
    begin, end = "<!-- BEGIN transitions -->\n", "<!-- END transitions -->"
    documented = text[text.index(begin) + len(begin) : text.index(end)]
    assert documented == markdown_table(), "paste markdown_table() between the markers of docs/lifecycle.md"


def test_a_callback_status_reaches_redis_as_its_number() -> None:
    from redis.connection import Encoder

    encoder = Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=False)
    assert [encoder.encode(s) for s in CallbackStatus] == [b"0", b"1", b"2", b"3", b"99"]
    assert encoder.encode(State.DEAD) == b"dead"
