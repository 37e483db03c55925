"""The lock in Redis, for running without a cluster: one hash, compare-and-set in Lua.

The record lives in the hash `<prefix><name>` (fields as `election.record.to_dict`, plus
`version`). One script does both writes: with an empty expected version it creates the hash
only if absent; otherwise it replaces the fields only if `version` still matches. Either way
it increments `version` and returns it. Redis runs a script atomically, so this is the same
optimistic concurrency as the Lease's `resourceVersion`.

With `min_replicas`, every write is followed by `WAIT` on the same connection, and a write
that fewer replicas acknowledged within `wait_timeout` counts as failed (LockUnavailable):
the elector then retries or steps down, as for any lost renewal. That narrows, but cannot
close, the window in which a failover loses a write; the runner therefore refuses this
lock with Sentinel (docs/redis.md) and takes the client from its connection factory.

If Redis loses the key (restart without persistence), versions start again at 1; the elector
recreates the record above the highest term it has seen, so terms stay increasing for any
candidate that lived through it.
"""

from __future__ import annotations

from typing import Any

import redis

from election.errors import ConflictError, LockError, LockUnavailable
from election.record import LeaderRecord, from_dict, to_dict

__all__ = ["DEFAULT_PREFIX", "RedisLock"]

DEFAULT_PREFIX = "ksr:election:"

# KEYS[1] the hash; ARGV[1] expected version ("" = create), ARGV[2..] field/value pairs.
# Returns {1, new_version} on success, {0, current_version_or_""} on conflict.
_CAS = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {0, current or ''} end
elseif current ~= ARGV[1] then
  return {0, current or ''}
end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return {1, tostring(redis.call('HINCRBY', KEYS[1], 'version', 1))}
"""


class RedisLock:
    def __init__(
        self,
        client: redis.Redis,
        *,
        name: str,
        prefix: str = DEFAULT_PREFIX,
        min_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        """`client` should have short socket timeouts and no retries (see `from_url`).
        `min_replicas` must acknowledge each write within `wait_timeout` seconds (0: no WAIT)."""
        self._redis = client
        self.min_replicas = min_replicas
        self.wait_timeout_ms = max(1, int(wait_timeout * 1000))
        self.name = name
        self.key = f"{prefix}{name}"
        self._cas = client.register_script(_CAS)

    @classmethod
    def from_url(cls, url: str, *, name: str, request_timeout: float = 5.0, prefix: str = DEFAULT_PREFIX) -> RedisLock:
        """A lock with its own client: `request_timeout` bounds connect and every reply, and
        redis-py's retries are off so that bound holds."""
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url, socket_timeout=request_timeout, socket_connect_timeout=request_timeout, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, name=name, prefix=prefix)

    def describe(self) -> str:
        return f"redis key {self.key}"

    def get(self) -> LeaderRecord | None:
        fields = self._call("read", lambda: self._redis.hgetall(self.key))
        if not fields:
            return None
        return from_dict(fields)

    def create(self, record: LeaderRecord) -> LeaderRecord:
        return self._write("create", record, expected="")

    def update(self, record: LeaderRecord) -> LeaderRecord:
        if not record.version:
            raise ConflictError(f"update {self.describe()}: no version to compare with")
        return self._write("update", record, expected=record.version)

    def _write(self, what: str, record: LeaderRecord, *, expected: str) -> LeaderRecord:
        args: list[str] = [expected]
        for field, value in to_dict(record).items():
            args += [field, value]
        ok, version = self._call(what, lambda: self._replicated(what, args))
        version = version.decode() if isinstance(version, bytes) else str(version)
        if not ok:
            found = version or "none"
            raise ConflictError(f"{what} {self.describe()}: expected version {expected or 'none'}, found {found}")
        return LeaderRecord(
            holder=record.holder,
            lease_duration=record.lease_duration,
            acquire_time=record.acquire_time,
            renew_time=record.renew_time,
            transitions=record.transitions,
            version=version,
        )

    def _replicated(self, what: str, args: list[str]) -> Any:
        if self.min_replicas <= 0:
            return self._cas(keys=[self.key], args=args)
        pipe = self._redis.pipeline(transaction=False)  # WAIT counts this connection's writes
        self._cas(keys=[self.key], args=args, client=pipe)
        pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
        reply, acked = pipe.execute()
        if int(reply[0]) == 1 and int(acked) < self.min_replicas:
            raise LockUnavailable(
                f"{what} {self.describe()}: written but acknowledged by {int(acked)} of {self.min_replicas} "
                f"replicas within {self.wait_timeout_ms} ms"
            )
        return reply

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise LockUnavailable(f"{what} {self.describe()}: {e}") from e
        except redis.RedisError as e:
            raise LockError(f"{what} {self.describe()}: {e}") from e
