"""`WAIT` after the writes that exactly-once rests on: the claim, the Job's record, the term.

Redis replicates asynchronously, so a primary that dies can take its last writes with it;
Sentinel then promotes a replica without them. `WAIT n timeout` (sent on the same
connection as the write, hence the pipeline) returns once `n` replicas have the write or
the timeout passed. A write short of its replicas is logged and goes on: losing it is
harmless, only more likely (a replayed claim resumes, a replayed create adopts the Job by
its deterministic name; docs/redis.md). WAIT narrows the window; it is not what makes
the pipeline correct.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

from election.clock import SYSTEM_CLOCK, Clock
from runner.errors import KsrError

__all__ = ["NotReplicated", "Replication", "add_replicated"]

log = logging.getLogger(__name__)

_WARN_EVERY = 30.0  # seconds between warnings while replicas lag: one line, not one per message


class Replication:
    def __init__(self, *, replicas: int = 0, timeout: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        """`replicas` (KSR_REDIS_MIN_REPLICAS) that must acknowledge; 0 never waits.
        `timeout` (KSR_REDIS_WAIT_TIMEOUT) in seconds bounds each WAIT."""
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        self.short_writes = 0  # writes that returned before enough replicas had them
        self._warned_at = float("-inf")
        self.clock = clock

    def run(self, client: redis.Redis, script: Script, *, keys: Sequence[Any], args: Sequence[Any], what: str) -> Any:
        """`script(keys, args)`, followed by WAIT when replicas are required; the script's reply."""
        if self.replicas <= 0:
            return script(keys=keys, args=args)
        pipe = client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        reply, acked = pipe.execute()
        if int(acked) < self.replicas:
            self.short_writes += 1
            now = self.clock.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "%s reached %d of %d replicas within %d ms (KSR_REDIS_MIN_REPLICAS); going on: "
                    "a replay after a failover is harmless (%d such writes so far)",
                    what,
                    int(acked),
                    self.replicas,
                    self.timeout_ms,
                    self.short_writes,
                )
        return reply


class NotReplicated(KsrError):
    """Entries added to the primary that fewer replicas than required acknowledged in time:
    a failover now could lose them. Re-sending them is safe (the runner drops a message id
    it has seen), so the producer can retry."""

    def __init__(self, entry_ids: Sequence[str], acked: int, replicas: int, timeout: float) -> None:
        self.entry_ids = list(entry_ids)
        self.acked = acked
        super().__init__(
            f"{len(self.entry_ids)} entries reached {acked} of {replicas} replicas within {timeout:g}s "
            "(KSR_REDIS_MIN_REPLICAS, KSR_REDIS_WAIT_TIMEOUT): a failover could lose them; "
            "re-send them, the runner drops duplicates"
        )


def add_replicated(
    client: redis.Redis, stream: str, payloads: Sequence[str], *, replicas: int, timeout: float
) -> list[str]:
    """XADD each payload to `stream` (one pipeline) and, when `replicas` > 0, WAIT for that
    many replicas on the same connection; the new entry ids. Raises NotReplicated when
    fewer acknowledged within `timeout` (the entries are in the stream either way)."""
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(stream, {"payload": payload})
    if replicas > 0:
        pipe.execute_command("WAIT", replicas, max(1, int(timeout * 1000)))
    replies = pipe.execute()
    ids = [r.decode() if isinstance(r, bytes) else str(r) for r in replies[: len(payloads)]]
    if replicas > 0 and int(replies[-1]) < replicas:
        raise NotReplicated(ids, int(replies[-1]), replicas, timeout)
    return ids
