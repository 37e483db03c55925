"""Production Redis connections against real servers: a TLS-only redis-server with a CA
made by openssl (client certificates required), and an ACL user with only the rights of
docs/redis.md. The runner (local executor, Redis lock), the RQ worker subprocess and the
CLI all connect through runner.store.connection; mistakes fail `ksr run` at start with
one line naming the variable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures import _unavailable
from tests.support.messages import message
from tests.support.pipeline import ROOT, base_env, rq_worker, runner_thread
from tests.support.ports import free_port, wait_for
from tests.support.redis_server import RedisServer
from tests.support.tls import Pki, make_pki

# The minimal ACL of docs/redis.md, for the default names (ksr:* keys, RQ's rq:* keys and channels).
MINIMAL_ACL = (
    "on", ">runner-secret", "resetkeys", "~ksr:*", "~rq:*", "resetchannels", "&rq:*",
    "-@all", "+@connection", "+@read", "+@write", "+@stream", "+@hash", "+@list", "+@set", "+@sortedset",
    "+@string", "+@keyspace", "+@scripting", "+@transaction", "+@pubsub", "-@dangerous",
    "+info", "+client|setname", "+client|getname", "+client|list", "+wait", "+time",
)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    try:
        return make_pki(tmp_path_factory.mktemp("pki"))
    except Exception as e:
        _unavailable("openssl", str(e))
        raise


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tls=pki).start()
    except Exception as e:
        _unavailable("redis-server with TLS", str(e))
    yield server
    server.close()


def tls_env(server: RedisServer, pki: Pki, **extra: str) -> dict[str, str]:
    return base_env(
        redis_url=server.url,
        namespace="default",
        kubeconfig=None,
        KSR_REDIS_TLS_CA=str(pki.ca),
        KSR_REDIS_TLS_CERT=str(pki.client_cert),
        KSR_REDIS_TLS_KEY=str(pki.client_key),
        **extra,
    )


def ksr(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def full_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, **env, "KSR_RUNTIME_DIR": str(tmp_path / "runtime"), "HTTP_SERVER_PORT": str(free_port())}


def run_one_job(env: dict[str, str], admin, receiver, mid: str) -> None:
    """Submit one message with the CLI, run it with the runner and the RQ worker of `env`,
    and wait for its whole callback sequence."""
    msg = message(mid, "default", webhook=receiver.url, command=["true"])
    submitted = ksr(env, "submit", "-", stdin=json.dumps(msg))
    assert submitted.returncode == 0, submitted.stderr
    with rq_worker(env), runner_thread(env):
        wait_for(lambda: receiver.statuses().get(mid) == [0, 1, 2], timeout=60, what=f"callbacks 0,1,2 of {mid}")
    record = admin.hgetall(f"ksr:msg:{mid}")
    assert record[b"state"] == b"completed"
    assert admin.xpending("ksr:jobs:default", "ksr")["pending"] == 0


def test_runner_worker_and_cli_work_over_tls(tls_server, pki, receiver, tmp_path):
    admin = tls_server.client()
    admin.flushall()
    env = full_env(tls_env(tls_server, pki), tmp_path)
    run_one_job(env, admin, receiver, "tls-1")
    status = ksr(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["streams"]["ksr:jobs:default"]["pending"] == 0


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ("wrong CA", "KSR_REDIS_TLS_CA"),
        ("plain URL", "REDIS_URL"),
        ("no client certificate", "KSR_REDIS_TLS_CERT"),
    ],
)
def test_a_tls_mistake_fails_ksr_run_at_start_naming_the_variable(tls_server, pki, tmp_path, change, variable):
    env = full_env(tls_env(tls_server, pki), tmp_path)
    if change == "wrong CA":
        env["KSR_REDIS_TLS_CA"] = str(pki.other_ca)
    elif change == "plain URL":
        env["REDIS_URL"] = tls_server.url.replace("rediss://", "redis://")
        for name in ("KSR_REDIS_TLS_CA", "KSR_REDIS_TLS_CERT", "KSR_REDIS_TLS_KEY"):
            env.pop(name)
    else:
        env.pop("KSR_REDIS_TLS_CERT")
        env.pop("KSR_REDIS_TLS_KEY")
    result = ksr(env, "run", timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {variable}: "), lines[0]


def test_a_plain_server_named_by_rediss_fails_naming_redis_url(redis_server, pki, tmp_path):
    env = full_env(base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None), tmp_path)
    env.update(REDIS_URL=redis_server.url.replace("redis://", "rediss://"), KSR_REDIS_TLS_CA=str(pki.ca))
    result = ksr(env, "run", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"Error: REDIS_URL: {env['REDIS_URL']} answers plain Redis, not TLS: use redis://")


# -- ACL ------------------------------------------------------------------------------------


def acl_env(server: RedisServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = base_env(redis_url=server.url, namespace="default", kubeconfig=None, **extra)
    return full_env(env, tmp_path)


def test_the_whole_pipeline_runs_as_the_minimal_acl_user(private_redis, receiver, tmp_path):
    admin = private_redis.client()
    admin.execute_command("ACL", "SETUSER", "runner", *MINIMAL_ACL)
    admin.execute_command("ACL", "LOG", "RESET")
    env = acl_env(private_redis, tmp_path, KSR_REDIS_USERNAME="runner", KSR_REDIS_PASSWORD="runner-secret")
    run_one_job(env, admin, receiver, "acl-1")
    denied = admin.execute_command("ACL", "LOG")
    assert denied == [], denied  # nothing the pipeline did was refused
    config = ksr(env, "config", "--json")
    assert config.returncode == 0, config.stderr
    shown = json.loads(config.stdout)
    assert shown["KSR_REDIS_PASSWORD"] == "***"
    assert "runner-secret" not in config.stdout


def test_credentials_in_the_url_are_masked_and_work(private_redis, tmp_path):
    admin = private_redis.client()
    admin.execute_command("ACL", "SETUSER", "runner", *MINIMAL_ACL)
    env = acl_env(private_redis, tmp_path)
    env["REDIS_URL"] = f"redis://runner:runner-secret@127.0.0.1:{private_redis.port}/0"
    status = ksr(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    config = ksr(env, "config", "--json")
    assert json.loads(config.stdout)["REDIS_URL"] == f"redis://runner:***@127.0.0.1:{private_redis.port}/0"


@pytest.mark.parametrize(
    ("rules", "variable", "words"),
    [
        (("on", ">runner-secret", "~ksr:*", "+@all", "-@stream"), "KSR_REDIS_USERNAME", "cannot read the stream"),
        (("on", ">runner-secret", "~other:*", "+@all"), "KSR_REDIS_USERNAME", "cannot read the stream"),
        (("on", ">another-secret", "~*", "+@all"), "KSR_REDIS_PASSWORD", "refused the credentials"),
    ],
)
def test_a_user_without_the_rights_fails_at_start(private_redis, tmp_path, rules, variable, words):
    private_redis.client().execute_command("ACL", "SETUSER", "runner", "reset", *rules)
    env = acl_env(private_redis, tmp_path, KSR_REDIS_USERNAME="runner", KSR_REDIS_PASSWORD="runner-secret")
    result = ksr(env, "run", timeout=60)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"Error: {variable}: ") and words in line, line
    assert "runner-secret" not in result.stderr
