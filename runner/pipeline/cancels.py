"""The leader's half of a cancel: what `ksr cancel` / runner.client asked and could not do
itself (cancel.lua did the rest atomically).

Each id in `ksr:cancels` is one of:

- cancelled while scheduled (its record says so, no Job): send the one 99 `Cancelled`;
- cancel requested with a Job: end the record `cancelled` and send the 99 first, then
  delete the Job (background propagation), so the watcher's DELETED event finds the record
  ended and adds nothing;
- claimed, no Job recorded yet: left for the next round. Either a create is in flight (its
  Job is then cancelled as above), or the entry is processed again later (a dead leader's
  entry at takeover, a create that waited out a refusal), and its claim (claim.lua) ends the
  record `cancelled` before any create; the dispatcher sends the 99 and the next round here
  finds it sent.

The id leaves the set last, so a leader that dies half-way leaves the rest to the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from runner.jobs.tracker import Tracker
from runner.lifecycle import State
from runner.store.errors import redis_errors
from runner.store.record import StateRecord
from runner.store.schedule import CANCELS_KEY
from runner.store.state import StateStore

__all__ = ["Cancels"]

log = logging.getLogger(__name__)

BATCH = 100


class Cancels:
    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        state: StateStore,
        tracker: Tracker,
        delete_job: Callable[[str, str], None],
        key: str = CANCELS_KEY,
    ) -> None:
        self.redis = redis_client
        self.state = state
        self.tracker = tracker
        self._delete_job = delete_job  # (namespace, name), background propagation
        self.key = key

    def drain(self, keep_going: Callable[[], bool]) -> int:
        """Carry out the requests waiting; returns how many are done."""
        with redis_errors():
            members: Any = self.redis.srandmember(self.key, BATCH) or []
        ids = sorted(m.decode() for m in members)
        done = 0
        for mid in ids:
            if not keep_going():
                break
            if self._carry_out(mid):
                with redis_errors():
                    self.redis.srem(self.key, mid)
                done += 1
        return done

    def _carry_out(self, mid: str) -> bool:
        record = self.state.get(mid)
        if record is None:
            return True
        state, job = record.state, record.get("job_name")
        if not job:
            if state is State.CANCELLED:  # scheduled: the 99 is owed
                self.tracker.cancelled(mid, stage=record.get("cancel_stage") or "scheduled")
                return True
            return record.is_terminal  # claimed: the create is in flight, next round
        if not record.is_terminal:
            self.tracker.cancelled(mid, stage="running")
            record = self.state.get(mid) or StateRecord()
        if record.state is State.CANCELLED and record.get("namespace"):
            self._delete_job(record["namespace"], job)
            log.info("cancelled message %s: job %s/%s deleted", mid, record["namespace"], job)
        return True
