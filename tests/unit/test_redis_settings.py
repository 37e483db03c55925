"""The Redis connection variables: TLS files, ACL credentials, Sentinel, WAIT; and the
refusal of the Redis lock with Sentinel. Pure parsing, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.settings import Settings

BASE = {"POD_NAME": "p", "POD_NAMESPACE": "ns", "HOME": "/nonexistent", "KSR_LOCK": "lease"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_sentinels_are_host_port_pairs_and_replicas_default_to_one() -> None:
    s = settings(KSR_REDIS_SENTINELS="10.0.0.1:26379, sentinel-b:26380,[::1]:26381", KSR_REDIS_MASTER="ksr")
    assert s.redis.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert s.redis.master == "ksr"
    assert s.redis.min_replicas == 1
    assert s.masked()["KSR_REDIS_SENTINELS"] == "10.0.0.1:26379,sentinel-b:26380,::1:26381"


def test_without_sentinel_no_replica_is_waited_for() -> None:
    s = settings()
    assert (s.redis.sentinels, s.redis.min_replicas, s.redis.wait_timeout) == ((), 0, 1.0)
    assert settings(KSR_REDIS_MIN_REPLICAS="2", KSR_REDIS_WAIT_TIMEOUT="250ms").redis.min_replicas == 2


@pytest.mark.parametrize("value", ["host", "host:", ":26379", "host:0", "host:70000", "host:x"])
def test_a_bad_sentinel_entry_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings(KSR_REDIS_SENTINELS=value)
    assert e.value.variable == "KSR_REDIS_SENTINELS"
    assert "host:port" in e.value.problem


def test_the_redis_lock_is_refused_with_sentinel_naming_both_variables() -> None:
    with pytest.raises(ConfigError) as e:
        settings(KSR_LOCK="redis", KSR_REDIS_SENTINELS="127.0.0.1:26379")
    assert e.value.variable == "KSR_LOCK"
    assert "KSR_LOCK=redis" in e.value.problem and "KSR_REDIS_SENTINELS" in e.value.problem
    assert "KSR_LOCK=lease" in e.value.problem


def test_tls_files_must_exist_and_go_with_rediss(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        settings(REDIS_URL="rediss://r:6380/0", KSR_REDIS_TLS_CA=str(tmp_path / "missing.pem"))
    assert e.value.variable == "KSR_REDIS_TLS_CA"
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError) as e:
        settings(REDIS_URL="redis://r:6379/0", KSR_REDIS_TLS_CA=str(ca))
    assert e.value.variable == "KSR_REDIS_TLS_CA" and "rediss://" in e.value.problem
    with pytest.raises(ConfigError) as e:
        settings(REDIS_URL="rediss://r:6380/0", KSR_REDIS_TLS_CERT=str(ca))
    assert e.value.variable == "KSR_REDIS_TLS_KEY"
    assert settings(REDIS_URL="rediss://r:6380/0", KSR_REDIS_TLS_CA=str(ca)).redis.tls_ca == ca


def test_passwords_are_masked_and_kept_out_of_repr() -> None:
    s = settings(
        REDIS_URL="redis://u:url-secret@r:6379/0",
        KSR_REDIS_PASSWORD="var-secret",
        KSR_REDIS_SENTINEL_PASSWORD="sentinel-secret",
        KSR_REDIS_SENTINELS="s:26379",
    )
    shown = s.masked()
    assert (shown["REDIS_URL"], shown["KSR_REDIS_PASSWORD"], shown["KSR_REDIS_SENTINEL_PASSWORD"]) == (
        "redis://u:***@r:6379/0",
        "***",
        "***",
    )
    for secret in ("url-secret", "var-secret", "sentinel-secret"):
        assert secret not in repr(s) and secret not in str(shown)
