"""Commands and helpers that need no server: validate, config, input parsing, replay rules, ETA."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.cli.status import RateWindow, eta_seconds
from runner.cli.submit import default_stream, read_items
from runner.pipeline.replay import decide_replay
from runner.settings import Settings
from runner.store.deadletter import DeadEntry
from runner.store.record import StateRecord
from tests.support.messages import VALID, variant


def test_read_items_shapes() -> None:
    one = json.dumps(VALID)
    assert [i.where for i in read_items(one, "f")] == ["f"]
    assert [i.where for i in read_items(json.dumps([VALID, VALID]), "f")] == ["f[0]", "f[1]"]
    lines = read_items(f"{one}\n\n{one}\nnope\n", "f")
    assert [i.where for i in lines] == ["f:1", "f:3", "f:4"]
    assert lines[2].payload == "nope"
    assert read_items("  \n", "f") == []


@pytest.mark.parametrize(
    "streams, expected",
    [
        ("ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low", "ksr:jobs:default"),
        ("a:high,a:low", "a:high"),
    ],
)
def test_default_stream(streams: str, expected: str) -> None:
    assert default_stream(Settings.from_env({"KSR_STREAMS": streams})) == expected


def test_validate_exit_codes_and_field_paths(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([VALID, variant("id", "other")]))
    result = CliRunner().invoke(main, ["validate", str(good)])
    assert result.exit_code == 0 and result.stdout == "2 messages valid\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(variant("job.gpuNumber", 9)) + "\n" + json.dumps(variant("job.activeDeadlineSeconds", 5)) + "\n"
    )
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"invalid: {bad}:1 (id {VALID['id']}): job.gpuNumber: must be 1..4, got 9",
        f"invalid: {bad}:2 (id {VALID['id']}): job.activeDeadlineSeconds: must be 60..86400, got 5",
        "Error: 2 of 2 messages invalid",
    ]
    doc = json.loads(CliRunner().invoke(main, ["validate", str(bad), "--json"]).stdout)
    assert doc["invalid"][0]["errors"] == [{"field": "job.gpuNumber", "problem": "must be 1..4, got 9"}]


def test_validate_flags_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([VALID, VALID]))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and f"id: duplicate of {path}[0]" in result.stderr


def test_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.json")])
    assert result.exit_code == 2


def test_config_masks_secrets() -> None:
    env = {"KSR_WEBHOOK_SECRET": "s3cret-value,other", "REDIS_URL": "redis://user:hunter2@redis.example:6380/1"}
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout
    assert "KSR_WEBHOOK_SECRET=***,***" in result.stdout
    assert "REDIS_URL=redis://user:***@redis.example:6380/1" in result.stdout
    doc = json.loads(CliRunner().invoke(main, ["--redis-url", "redis://:pw@h:1/0", "config", "--json"], env=env).stdout)
    assert doc["REDIS_URL"] == "redis://:***@h:1/0"


def test_config_prints_every_declared_variable() -> None:
    from runner.settings.variables import VARIABLES

    env = {"KSR_LEASE_DURATION": "20s", "KSR_STREAM_MAXLEN": "0", "KSR_TEST_CRASH_AT": ""}
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [v.name for v in VARIABLES]
    assert {"KSR_LEASE_DURATION=20.0", "KSR_STREAM_MAXLEN=0", "KSR_SHUTDOWN_GRACE=20.0", "KSR_TEST_CRASH_AT="} <= set(
        lines
    )
    doc = json.loads(CliRunner().invoke(main, ["config", "--json"], env=env).stdout)
    assert (doc["KSR_CALLBACK_BACKOFF_CAP"], doc["KSR_TEST_CRASH_AT"]) == (300.0, None)


def test_config_refuses_a_bad_variable_by_name() -> None:
    result = CliRunner().invoke(main, ["config"], env={"KSR_BLOCK_MS": "9000"})
    assert result.exit_code == 2
    assert "KSR_BLOCK_MS: must not be longer than KSR_LEASE_DURATION - KSR_RENEW_DEADLINE" in result.stderr


def _dead(original_id: str) -> DeadEntry:
    return DeadEntry("9-0", "s", original_id, b"{}", "poison", "", 6, 0, {})


NOW = 1_700_000_000.0
YOUNG = f"{int((NOW - 30) * 1000)}-0"
OLD = f"{int((NOW - 7200) * 1000)}-0"


@pytest.mark.parametrize(
    "original_id, record, force, allowed, release, says",
    [
        (YOUNG, None, False, True, False, "never got one"),
        (OLD, None, False, False, False, "--force"),
        (OLD, None, True, True, False, "--force"),
        (YOUNG, {"state": "created", "job_name": "j", "namespace": "ns"}, True, False, False, "already has Job ns/j"),
        (YOUNG, {"state": "dead"}, False, True, True, "released"),
        (OLD, {"state": "claimed"}, False, True, False, "resumes"),
    ],
)
def test_decide_replay(
    original_id: str, record: dict[str, str] | None, force: bool, allowed: bool, release: bool, says: str
) -> None:
    state = None if record is None else StateRecord(record)
    decision = decide_replay(_dead(original_id), state, ttl_seconds=3600, force=force, now=NOW)
    assert (decision.allowed, decision.release) == (allowed, release)
    assert says in decision.reason


def test_rate_window_and_eta() -> None:
    window = RateWindow(60)
    now = time.time()
    for age, status in ((90, 0), (30, 0), (20, 0), (10, 2), (5, 99), (5, 1)):
        window.add(int((now - age) * 1000), "s", status)
    window.prune(now)
    assert window.counts("s") == {"dispatched": 2, "done": 1, "failed": 1}
    assert window.counts("other") == {"dispatched": 0, "done": 0, "failed": 0}
    assert eta_seconds(10, 2, 60) == 300
    assert eta_seconds(0, 0, 60) == 0
    assert eta_seconds(5, 0, 60) is None
    assert eta_seconds(None, 3, 60) is None
