"""The runner's settings: one frozen dataclass tree, parsed once from the environment.

Every variable is declared once, in `runner.settings.variables` (name, where it lands in
this tree, parser, default, unit, secret or not, help); parsing, `ksr config` (`masked()`)
and the tables of docs/configuration.md are derived from those declarations. This module
holds the tree and the checks that involve several variables. Every error is a ConfigError
naming the variable; secrets never appear in `repr`/`str`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from election.config import ENV_LEASE_DURATION, ENV_RENEW_DEADLINE, ElectionConfig
from election.errors import ElectionConfigError
from runner.allowlist import Allowlist
from runner.errors import ConfigError
from runner.settings.variables import ANY, CRASH_STEPS, VARIABLES, mask_redis_url

__all__ = [
    "ANY",
    "CRASH_STEPS",
    "CallbackSettings",
    "ConsoleSettings",
    "IdentitySettings",
    "KubeSettings",
    "PolicySettings",
    "RedisSettings",
    "ScheduleSettings",
    "ServerSettings",
    "Settings",
    "StateSettings",
    "StreamSettings",
]

LockKind = Literal["lease", "redis"]
ExecutorKind = Literal["kubernetes", "local"]
LogFormat = Literal["auto", "json", "text"]


# -- the tree (each field's variable, unit and meaning: runner/settings/variables.py) ---------


@dataclass(frozen=True)
class IdentitySettings:
    pod_name: str  # POD_NAME: consumer name in the group and Lease holder identity
    pod_namespace: str  # POD_NAMESPACE: where the Lease lives; default allowed Job namespace


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis; `runner.store.connection.connect` is the one reader of it."""

    url: str = field(repr=False)  # REDIS_URL, password included: hand to connect() only
    username: str | None = None  # KSR_REDIS_USERNAME: wins over the URL's user
    password: str | None = field(default=None, repr=False)  # KSR_REDIS_PASSWORD: wins over the URL's
    tls_ca: Path | None = None  # KSR_REDIS_TLS_CA
    tls_cert: Path | None = None  # KSR_REDIS_TLS_CERT
    tls_key: Path | None = None  # KSR_REDIS_TLS_KEY
    sentinels: tuple[tuple[str, int], ...] = ()  # KSR_REDIS_SENTINELS; () = REDIS_URL's host
    master: str = "mymaster"  # KSR_REDIS_MASTER: the Sentinel service name
    sentinel_username: str | None = None  # KSR_REDIS_SENTINEL_USERNAME
    sentinel_password: str | None = field(default=None, repr=False)  # KSR_REDIS_SENTINEL_PASSWORD
    sentinel_tls: bool = False  # KSR_REDIS_SENTINEL_TLS
    min_replicas: int = 0  # KSR_REDIS_MIN_REPLICAS: WAIT for this many on the writes exactly-once needs
    wait_timeout: float = 1.0  # KSR_REDIS_WAIT_TIMEOUT, seconds per WAIT

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    @property
    def masked_url(self) -> str:
        """The URL with the password replaced by ***."""
        return mask_redis_url(self.url)


@dataclass(frozen=True)
class StreamSettings:
    streams: tuple[str, ...]  # KSR_STREAMS, highest priority first
    group: str  # KSR_GROUP
    read_count: int  # KSR_READ_COUNT: entries per XREADGROUP
    block_ms: int  # KSR_BLOCK_MS: milliseconds one blocking read waits
    max_deliveries: int  # KSR_MAX_DELIVERIES: the group's delivery count that dead-letters
    max_message_bytes: int  # KSR_MAX_MESSAGE_BYTES: payloads above this are invalid
    events_stream: str  # KSR_EVENTS_STREAM
    events_maxlen: int  # KSR_EVENTS_MAXLEN: approximate cap (XADD MAXLEN ~)
    stream_maxlen: int  # KSR_STREAM_MAXLEN: the leader trims done entries beyond this; 0 = never

    @property
    def default_stream(self) -> str:
        """The "default" priority stream: the one whose last segment is `default`, else the first."""
        return next((s for s in self.streams if s.rsplit(":", 1)[-1] == "default"), self.streams[0])


@dataclass(frozen=True)
class StateSettings:
    key_prefix: str  # CACHE_JOB_KEY_PREFIX: record of message <id> is <key_prefix><id>
    ttl_seconds: int  # KSR_STATE_TTL: how long a record outlives its Job's end

    @property
    def active_key(self) -> str:
        """The active set, beside the records: ksr:active for ksr:msg:."""
        return ":".join(self.key_prefix.split(":")[:-2]) + ":active"

    def record_key(self, message_id: str) -> str:
        return self.key_prefix + message_id


@dataclass(frozen=True)
class KubeSettings:
    executor: ExecutorKind  # KSR_EXECUTOR
    client_timeout: float  # KUBERNETES_CLIENT_TIMEOUT, seconds per API request
    polling_interval: float  # POLLING_INTERVAL, seconds between watcher resyncs/polls
    pod_start_timeout: float  # POD_START_TIMEOUT, seconds before a pod that never ran is 99
    create_horizon: float  # KSR_CREATE_HORIZON, seconds transient create refusals are retried
    create_backoff_cap: float  # KSR_CREATE_BACKOFF_CAP, seconds, the longest wait between those tries
    max_active_jobs: int  # KSR_MAX_ACTIVE_JOBS, 0 = no cap
    worker_pool_size: int  # QUEUE_WORKER_POOL_SIZE, parallel Job creates
    qps: float  # KSR_KUBE_QPS, client-side requests per second, 0 = no limit
    burst: int  # KSR_KUBE_BURST, the token bucket's size


@dataclass(frozen=True)
class PolicySettings:
    allowed_namespaces: tuple[str, ...]  # "*" = any
    allowed_images: tuple[str, ...]  # prefixes; empty = any
    allowed_envrefs: tuple[str, ...]  # ConfigMap/Secret names; empty = any
    allowed_service_accounts: tuple[str, ...]  # beyond "default"; "*" = any
    webhook_allow: Allowlist  # exempt from the private-address refusal
    # the runner's own ConfigMaps/Secrets/claims, "name" (anywhere) or "namespace/name"
    protected_names: tuple[str, ...]
    strict_envref_namespaces: tuple[str, ...]  # envRefs there must be listed, even with an empty list

    def namespace_allowed(self, namespace: str) -> bool:
        return ANY in self.allowed_namespaces or namespace in self.allowed_namespaces

    def image_allowed(self, image: str) -> bool:
        return not self.allowed_images or any(image.startswith(p) for p in self.allowed_images)

    def envref_allowed(self, name: str, namespace: str | None = None) -> bool:
        listed = ANY in self.allowed_envrefs or name in self.allowed_envrefs
        if namespace is not None and namespace in self.strict_envref_namespaces:
            return listed
        return not self.allowed_envrefs or listed

    def protected(self, namespace: str, name: str) -> bool:
        return name in self.protected_names or f"{namespace}/{name}" in self.protected_names

    def service_account_listed(self, name: str) -> bool:
        """Explicitly allowed: such a pod gets its token mounted."""
        return ANY in self.allowed_service_accounts or name in self.allowed_service_accounts

    def service_account_allowed(self, name: str) -> bool:
        return name == "default" or self.service_account_listed(name)


@dataclass(frozen=True)
class CallbackSettings:
    queue: str  # KSR_CALLBACK_QUEUE (RQ queue name)
    timeout: float  # KSR_CALLBACK_TIMEOUT, seconds per attempt (connect + response)
    retry_horizon: float  # KSR_CALLBACK_RETRY_HORIZON, seconds from first attempt to give up
    max_attempts: int  # KSR_CALLBACK_MAX_ATTEMPTS
    backoff_base: float  # KSR_CALLBACK_BACKOFF_BASE, seconds before the first retry (then doubling)
    backoff_cap: float  # KSR_CALLBACK_BACKOFF_CAP, seconds: the longest wait between attempts
    signing_keys: tuple[bytes, ...] = field(repr=False)  # KSR_WEBHOOK_SECRET; [0] signs

    @property
    def signed(self) -> bool:
        return bool(self.signing_keys)


@dataclass(frozen=True)
class ServerSettings:
    http_port: int  # HTTP_SERVER_PORT
    http_host: str  # KSR_HTTP_HOST, the address gunicorn binds
    http_workers: int  # KSR_HTTP_WORKERS
    http_threads: int  # KSR_HTTP_THREADS, per worker
    stuck_threshold: float  # KSR_STUCK_THRESHOLD, seconds without a loop heartbeat = not live
    shutdown_grace: float  # KSR_SHUTDOWN_GRACE, seconds for the runner to stop after SIGTERM
    log_format: LogFormat  # KSR_LOG_FORMAT
    log_level: str  # KSR_LOG_LEVEL, upper case
    runtime_dir: Path  # KSR_RUNTIME_DIR, the status board's directory
    metrics_dir: Path  # PROMETHEUS_MULTIPROC_DIR
    metrics_max_label_values: int  # KSR_METRICS_MAX_LABEL_VALUES, per capped label of ksr_jobs_finished_total


@dataclass(frozen=True)
class ScheduleSettings:
    poll: float  # KSR_SCHEDULE_POLL, seconds: the scheduler's longest sleep
    max_ahead: float  # KSR_SCHEDULE_MAX_AHEAD, seconds: how far ahead runAt / delaySeconds may be
    schedules_file: Path | None  # KSR_SCHEDULES: YAML of cron entries (runner.schedules), None = none


@dataclass(frozen=True)
class ConsoleSettings:
    enabled: bool  # KSR_CONSOLE_ENABLED: /ui/ served at all
    actions: bool  # KSR_CONSOLE_ACTIONS: the buttons that change state (with the token)
    token: str | None = field(repr=False)  # KSR_CONSOLE_TOKEN
    read_auth: bool  # KSR_CONSOLE_READ_AUTH: reading needs the token too

    @property
    def actions_allowed(self) -> bool:
        return self.actions and self.token is not None


@dataclass(frozen=True)
class Settings:
    identity: IdentitySettings
    redis: RedisSettings
    streams: StreamSettings
    state: StateSettings
    kube: KubeSettings
    policy: PolicySettings
    callbacks: CallbackSettings
    server: ServerSettings
    schedule: ScheduleSettings
    console: ConsoleSettings
    lock: LockKind  # KSR_LOCK
    election: ElectionConfig  # KSR_LEASE_DURATION, KSR_RENEW_DEADLINE, KSR_RETRY_PERIOD, LEADER_ELECTION_LOCK_NAME
    test_crash_at: str | None  # KSR_TEST_CRASH_AT: tests only
    test_slow_tick: float | None  # KSR_TEST_SLOW_TICK: tests only, seconds added to periodic work

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Parse and validate. `overrides` are variable names (e.g. from `ksr run` flags);
        None values are ignored, others win over `env` and are validated the same way."""
        merged = dict(os.environ if env is None else env)
        merged.update({k: str(v) for k, v in overrides.items() if v is not None})
        settings = _build({v.path: v.read(merged) for v in VARIABLES})
        _check(settings)
        return settings

    def masked(self) -> dict[str, object]:
        """Every variable by name, in the order of the docs, secrets shown as "***"; for `ksr config`."""
        return {v.name: v.shown(self.value_at(v.path)) for v in VARIABLES}

    def value_at(self, path: str) -> Any:
        """The value at an attribute path such as "callbacks.timeout"."""
        value: Any = self
        for attribute in path.split("."):
            value = getattr(value, attribute)
        return value


# -- assembly ---------------------------------------------------------------------------------


def _section(values: Mapping[str, Any], name: str) -> dict[str, Any]:
    prefix = name + "."
    return {path[len(prefix) :]: value for path, value in values.items() if path.startswith(prefix)}


def _build(values: Mapping[str, Any]) -> Settings:
    try:
        election = ElectionConfig(**_section(values, "election"))
    except ElectionConfigError as e:
        raise ConfigError(e.variable, e.problem) from e
    return Settings(
        identity=IdentitySettings(**_section(values, "identity")),
        redis=RedisSettings(**_section(values, "redis")),
        streams=StreamSettings(**_section(values, "streams")),
        state=StateSettings(**_section(values, "state")),
        kube=KubeSettings(**_section(values, "kube")),
        policy=PolicySettings(**_section(values, "policy")),
        callbacks=CallbackSettings(**_section(values, "callbacks")),
        server=ServerSettings(**_section(values, "server")),
        schedule=ScheduleSettings(**_section(values, "schedule")),
        console=ConsoleSettings(**_section(values, "console")),
        lock=values["lock"],
        election=election,
        test_crash_at=values["test_crash_at"],
        test_slow_tick=values["test_slow_tick"],
    )


def _check(s: Settings) -> None:
    """Rules that involve several variables; the error names the one to change."""
    _check_redis(s)
    if s.console.token is None:
        for name, on in (("KSR_CONSOLE_ACTIONS", s.console.actions), ("KSR_CONSOLE_READ_AUTH", s.console.read_auth)):
            if on:
                raise ConfigError(name, "needs KSR_CONSOLE_TOKEN (the operators' token), which is unset")
    if s.streams.events_stream in s.streams.streams:
        raise ConfigError("KSR_EVENTS_STREAM", f"{s.streams.events_stream!r} is also one of KSR_STREAMS")
    # A blocking read or a poll longer than the liveness threshold would fail the probe of a
    # healthy, idle runner.
    if s.streams.block_ms / 1000 >= s.server.stuck_threshold:
        raise ConfigError(
            "KSR_BLOCK_MS",
            f"must be shorter than KSR_STUCK_THRESHOLD ({s.server.stuck_threshold:g}s), got {s.streams.block_ms} ms",
        )
    # A leader whose term ends during a read would take entries into its own pending list
    # after a successor already reclaimed; the read must end inside that margin.
    margin = s.election.lease_duration - s.election.renew_deadline
    if s.streams.block_ms / 1000 > margin:
        raise ConfigError(
            "KSR_BLOCK_MS",
            f"must not be longer than {ENV_LEASE_DURATION} - {ENV_RENEW_DEADLINE} "
            f"({s.election.lease_duration:g}s - {s.election.renew_deadline:g}s = {margin:g}s), "
            f"got {s.streams.block_ms} ms",
        )
    if s.kube.polling_interval >= s.server.stuck_threshold:
        raise ConfigError(
            "POLLING_INTERVAL",
            f"must be shorter than KSR_STUCK_THRESHOLD ({s.server.stuck_threshold:g}s), got {s.kube.polling_interval:g}",
        )
    if s.kube.create_backoff_cap > s.kube.create_horizon:
        raise ConfigError(
            "KSR_CREATE_BACKOFF_CAP",
            f"must not exceed KSR_CREATE_HORIZON ({s.kube.create_horizon:g}s), got {s.kube.create_backoff_cap:g}",
        )
    if s.schedule.poll >= s.server.stuck_threshold:
        raise ConfigError(
            "KSR_SCHEDULE_POLL",
            f"must be shorter than KSR_STUCK_THRESHOLD ({s.server.stuck_threshold:g}s), got {s.schedule.poll:g}",
        )
    if s.test_slow_tick is not None and s.test_slow_tick >= s.server.stuck_threshold:
        raise ConfigError(
            "KSR_TEST_SLOW_TICK",
            f"must be shorter than KSR_STUCK_THRESHOLD ({s.server.stuck_threshold:g}s), got {s.test_slow_tick:g}",
        )
    if s.callbacks.retry_horizon <= s.callbacks.timeout:
        raise ConfigError(
            "KSR_CALLBACK_RETRY_HORIZON",
            f"must be longer than KSR_CALLBACK_TIMEOUT ({s.callbacks.timeout:g}s), got {s.callbacks.retry_horizon:g}",
        )
    if s.callbacks.backoff_cap < s.callbacks.backoff_base:
        raise ConfigError(
            "KSR_CALLBACK_BACKOFF_CAP",
            f"must be >= KSR_CALLBACK_BACKOFF_BASE ({s.callbacks.backoff_base:g}s), got {s.callbacks.backoff_cap:g}",
        )


def _check_redis(s: Settings) -> None:
    r = s.redis
    if (r.tls_cert is None) != (r.tls_key is None):
        missing = "KSR_REDIS_TLS_KEY" if r.tls_key is None else "KSR_REDIS_TLS_CERT"
        raise ConfigError(missing, "KSR_REDIS_TLS_CERT and KSR_REDIS_TLS_KEY go together")
    if not r.tls and not r.sentinel_tls:
        for variable, value in (("KSR_REDIS_TLS_CA", r.tls_ca), ("KSR_REDIS_TLS_CERT", r.tls_cert)):
            if value is not None:
                raise ConfigError(variable, "is set but REDIS_URL is not rediss:// (nor KSR_REDIS_SENTINEL_TLS true)")
    if r.sentinels and r.url.startswith("unix:"):
        raise ConfigError("REDIS_URL", "a unix:// URL cannot be combined with KSR_REDIS_SENTINELS")
    # Sentinel's failover is asynchronous: a promoted replica can lack the last lock
    # renewals and term, so two replicas could both believe they lead (docs/redis.md).
    if r.sentinels and s.lock == "redis":
        raise ConfigError(
            "KSR_LOCK",
            "KSR_LOCK=redis cannot be used with KSR_REDIS_SENTINELS: a failover can lose the lock's last "
            "writes and elect two leaders; use KSR_LOCK=lease (docs/redis.md)",
        )
