"""Whatever an entry holds, the parser answers a Message or InvalidMessage, nothing else
(issue 10 §1: json.loads raises RecursionError, not ValueError, on deep nesting)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import InvalidMessage
from runner.jobs.manifest import build_job
from runner.message import MAX_DEPTH, Message, parse_entry, parse_message, peek_message_id
from runner.settings import Settings
from tests.support.messages import VALID

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SETTINGS = Settings.from_env({"POD_NAME": "r0"})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "default", "busybox", "x" * 300, "-bad-", "/abs", "1", "Ab"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


VALID_PATHS = _paths(VALID)[1:]


def _outcome(payload: bytes | str) -> Message | InvalidMessage:
    try:
        return parse_message(payload)
    except InvalidMessage as e:
        assert str(e), "an invalid message always says why"
        return e


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(payload: bytes) -> None:
    _outcome(payload)
    peek_message_id({b"payload": payload})


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    _outcome(json.dumps(value))
    peek_message_id({b"payload": json.dumps(value).encode()})


@FUZZ
@given(st.sampled_from(VALID_PATHS), json_values)
def test_any_field_of_a_valid_message_replaced_by_any_json(path: tuple[Any, ...], value: Any) -> None:
    """Deeper than arbitrary values reach by chance: each field of the design's example
    in turn, replaced by any JSON value. What parses must also build a Job manifest."""
    doc = copy.deepcopy(VALID)
    node: Any = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    result = _outcome(json.dumps(doc))
    if isinstance(result, Message):
        build_job(result, SETTINGS, stream="ksr:jobs:default", entry_id="1-0")


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_including_surrogates_as_str(text: str) -> None:
    _outcome(text)


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 60000])
def test_deep_nesting_is_invalid_not_a_crash(opener: str, closer: str, depth: int) -> None:
    for payload in (opener * depth, opener * depth + "0" + closer * depth):
        with pytest.raises(InvalidMessage, match=r"^payload: nested deeper than 64 levels"):
            parse_message(payload, max_bytes=1 << 20)
        assert peek_message_id({b"payload": payload.encode()}) is None


def test_deep_nesting_inside_a_valid_message() -> None:
    doc = copy.deepcopy(VALID)
    doc["extra"] = json.loads("[" * 40 + "]" * 40)  # unknown fields are ignored, within the limit
    assert parse_message(json.dumps(doc)).id == VALID["id"]
    text = json.dumps(VALID)[:-1] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(InvalidMessage, match=r"nested deeper than 64 levels \(5001\)"):
        parse_message(text)


def test_brackets_inside_strings_do_not_count() -> None:
    doc = copy.deepcopy(VALID)
    doc["job"]["args"] = ["[" * 5000, '\\"{' * 100]
    assert parse_message(json.dumps(doc)).job.args[0] == "[" * 5000


def test_peek_message_id() -> None:
    assert peek_message_id({b"payload": json.dumps(VALID).encode()}) == VALID["id"]
    assert peek_message_id({b"payload": b'{"id": "has space"}'}) is None
    assert peek_message_id({b"payload": b'{"id": 5}'}) is None
    assert peek_message_id({b"data": b"{}"}) is None
    assert peek_message_id({b"payload": b'{"id": "only-id"}'}) == "only-id"  # invalid as a message, id known


def test_entry_whose_payload_is_not_text() -> None:
    with pytest.raises(InvalidMessage, match=r"^payload: must be bytes or text, got int"):
        parse_entry({b"payload": 5})
