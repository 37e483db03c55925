"""The console's actions: the operations `ksr` runs, called with the same functions, each
written to the events stream with who did it.

The one module of `probes` allowed to import the pipeline's operations (runner.client,
runner.pipeline.replay): setup.cfg's probes-read contract names exactly these imports. It
is reached only through probes/console/views.py's action routes, behind
auth.Gate.action_refusal (enabled, token, CSRF).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from probes.console.auth import Operator
from probes.console.reads import dead_entries
from runner.client import AlreadyFinished, Client
from runner.pipeline.replay import replay_dead_entry, replay_pending
from runner.settings import Settings
from runner.store.deadletter import purge_dead
from runner.store.events import append_operator_event

__all__ = ["Outcome", "cancel", "purge_reason", "replay_pending_entry", "replay_reason"]


@dataclass
class Outcome:
    summary: str
    ok: bool = True
    details: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _log(client: redis.Redis, settings: Settings, *, target: str, action: str, by: Operator, **detail: Any) -> None:
    append_operator_event(
        client,
        target=target,
        action=action,
        by=str(by),
        detail=detail,
        stream=settings.streams.events_stream,
        maxlen=settings.streams.events_maxlen,
    )


def replay_reason(client: redis.Redis, settings: Settings, *, stream: str, reason: str, by: Operator) -> Outcome:
    """Every dead letter of `reason` in `stream` back through admission (as `ksr dead replay`)."""
    replayed = refused = 0
    details = []
    for entry in dead_entries(client, stream, reason=reason):
        result = replay_dead_entry(client, settings, entry, force=False)
        if result.replayed:
            replayed += 1
        else:
            refused += 1
            if len(details) < 20:
                details.append(f"{entry.dead_id}: {result.reason}")
    _log(client, settings, target=f"{stream}:dead reason={reason}", action="dead.replay", by=by, replayed=replayed, refused=refused)
    return Outcome(f"replayed {replayed}, refused {refused}", refused == 0, details, {"replayed": replayed, "refused": refused})


def purge_reason(client: redis.Redis, settings: Settings, *, stream: str, reason: str, by: Operator) -> Outcome:
    ids = [e.dead_id for e in dead_entries(client, stream, reason=reason)]
    removed = purge_dead(client, stream, ids)
    _log(client, settings, target=f"{stream}:dead reason={reason}", action="dead.purge", by=by, purged=removed)
    return Outcome(f"purged {removed}", True, [], {"purged": removed})


def replay_pending_entry(
    client: redis.Redis, settings: Settings, *, stream: str, entry_id: str, by: Operator
) -> Outcome:
    result = replay_pending(client, stream=stream, group=settings.streams.group, entry_id=entry_id)
    _log(client, settings, target=f"{stream} {entry_id}", action="pending.replay", by=by, outcome=result.outcome)
    done = result.outcome == "REPLAYED"
    return Outcome(f"{entry_id}: {result.outcome.lower()}" + (f" as {result.new_entry_id}" if done else ""), done)


def cancel(client: redis.Redis, settings: Settings, *, message_id: str, by: Operator) -> Outcome:
    producer = Client(settings, redis_client=client)
    try:
        cancellation = producer.cancel(message_id)
    except AlreadyFinished as e:
        _log(client, settings, target=message_id, action="cancel", by=by, outcome="already finished")
        return Outcome(str(e), False)
    _log(client, settings, target=message_id, action="cancel", by=by, outcome=cancellation.stage)
    return Outcome(f"cancelled {message_id} ({cancellation.stage})")
