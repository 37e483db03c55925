"""Redis's own clock (`TIME`): the clock the scheduler judges due times and cron ticks by.

Every replica reads the same clock, so one replica whose wall clock stepped (a bad NTP
source, a VM resumed) cannot fire a cron tick from the future or move delayed messages
early: it judges them exactly as the others do. Stream entry ids come from the same clock,
so a delay counted from an entry id and judged against TIME stays in one frame.
"""

from __future__ import annotations

import redis

from runner.store.errors import redis_errors

__all__ = ["RedisTime"]


class RedisTime:
    """A wall clock (Unix time, seconds) read from Redis: one round trip per call."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    def __call__(self) -> float:
        with redis_errors():
            seconds, micros = self.redis.time()
        return seconds + micros / 1_000_000
