"""Stream entries as the runner writes them, read back: the entries of an XREAD reply and
the id a payload names. runner.store.events and runner.message read them with these too."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["entries_of", "payload_id", "text"]


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def entries_of(reply: Any) -> list[Any]:
    """The entries of a one-stream XREAD reply (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    for _, entries in items:
        if entries and isinstance(entries[0], list):  # the RESP3 legacy shape nests once more
            entries = entries[0]
        return list(entries)
    return []


def payload_id(payload: str) -> str | None:
    """The `id` a payload's JSON carries, as written and not validated, or None; never raises.
    For naming a message in an error line or finding one by id in a stream."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None
