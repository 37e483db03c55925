"""redis-py's errors translated where they enter the code: one vocabulary above the store.

A lost connection or a timeout becomes RedisUnavailable (runner.errors), the cause kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runner.errors import redis_error_from

__all__ = ["redis_errors"]


@contextmanager
def redis_errors() -> Iterator[None]:
    """Translate redis-py's connection and timeout errors into RedisUnavailable."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as e:
        raise redis_error_from(e) from e
