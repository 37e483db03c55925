"""A known workload for the console's tests, made by the real runner (local executor, Redis
lock) in a thread: messages that complete, fail, are refused by policy (dead letters), and
one whose id and payload are hostile. Then the runner stops, so what the console reads is
still; a heartbeat is written for the replicas it should show."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from runner.settings import Settings
from runner.store.presence import Heartbeat, PresenceKeys, write_heartbeat
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.receiver import Receiver

STREAM = "ksr:jobs:default"
TOKEN = "console-test-token-0123456789"
# Strings a careless page would run: markup, quotes, a terminal escape. The schema refuses
# such an id (a dead letter, found by that id); a command may hold anything.
HOSTILE_ID = '<img src=x onerror="window.__pwned=1">\'\x1b[31m'
HOSTILE_COMMAND = 'true # "</pre><script>window.__pwned=1</script>\x1b[2J' + "x" * 3000
BINARY_PAYLOAD = b"\xff\xfe<script>window.__pwned=1</script>"


@dataclass(frozen=True)
class Workload:
    ok_id: str
    failed_id: str
    dead_id: str  # refused by policy (namespace not allowed when it was read)
    hostile_id: str  # refused by the schema: a dead letter
    hostile_payload_id: str  # ran; its command is hostile
    secret_value: str  # an env value of ok_id's payload: never shown


def env_for(redis_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    template = {k: v for k, v in message("x", "default").items() if k != "id"}
    schedules = tmp / "schedules.json"
    schedules.write_text(json.dumps({"schedules": [{"name": "nightly", "cron": "30 2 * * *", "message": template}]}))
    return base_env(
        redis_url=redis_url,
        namespace="default",
        kubeconfig=None,
        KSR_EXECUTOR="local",
        KSR_LOCK="redis",
        KSR_SCHEDULES=str(schedules),
        POD_NAME="console-a",
        **extra,
    )


def make_workload(env: dict[str, str], conn: redis.Redis, *, prefix: str = "c") -> Workload:
    """The messages above, through a runner and an RQ worker; ok_id's callbacks go to a real
    receiver (so its timeline has HTTP attempts)."""
    receiver = Receiver().start()
    try:
        return _run(env, conn, prefix, receiver)
    finally:
        receiver.close()


def _run(env: dict[str, str], conn: redis.Redis, prefix: str, receiver: Receiver) -> Workload:
    secret = "s3cr3t-value-never-shown"
    w = Workload(f"{prefix}-ok", f"{prefix}-failed", f"{prefix}-dead", HOSTILE_ID, f"{prefix}-hostile", secret)
    messages: list[dict[str, Any]] = [
        message(
            w.ok_id,
            "default",
            webhook=receiver.url,
            command=["true"],
            env=[{"name": "DB_PASSWORD", "value": secret}],
        ),
        message(w.failed_id, "default", service="billing", command=["/bin/sh", "-c", "exit 3"]),
        message(w.dead_id, "forbidden-ns", command=["true"]),
        message(w.hostile_id, "default", command=["true"]),
        message(w.hostile_payload_id, "default", command=["/bin/sh", "-c", HOSTILE_COMMAND]),
    ]
    ended = (w.ok_id, w.failed_id, w.hostile_payload_id)
    with rq_worker(env), runner_thread(env):
        for m in messages:
            xadd(conn, STREAM, m)
        conn.xadd(STREAM, {"payload": BINARY_PAYLOAD})
        wait_for(
            lambda: (
                conn.xlen(STREAM + ":dead") == 3
                and all(conn.hget(f"ksr:msg:{i}", "state") in (b"completed", b"failed") for i in ended)
            ),
            timeout=60,
            what="the console workload to end",
        )
        receiver.wait_for_callbacks([w.ok_id], timeout=60, what="the callbacks of the console workload")
    return w


def beat(conn: redis.Redis, settings: Settings, identity: str, *, leading: bool, now: float, term: int = 3) -> None:
    """A replica's heartbeat as the runner writes it (runner.store.presence)."""
    keys = PresenceKeys.for_prefix(settings.state.key_prefix)
    leader = identity if leading else "console-a"
    write_heartbeat(
        conn,
        keys,
        Heartbeat(identity, "0.1.0", now - 120, now, leading, leader, term, now - 60 if leading else None),
        ttl_seconds=600,
    )
