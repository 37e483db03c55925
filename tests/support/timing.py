"""Outage holds and deadlines derived from the settings a test configures.

A test that keeps a server away "for 20 s" means something by the number: longer than the
lease, long enough that retries reached their cap, short of the horizon that gives up. Written
as a bare number it silently stops meaning it when a setting changes (a longer lease, a
larger backoff cap) and the test passes without testing anything, or turns flaky. Here each
hold says what it must outlast, computed from the same `Settings` the runner under test
parses from the test's environment, and refuses (ValueError naming the variables) a setting
under which the hold could not do its job.

    t = Timings.of(env)
    hold(t.apiserver_outage() - (time.monotonic() - stopped_at))

tests/unit/test_timing.py checks the arithmetic against the runner's own decisions
(runner.callbacks.owed.retry_delay, the elector on a fake clock).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from runner import backoff
from runner.callbacks.chain import lease_ms
from runner.pipeline.dispatcher import CREATE_DEADLINE
from runner.pipeline.loop import ERROR_BACKOFF_CAP
from runner.settings import Settings

__all__ = ["MARGIN", "Timings", "hold"]

MARGIN = 1.0  # seconds beyond a bound, for a thread's wake-up and a request in flight
LOOP_ERROR_FIRST_WAIT = 0.5  # runner/pipeline/loop.py: backoff.delay(errors + 1, base=0.25): 0.5 s first


def hold(seconds_left: float) -> None:
    """Keep an outage going for the rest of its planned length. The outage's duration is the
    scenario, not a wait for something to happen: every wait on the system's behaviour uses
    tests.support.ports.wait_for."""
    if seconds_left > 0:
        time.sleep(seconds_left)


def ramp(*, base: float, cap: float) -> float:
    """Seconds of backoff (upper bounds, runner.backoff without jitter) before the waits reach
    `cap`: the sum of the waits below it."""
    total, attempt = 0.0, 1
    while (wait := backoff.delay(attempt, base=base, cap=cap)) < cap:
        total += wait
        attempt += 1
    return total


@dataclass(frozen=True)
class Timings:
    settings: Settings

    @classmethod
    def of(cls, env: Mapping[str, str]) -> Timings:
        return cls(Settings.from_env(dict(env)))

    # -- the election -------------------------------------------------------------------
    def step_down(self) -> float:
        """A bound on how long a leader that cannot reach its lock goes on leading: its renew
        deadline, one lock request in flight, one retry period with jitter."""
        e = self.settings.election
        return e.renew_deadline + e.request_timeout + e.retry_period * e.jitter + MARGIN

    def lease_lapsed(self) -> float:
        """After an outage this long (from its start: the last renewal came before it) the
        lease has lapsed in every candidate's eyes, so leading again is a new acquisition."""
        e = self.settings.election
        return e.lease_duration + e.retry_period * e.jitter + MARGIN

    def apiserver_outage(self) -> float:
        """The apiserver away long enough that the leader stepped down, the lease lapsed, and a
        create caught by the outage spent its in-line retries (CREATE_DEADLINE) and waits."""
        return max(self.step_down(), self.lease_lapsed(), CREATE_DEADLINE + MARGIN)

    # -- the runner's loop --------------------------------------------------------------
    def redis_outage(self) -> float:
        """Redis away long enough that the runner's loop backs off to its cap
        (ERROR_BACKOFF_CAP) and waits it once more: the return is seen from the longest wait."""
        return ramp(base=LOOP_ERROR_FIRST_WAIT, cap=ERROR_BACKOFF_CAP) + ERROR_BACKOFF_CAP + MARGIN

    # -- callbacks ----------------------------------------------------------------------
    @property
    def owner_lease(self) -> float:
        """Seconds a courier's owner lease holds without renewal (runner.callbacks.chain)."""
        return lease_ms(self.settings) / 1000

    def callback_outage(self, *, capped: int = 2, outlast_owner_lease: bool = False) -> float:
        """A receiver down this long sees a callback's retries reach KSR_CALLBACK_BACKOFF_CAP and
        `capped` more at it (and, if asked, outlives one owner lease, so the lease is renewed
        through it), while the callback is still owed when it ends: ValueError when the retry
        horizon or the attempt limit would end it first."""
        c = self.settings.callbacks
        outage = ramp(base=c.backoff_base, cap=c.backoff_cap) + capped * c.backoff_cap + MARGIN
        if outlast_owner_lease:
            outage = max(outage, self.owner_lease + MARGIN)
        if outage + c.backoff_cap >= c.retry_horizon:
            raise ValueError(
                f"a {outage:.1f}s receiver outage needs KSR_CALLBACK_RETRY_HORIZON above {outage + c.backoff_cap:.1f}s "
                f"(it is {c.retry_horizon:g}s with KSR_CALLBACK_BACKOFF_CAP {c.backoff_cap:g}s)"
            )
        if c.max_attempts < 2 * self.expected_attempts(outage):
            raise ValueError(
                f"a {outage:.1f}s receiver outage takes about {self.expected_attempts(outage):.0f} attempts: "
                f"KSR_CALLBACK_MAX_ATTEMPTS ({c.max_attempts}) needs twice that to be sure to outlast it"
            )
        return outage

    def expected_attempts(self, outage: float) -> float:
        """About how many attempts a callback makes in `outage` seconds: full jitter waits
        half the ceiling on average, the ramp's waits first, then the cap's."""
        c = self.settings.callbacks
        rising = ramp(base=c.backoff_base, cap=c.backoff_cap)
        steps = 1.0
        while backoff.delay(int(steps), base=c.backoff_base, cap=c.backoff_cap) < c.backoff_cap:
            steps += 1
        return steps + max(0.0, outage - rising / 2) / (c.backoff_cap / 2)
