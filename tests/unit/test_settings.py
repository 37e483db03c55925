"""Settings.from_env: defaults, derived values, secrets out of sight, errors naming the variable."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from runner.errors import ConfigError
from runner.settings import Settings
from runner.settings.variables import VARIABLES

# An environment with no cluster config: no KUBERNETES_SERVICE_HOST, no KUBECONFIG, a HOME
# without ~/.kube/config.
BARE: dict[str, str] = {"POD_NAME": "runner-0"}


def test_defaults() -> None:
    s = Settings.from_env(BARE)
    assert s.redis.url == "redis://127.0.0.1:6379/0"
    assert s.streams.streams == ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
    assert s.streams.group == "ksr"
    assert s.lock == "redis" and s.kube.executor == "local"
    assert s.identity.pod_namespace == "default"
    assert s.policy.allowed_namespaces == ("default",)
    assert s.policy.allowed_images == () and s.policy.allowed_envrefs == ()
    assert s.streams.max_message_bytes == 65536
    assert s.kube.max_active_jobs == 500
    assert (s.kube.qps, s.kube.burst) == (500.0, 1000)
    assert (s.streams.read_count, s.streams.block_ms, s.streams.max_deliveries) == (10, 2000, 5)
    assert s.state.ttl_seconds == 7 * 24 * 3600
    assert (s.state.key_prefix, s.state.active_key) == ("ksr:msg:", "ksr:active")
    assert s.state.record_key("abc") == "ksr:msg:abc"
    assert (s.streams.events_stream, s.streams.events_maxlen) == ("ksr:events", 100000)
    assert (s.callbacks.queue, s.callbacks.timeout, s.callbacks.retry_horizon, s.callbacks.max_attempts) == (
        "ksr-callbacks",
        10.0,
        3600.0,
        12,
    )
    assert s.callbacks.signing_keys == () and not s.callbacks.signed
    assert (s.server.http_port, s.server.stuck_threshold, s.server.log_format) == (8080, 60.0, "auto")
    assert (s.kube.polling_interval, s.kube.worker_pool_size, s.kube.client_timeout, s.kube.pod_start_timeout) == (
        5.0,
        4,
        10.0,
        300.0,
    )
    assert s.election.lock_name == "ksr-leader"
    assert (s.election.lease_duration, s.election.renew_deadline, s.election.retry_period) == (15.0, 10.0, 2.0)
    assert s.test_crash_at is None
    assert (s.streams.stream_maxlen, s.callbacks.backoff_base, s.callbacks.backoff_cap) == (100000, 1.0, 300.0)
    assert (s.server.shutdown_grace, s.kube.create_horizon, s.server.log_level) == (20.0, 300.0, "INFO")
    assert (s.server.http_host, s.server.http_workers, s.server.http_threads) == ("0.0.0.0", 2, 4)


def test_settings_are_frozen() -> None:
    s = Settings.from_env(BARE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lock = "lease"  # type: ignore[misc]


@pytest.mark.parametrize(
    "env",
    [
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        {"KUBECONFIG": "/tmp/kubeconfig"},
    ],
)
def test_cluster_config_makes_lease_and_kubernetes_the_default(env: dict[str, str]) -> None:
    s = Settings.from_env({**BARE, **env})
    assert s.lock == "lease" and s.kube.executor == "kubernetes"


def test_home_kube_config_counts_as_cluster_config(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\n")
    s = Settings.from_env({**BARE, "HOME": str(tmp_path)})
    assert s.lock == "lease"
    assert Settings.from_env({**BARE, "HOME": str(tmp_path / "nowhere")}).lock == "redis"


def test_explicit_lock_and_executor_win() -> None:
    s = Settings.from_env({**BARE, "KUBERNETES_SERVICE_HOST": "x", "KSR_LOCK": "redis", "KSR_EXECUTOR": "local"})
    assert s.lock == "redis" and s.kube.executor == "local"


def test_values_parsed() -> None:
    s = Settings.from_env(
        {
            **BARE,
            "KSR_STREAMS": " a , b ",
            "POD_NAMESPACE": "jobs",
            "KSR_ALLOWED_IMAGES": "registry.example/,busybox",
            "KSR_ALLOWED_SERVICE_ACCOUNTS": "builder",
            "KSR_WEBHOOK_ALLOW": "127.0.0.1,receiver.test,10.0.0.0/8,*.svc.cluster.local",
            "POD_START_TIMEOUT": "30s",
            "KSR_TEST_CRASH_AT": "after_claim",
            "CACHE_JOB_KEY_PREFIX": "t42:msg:",
        }
    )
    assert s.streams.streams == ("a", "b")
    assert s.policy.allowed_namespaces == ("jobs",)
    assert s.policy.image_allowed("busybox:1.36") and not s.policy.image_allowed("evil/busybox")
    assert s.policy.service_account_allowed("default") and s.policy.service_account_allowed("builder")
    assert not s.policy.service_account_allowed("admin")
    assert s.policy.webhook_allow.allows_host("receiver.test")
    assert s.policy.webhook_allow.allows_host("hook.ns.svc.cluster.local")
    assert s.kube.pod_start_timeout == 30.0
    assert s.test_crash_at == "after_claim"
    assert s.state.active_key == "t42:active"


def test_overrides_win_and_none_is_ignored() -> None:
    s = Settings.from_env({**BARE, "KSR_GROUP": "g1"}, KSR_GROUP="g2", HTTP_SERVER_PORT=9000, KSR_LOCK=None)
    assert s.streams.group == "g2" and s.server.http_port == 9000 and s.lock == "redis"
    with pytest.raises(ConfigError, match="^HTTP_SERVER_PORT: "):
        Settings.from_env(BARE, HTTP_SERVER_PORT=0)


def test_empty_values_mean_default() -> None:
    s = Settings.from_env({**BARE, "KSR_GROUP": "", "POLLING_INTERVAL": " "})
    assert s.streams.group == "ksr" and s.kube.polling_interval == 5.0


def test_secrets_stay_out_of_repr_and_masked() -> None:
    s = Settings.from_env(
        {
            **BARE,
            "REDIS_URL": "redis://user:hunter2@redis.example:6380/1",
            "KSR_WEBHOOK_SECRET": "topsecret1, whsec_c2VjcmV0Mg==",
        }
    )
    assert s.redis.url == "redis://user:hunter2@redis.example:6380/1"
    assert s.callbacks.signing_keys == (b"topsecret1", b"secret2")
    for text in (repr(s), str(s), repr(s.callbacks), repr(s.redis), str(s.masked())):
        assert "hunter2" not in text and "topsecret1" not in text and "c2VjcmV0Mg" not in text
    masked = s.masked()
    assert masked["REDIS_URL"] == "redis://user:***@redis.example:6380/1"
    assert masked["KSR_WEBHOOK_SECRET"] == "***,***"


def test_masked_lists_every_documented_variable() -> None:
    documented = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for name in Settings.from_env(BARE).masked():
        assert f"`{name}`" in documented, name


def test_election_variables_are_read() -> None:
    s = Settings.from_env(
        {
            **BARE,
            "KSR_LEASE_DURATION": "3",
            "KSR_RENEW_DEADLINE": "2.0",
            "KSR_RETRY_PERIOD": "0.5",
            "LEADER_ELECTION_LOCK_NAME": "my-lock",
            "KSR_BLOCK_MS": "500",
        }
    )
    e = s.election
    assert (e.lease_duration, e.renew_deadline, e.retry_period, e.lock_name) == (3.0, 2.0, 0.5, "my-lock")


def test_every_duration_takes_the_same_forms() -> None:
    """One parser for every duration: the election's variables take `15s` as POLLING_INTERVAL does."""
    s = Settings.from_env(
        {
            **BARE,
            "KSR_LEASE_DURATION": "15s",
            "KSR_RENEW_DEADLINE": "10s",
            "KSR_RETRY_PERIOD": "1500ms",
            "POLLING_INTERVAL": "15s",
            "KSR_CREATE_HORIZON": "5m",
            "KSR_CALLBACK_RETRY_HORIZON": "2h",
        }
    )
    assert (s.election.lease_duration, s.election.renew_deadline, s.election.retry_period) == (15.0, 10.0, 1.5)
    assert (s.kube.polling_interval, s.kube.create_horizon, s.callbacks.retry_horizon) == (15.0, 300.0, 7200.0)


def test_block_ms_must_fit_between_lease_and_renew_deadline() -> None:
    env = {**BARE, "KSR_LEASE_DURATION": "4", "KSR_RENEW_DEADLINE": "3", "KSR_RETRY_PERIOD": "0.5"}
    assert Settings.from_env({**env, "KSR_BLOCK_MS": "1000"}).streams.block_ms == 1000
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**env, "KSR_BLOCK_MS": "1001"})
    assert caught.value.variable == "KSR_BLOCK_MS"
    assert caught.value.problem == (
        "must not be longer than KSR_LEASE_DURATION - KSR_RENEW_DEADLINE (4s - 3s = 1s), got 1001 ms"
    )


def test_masked_lists_every_declared_variable_in_order() -> None:
    masked = Settings.from_env(BARE).masked()
    assert list(masked) == [v.name for v in VARIABLES]
    # the ones `ksr config` used to miss
    assert {
        "KSR_STREAM_MAXLEN": 100000,
        "KSR_CALLBACK_BACKOFF_BASE": 1.0,
        "KSR_CALLBACK_BACKOFF_CAP": 300.0,
        "KSR_SHUTDOWN_GRACE": 20.0,
        "KSR_LOG_LEVEL": "INFO",
        "KSR_HTTP_WORKERS": 2,
        "KSR_CREATE_HORIZON": 300.0,
        "KSR_TEST_CRASH_AT": None,
    }.items() <= masked.items()


def test_masked_shows_the_tree_s_values() -> None:
    s = Settings.from_env({**BARE, "KSR_ALLOWED_IMAGES": "a/, b/", "KSR_RUNTIME_DIR": "/run/ksr"}, KSR_GROUP="g2")
    masked = s.masked()
    assert (masked["KSR_GROUP"], masked["KSR_ALLOWED_IMAGES"], masked["KSR_RUNTIME_DIR"]) == ("g2", "a/,b/", "/run/ksr")
    assert masked["PROMETHEUS_MULTIPROC_DIR"] == "/run/ksr/metrics"


def test_every_field_of_the_tree_has_its_variable() -> None:
    """A field without a declaration would be neither parsed, shown nor documented."""
    from election.config import ElectionConfig

    def leaves(cls: type, prefix: str) -> set[str]:
        out: set[str] = set()
        for name, hint in typing.get_type_hints(cls).items():
            if hint is ElectionConfig or getattr(hint, "__module__", None) == Settings.__module__:
                out |= leaves(hint, f"{prefix}{name}.")  # a subtree
            else:
                out.add(prefix + name)
        return out

    tree = leaves(Settings, "")
    assert tree - {v.path for v in VARIABLES} == {"election.jitter"}  # a constant, not a setting
    assert {v.path for v in VARIABLES} <= tree
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_the_configuration_doc_is_generated_from_the_declarations() -> None:
    from runner.settings import doc

    documented = doc.current_tables(doc.DOC_PATH.read_text())
    assert documented == doc.render_tables(), "run: python -m runner.settings.doc --write"


def test_gunicorn_reads_its_variables_through_the_declarations(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KSR_HTTP_HOST": "127.0.0.1",
        "HTTP_SERVER_PORT": "9123",
        "KSR_HTTP_WORKERS": "3",
        "KSR_HTTP_THREADS": "",
        "KSR_LOG_FORMAT": "json",
        "KSR_LOG_LEVEL": "warning",
    }.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("probes.gunicorn_conf", None)
    conf = importlib.import_module("probes.gunicorn_conf")
    assert (conf.bind, conf.workers, conf.threads) == ("127.0.0.1:9123", 3, 4)
    assert conf.logconfig_dict["root"]["level"] == "WARNING"
    assert conf.logconfig_dict["handlers"]["ksr"]["formatter"] == "json"

    monkeypatch.setenv("KSR_HTTP_WORKERS", "two")
    sys.modules.pop("probes.gunicorn_conf", None)
    with pytest.raises(ConfigError) as caught:
        importlib.import_module("probes.gunicorn_conf")
    assert caught.value.variable == "KSR_HTTP_WORKERS" and "got 'two'" in caught.value.problem
    sys.modules.pop("probes.gunicorn_conf", None)


def test_runtime_paths_follow_the_same_declarations(tmp_path: Path) -> None:
    from runner.process.statusboard import runtime_paths

    env = {**BARE, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m")}
    paths = runtime_paths(env)
    s = Settings.from_env(env)
    assert (paths.runtime_dir, paths.metrics_dir) == (tmp_path / "ksr-runtime", tmp_path / "m")
    assert (s.server.runtime_dir, s.server.metrics_dir) == (paths.runtime_dir, paths.metrics_dir)
    assert runtime_paths({"KSR_RUNTIME_DIR": str(tmp_path / "r")}).status_file == tmp_path / "r" / "status.json"


@pytest.mark.parametrize(
    "env, variable, fragment",
    [
        ({"KSR_STREAMS": ""}, "KSR_STREAMS", "must not be empty"),
        ({"KSR_STREAMS": " , "}, "KSR_STREAMS", "must not be empty"),
        ({"KSR_STREAMS": "a,b,a"}, "KSR_STREAMS", "duplicate stream a"),
        ({"KSR_STREAMS": "a,a:dead"}, "KSR_STREAMS", "dead-letter suffix"),
        ({"KSR_EVENTS_STREAM": "ksr:jobs:low"}, "KSR_EVENTS_STREAM", "also one of KSR_STREAMS"),
        ({"POD_START_TIMEOUT": "abc"}, "POD_START_TIMEOUT", "must be a number of seconds > 0, got 'abc'"),
        ({"POD_START_TIMEOUT": "0"}, "POD_START_TIMEOUT", "> 0"),
        ({"POD_START_TIMEOUT": "nan"}, "POD_START_TIMEOUT", "> 0"),
        ({"KUBERNETES_CLIENT_TIMEOUT": "-1"}, "KUBERNETES_CLIENT_TIMEOUT", "> 0"),
        ({"HTTP_SERVER_PORT": "70000"}, "HTTP_SERVER_PORT", "<= 65535"),
        ({"HTTP_SERVER_PORT": "80.5"}, "HTTP_SERVER_PORT", "an integer"),
        ({"QUEUE_WORKER_POOL_SIZE": "0"}, "QUEUE_WORKER_POOL_SIZE", ">= 1"),
        ({"KSR_MAX_ACTIVE_JOBS": "-1"}, "KSR_MAX_ACTIVE_JOBS", ">= 0"),
        ({"KSR_KUBE_QPS": "-1"}, "KSR_KUBE_QPS", "a number of requests per second >= 0, got '-1'"),
        ({"KSR_KUBE_QPS": "fast"}, "KSR_KUBE_QPS", "got 'fast'"),
        ({"KSR_KUBE_QPS": "inf"}, "KSR_KUBE_QPS", "got 'inf'"),
        ({"KSR_KUBE_BURST": "0"}, "KSR_KUBE_BURST", ">= 1"),
        ({"KSR_MAX_MESSAGE_BYTES": "100"}, "KSR_MAX_MESSAGE_BYTES", ">= 1024"),
        ({"KSR_READ_COUNT": "many"}, "KSR_READ_COUNT", "got 'many'"),
        ({"KSR_LOCK": "zookeeper"}, "KSR_LOCK", "lease|redis"),
        ({"KSR_EXECUTOR": "docker"}, "KSR_EXECUTOR", "kubernetes|local"),
        ({"KSR_LOG_FORMAT": "xml"}, "KSR_LOG_FORMAT", "auto|json|text"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL", "scheme"),
        ({"REDIS_URL": "redis://h:99999"}, "REDIS_URL", "not a valid URL"),
        ({"CACHE_JOB_KEY_PREFIX": "jobs:"}, "CACHE_JOB_KEY_PREFIX", "<namespace>:<name>:"),
        ({"CACHE_JOB_KEY_PREFIX": "ksr:msg"}, "CACHE_JOB_KEY_PREFIX", "<namespace>:<name>:"),
        ({"CACHE_JOB_KEY_PREFIX": "ksr:active:"}, "CACHE_JOB_KEY_PREFIX", "'active'"),
        ({"KSR_WEBHOOK_ALLOW": "10.0.0.0/33"}, "KSR_WEBHOOK_ALLOW", "10.0.0.0/33"),
        ({"KSR_WEBHOOK_SECRET": "whsec_!!!"}, "KSR_WEBHOOK_SECRET", "secret #1"),
        ({"KSR_CALLBACK_RETRY_HORIZON": "5"}, "KSR_CALLBACK_RETRY_HORIZON", "longer than KSR_CALLBACK_TIMEOUT"),
        ({"KSR_BLOCK_MS": "60000"}, "KSR_BLOCK_MS", "shorter than KSR_STUCK_THRESHOLD"),
        ({"POLLING_INTERVAL": "90"}, "POLLING_INTERVAL", "shorter than KSR_STUCK_THRESHOLD"),
        ({"KSR_STATE_TTL": "10"}, "KSR_STATE_TTL", ">= 60"),
        ({"KSR_LEASE_DURATION": "5"}, "KSR_LEASE_DURATION", "KSR_RENEW_DEADLINE"),
        ({"KSR_RETRY_PERIOD": "soon"}, "KSR_RETRY_PERIOD", "'soon'"),
        ({"LEADER_ELECTION_LOCK_NAME": "Not_Valid"}, "LEADER_ELECTION_LOCK_NAME", "DNS-1123"),
        ({"KSR_LEASE_DURATION": "15x"}, "KSR_LEASE_DURATION", "must be a number of seconds > 0, got '15x'"),
        ({"KSR_RENEW_DEADLINE": "20s"}, "KSR_LEASE_DURATION", "must be greater than KSR_RENEW_DEADLINE (20), got 15"),
        ({"KSR_RETRY_PERIOD": "9"}, "KSR_RENEW_DEADLINE", "KSR_RETRY_PERIOD x 1.2"),
        ({"KSR_BLOCK_MS": "6000"}, "KSR_BLOCK_MS", "KSR_LEASE_DURATION - KSR_RENEW_DEADLINE"),
        ({"KSR_CREATE_HORIZON": "0"}, "KSR_CREATE_HORIZON", "> 0"),
        ({"KSR_CREATE_HORIZON": "soon"}, "KSR_CREATE_HORIZON", "got 'soon'"),
        ({"KSR_CALLBACK_BACKOFF_CAP": "0.5"}, "KSR_CALLBACK_BACKOFF_CAP", ">= KSR_CALLBACK_BACKOFF_BASE"),
        ({"KSR_SHUTDOWN_GRACE": "-3"}, "KSR_SHUTDOWN_GRACE", "> 0"),
        ({"KSR_STREAM_MAXLEN": "-1"}, "KSR_STREAM_MAXLEN", ">= 0"),
        ({"KSR_LOG_LEVEL": "verbose"}, "KSR_LOG_LEVEL", "DEBUG|INFO|WARNING|ERROR|CRITICAL"),
        ({"KSR_HTTP_WORKERS": "0"}, "KSR_HTTP_WORKERS", ">= 1"),
        ({"KSR_HTTP_THREADS": "many"}, "KSR_HTTP_THREADS", "got 'many'"),
        ({"KSR_ALLOWED_NAMESPACES": " , "}, "KSR_ALLOWED_NAMESPACES", "at least one namespace"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BARE, **env})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2


def test_secret_errors_do_not_echo_the_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BARE, "KSR_WEBHOOK_SECRET": "good,whsec_not*base64"})
    assert "not*base64" not in str(caught.value) and "secret #2" in str(caught.value)


def test_a_misspelt_crash_step_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"KSR_TEST_CRASH_AT": "after_clam"})
    assert caught.value.variable == "KSR_TEST_CRASH_AT"
    assert Settings.from_env({"KSR_TEST_CRASH_AT": "after_claim"}).test_crash_at == "after_claim"


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([v.name for v in VARIABLES]),
    text=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40),
)
def test_any_text_in_any_variable_parses_or_names_the_variable(name: str, text: str) -> None:
    """Whatever an operator writes, the outcome is settings or a ConfigError naming a variable."""
    try:
        Settings.from_env({**BARE, name: text})
    except ConfigError as e:
        assert e.variable in {v.name for v in VARIABLES}


def test_protected_names_and_strict_envref_namespaces() -> None:
    s = Settings.from_env(
        {
            **BARE,
            "POD_NAMESPACE": "ksr",
            "KSR_PROTECTED_NAMES": "ksr-runner, jobs/creds",
            "KSR_STRICT_ENVREF_NAMESPACES": "ksr",
        }
    )
    assert s.policy.protected_names == ("ksr-runner", "jobs/creds")
    assert s.policy.protected("ksr", "ksr-runner") and s.policy.protected("jobs", "ksr-runner")
    assert s.policy.protected("jobs", "creds") and not s.policy.protected("ksr", "creds")
    assert s.policy.strict_envref_namespaces == ("ksr",)
    assert s.masked()["KSR_PROTECTED_NAMES"] == "ksr-runner,jobs/creds"
    defaults = Settings.from_env(BARE)
    assert defaults.policy.protected_names == () and defaults.policy.strict_envref_namespaces == ()


@pytest.mark.parametrize("value", ["a/b/c", "Bad_Name", "ns/"])
def test_protected_names_must_be_names(value: str) -> None:
    with pytest.raises(ConfigError, match="^KSR_PROTECTED_NAMES: "):
        Settings.from_env({**BARE, "KSR_PROTECTED_NAMES": value})


@pytest.mark.parametrize("raw", ["-1", "0", "soon", "60"])
def test_a_slow_tick_that_is_not_a_positive_time_below_the_stuck_threshold_is_refused(raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"KSR_TEST_SLOW_TICK": raw, "KSR_STUCK_THRESHOLD": "60"})
    assert caught.value.variable == "KSR_TEST_SLOW_TICK"
    assert raw in str(caught.value)


def test_the_slow_tick_is_off_unless_set():
    assert Settings.from_env({}).test_slow_tick is None
    assert Settings.from_env({"KSR_TEST_SLOW_TICK": "2.5"}).test_slow_tick == 2.5
