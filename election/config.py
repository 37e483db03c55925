"""Election timings, parsed once from the environment and validated up front."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

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
                raise ElectionConfigError(f"{env} must be a positive number of seconds, got {value!r}")
        if not math.isfinite(self.jitter) or self.jitter < 1.0:
            raise ElectionConfigError(f"jitter must be at least 1.0, got {self.jitter!r}")
        if self.lease_duration <= self.renew_deadline:
            raise ElectionConfigError(
                f"{ENV_LEASE_DURATION} ({self.lease_duration}) must be greater than "
                f"{ENV_RENEW_DEADLINE} ({self.renew_deadline})"
            )
        if self.renew_deadline <= self.retry_period * self.jitter:
            raise ElectionConfigError(
                f"{ENV_RENEW_DEADLINE} ({self.renew_deadline}) must be greater than "
                f"{ENV_RETRY_PERIOD} x {self.jitter} ({self.retry_period} x {self.jitter} = "
                f"{self.retry_period * self.jitter:g})"
            )
        if len(self.lock_name) > 253 or not _DNS1123_SUBDOMAIN.match(self.lock_name):
            raise ElectionConfigError(
                f"{ENV_LOCK_NAME} must be a DNS-1123 subdomain (lowercase letters, digits, '-' "
                f"and '.'), got {self.lock_name!r}"
            )

    @property
    def request_timeout(self) -> float:
        """A bound for one lock request: a hanging renew must not eat the renew deadline."""
        return max(0.5, min(self.retry_period, self.renew_deadline / 4))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ElectionConfig:
        """Read the four variables; unset or empty ones keep their defaults."""
        defaults = cls()

        def seconds(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ElectionConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
            return value

        return cls(
            lease_duration=seconds(ENV_LEASE_DURATION, defaults.lease_duration),
            renew_deadline=seconds(ENV_RENEW_DEADLINE, defaults.renew_deadline),
            retry_period=seconds(ENV_RETRY_PERIOD, defaults.retry_period),
            lock_name=env.get(ENV_LOCK_NAME, "").strip() or defaults.lock_name,
        )
