"""The producer's side in Python, with the runner installed: `ksr_client` (clients/python,
the one copy of submit / status / wait / cancel) plugged into the runner's settings, Redis
connection (TLS, Sentinel), validation and replication. docs/producer.md shows it in use.

    from runner.client import Client
    client = Client()                                   # settings from the environment
    mid = client.submit(message, delay=30)              # validated here, before the XADD

A message is validated with the runner's own code (schema, and the due time against
KSR_SCHEDULE_MAX_AHEAD), so an invalid one raises runner.errors.InvalidMessage naming the
field and never reaches a stream; redis-py's connection errors become RedisUnavailable.

`python -m runner.client --write-contract` regenerates ksr_client/_contract.py: the names
and defaults the library shares with the runner (states, keys, the cancel script), taken
from the runner's declarations; a unit test fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import redis

import ksr_client
from election.clock import SYSTEM_CLOCK, Clock
from ksr_client import AlreadyFinished, Cancellation, Config, Status, WaitTimeout, rfc3339
from ksr_client.client import BLOCK_SLICE_MS
from runner.lifecycle import TERMINAL_STATES, CallbackStatus, State
from runner.message import parse_message
from runner.pipeline.delay import due_time
from runner.settings import Settings, variables
from runner.store import scripts
from runner.store.connection import connect
from runner.store.deadletter import DEAD_ERROR_CODE
from runner.store.errors import redis_errors
from runner.store.record import Field
from runner.store.replication import add_replicated
from runner.store.schedule import CANCELS_KEY, ScheduledStore, payloads_key, scheduled_key

__all__ = ["AlreadyFinished", "Cancellation", "Client", "Status", "WaitTimeout", "config_of", "rfc3339"]

CANCELLED_ERROR_CODE = "Cancelled"  # runner.jobs.tracker's 99 for a cancel


def config_of(s: Settings) -> Config:
    return Config(
        redis_url=s.redis.url,
        streams=s.streams.streams,
        group=s.streams.group,
        events_stream=s.streams.events_stream,
        key_prefix=s.state.key_prefix,
        state_ttl=s.state.ttl_seconds,
        max_message_bytes=s.streams.max_message_bytes,
    )


class Client(ksr_client.Client):
    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = s = settings or Settings.from_env()
        connection = redis_client or connect(s.redis, socket_timeout=BLOCK_SLICE_MS / 1000 + 5, retries=1)
        super().__init__(config_of(s), redis_client=connection, clock=clock)
        self.scheduled = ScheduledStore(
            self.redis, streams=s.streams.streams, record_prefix=s.state.key_prefix
        )  # the CLI's listing

    def check(self, payload: str) -> str:
        parsed = parse_message(payload, max_bytes=self.config.max_message_bytes)
        now = self.clock.time()
        due_time(parsed, added_at=now, now=now, max_ahead=self.settings.schedule.max_ahead)
        return parsed.id

    def add(self, stream: str, payload: str) -> None:
        s = self.settings
        with redis_errors():
            add_replicated(self.redis, stream, [payload], replicas=s.redis.min_replicas, timeout=s.redis.wait_timeout)

    def status(self, message_id: str) -> Status:
        with redis_errors():
            return super().status(message_id)

    def wait(self, message_id: str, timeout: float) -> Status:
        with redis_errors():
            return super().wait(message_id, timeout)

    def cancel(self, message_id: str) -> Cancellation:
        with redis_errors():
            return super().cancel(message_id)


# -- the contract ksr_client shares with the runner ---------------------------------------

CONTRACT_PATH = Path(__file__).resolve().parent.parent / "clients" / "python" / "ksr_client" / "_contract.py"


def render_contract() -> str:
    defaults = {
        v.name: ",".join(v.default) if isinstance(v.default, tuple) else str(v.default)
        for v in (
            variables.REDIS_URL,
            variables.STREAMS,
            variables.GROUP,
            variables.EVENTS_STREAM,
            variables.KEY_PREFIX,
            variables.STATE_TTL,
            variables.MAX_MESSAGE_BYTES,
        )
    }
    final = sorted(int(s) for s in CallbackStatus if s.final)
    lines = [
        '"""What ksr_client shares with the runner: names, defaults and the cancel script.',
        "",
        "Generated from the runner's declarations by `python -m runner.client --write-contract`; do not edit.",
        '"""',
        "",
        f"DEFAULTS = {defaults!r}",
        "",
        f"FIELD_STATE = {Field.STATE!r}",
        f"FIELD_STREAM = {Field.STREAM!r}",
        f"FIELD_ENTRY_ID = {Field.ENTRY_ID!r}",
        f"FIELD_JOB_NAME = {Field.JOB_NAME!r}",
        f"STATE_DEAD = {State.DEAD.value!r}",
        f"STATE_EXCEPTION = {State.EXCEPTION.value!r}",
        f"TERMINAL_STATES = frozenset({sorted(s.value for s in TERMINAL_STATES)!r})",
        f"FINAL_STATUSES = frozenset({final!r})",
        f"STATUS_STATES = { ({int(CallbackStatus.COMPLETED): State.COMPLETED.value, int(CallbackStatus.FAILED): State.FAILED.value})!r}",
        f"ERROR_CODE_STATES = { ({CANCELLED_ERROR_CODE: State.CANCELLED.value, DEAD_ERROR_CODE: State.DEAD.value})!r}",
        f"CANCELS_KEY = {CANCELS_KEY!r}",
        f"SCHEDULED_SUFFIX = {scheduled_key('')!r}",
        f"PAYLOADS_SUFFIX = {payloads_key('')!r}",
        "",
        f"CANCEL_LUA = {scripts.source('cancel', states=True)!r}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.client")
    parser.add_argument("--write-contract", action="store_true", help=f"write {CONTRACT_PATH}")
    args = parser.parse_args(argv)
    if args.write_contract:
        CONTRACT_PATH.write_text(render_contract(), encoding="utf-8")
    else:
        sys.stdout.write(render_contract())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
