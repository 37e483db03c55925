"""The runner's settings: one frozen dataclass tree, parsed once from the environment.

`Settings.from_env()` validates everything up front; every error is a ConfigError naming the
variable. Secrets (the webhook signing keys, the password in REDIS_URL) never appear in
`repr`/`str`; `masked()` is what `ksr config` prints. docs/configuration.md lists every name.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit, urlunsplit

from election.config import (
    ENV_LEASE_DURATION,
    ENV_LOCK_NAME,
    ENV_RENEW_DEADLINE,
    ENV_RETRY_PERIOD,
    ElectionConfig,
)
from election.errors import ElectionConfigError
from runner.callbacks.netguard import Allowlist
from runner.errors import ConfigError

__all__ = [
    "ANY",
    "CallbackSettings",
    "IdentitySettings",
    "KubeSettings",
    "PolicySettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "StateSettings",
    "StreamSettings",
]

ANY = "*"  # in KSR_ALLOWED_NAMESPACES / KSR_ALLOWED_SERVICE_ACCOUNTS: no restriction

LockKind = Literal["lease", "redis"]
ExecutorKind = Literal["kubernetes", "local"]
LogFormat = Literal["auto", "json", "text"]


# -- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentitySettings:
    pod_name: str  # POD_NAME: consumer name in the group and Lease holder identity
    pod_namespace: str  # POD_NAMESPACE: where the Lease lives; default allowed Job namespace


@dataclass(frozen=True)
class RedisSettings:
    url: str = field(repr=False)  # REDIS_URL, password included: hand to redis.from_url only
    masked_url: str = ""  # the same with the password replaced by ***


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
    stream_maxlen: int = 100_000  # KSR_STREAM_MAXLEN: the leader trims done entries beyond this; 0 = never


@dataclass(frozen=True)
class StateSettings:
    key_prefix: str  # CACHE_JOB_KEY_PREFIX: record of message <id> is <key_prefix><id>
    active_key: str  # derived: the active set, e.g. ksr:active for ksr:msg:
    ttl_seconds: int  # KSR_STATE_TTL: how long a record outlives its Job's end

    def record_key(self, message_id: str) -> str:
        return self.key_prefix + message_id


@dataclass(frozen=True)
class KubeSettings:
    executor: ExecutorKind  # KSR_EXECUTOR
    client_timeout: float  # KUBERNETES_CLIENT_TIMEOUT, seconds per API request
    polling_interval: float  # POLLING_INTERVAL, seconds between watcher resyncs/polls
    pod_start_timeout: float  # POD_START_TIMEOUT, seconds before a pod that never ran is 99
    max_active_jobs: int  # KSR_MAX_ACTIVE_JOBS, 0 = no cap
    worker_pool_size: int  # QUEUE_WORKER_POOL_SIZE, parallel Job creates


@dataclass(frozen=True)
class PolicySettings:
    allowed_namespaces: tuple[str, ...]  # "*" = any
    allowed_images: tuple[str, ...]  # prefixes; empty = any
    allowed_envrefs: tuple[str, ...]  # ConfigMap/Secret names; empty = any
    allowed_service_accounts: tuple[str, ...]  # beyond "default"; "*" = any
    webhook_allow: Allowlist  # exempt from the private-address refusal

    def namespace_allowed(self, namespace: str) -> bool:
        return ANY in self.allowed_namespaces or namespace in self.allowed_namespaces

    def image_allowed(self, image: str) -> bool:
        return not self.allowed_images or any(image.startswith(p) for p in self.allowed_images)

    def envref_allowed(self, name: str) -> bool:
        return not self.allowed_envrefs or ANY in self.allowed_envrefs or name in self.allowed_envrefs

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
    backoff_base: float = 1.0  # KSR_CALLBACK_BACKOFF_BASE, seconds before the first retry (then doubling)
    backoff_cap: float = 300.0  # KSR_CALLBACK_BACKOFF_CAP, seconds: the longest wait between attempts
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False)  # KSR_WEBHOOK_SECRET; [0] signs

    @property
    def signed(self) -> bool:
        return bool(self.signing_keys)


@dataclass(frozen=True)
class ServerSettings:
    http_port: int  # HTTP_SERVER_PORT
    stuck_threshold: float  # KSR_STUCK_THRESHOLD, seconds without a loop heartbeat = not live
    log_format: LogFormat  # KSR_LOG_FORMAT
    shutdown_grace: float = 20.0  # KSR_SHUTDOWN_GRACE, seconds for the runner to stop after SIGTERM


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
    lock: LockKind  # KSR_LOCK
    election: ElectionConfig  # KSR_LEASE_DURATION, KSR_RENEW_DEADLINE, KSR_RETRY_PERIOD, LEADER_ELECTION_LOCK_NAME
    test_crash_at: str | None = None  # KSR_TEST_CRASH_AT: tests only

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Parse and validate. `overrides` are variable names (e.g. from `ksr run` flags);
        None values are ignored, others win over `env` and are validated the same way."""
        merged = dict(os.environ if env is None else env)
        merged.update({k: str(v) for k, v in overrides.items() if v is not None})
        return _build(_Env(merged))

    def masked(self) -> dict[str, object]:
        """Every setting by variable name, secrets shown as "***"; for `ksr config`."""
        s = self
        out: dict[str, object] = {
            "REDIS_URL": s.redis.masked_url,
            "KSR_STREAMS": ",".join(s.streams.streams),
            "KSR_GROUP": s.streams.group,
            "KSR_LOCK": s.lock,
            "KSR_EXECUTOR": s.kube.executor,
            "KSR_ALLOWED_NAMESPACES": ",".join(s.policy.allowed_namespaces),
            "KSR_ALLOWED_IMAGES": ",".join(s.policy.allowed_images),
            "KSR_ALLOWED_ENVREFS": ",".join(s.policy.allowed_envrefs),
            "KSR_ALLOWED_SERVICE_ACCOUNTS": ",".join(s.policy.allowed_service_accounts),
            "KSR_WEBHOOK_ALLOW": ",".join(s.policy.webhook_allow.entries()),
            "KSR_WEBHOOK_SECRET": ",".join("***" for _ in s.callbacks.signing_keys),
            "KSR_MAX_MESSAGE_BYTES": s.streams.max_message_bytes,
            "KSR_MAX_ACTIVE_JOBS": s.kube.max_active_jobs,
            "KSR_READ_COUNT": s.streams.read_count,
            "KSR_BLOCK_MS": s.streams.block_ms,
            "KSR_MAX_DELIVERIES": s.streams.max_deliveries,
            "KSR_STATE_TTL": s.state.ttl_seconds,
            "KSR_EVENTS_STREAM": s.streams.events_stream,
            "KSR_EVENTS_MAXLEN": s.streams.events_maxlen,
            "KSR_CALLBACK_QUEUE": s.callbacks.queue,
            "KSR_CALLBACK_TIMEOUT": s.callbacks.timeout,
            "KSR_CALLBACK_RETRY_HORIZON": s.callbacks.retry_horizon,
            "KSR_CALLBACK_MAX_ATTEMPTS": s.callbacks.max_attempts,
            "KSR_STUCK_THRESHOLD": s.server.stuck_threshold,
            "KSR_LOG_FORMAT": s.server.log_format,
            "POD_NAME": s.identity.pod_name,
            "POD_NAMESPACE": s.identity.pod_namespace,
            "POLLING_INTERVAL": s.kube.polling_interval,
            "HTTP_SERVER_PORT": s.server.http_port,
            "QUEUE_WORKER_POOL_SIZE": s.kube.worker_pool_size,
            "CACHE_JOB_KEY_PREFIX": s.state.key_prefix,
            "KUBERNETES_CLIENT_TIMEOUT": s.kube.client_timeout,
            "POD_START_TIMEOUT": s.kube.pod_start_timeout,
        }
        out.update(_election_masked(s.election))
        if s.test_crash_at:
            out["KSR_TEST_CRASH_AT"] = s.test_crash_at
        return out


# -- parsing --------------------------------------------------------------------------------


class _Env:
    """Typed reads of one environment mapping; empty values count as unset."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    def raw(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def string(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {'|'.join(choices)}, got {value!r}")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None, unit: str = "") -> int:
        text = self.raw(name)
        what = f"an integer{(' ' + unit) if unit else ''} >= {minimum}" + (
            f" and <= {maximum}" if maximum is not None else ""
        )
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(name, f"must be {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(name, f"must be {what}, got {text!r}")
        return value

    def seconds(self, name: str, default: float) -> float:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = float(text.removesuffix("s"))  # "30" and "30s" both mean 30 seconds
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):  # also catches NaN
            raise ConfigError(name, f"must be a number of seconds > 0, got {text!r}")
        return value

    def items(self, name: str) -> tuple[str, ...] | None:
        """A comma-separated list, None when the variable is unset."""
        text = self.raw(name)
        if text is None:
            return None
        return tuple(item.strip() for item in text.split(",") if item.strip())


def _cluster_config_found(env: _Env) -> bool:
    if env.raw("KUBERNETES_SERVICE_HOST") or env.raw("KUBECONFIG"):
        return True
    home = env.raw("HOME")
    return home is not None and (Path(home) / ".kube" / "config").is_file()


def _redis(env: _Env) -> RedisSettings:
    url = env.string("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as e:
        raise ConfigError("REDIS_URL", f"not a valid URL ({e})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL", f"scheme must be redis, rediss or unix, got {parts.scheme or 'none'!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("REDIS_URL", "no host")
    masked = url
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        masked = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    if "password=" in parts.query:
        masked = masked.split("?", 1)[0] + "?***"
    return RedisSettings(url=url, masked_url=masked)


def _key_name(env: _Env, name: str, default: str) -> str:
    value = env.string(name, default)
    if any(c.isspace() for c in value):
        raise ConfigError(name, f"must not contain whitespace, got {value!r}")
    return value


def _streams(env: _Env) -> StreamSettings:
    names = env.items("KSR_STREAMS")
    if names is None:
        if "KSR_STREAMS" in env.values:  # set, but to nothing: a mistake, not a default
            raise ConfigError("KSR_STREAMS", "must not be empty")
        names = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
    if not names:
        raise ConfigError("KSR_STREAMS", "must not be empty")
    for name in names:
        if any(c.isspace() for c in name):
            raise ConfigError("KSR_STREAMS", f"stream names must not contain whitespace, got {name!r}")
        if name.endswith(":dead"):
            raise ConfigError("KSR_STREAMS", f"{name!r} ends with ':dead', the dead-letter suffix")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError("KSR_STREAMS", f"duplicate stream {', '.join(duplicates)}")
    events = _key_name(env, "KSR_EVENTS_STREAM", "ksr:events")
    if events in names:
        raise ConfigError("KSR_EVENTS_STREAM", f"{events!r} is also one of KSR_STREAMS")
    return StreamSettings(
        streams=names,
        group=_key_name(env, "KSR_GROUP", "ksr"),
        read_count=env.integer("KSR_READ_COUNT", 10, minimum=1, maximum=10_000),
        block_ms=env.integer("KSR_BLOCK_MS", 2000, minimum=1, unit="of milliseconds"),
        max_deliveries=env.integer("KSR_MAX_DELIVERIES", 5, minimum=1),
        max_message_bytes=env.integer("KSR_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1024, unit="of bytes"),
        stream_maxlen=env.integer("KSR_STREAM_MAXLEN", 100_000, minimum=0, unit="of entries"),
        events_stream=events,
        events_maxlen=env.integer("KSR_EVENTS_MAXLEN", 100_000, minimum=1),
    )


def _state(env: _Env) -> StateSettings:
    prefix = _key_name(env, "CACHE_JOB_KEY_PREFIX", "ksr:msg:")
    # "<namespace>:<name>:" -> records "<namespace>:<name>:<id>", active set "<namespace>:active".
    # The active set sits outside the records' key space, so no message id can collide with it.
    segments = prefix.split(":")
    if not prefix.endswith(":") or len(segments) < 3 or not all(segments[:-1]):
        raise ConfigError(
            "CACHE_JOB_KEY_PREFIX", f"must look like '<namespace>:<name>:' (e.g. 'ksr:msg:'), got {prefix!r}"
        )
    if segments[-2] == "active":
        raise ConfigError(
            "CACHE_JOB_KEY_PREFIX", "the last segment must not be 'active' (that is the active set's key)"
        )
    active = ":".join(segments[:-2]) + ":active"
    return StateSettings(
        key_prefix=prefix,
        active_key=active,
        ttl_seconds=env.integer("KSR_STATE_TTL", 7 * 24 * 3600, minimum=60, unit="of seconds"),
    )


def _kube(env: _Env, in_cluster: bool) -> KubeSettings:
    executor = env.choice("KSR_EXECUTOR", ("kubernetes", "local"), "kubernetes" if in_cluster else "local")
    return KubeSettings(
        executor=cast(ExecutorKind, executor),
        client_timeout=env.seconds("KUBERNETES_CLIENT_TIMEOUT", 10.0),
        polling_interval=env.seconds("POLLING_INTERVAL", 5.0),
        pod_start_timeout=env.seconds("POD_START_TIMEOUT", 300.0),
        max_active_jobs=env.integer("KSR_MAX_ACTIVE_JOBS", 500, minimum=0),
        worker_pool_size=env.integer("QUEUE_WORKER_POOL_SIZE", 4, minimum=1, maximum=256),
    )


def _policy(env: _Env, pod_namespace: str) -> PolicySettings:
    namespaces = env.items("KSR_ALLOWED_NAMESPACES")
    if not namespaces:
        namespaces = (pod_namespace,)
    allow_entries = env.items("KSR_WEBHOOK_ALLOW") or ()
    try:
        allow = Allowlist.parse(allow_entries)
    except ValueError as e:
        raise ConfigError("KSR_WEBHOOK_ALLOW", str(e)) from None
    return PolicySettings(
        allowed_namespaces=namespaces,
        allowed_images=env.items("KSR_ALLOWED_IMAGES") or (),
        allowed_envrefs=env.items("KSR_ALLOWED_ENVREFS") or (),
        allowed_service_accounts=env.items("KSR_ALLOWED_SERVICE_ACCOUNTS") or (),
        webhook_allow=allow,
    )


def _signing_keys(env: _Env) -> tuple[bytes, ...]:
    """KSR_WEBHOOK_SECRET: comma-separated, the first signs. A `whsec_<base64>` secret (the
    Standard Webhooks form) is decoded to its key bytes; anything else is used as UTF-8."""
    keys: list[bytes] = []
    for number, secret in enumerate(env.items("KSR_WEBHOOK_SECRET") or (), start=1):
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret[len("whsec_") :], validate=True)
            except (binascii.Error, ValueError):
                # never echo the secret itself
                raise ConfigError(
                    "KSR_WEBHOOK_SECRET", f"secret #{number} starts with 'whsec_' but is not valid base64"
                ) from None
        else:
            key = secret.encode("utf-8")
        if not key:
            raise ConfigError("KSR_WEBHOOK_SECRET", f"secret #{number} is empty")
        keys.append(key)
    return tuple(keys)


def _callbacks(env: _Env) -> CallbackSettings:
    timeout = env.seconds("KSR_CALLBACK_TIMEOUT", 10.0)
    horizon = env.seconds("KSR_CALLBACK_RETRY_HORIZON", 3600.0)
    if horizon <= timeout:
        raise ConfigError(
            "KSR_CALLBACK_RETRY_HORIZON", f"must be longer than KSR_CALLBACK_TIMEOUT ({timeout:g}s), got {horizon:g}"
        )
    base = env.seconds("KSR_CALLBACK_BACKOFF_BASE", 1.0)
    cap = env.seconds("KSR_CALLBACK_BACKOFF_CAP", 300.0)
    if cap < base:
        raise ConfigError("KSR_CALLBACK_BACKOFF_CAP", f"must be >= KSR_CALLBACK_BACKOFF_BASE ({base:g}s), got {cap:g}")
    return CallbackSettings(
        queue=_key_name(env, "KSR_CALLBACK_QUEUE", "ksr-callbacks"),
        timeout=timeout,
        retry_horizon=horizon,
        max_attempts=env.integer("KSR_CALLBACK_MAX_ATTEMPTS", 12, minimum=1),
        backoff_base=base,
        backoff_cap=cap,
        signing_keys=_signing_keys(env),
    )


def _server(env: _Env) -> ServerSettings:
    return ServerSettings(
        http_port=env.integer("HTTP_SERVER_PORT", 8080, minimum=1, maximum=65535),
        stuck_threshold=env.seconds("KSR_STUCK_THRESHOLD", 60.0),
        log_format=cast(LogFormat, env.choice("KSR_LOG_FORMAT", ("auto", "json", "text"), "auto")),
        shutdown_grace=env.seconds("KSR_SHUTDOWN_GRACE", 20.0),
    )


# The dispatcher's test-only crash points (runner/pipeline/dispatcher.py), in the order they come.
CRASH_STEPS = ("after_claim", "after_create", "after_record", "after_callback", "before_ack")


def _crash_step(env: _Env) -> str | None:
    step = env.raw("KSR_TEST_CRASH_AT")
    if step is not None and step not in CRASH_STEPS:
        raise ConfigError("KSR_TEST_CRASH_AT", f"must be one of {', '.join(CRASH_STEPS)}, got {step!r}")
    return step


# -- election -------------------------------------------------------------------------------


def _election(env: _Env) -> ElectionConfig:
    """Lease timings, parsed by election.config (election must not import runner, so its
    error is translated here; its messages start with the variable name)."""
    try:
        return ElectionConfig.from_env(env.values)
    except ElectionConfigError as e:
        text = str(e)
        match = re.match(r"([A-Z][A-Z0-9_]+)\b:?\s*(.*)", text, re.S)
        if match:
            variable, problem = match.groups()
            value = re.match(
                r"\((.*?)\)\s+(.*)", problem, re.S
            )  # "(5.0) must be ..." reads better as "must be ..., got 5.0"
            if value:
                problem = f"{value.group(2)}, got {value.group(1)}"
            raise ConfigError(variable, problem) from e
        raise ConfigError(ENV_LEASE_DURATION, text) from e


def _election_masked(election: ElectionConfig) -> dict[str, object]:
    return {
        ENV_LEASE_DURATION: election.lease_duration,
        ENV_RENEW_DEADLINE: election.renew_deadline,
        ENV_RETRY_PERIOD: election.retry_period,
        ENV_LOCK_NAME: election.lock_name,
    }


# -- assembly -------------------------------------------------------------------------------


def _build(env: _Env) -> Settings:
    in_cluster = _cluster_config_found(env)
    identity = IdentitySettings(
        pod_name=env.string("POD_NAME", socket.gethostname()),
        pod_namespace=env.string("POD_NAMESPACE", "default"),
    )
    streams = _streams(env)
    server = _server(env)
    kube = _kube(env, in_cluster)
    # A blocking read or a poll longer than the liveness threshold would fail the probe
    # of a healthy, idle runner.
    if streams.block_ms / 1000 >= server.stuck_threshold:
        raise ConfigError(
            "KSR_BLOCK_MS",
            f"must be shorter than KSR_STUCK_THRESHOLD ({server.stuck_threshold:g}s), got {streams.block_ms} ms",
        )
    if kube.polling_interval >= server.stuck_threshold:
        raise ConfigError(
            "POLLING_INTERVAL",
            f"must be shorter than KSR_STUCK_THRESHOLD ({server.stuck_threshold:g}s), got {kube.polling_interval:g}",
        )
    lock = env.choice("KSR_LOCK", ("lease", "redis"), "lease" if in_cluster else "redis")
    return Settings(
        identity=identity,
        redis=_redis(env),
        streams=streams,
        state=_state(env),
        kube=kube,
        policy=_policy(env, identity.pod_namespace),
        callbacks=_callbacks(env),
        server=server,
        lock=cast(LockKind, lock),
        election=_election(env),
        test_crash_at=_crash_step(env),
    )
