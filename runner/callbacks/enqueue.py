"""Starting a message's courier: only a job granted the owner lease is ever enqueued.

The lease is taken in a script (lua/lib_owner.lua): by the runner's mark of a status
(StateStore.mark_callback / record_job, when nobody holds it), by `CallbackQueue.enqueue`
(the same for a caller that marked without it), and by the leader's recovery,
`CallbackQueue.sweep`, for a message whose holder let its lease lapse (its worker was
killed, or its job was lost with Redis). Whoever is granted the lease enqueues the job
(`start`); everyone else leaves the message to its holder, which sees what was marked
before it releases (runner.callbacks.courier). Nothing here asks RQ about its jobs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.callbacks.chain import attempt_job_id, lease_ms, owed_key, owed_member, put, read_record, rq_job_id
from runner.callbacks.lanes import queue_for
from runner.callbacks.owed import owed_next
from runner.settings import Settings
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.record import Field, StateRecord
from runner.store.replies import text

log = logging.getLogger(__name__)


class CallbackQueue:
    """Start couriers, never a second one for a message."""

    def __init__(self, redis_client: redis.Redis, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.redis = redis_client
        self.settings = settings
        self.clock = clock
        self._take = scripts.load(redis_client, "cb_take", uses=("lib_owner",))
        self._redeliver = scripts.load(redis_client, "cb_redeliver", uses=("lib_owner",))

    def proposed(self, message_id: str, status: int) -> str:
        """The job id a mark of `status` proposes for the courier (CallbackMark.courier)."""
        return rq_job_id(message_id, status)

    def start(self, message_id: str, courier: str, url: str) -> None:
        """Enqueue `courier`, just granted the owner lease, on the lane of `url`."""
        put(
            self.redis,
            self.settings,
            queue_for(self.redis, self.settings, url),
            courier,
            {"id": message_id, "not_before": 0.0},
        )
        log.info("callbacks of %s: courier %s enqueued", message_id, courier)

    def enqueue(
        self,
        message_id: str,
        status: int,
        detail: dict[str, Any],
        url: str | None,
        *,
        record: StateRecord | None = None,
    ) -> bool:
        """Owe the callback `<message_id>:<status>` (marked now if it was not; `detail` and
        `url` kept in the record unless it has them) and start a courier when nobody holds
        the message. True when this call started one, or when the callback waits its turn
        behind an earlier status of the message (its holder delivers it after that one).

        False when there is no URL (the events stream still has the status), when the
        callback already finished, or when the message's holder is at this very status
        (it is queued, scheduled or being tried). So calling it again after a crash, or
        from recovery, is harmless. `record` is accepted for callers that have one; the
        script reads what it needs.
        """
        if not url:
            log.debug("callback %s:%s: message has no webhook URL, nothing to send", message_id, status)
            return False
        status = int(status)
        attempt = (record.callback_attempts(status) if record is not None else 0) + 1
        answer, owner, current = self._take_lease(
            message_id, status, attempt_job_id(message_id, status, attempt), url=url, detail=_as_json(detail)
        )
        if answer == "GRANTED":
            self.start(message_id, owner, url)
            return True
        if answer == "HELD":
            first = owed_next(current)
            log.debug("callback %s:%s: courier %s holds the message (at status %s)", message_id, status, owner, first)
            return first is not None and first < status
        log.debug("callback %s:%s: %s", message_id, status, "finished" if answer == "DONE" else "no state record")
        return False

    def sweep(self, *, older_than: float | None = None, limit: int = 500) -> int:
        """The leader's recovery: start a courier for each message that owes a callback and
        whose owner lease lapsed (a worker killed mid-delivery, a job lost with Redis, a
        crash between a mark and its enqueue) or that nobody holds. `older_than` (seconds)
        also takes over holders that have not renewed for that long, lapsed or not: 0 takes
        over every one (for an operator who knows the workers are gone). Returns how many
        couriers it started."""
        key = owed_key(self.settings)
        with redis_errors():
            seconds, micros = self.redis.time()
            cutoff: float | str = seconds + micros / 1e6 if older_than is None else "+inf"
            members = self.redis.zrangebyscore(key, "-inf", cutoff, start=0, num=limit)
        started: set[str] = set()
        older_ms = -1 if older_than is None else int(older_than * 1000)
        for raw in members:
            member = text(raw)
            status_text, _, message_id = member.partition(":")
            if message_id in started:
                continue
            record = read_record(self.redis, self.settings.state.record_key(message_id))
            status = owed_next(record)
            url = record.webhook
            if not record or not url or status is None or record.callback_outcome(int(status_text)) is not None:
                with redis_errors():
                    self.redis.zrem(key, member)  # nothing (more) to send
                continue
            proposed = attempt_job_id(message_id, status, record.callback_attempts(status) + 1)
            answer, owner, _ = self._take_lease(message_id, status, proposed, older_than_ms=older_ms)
            if answer == "GRANTED":
                log.warning(
                    "callbacks of %s: owner %s lapsed, courier %s takes over", message_id, record.callback_owner, owner
                )
                self.start(message_id, owner, url)
                started.add(message_id)
        return len(started)

    def redeliver(self, message_id: str, status: int) -> tuple[str, str]:
        """An operator's re-delivery (runner.operate.redeliver): owe the ended callback
        `<message_id>:<status>` again and start its courier, in cb_redeliver.lua, which
        refuses unless the delivery ended and nobody holds the message. The courier is
        started here, as for any lease granted. Returns (answer, what it names): GRANTED
        and the courier's job id, or a refusal (MISSING, NOT_MARKED, NO_WEBHOOK, GONE and
        the URL, IN_FLIGHT and the outcome so far, BUSY and the holder)."""
        status = int(status)
        key = self.settings.state.record_key(message_id)
        with redis_errors():
            # The proposed id names the next attempt; the script makes it unique (lib_owner `fresh`).
            attempts = int(self.redis.hget(key, Field.attempts(status)) or 0)
            reply = self._redeliver(
                keys=[key, owed_key(self.settings)],
                args=[
                    owed_member(message_id, status),
                    attempt_job_id(message_id, status, attempts + 1),
                    status,
                    lease_ms(self.settings),
                ],
            )
        answer = text(reply[0])
        named = text(reply[1]) if len(reply) > 1 else ""
        if answer == "GRANTED":
            self.start(message_id, named, text(reply[2]))
        return answer, named

    def _take_lease(
        self,
        message_id: str,
        status: int,
        proposed: str,
        *,
        url: str = "",
        detail: str = "",
        older_than_ms: int = -1,
    ) -> tuple[str, str, StateRecord]:
        args: list[str | int] = [
            owed_member(message_id, status),
            proposed,
            status,
            lease_ms(self.settings),
            older_than_ms,
            int(self.clock.time() * 1000),
            url,
            detail,
        ]
        with redis_errors():
            reply = self._take(keys=[self.settings.state.record_key(message_id), owed_key(self.settings)], args=args)
        answer = text(reply[0])
        if answer in ("GRANTED", "HELD"):
            return answer, text(reply[1]), StateRecord.from_reply(reply[2])
        return answer, "", StateRecord()


def _as_json(detail: dict[str, Any]) -> str:
    """The detail as the record keeps it. One that is not JSON (a caller's bug) is kept as
    its repr: every attempt of that callback then fails (TypeError) until it expires."""
    try:
        return json.dumps(detail)
    except (TypeError, ValueError) as e:
        log.error("callback detail %r is not JSON (%s): its attempts will fail", detail, e)
        return repr(detail)
