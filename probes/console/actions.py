"""The console's actions as page outcomes: each calls runner.operate, the same function
`ksr` calls for that action (which also writes who did it to the events stream), and says
what changed in a line a page can show. Reached only through views.py's action routes,
behind auth.Gate.action_refusal (enabled, token, CSRF)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import redis

from probes.console.auth import Operator
from runner import operate
from runner.inspect import Layout, iter_dead
from runner.settings import Settings
from runner.store.deadletter import dead_stream, get_dead

__all__ = [
    "Outcome",
    "cancel",
    "pause_stream",
    "purge_reason",
    "redeliver",
    "replay_dead_one",
    "replay_pending_entry",
    "replay_reason",
    "resend",
    "resume_schedule",
    "resume_stream",
    "suspend_schedule",
]

DETAILS_SHOWN = 20


@dataclass
class Outcome:
    summary: str
    ok: bool = True
    details: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _replayed(outcomes: list[operate.DeadOutcome]) -> Outcome:
    replayed = [o for o in outcomes if o.result.replayed]
    refused = [o for o in outcomes if not o.result.replayed]
    details = [f"{o.entry.dead_id}: {o.result.reason}" for o in refused[:DETAILS_SHOWN]]
    return Outcome(
        f"replayed {len(replayed)}, refused {len(refused)}",
        not refused,
        details,
        {"replayed": len(replayed), "refused": len(refused)},
    )


def replay_reason(client: redis.Redis, settings: Settings, *, stream: str, reason: str, by: Operator) -> Outcome:
    """Every dead letter of `reason` in `stream` (as `ksr dead replay --reason R --stream S`)."""
    operate.check_stream(settings, stream)
    entries = list(iter_dead(client, layout=Layout.from_settings(settings), stream=stream, reason=reason))
    selection = f"{dead_stream(stream)} reason={reason}"
    return _replayed(operate.replay_dead(client, settings, entries, force=False, by=str(by), selection=selection))


def replay_dead_one(client: redis.Redis, settings: Settings, *, stream: str, dead_id: str, by: Operator) -> Outcome:
    """One dead letter (as `ksr dead replay DEAD_ID --stream S`)."""
    operate.check_stream(settings, stream)
    entry = get_dead(client, stream, dead_id)
    if entry is None:
        return Outcome(f"dead entry {dead_id} not found in {dead_stream(stream)}", False)
    outcomes = operate.replay_dead(client, settings, [entry], force=False, by=str(by), selection=dead_id)
    done = outcomes[0].result
    if done.replayed:
        return Outcome(f"replayed {dead_id} to {stream} as {done.new_entry_id}", True, [], {"replayed": 1})
    return Outcome(f"{dead_id} not replayed: {done.reason}", False, [], {"refused": 1})


def purge_reason(client: redis.Redis, settings: Settings, *, stream: str, reason: str, by: Operator) -> Outcome:
    operate.check_stream(settings, stream)
    ids = [e.dead_id for e in iter_dead(client, layout=Layout.from_settings(settings), stream=stream, reason=reason)]
    removed = operate.purge_dead_entries(
        client, settings, stream=stream, ids=ids, by=str(by), selection=f"{dead_stream(stream)} reason={reason}"
    )
    return Outcome(f"purged {removed}", True, [], {"purged": removed})


def replay_pending_entry(
    client: redis.Redis, settings: Settings, *, stream: str, entry_id: str, by: Operator
) -> Outcome:
    result = operate.replay_pending_entry(client, settings, stream=stream, entry_id=entry_id, by=str(by))
    done = result.outcome == "REPLAYED"
    return Outcome(f"{entry_id}: {result.outcome.lower()}" + (f" as {result.new_entry_id}" if done else ""), done)


def cancel(client: redis.Redis, settings: Settings, *, message_id: str, by: Operator) -> Outcome:
    try:
        cancellation = operate.cancel_message(client, settings, message_id, force=False, by=str(by))
    except (operate.UnknownMessage, operate.AlreadyFinished) as e:
        return Outcome(str(e), False)
    return Outcome(f"cancelled {message_id} ({cancellation.stage})")


def resend(client: redis.Redis, settings: Settings, *, message_id: str, new_id: str | None, by: Operator) -> Outcome:
    """As `ksr resend ID [--new-id NEW]`."""
    try:
        done = operate.resend_message(client, settings, message_id, new_id=new_id, by=str(by))
    except operate.NotResendable as e:
        return Outcome(str(e), False)
    return Outcome(f"re-sent {message_id} as {done.message_id} to {done.stream}")


def redeliver(client: redis.Redis, settings: Settings, *, message_id: str, status: str, by: Operator) -> Outcome:
    """As `ksr callbacks redeliver ID STATUS`."""
    if not status.isdigit():
        return Outcome(f"status {status!r} is not a callback status", False)
    try:
        done = operate.redeliver_callback(client, settings, message_id, int(status), by=str(by))
    except operate.NotRedeliverable as e:
        return Outcome(str(e), False)
    return Outcome(f"callback {done.status} of {message_id} owed again: courier {done.courier} delivers it")


def pause_stream(client: redis.Redis, settings: Settings, *, stream: str, by: Operator) -> Outcome:
    changed = operate.pause_stream(client, settings, stream, by=str(by))
    return Outcome(f"paused {stream}" if changed else f"{stream} was paused already")


def resume_stream(client: redis.Redis, settings: Settings, *, stream: str, by: Operator) -> Outcome:
    changed = operate.resume_stream(client, settings, stream, by=str(by))
    return Outcome(f"resumed {stream}" if changed else f"{stream} was not paused")


def suspend_schedule(
    client: redis.Redis, settings: Settings, *, name: str, known: Collection[str], by: Operator
) -> Outcome:
    changed = operate.suspend_schedule(client, settings, name, known=known, by=str(by))
    return Outcome(f"suspended {name}" if changed else f"{name} was suspended already")


def resume_schedule(client: redis.Redis, settings: Settings, *, name: str, by: Operator) -> Outcome:
    changed = operate.resume_schedule(client, settings, name, by=str(by))
    return Outcome(f"resumed {name}" if changed else f"{name} was not suspended")
