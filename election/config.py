"""Election timings, validated when the config is made.

The runner's settings read the environment variables named here (with
`election.durations.parse_seconds`) and build an `ElectionConfig`; an inconsistent one
raises `ElectionConfigError` carrying the variable's name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from election.durations import SECONDS_PROBLEM
from election.errors import ElectionConfigError

__all__ = ["ENV_LEASE_DURATION", "ENV_LOCK_NAME", "ENV_RENEW_DEADLINE", "ENV_RETRY_PERIOD", "ElectionConfig"]

ENV_LEASE_DURATION = "KSR_LEASE_DURATION"
ENV_RENEW_DEADLINE = "KSR_RENEW_DEADLINE"
ENV_RETRY_PERIOD = "KSR_RETRY_PERIOD"
ENV_LOCK_NAME = "LEADER_ELECTION_LOCK_NAME"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ElectionConfig:
    """Timings of the election, in seconds (client-go's defaults).

    lease_duration: how long followers wait, from the moment they last saw the record change,
        before they may take the lock over (`KSR_LEASE_DURATION`).
    renew_deadline: how long the leader keeps trying to renew before it steps down; also how
        long after its last successful renew `is_leading()` stays true (`KSR_RENEW_DEADLINE`).
    retry_period: the interval between attempts (`KSR_RETRY_PERIOD`).
    jitter: followers wait a random time in [retry_period, retry_period * jitter) between
        attempts, so candidates do not move in step. (client-go's JitterFactor=1.2 means up
        to 2.2 x retry; ours is the upper bound itself, so handover stays close to one retry.)
    lock_name: the Lease's name, or the Redis key's suffix (`LEADER_ELECTION_LOCK_NAME`).
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    jitter: float = 1.2
    lock_name: str = "ksr-leader"

    def __post_init__(self) -> None:
        for env, value in (
            (ENV_LEASE_DURATION, self.lease_duration),
            (ENV_RENEW_DEADLINE, self.renew_deadline),
            (ENV_RETRY_PERIOD, self.retry_period),
        ):
            if not math.isfinite(value) or value <= 0:
                raise ElectionConfigError(env, f"{SECONDS_PROBLEM}, got {value!r}")
        if not math.isfinite(self.jitter) or self.jitter < 1.0:
            raise ElectionConfigError("jitter", f"must be at least 1.0, got {self.jitter!r}")
        if self.lease_duration <= self.renew_deadline:
            raise ElectionConfigError(
                ENV_LEASE_DURATION,
                f"must be greater than {ENV_RENEW_DEADLINE} ({self.renew_deadline:g}), got {self.lease_duration:g}",
            )
        if self.renew_deadline <= self.retry_period * self.jitter:
            raise ElectionConfigError(
                ENV_RENEW_DEADLINE,
                f"must be greater than {ENV_RETRY_PERIOD} x {self.jitter:g} "
                f"({self.retry_period:g} x {self.jitter:g} = {self.retry_period * self.jitter:g}), "
                f"got {self.renew_deadline:g}",
            )
        if len(self.lock_name) > 253 or not _DNS1123_SUBDOMAIN.match(self.lock_name):
            raise ElectionConfigError(
                ENV_LOCK_NAME,
                f"must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.'), got {self.lock_name!r}",
            )

    @property
    def request_timeout(self) -> float:
        """A bound for one lock request: a hanging renew must not eat the renew deadline."""
        return max(0.5, min(self.retry_period, self.renew_deadline / 4))
