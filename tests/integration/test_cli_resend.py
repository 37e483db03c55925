"""`ksr resend ID [--new-id NEW]`: a finished message again under a new id, with exit codes
(runner/operate/resend.py, which the console's re-send calls too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from runner.cli import main
from tests.support.console import STREAM, Workload, env_for, make_workload


@pytest.fixture
def setup(redis_server, redis_client: redis.Redis, tmp_path: Path) -> tuple[dict[str, str], Workload]:  # type: ignore[no-untyped-def]
    env = {**env_for(redis_server.url, tmp_path), "KSR_RUNTIME_DIR": str(tmp_path / "runtime")}
    return env, make_workload(env, redis_client, prefix="r")


def ksr(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_a_finished_message_is_sent_again_under_a_new_id(setup, redis_client: redis.Redis):  # type: ignore[no-untyped-def]
    env, w = setup
    done = ksr(env, "resend", w.failed_id, "--new-id", "r-failed-again", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"id": w.failed_id, "new_id": "r-failed-again", "stream": STREAM}
    (_, fields), *_ = redis_client.xrevrange(STREAM, count=1)
    sent = json.loads(fields[b"payload"])
    assert sent["id"] == "r-failed-again" and sent["service"] == "billing"
    assert sent["job"]["command"] == ["/bin/sh", "-c", "exit 3"]
    assert redis_client.hget(f"ksr:msg:{w.failed_id}", "state") == b"failed"  # the old one stays as it was
    (_, audit), *_ = redis_client.xrevrange("ksr:events", count=1)
    assert (audit[b"action"], audit[b"id"]) == (b"resend", w.failed_id.encode())
    assert json.loads(audit[b"detail"])["new_id"] == "r-failed-again"


def test_the_default_new_id_is_the_old_one_with_a_time(setup, redis_client: redis.Redis):  # type: ignore[no-untyped-def]
    env, w = setup
    done = ksr(env, "resend", w.ok_id)
    assert done.exit_code == 0, done.output
    new_id = done.output.split(" as ", 1)[1].split(" ", 1)[0]
    assert new_id.startswith(f"{w.ok_id}.resend-") and new_id[len(w.ok_id) + 8 :].isdigit()


@pytest.mark.parametrize(
    ("which", "says"),
    [("dead_id", "has not finished (state dead)"), ("nobody", "has not finished (no record)")],
)
def test_what_is_not_a_finished_message_is_refused(setup, which: str, says: str):  # type: ignore[no-untyped-def]
    env, w = setup
    done = ksr(env, "resend", getattr(w, which, "no-such-id"))
    assert done.exit_code == 1 and says in done.output


def test_a_new_id_with_a_record_is_refused(setup, redis_client: redis.Redis):  # type: ignore[no-untyped-def]
    env, w = setup
    before = redis_client.xlen(STREAM)
    done = ksr(env, "resend", w.failed_id, "--new-id", w.ok_id)
    assert done.exit_code == 1 and f"id {w.ok_id} has a record already" in done.output
    assert redis_client.xlen(STREAM) == before
