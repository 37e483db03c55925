"""`ksr submit` and `ksr validate` against a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import redis
from click.testing import CliRunner

from runner.cli import main
from tests.support.messages import VALID, variant
from tests.support.redis_server import RedisServer


def env_for(server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": server.url,
        "KSR_STREAMS": "ksr:jobs:critical,ksr:jobs:default,ksr:jobs:low",
        "POD_NAMESPACE": "default",
        **extra,
    }


def msg(n: int, **changes: object) -> dict[str, object]:
    doc = variant("id", f"m-{n}")
    for path, value in changes.items():
        doc = {**doc, "job": {**doc["job"], path: value}}  # type: ignore[dict-item]
    return doc


def payload_ids(r: redis.Redis, stream: str) -> list[str]:
    return [json.loads(f[b"payload"])["id"] for _, f in r.xrange(stream)]


def test_submit_json_list_to_the_default_stream(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([msg(1), msg(2)]))
    result = CliRunner().invoke(main, ["submit", str(path)], env=env_for(redis_server))
    assert result.exit_code == 0, result.output
    ids = [e.decode() for e, _ in redis_client.xrange("ksr:jobs:default")]
    assert result.stdout.split() == ids
    assert payload_ids(redis_client, "ksr:jobs:default") == ["m-1", "m-2"]


def test_submit_jsonl_to_a_chosen_stream_as_json(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(msg(n)) for n in range(3)) + "\n\n")
    result = CliRunner().invoke(
        main, ["submit", str(path), "--stream", "ksr:jobs:critical", "--json"], env=env_for(redis_server)
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["id"] for r in doc["submitted"]] == ["m-0", "m-1", "m-2"]
    assert payload_ids(redis_client, "ksr:jobs:critical") == ["m-0", "m-1", "m-2"]


def test_submit_stdin_many_with_progress(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    lines = "\n".join(json.dumps(msg(n)) for n in range(150))
    result = CliRunner().invoke(main, ["submit", "-", "--progress"], input=lines, env=env_for(redis_server))
    assert result.exit_code == 0, result.output
    assert redis_client.xlen("ksr:jobs:default") == 150
    assert "submitting to ksr:jobs:default" in result.stderr


def test_submit_refuses_all_when_one_is_invalid(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(msg(1)) + "\n" + json.dumps(msg(2, gpuNumber=9)) + "\nnot json\n")
    result = CliRunner().invoke(main, ["submit", str(path)], env=env_for(redis_server))
    assert result.exit_code == 1
    assert f"{path}:2 (id m-2): job.gpuNumber: must be 1..4, got 9" in result.stderr
    assert f"{path}:3: payload: not valid JSON" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: 2 of 3 messages invalid; nothing submitted")
    assert redis_client.xlen("ksr:jobs:default") == 0


def test_submit_skip_invalid_submits_the_rest_and_exits_1(
    redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([msg(1), msg(2, namespace="Bad_NS")]))
    result = CliRunner().invoke(main, ["submit", str(path), "--skip-invalid"], env=env_for(redis_server))
    assert result.exit_code == 1
    assert "jobs.json[1] (id m-2): job.namespace" in result.stderr
    assert payload_ids(redis_client, "ksr:jobs:default") == ["m-1"]


def test_submit_check_policy(redis_server: RedisServer, redis_client: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(msg(1, namespace="team-a")))
    env = env_for(redis_server, KSR_ALLOWED_NAMESPACES="default", KSR_WEBHOOK_ALLOW="callback.example")
    assert CliRunner().invoke(main, ["validate", str(path)], env=env).exit_code == 0
    result = CliRunner().invoke(main, ["submit", str(path), "--check-policy"], env=env)
    assert result.exit_code == 1
    assert "job.namespace: namespace 'team-a' is not allowed" in result.stderr
    assert redis_client.xlen("ksr:jobs:default") == 0


def test_submit_to_an_unknown_stream_is_a_usage_error(redis_server: RedisServer, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(VALID))
    result = CliRunner().invoke(main, ["submit", str(path), "-s", "ksr:jobs:nope"], env=env_for(redis_server))
    assert result.exit_code == 2
    assert "not one of KSR_STREAMS" in result.stderr


def test_submit_with_redis_down_is_one_line_exit_1(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    path = tmp_path / "one.json"
    path.write_text(json.dumps(VALID))
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(main, ["submit", str(path)], env={"REDIS_URL": url})
    assert result.exit_code == 1
    assert result.stderr == f"Error: redis unavailable at {url}: connection refused\n"
