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
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

__all__ = ["Replication"]

log = logging.getLogger(__name__)

_WARN_EVERY = 30.0  # seconds between warnings while replicas lag: one line, not one per message


class Replication:
    def __init__(self, *, replicas: int = 0, timeout: float = 1.0) -> None:
        """`replicas` (KSR_REDIS_MIN_REPLICAS) that must acknowledge; 0 never waits.
        `timeout` (KSR_REDIS_WAIT_TIMEOUT) in seconds bounds each WAIT."""
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        self.short_writes = 0  # writes that returned before enough replicas had them
        self._warned_at = float("-inf")

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
            now = time.monotonic()
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
