"""Redis replies as text: the one place bytes from Redis become `str`.

Clients use `decode_responses=False` (entry payloads stay bytes), so ids, names and hash
fields arrive as bytes; anything not valid UTF-8 is replaced, never raised on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["text", "text_fields"]


def text(value: Any) -> str:
    """`value` as str: bytes decoded as UTF-8 (invalid bytes replaced), anything else str()."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def text_fields(reply: Any) -> dict[str, str]:
    """A hash as {field: value}: from HGETALL (a dict) or from Lua (a flat [k, v, ...] list)."""
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    it = iter(reply or [])
    return {text(k): text(v) for k, v in zip(it, it)}
