"""Dead letters back to their stream (through the same admission as a new message:
runner.pipeline.replay decides), or deleted for good."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from runner.operate.audit import record_action
from runner.pipeline.replay import DeadReplay, replay_dead_entry
from runner.settings import Settings
from runner.store.deadletter import DeadEntry, purge_dead
from runner.store.state import StateStore

__all__ = ["DeadOutcome", "purge_dead_entries", "replay_dead"]


@dataclass(frozen=True)
class DeadOutcome:
    entry: DeadEntry
    result: DeadReplay


def replay_dead(
    conn: redis.Redis,
    settings: Settings,
    entries: Iterable[DeadEntry],
    *,
    force: bool,
    by: str,
    selection: str,
    after_each: Callable[[DeadOutcome], None] | None = None,
) -> list[DeadOutcome]:
    """Replay each entry (refused ones stay where they are, with the reason); one audit
    event for the whole call, `selection` saying what was chosen (`ksr:jobs:default:dead
    reason=policy`)."""
    store = StateStore.from_settings(conn, settings)
    outcomes = []
    for entry in entries:
        done = DeadOutcome(entry, replay_dead_entry(conn, settings, entry, force=force, store=store))
        outcomes.append(done)
        if after_each is not None:
            after_each(done)
    replayed = sum(1 for o in outcomes if o.result.replayed)
    record_action(
        conn,
        settings,
        target=selection,
        action="dead.replay",
        by=by,
        replayed=replayed,
        refused=len(outcomes) - replayed,
        force=force,
    )
    return outcomes


def purge_dead_entries(
    conn: redis.Redis, settings: Settings, *, stream: str, ids: Sequence[str] | Literal["all"], by: str, selection: str
) -> int:
    """Delete dead entries of `stream` (ids, or "all"); how many went."""
    removed = purge_dead(conn, stream, ids if ids == "all" else list(ids))
    record_action(conn, settings, target=selection, action="dead.purge", by=by, stream=stream, purged=removed)
    return removed
