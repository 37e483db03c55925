"""The leader's firing of recurring schedules: at each tick, one message with the id
`<name>-<tick time in UTC>` XADDed to the entry's stream.

The last tick fired (or deliberately skipped) per entry is the hash `ksr:schedules:last`
(entry name -> tick in Unix ms), written in the same fenced script as the XADD
(fire_tick.lua): a deposed leader cannot fire, a tick is never fired twice, and if it
were, its id would make one Job (dedup). The first time a leader sees an entry, the ticks
before now are history: it only remembers the latest.

Lateness decides what a due tick becomes: on time (within GRACE of its time) it fires;
later it was missed while no leader ran, and the entry's catch-up policy applies: `skip`
remembers it without firing; `latest` fires the latest missed tick if it is no older than
`catchUpWindow` (counted as caught up). Earlier missed ticks are counted, never fired.

`now` is the caller's clock: Redis's TIME in the runner (runner.store.redis_time), so a
replica whose own clock is off judges ticks like every other. Whatever clock a caller
uses, fire_tick.lua refuses a tick ahead of Redis's TIME (beyond the on-time grace): a
tick from the future is never fired nor remembered. Each refused tick is logged and counted
(outcome `refused`) once, not on every turn that tries it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import redis

from runner.schedules.config import Schedule
from runner.schedules.cron import tick_id, utc_ms
from runner.signals import ScheduleTick, Signals
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.state import StaleTerm

__all__ = ["LAST_KEY", "EntryState", "Ticker", "last_fired"]

log = logging.getLogger(__name__)

LAST_KEY = "ksr:schedules:last"
MIN_GRACE = 5.0  # seconds a tick may be late and still count as on time (or early: clocks differ)
FIRED, REMEMBERED, ALREADY_DONE, REFUSED = 1, 0, -1, -2  # what fire_tick.lua did with a tick


@dataclass(frozen=True)
class EntryState:
    name: str
    last_fired: float | None  # Unix time of the last tick handled
    next_run: float  # Unix time


def last_fired(redis_client: redis.Redis, names: Sequence[str], *, key: str = LAST_KEY) -> dict[str, float | None]:
    with redis_errors():
        values = redis_client.hmget(key, list(names)) if names else []
    return {n: (int(v) / 1000.0 if v is not None else None) for n, v in zip(names, values)}


class Ticker:
    def __init__(
        self,
        redis_client: redis.Redis,
        schedules: Sequence[Schedule],
        *,
        signals: Signals,
        poll: float,
        term_key: str = "ksr:term",
        last_key: str = LAST_KEY,
        suspended: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        """`suspended` names the schedules an operator suspended (runner.store.pause),
        asked once per run: their due ticks are remembered without firing, so a resumed
        schedule fires from its next tick on and never catches up what it skipped."""
        self.redis = redis_client
        self._suspended = suspended
        self.schedules = tuple(schedules)
        self.signals = signals
        self.grace = max(MIN_GRACE, 3 * poll)
        self.term_key = term_key
        self.last_key = last_key
        self._fire = scripts.load(redis_client, "fire_tick", fenced=True)
        self._refused: dict[str, int] = {}  # entry name -> the tick (ms) last refused, counted once
        # Every entry's tick series exist from the pod's start, at 0: a miss counted later,
        # when this replica leads, is then an increase Prometheus sees.
        for schedule in self.schedules:
            signals.emit(ScheduleTick(schedule.name, "missed", 0))

    def run(self, now: float, term: int | None) -> float | None:
        """Handle every tick due by `now`; returns the earliest next tick (Unix time)."""
        nexts = []
        suspended = set(self._suspended()) if self.schedules else set()
        for schedule in self.schedules:
            if schedule.name in suspended:
                self._skip(schedule, now, term)
            else:
                self._due(schedule, now, term)
            nexts.append(schedule.cron.next_after(now).timestamp())
        return min(nexts, default=None)

    def states(self, now: float) -> list[EntryState]:
        last = last_fired(self.redis, [s.name for s in self.schedules], key=self.last_key)
        return [EntryState(s.name, last[s.name], s.cron.next_after(now).timestamp()) for s in self.schedules]

    def _skip(self, schedule: Schedule, now: float, term: int | None) -> None:
        """A suspended schedule: its latest due tick is remembered, not fired."""
        latest = schedule.cron.latest_at_or_before(now)
        if latest is None:
            return
        last = last_fired(self.redis, [schedule.name], key=self.last_key)[schedule.name]
        if last is None or latest.timestamp() > last:
            if self._write(schedule, latest, "", term) == REMEMBERED:
                log.info("schedule %s: tick %s skipped (suspended)", schedule.name, latest.isoformat())

    def _due(self, schedule: Schedule, now: float, term: int | None) -> None:
        latest = schedule.cron.latest_at_or_before(now)
        if latest is None:
            return
        last = last_fired(self.redis, [schedule.name], key=self.last_key)[schedule.name]
        if last is None:  # first sight: what came before is history
            self._write(schedule, latest, "", term)
            return
        if latest.timestamp() <= last:
            return
        earlier = sum(1 for _ in schedule.cron.between(last, latest.timestamp())) - 1
        lateness = now - latest.timestamp()
        if lateness <= self.grace:
            outcome = "fired"
        elif schedule.catch_up == "latest" and lateness <= schedule.catch_up_window:
            outcome = "caught_up"
        else:
            outcome, earlier = "missed", earlier + 1
        payload = schedule.payload(tick_id(schedule.name, latest)) if outcome != "missed" else ""
        if self._write(schedule, latest, payload, term) in (ALREADY_DONE, REFUSED):
            return  # handled already (by an earlier leader, or a call racing this one), or from the future
        if payload:
            log.info("schedule %s: tick %s %s", schedule.name, latest.isoformat(), outcome.replace("_", " "))
            self.signals.emit(ScheduleTick(schedule.name, outcome))
        if earlier > 0:
            log.warning("schedule %s: %d ticks missed while no leader ran", schedule.name, earlier)
            self.signals.emit(ScheduleTick(schedule.name, "missed", earlier))

    def _write(self, schedule: Schedule, tick: datetime, payload: str, term: int | None) -> int:
        """FIRED, REMEMBERED, ALREADY_DONE or REFUSED (the tick is ahead of Redis's clock)."""
        tick_ms = utc_ms(tick)
        with redis_errors():
            reply = self._fire(
                keys=[self.term_key, self.last_key, schedule.stream],
                args=["" if term is None else int(term), schedule.name, tick_ms, payload, int(self.grace * 1000)],
            )
        kind = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if kind == "STALE":
            raise StaleTerm(int(term or 0), int(reply[1]))
        if kind == "AHEAD":
            if self._refused.get(schedule.name) != tick_ms:
                self._refused[schedule.name] = tick_ms
                log.warning(
                    "schedule %s: tick %s refused: %.0fs ahead of Redis's clock (is this replica's clock ahead?)",
                    schedule.name,
                    tick.isoformat(),
                    (tick_ms - int(reply[1])) / 1000.0,
                )
                self.signals.emit(ScheduleTick(schedule.name, "refused"))
            return REFUSED
        return int(reply[1])
