"""ksr_client (clients/python) shares names, defaults and the cancel script with the runner
through a generated file; runner.client hands it the runner's settings."""

from __future__ import annotations

import pytest

from ksr_client import Config, ConfigError
from ksr_client import _contract as contract
from runner.client import CONTRACT_PATH, config_of, render_contract
from runner.settings import Settings


def test_the_contract_file_is_generated_from_the_runner() -> None:
    assert CONTRACT_PATH.read_text(encoding="utf-8") == render_contract(), (
        "clients/python/ksr_client/_contract.py differs from the runner; run: python -m runner.client --write-contract"
    )
    assert "is_terminal" in contract.CANCEL_LUA and "STATE.CANCELLED" in contract.CANCEL_LUA


def test_the_clients_defaults_are_the_runners() -> None:
    assert Config.from_env({}) == config_of(Settings.from_env({"POD_NAME": "r0"}))


def test_the_client_reads_the_runners_variables() -> None:
    env = {
        "REDIS_URL": "redis://10.0.0.1:6380/2",
        "KSR_STREAMS": "t:jobs:high, t:jobs:default",
        "KSR_GROUP": "g1",
        "KSR_EVENTS_STREAM": "t:events",
        "CACHE_JOB_KEY_PREFIX": "t:msg:",
        "KSR_STATE_TTL": "3600",
        "KSR_MAX_MESSAGE_BYTES": "2048",
    }
    assert Config.from_env(env) == config_of(Settings.from_env({"POD_NAME": "r0", **env}))
    assert Config.from_env(env).default_stream == "t:jobs:default"


def test_a_malformed_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^KSR_STATE_TTL: must be an integer, got 'a week'$"):
        Config.from_env({"KSR_STATE_TTL": "a week"})
    with pytest.raises(ConfigError, match=r"^KSR_STREAMS: "):
        Config.from_env({"KSR_STREAMS": "a,,b"})
