"""docs/message.schema.json is the runner's own rules (runner.message_schema), and for any
message the schema and the runner's validator accept and refuse the same ones, naming the
same fields. Not compared (not JSON Schema's to say, docs/messages.md "The schema"): the
payload's size and nesting depth, which the generated messages stay far below."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner import message_schema
from runner.message import MAX_DEPTH
from tests.support.message_cases import PATTERNED_PATHS, TRICKY_STRINGS, apply, runner_fields
from tests.support.messages import VALID

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "message.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    """`pattern` as ECMA-262 reads it (JSON Schema's dialect): there `$` is the end of the
    input, while python-jsonschema's re.search lets it match before a final newline too.
    The patterns are otherwise portable (test below), so only the anchor needs spelling."""
    if isinstance(instance, str) and not re.search(pattern.removesuffix("$") + r"\Z", instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


VALIDATOR = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})(SCHEMA)
MAX_MESSAGE_BYTES = 65536  # parse_message's default, KSR_MAX_MESSAGE_BYTES' too
PROPERTY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_schema_file_is_generated_from_the_rules() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == message_schema.render(), (
        "docs/message.schema.json differs from runner/message_schema.py; run: python -m runner.message_schema --write"
    )


def test_the_schema_is_draft_2020_12_and_its_patterns_portable() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    patterns = list(_patterns(SCHEMA))
    assert len(patterns) >= 15
    for pattern in patterns:
        # \d and \s mean other things in Python, ECMA-262 and RE2; RE2 (Go) has no look-around.
        assert not re.search(r"\\[dswDSW]|\(\?[=!<]", pattern), pattern
        assert pattern.startswith("^(?:") and pattern.endswith(")$"), pattern


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern":
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


# -- the two validators side by side --------------------------------------------------------


def _dotted(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "payload"  # the top level is what the runner calls the payload


def schema_fields(doc: Any) -> set[str] | None:
    """The fields the schema blames (jsonschema's error paths in the runner's spelling)."""
    fields: set[str] = set()
    for error in VALIDATOR.iter_errors(doc):
        path = list(error.absolute_path)
        if error.validator == "required":  # blamed on the object: name the missing member
            missing = [name for name in error.validator_value if name not in error.instance]
            fields.update(_dotted([*path, name]) for name in missing)
        elif "propertyNames" in error.absolute_schema_path:  # blamed on the object: name the key
            fields.add(_dotted([*path, error.instance]))
        else:
            fields.add(_dotted(path))
    return fields or None


datetimes = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,3})?([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
)
strings = (
    st.sampled_from(TRICKY_STRINGS)
    | st.text(max_size=12)
    | st.text(st.characters(codec="ascii"), max_size=12)
    | st.from_regex(r"\A[a-z0-9][-a-z0-9.]{0,10}[a-z0-9]\Z")
    | datetimes
    | st.builds(lambda s, n: s * n, st.sampled_from(["a", "é", "-", "."]), st.integers(250, 1100))
)
numbers = (
    st.integers(-5, 100)
    | st.integers(-(10**30), 10**30)
    | st.sampled_from([30, 31, 59, 60, 86400, 86401, 2**31 - 1, 2**31, 1e9, 999999999.5, -0.0, 2.0, 2.5, 1e300])
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | strings
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(strings, children, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


# Members VALID does not have, so that they get generated too (and unknown ones, ignored).
EXTRA_PATHS = [
    ("runAt",),
    ("delaySeconds",),
    ("job", "toleration", "effect"),
    ("job", "resources", "limits", "nvidia.com/gpu"),
    ("job", "resources", "requests", "cpu"),
    ("job", "env", 1),
    ("job", "envRef", 0, "extra"),
    ("unknownField",),
    ("job", "unknownField"),
]
VALID_PATHS = [p for p in _paths(VALID) if p] + EXTRA_PATHS


def _rules(obj: message_schema.Obj, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for name, f in obj.fields.items():
        path = (*prefix, name)
        yield path, f.rule
        if isinstance(f.rule, message_schema.Obj):
            yield from _rules(f.rule, path)
        elif isinstance(f.rule, message_schema.Items):
            yield from _rules(f.rule.item, (*path, 0))


RULES = dict(_rules(message_schema.MESSAGE))


def _edges(rule: Any) -> list[Any]:
    """Values at the edges of a rule: each side of every bound."""
    if isinstance(rule, message_schema.Integer):
        low, high = rule.low, rule.high
        return [low - 1, low, float(low), low + 0.5, high, high + 1, float(high + 1), -low]
    if isinstance(rule, message_schema.Number):
        return [rule.low, rule.low - 1e-9, rule.below, rule.below - 0.5, rule.below + 1, True]
    if isinstance(rule, message_schema.Text) and rule.max_len is not None:
        n = rule.max_len
        return ["a" * n, "a" * (n + 1), "1" * n, "a" * (n - 1) + "\n", *rule.choices, ""]
    return []


@st.composite
def messages(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 40)) == 0:
        return draw(values)  # now and then not an object at all
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(VALID_PATHS))
        delete = draw(st.integers(0, 4)) == 0
        edges = _edges(RULES.get(path))
        value = draw(st.sampled_from(edges)) if edges and draw(st.booleans()) else draw(values)
        apply(doc, path, None if delete else value, delete=delete)
    return doc


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@PROPERTY
@given(messages())
def test_the_schema_and_the_runner_agree(doc: Any) -> None:
    # Excluded: the payload's size and nesting depth, which JSON Schema cannot count (docs/messages.md).
    assume(len(json.dumps(doc).encode()) <= MAX_MESSAGE_BYTES and _depth(doc) <= MAX_DEPTH)
    by_runner, by_schema = runner_fields(doc), schema_fields(doc)
    assert by_runner == by_schema, json.dumps(doc, ensure_ascii=False)[:2000]


@pytest.mark.parametrize("value", TRICKY_STRINGS)
@pytest.mark.parametrize("path", PATTERNED_PATHS)
def test_every_tricky_string_in_every_patterned_field(path: tuple[Any, ...], value: str) -> None:
    """The property test samples these; this walks all of them, so none is left to chance."""
    doc = copy.deepcopy(VALID)
    apply(doc, path, value, delete=False)
    assert runner_fields(doc) == schema_fields(doc), (path, value)


def test_the_comparison_sees_refusals() -> None:
    """The mapping is not vacuous: a few known refusals, named alike by both."""
    bad = copy.deepcopy(VALID)
    del bad["job"]["image"]
    bad["job"]["gpuNumber"] = 9
    bad["job"]["resources"]["limits"]["bad name!"] = "1"
    bad["runAt"], bad["delaySeconds"] = "2026-12-01T10:00:00Z", 5
    expected = {"job.image", "job.gpuNumber", "job.resources.limits.bad name!", "runAt"}
    assert runner_fields(bad) == expected == schema_fields(bad)
    assert runner_fields(VALID) is None and schema_fields(VALID) is None
    assert runner_fields([1]) == {"payload"} == schema_fields([1])
