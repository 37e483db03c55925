"""`ksr submit --at/--in`, `ksr scheduled list`, `ksr schedules list`, `ksr jobs show` and
`ksr cancel` against a real redis-server and a runner (local executor) in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.client import Client
from runner.errors import ConfigError
from runner.pipeline.wiring import build_runner
from runner.settings import Settings
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread
from tests.support.ports import wait_for


@pytest.fixture
def env(redis_server, redis_client, tmp_path):
    return base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, KSR_RUNTIME_DIR=str(tmp_path))


def ksr(env, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def test_submit_in_then_list_show_and_cancel_a_scheduled_message(env, redis_client):
    with runner_thread(env):
        result = ksr(env, "submit", "--in", "1h", "-", stdin=json.dumps(message("later-1", "default")))
        assert result.exit_code == 0, result.output
        rows = wait_for(lambda: json.loads(ksr(env, "scheduled", "list", "--json").stdout), timeout=20, what="held")
        assert [(r["id"], r["stream"]) for r in rows] == [("later-1", "ksr:jobs:default")]
        assert 3590 < rows[0]["in_seconds"] <= 3600
        status = json.loads(ksr(env, "status", "--json").stdout)["scheduling"]
        assert (status["waiting"], status["next_due"], status["schedules"]) == (1, rows[0]["due"], [])
        assert f"scheduled:   1 waiting, next due {rows[0]['due']}; 0 recurring" in ksr(env, "status").stdout
        shown = json.loads(ksr(env, "jobs", "show", "later-1", "--json").stdout)
        assert shown["where"] == "scheduled" and shown["due"] == rows[0]["due"]
        assert shown["now"] == f"scheduled for {rows[0]['due']} in ksr:jobs:default"
        result = ksr(env, "cancel", "later-1")
        assert (result.exit_code, result.stdout) == (0, "cancelled later-1 (it was scheduled)\n")
        assert json.loads(ksr(env, "scheduled", "list", "--json").stdout) == []
        wait_for(lambda: redis_client.hget("ksr:msg:later-1", "cb_99"), timeout=20, what="the 99 marked")


def test_show_a_finished_job_and_refuse_to_cancel_it(env):
    client = Client(Settings.from_env(env))
    with runner_thread(env):
        client.submit(message("done-1", "default", command=["/bin/sh", "-c", "exit 0"]), at=0.0)
        assert client.wait("done-1", timeout=60).state == "completed"
    result = ksr(env, "jobs", "show", "done-1", "--json")
    doc = json.loads(result.stdout)
    assert doc["where"] == "finished" and doc["state"] == "completed"
    assert doc["stream"] == "ksr:jobs:default" and doc["job_name"].startswith("job-")
    assert [c["status"] for c in doc["callbacks"]] == [0, 1, 2]
    assert set(doc["times"]) >= {"claimed_at", "created_at", "finished_at", "started_at"}
    text = ksr(env, "jobs", "show", "done-1")
    assert text.stdout.startswith("done-1: finished: completed\n"), text.stdout
    result = ksr(env, "cancel", "done-1")
    assert result.exit_code == 1
    assert "message done-1 has already finished (completed); nothing to cancel" in result.output
    assert json.loads(ksr(env, "jobs", "show", "done-1", "--json").stdout)["callbacks"] == doc["callbacks"]
    unknown = ksr(env, "jobs", "show", "never-1")
    assert unknown.exit_code == 1 and "no message never-1 known" in unknown.output
    client.close()


def test_submit_refuses_both_at_and_in_and_a_time_without_offset(env, redis_client):
    body = json.dumps(message("t-1", "default"))
    both = ksr(env, "submit", "--at", "2030-01-01T00:00:00Z", "--in", "5s", "-", stdin=body)
    assert both.exit_code == 2 and "give --at or --in, not both" in both.output
    naive = ksr(env, "submit", "--at", "2030-01-01T00:00:00", "-", stdin=body)
    assert naive.exit_code == 2  # a usage error naming the option the user wrote, not runAt
    assert "'--at': must carry a UTC offset (Z or +01:00), got '2030-01-01T00:00:00'" in naive.output
    assert not redis_client.exists("ksr:jobs:default")


def _schedules_file(tmp_path: Path, cron: str) -> Path:
    template = {k: v for k, v in message("x", "default").items() if k != "id"}
    path = tmp_path / "schedules.yaml"
    path.write_text(
        json.dumps({"schedules": [{"name": "nightly", "cron": cron, "timezone": "Europe/Berlin", "message": template}]})
    )
    return path


def test_schedules_list_gives_the_next_run_in_its_zone_and_in_utc(env, tmp_path):
    env = {**env, "KSR_SCHEDULES": str(_schedules_file(tmp_path, "30 2 * * *"))}
    (row,) = json.loads(ksr(env, "schedules", "list", "--json").stdout)
    assert row["name"] == "nightly" and row["timezone"] == "Europe/Berlin" and row["last_tick_utc"] is None
    assert row["next_run"][11:19] == "02:30:00" and row["next_run"][19:] in ("+01:00", "+02:00")
    assert row["next_run_utc"][11:19] in ("00:30:00", "01:30:00")


def test_an_invalid_schedule_is_refused_at_start_naming_the_field(env, tmp_path):
    env = {**env, "KSR_SCHEDULES": str(_schedules_file(tmp_path, "99 * * * *"))}
    with pytest.raises(ConfigError) as e:
        build_runner(Settings.from_env(env))
    assert str(e.value) == "KSR_SCHEDULES: schedules[0].cron: Bad minute in '99 * * * *'"
    result = ksr(env, "schedules", "list")
    assert result.exit_code == 2 and "schedules[0].cron: Bad minute" in result.output


def test_a_schedule_suspended_and_resumed_shows_in_list_and_status(env, tmp_path):
    env = {**env, "KSR_SCHEDULES": str(_schedules_file(tmp_path, "30 2 * * *"))}
    typo = ksr(env, "schedules", "pause", "nightyl")
    assert typo.exit_code == 2 and "'nightyl' is not a schedule of KSR_SCHEDULES" in typo.output
    assert ksr(env, "schedules", "pause", "nightly", "--by", "ops").stdout == "suspended nightly\n"
    again = json.loads(ksr(env, "schedules", "pause", "nightly", "--json").stdout)
    assert again == {"schedule": "nightly", "suspended": True, "changed": False}
    (row,) = json.loads(ksr(env, "schedules", "list", "--json").stdout)
    assert row["suspended"]["by"] == "ops" and row["suspended"]["at"].endswith("+00:00")
    listed = ksr(env, "schedules", "list").stdout
    assert f"since {row['suspended']['at']} by ops" in listed.splitlines()[-1]
    assert "1 recurring schedules (1 suspended: nightly)" in ksr(env, "status").stdout
    doc = json.loads(ksr(env, "status", "--json").stdout)
    assert doc["scheduling"]["schedules"][0]["suspended"] == row["suspended"]

    assert ksr(env, "schedules", "resume", "nightly").stdout == "resumed nightly\n"
    assert ksr(env, "schedules", "resume", "nightly").stdout == "nightly was not suspended\n"
    (row,) = json.loads(ksr(env, "schedules", "list", "--json").stdout)
    assert row["suspended"] is None
    assert "(1 suspended" not in ksr(env, "status").stdout
