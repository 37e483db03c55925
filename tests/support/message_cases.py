"""Messages at the edges of the rules, for checking a validator against the runner's:
docs/message.schema.json read by jsonschema (tests/unit/test_message_schema.py) and by the
Go example (tests/integration/test_go_producer.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

from runner.errors import InvalidMessage
from runner.message import parse_message
from tests.support.messages import VALID


def runner_fields(doc: Any) -> set[str] | None:
    """The fields the runner blames, or None when it accepts the message."""
    try:
        parse_message(json.dumps(doc))
    except InvalidMessage as e:
        return {path for path, _ in e.problems}
    return None


# Values a producer gets wrong: wrong types, empty, huge, unicode look-alikes, trailing newlines.
TRICKY_STRINGS = [
    "",
    " ",
    "a\n",
    "\na",
    "a b",
    "A",
    "-a",
    "a-",
    "a.b",
    "a/b",
    "a..b",
    "..",
    "/..",
    "/a/../b",
    "/a/...",
    "/.a",
    "/",
    "//",
    "/a:b",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: \d in Python
    "\u017f",  # LATIN SMALL LETTER LONG S: 's' under Python's IGNORECASE
    "\u212a",  # KELVIN SIGN: lower() is 'k'
    "\u0130",  # I WITH DOT: lower() is two characters
    "\x85",
    "\xa0",
    "\ufeff",
    "\u2028",
    "\x00",
    "\x7f",
    "\U0001f600",
    "\ud800",  # a lone surrogate, as JSON's \\ud800 gives
    "500m",
    "1Gi",
    "1e3",
    ".5",
    "5.",
    "1.5Ki",
    "-1",
    "cpu",
    "example.com/gpu",
    "Example.com/gpu",
    "configmap",
    "ConfigMap",
    "SECRET",
    "secret\n",
    "NoSchedule",
    "noschedule",
    "http://h",
    "https://h/p?q#f",
    "HTTP://h",
    "http\u017f://h",
    "https:///path",
    "http://h p",
    "http://h\u3000",
    "ftp://h",
    "kubernetes.io/hostname",
    "a" * 63,
    "a" * 64,
    "a" * 253,
    "a" * 254,
    "a." * 126 + "a",
    "k" * 253 + "/" + "n" * 63,
    "k/" + "n" * 64,
    "2026-12-01T10:00:00Z",
    "2026-12-01t10:00:00z",
    "2026-12-01 10:00:00+01:00",
    "2026-12-01T10:00:00",
    "2026-12-01T10:00:00.123456789-05:30",
    "2026-12-01T10:00:00.Z",
    "2024-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T10:60:00Z",
    "2026-12-01T10:00:60Z",
    "2026-12-01T10:00:00+24:00",
    "2026-12-01T10:00:00+05:60",
]

PATTERNED_PATHS: list[tuple[Any, ...]] = [
    ("id",),
    ("service",),
    ("job", "prefixName"),
    ("job", "image"),
    ("job", "serviceAccount"),
    ("job", "env", 0, "name"),
    ("job", "envRef", 0, "type"),
    ("job", "resources", "limits", "cpu"),
    ("job", "nodeSelector", "matchKey"),
    ("job", "nodeSelector", "matchValue"),
    ("job", "toleration", "effect"),
    ("job", "volume", "mountPath"),
    ("webhook", "url"),
    ("runAt",),
]


def apply(doc: Any, path: tuple[Any, ...], value: Any, *, delete: bool) -> None:
    node = doc
    for part in path[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return  # an earlier change removed or replaced the parent
    last = path[-1]
    if isinstance(node, dict) and not isinstance(last, int):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int):
        if delete and last < len(node):
            del node[last]
        elif not delete:
            node[min(last, len(node)) : last + 1] = [value]


def tricky_messages() -> Iterator[dict[str, Any]]:
    """VALID with each tricky string in each patterned field."""
    for path in PATTERNED_PATHS:
        for value in TRICKY_STRINGS:
            doc = copy.deepcopy(VALID)
            apply(doc, path, value, delete=False)
            yield doc
