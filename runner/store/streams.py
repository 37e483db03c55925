"""What the job streams hold, for their reader and for whoever inspects them.

Stream names and entry ids are `str`; entry fields stay `bytes` (clients have
`decode_responses=False`). The leader's reader is runner.store.stream_reader; the CLI's
and the status sampling's inspection is runner.store.stream_inspection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEAD_SUFFIX", "GROUP_START_ID", "Entry", "entry_time_ms", "id_key", "next_id"]

DEAD_SUFFIX = ":dead"
# Consumer groups start at "0", not "$": entries XADDed before the group existed (a
# producer that started first, a group that vanished and is recreated) are still read.
GROUP_START_ID = "0"


@dataclass(frozen=True)
class Entry:
    """One stream entry as delivered to this consumer.

    `deliveries` is the group's own counter (1 for a first delivery). `from_pending` is
    True for entries re-read from this consumer's pending list or claimed from another.
    """

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int
    from_pending: bool


def id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable (milliseconds, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_time_ms(entry_id: str) -> int | None:
    """The milliseconds part of a stream entry id, or None if it is not one."""
    head = entry_id.partition("-")[0]
    return int(head) if head.isdigit() else None


def next_id(entry_id: str) -> str:
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"
