"""Every environment variable of kube-stream-runner, declared once (see `spec.Variable`).

The order here is the order of `ksr config` and of the tables in docs/configuration.md
(regenerate them with `python -m runner.settings.doc --write`). Checks that involve several
variables live in `runner.settings` (`_check`), next to the tree they read.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from election.config import ENV_LEASE_DURATION, ENV_LOCK_NAME, ENV_RENEW_DEADLINE, ENV_RETRY_PERIOD, ElectionConfig
from runner.allowlist import Allowlist
from runner.settings.spec import (
    MASK,
    Derived,
    Section,
    Variable,
    choice,
    integer,
    items,
    key_name,
    path,
    quantity,
    seconds,
    text,
)

__all__ = ["ANY", "CRASH_STEPS", "SECTIONS", "VARIABLES", "by_name", "mask_redis_url"]

ANY = "*"  # in KSR_ALLOWED_NAMESPACES / KSR_ALLOWED_SERVICE_ACCOUNTS: no restriction

# The dispatcher's test-only crash points (runner/pipeline/dispatcher.py), in the order they come.
CRASH_STEPS = ("after_claim", "after_create", "after_record", "after_callback", "before_ack")

_ELECTION = ElectionConfig()  # its defaults are the election's own


# -- parsers of single variables --------------------------------------------------------------


def _redis_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as e:
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"scheme must be redis, rediss or unix, got {parts.scheme or 'none'!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("no host")
    return url


def mask_redis_url(url: str) -> str:
    """REDIS_URL with its password (in the userinfo or a `password=` query) replaced by ***."""
    parts = urlsplit(url)
    masked = url
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        masked = urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    if "password=" in parts.query:
        masked = masked.split("?", 1)[0] + "?" + MASK
    return masked


def _streams(value: str) -> tuple[str, ...]:
    names = items(value)
    if not names:
        raise ValueError("must not be empty")
    for name in names:
        if any(c.isspace() for c in name):
            raise ValueError(f"stream names must not contain whitespace, got {name!r}")
        if name.endswith(":dead"):
            raise ValueError(f"{name!r} ends with ':dead', the dead-letter suffix")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate stream {', '.join(duplicates)}")
    return names


def _key_prefix(value: str) -> str:
    # "<namespace>:<name>:" -> records "<namespace>:<name>:<id>", active set "<namespace>:active".
    # The active set sits outside the records' key space, so no message id can collide with it.
    prefix = key_name(value)
    segments = prefix.split(":")
    if not prefix.endswith(":") or len(segments) < 3 or not all(segments[:-1]):
        raise ValueError(f"must look like '<namespace>:<name>:' (e.g. 'ksr:msg:'), got {prefix!r}")
    if segments[-2] == "active":
        raise ValueError("the last segment must not be 'active' (that is the active set's key)")
    return prefix


def _namespaces(value: str) -> tuple[str, ...]:
    names = items(value)
    if not names:
        raise ValueError(f"must name at least one namespace (or {ANY!r} for any), got {value!r}")
    return names


def _webhook_allow(value: str) -> Allowlist:
    return Allowlist.parse(items(value))  # its ValueError names the bad entry


_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _protected_names(value: str) -> tuple[str, ...]:
    """`name` (in every namespace) or `namespace/name`."""
    out: list[str] = []
    for entry in items(value):
        parts = entry.split("/")
        if len(parts) > 2 or not all(_DNS_NAME.match(part) for part in parts):
            raise ValueError(f"entries are 'name' or 'namespace/name', got {entry!r}")
        out.append(entry)
    return tuple(dict.fromkeys(out))


def _signing_keys(value: str) -> tuple[bytes, ...]:
    """Comma-separated, the first signs. A `whsec_<base64>` secret (the Standard Webhooks
    form) is decoded to its key bytes; anything else is used as UTF-8. Errors never echo it."""
    keys: list[bytes] = []
    for number, secret in enumerate(items(value), start=1):
        if secret.startswith("whsec_"):
            try:
                key = base64.b64decode(secret[len("whsec_") :], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"secret #{number} starts with 'whsec_' but is not valid base64") from None
        else:
            key = secret.encode("utf-8")
        if not key:
            raise ValueError(f"secret #{number} is empty")
        keys.append(key)
    return tuple(keys)


def _sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port`; IPv6 hosts in brackets (`[::1]:26379`)."""
    out: list[tuple[str, int]] = []
    for item in items(value):
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each entry must be host:port, got {item!r}")
        out.append((host, int(port)))
    if not out:
        raise ValueError("must name at least one sentinel as host:port")
    return tuple(out)


def _show_sentinels(value: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{host}:{port}" for host, port in value)


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"must be true or false, got {value!r}")
    return lowered in ("true", "1", "yes")


def _file(value: str) -> Path:
    """A file that must exist when the settings are read (a TLS CA, certificate or key)."""
    found = Path(value)
    if not found.is_file():
        raise ValueError(f"no such file: {value}")
    return found


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be one of DEBUG|INFO|WARNING|ERROR|CRITICAL, got {value!r}")
    return level


def _crash_step(value: str) -> str:
    if value not in CRASH_STEPS:
        raise ValueError(f"must be one of {', '.join(CRASH_STEPS)}, got {value!r}")
    return value


# -- defaults that depend on the rest of the environment --------------------------------------


def _set(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def cluster_config_found(env: Mapping[str, str]) -> bool:
    if _set(env, "KUBERNETES_SERVICE_HOST") or _set(env, "KUBECONFIG"):
        return True
    home = _set(env, "HOME")
    return home is not None and (Path(home) / ".kube" / "config").is_file()


_IN_CLUSTER = "if a cluster config is found"


def _runtime_dir(env: Mapping[str, str]) -> Path:
    metrics = _set(env, "PROMETHEUS_MULTIPROC_DIR")
    if metrics:
        return Path(metrics).parent / "ksr-runtime"
    return Path(tempfile.gettempdir()) / f"ksr-runtime-{os.getuid()}"


# -- the declarations -------------------------------------------------------------------------

REDIS_URL = Variable(
    name="REDIS_URL",
    path="redis.url",
    parse=_redis_url,
    default="redis://127.0.0.1:6379/0",
    unit="URL",
    secret=True,
    show=mask_redis_url,
    help="Redis for streams, state store, events and the RQ callback queue. `redis://`, `rediss://` (TLS) "
    "or `unix://`. Its password is the secret part: `ksr config` shows it as `***`.",
)
REDIS_USERNAME = Variable(
    name="KSR_REDIS_USERNAME",
    path="redis.username",
    parse=text,
    default=None,
    unit="name",
    default_doc="the URL's user",
    help="ACL user; wins over the user in `REDIS_URL` (the chart fills it from a Secret). "
    "The minimal ACL is in docs/redis.md.",
)
REDIS_PASSWORD = Variable(
    name="KSR_REDIS_PASSWORD",
    path="redis.password",
    parse=text,
    default=None,
    unit="text",
    secret=True,
    default_doc="the URL's password",
    help="Password of the ACL user (or of `requirepass`); wins over the password in `REDIS_URL`.",
)
REDIS_TLS_CA = Variable(
    name="KSR_REDIS_TLS_CA",
    path="redis.tls_ca",
    parse=_file,
    default=None,
    unit="path",
    default_doc="the system's CAs",
    help="PEM file of the CA that signed the server's certificate, for `rediss://`. The server name "
    "(the URL's host, or the address Sentinel names) is always checked against the certificate.",
)
REDIS_TLS_CERT = Variable(
    name="KSR_REDIS_TLS_CERT",
    path="redis.tls_cert",
    parse=_file,
    default=None,
    unit="path",
    help="PEM client certificate for servers that require one (`tls-auth-clients yes`); with `KSR_REDIS_TLS_KEY`.",
)
REDIS_TLS_KEY = Variable(
    name="KSR_REDIS_TLS_KEY",
    path="redis.tls_key",
    parse=_file,
    default=None,
    unit="path",
    help="PEM private key of `KSR_REDIS_TLS_CERT`.",
)
REDIS_SENTINELS = Variable(
    name="KSR_REDIS_SENTINELS",
    path="redis.sentinels",
    parse=_sentinels,
    default=(),
    unit="list",
    show=_show_sentinels,
    help="Sentinels as `host:port,...`: the primary of `KSR_REDIS_MASTER` is asked of them (redis-py's "
    "`redis.sentinel`) and followed across failovers. `REDIS_URL` then gives only the scheme "
    "(`rediss://` for TLS to the data nodes), the database and the credentials; its host is not used.",
)
REDIS_MASTER = Variable(
    name="KSR_REDIS_MASTER",
    path="redis.master",
    parse=key_name,
    default="mymaster",
    unit="name",
    help="The Sentinel service (master) name; used only with `KSR_REDIS_SENTINELS`.",
)
REDIS_SENTINEL_USERNAME = Variable(
    name="KSR_REDIS_SENTINEL_USERNAME",
    path="redis.sentinel_username",
    parse=text,
    default=None,
    unit="name",
    help="ACL user on the sentinels themselves (Sentinel's own `user`), if they require one.",
)
REDIS_SENTINEL_PASSWORD = Variable(
    name="KSR_REDIS_SENTINEL_PASSWORD",
    path="redis.sentinel_password",
    parse=text,
    default=None,
    unit="text",
    secret=True,
    help="Password of the sentinels (Sentinel's `requirepass`), not of the data nodes.",
)
REDIS_SENTINEL_TLS = Variable(
    name="KSR_REDIS_SENTINEL_TLS",
    path="redis.sentinel_tls",
    parse=_flag,
    default=False,
    unit="bool",
    help="The sentinels speak TLS (with the same `KSR_REDIS_TLS_*` files).",
)
REDIS_MIN_REPLICAS = Variable(
    name="KSR_REDIS_MIN_REPLICAS",
    path="redis.min_replicas",
    parse=integer(minimum=0, maximum=16),
    default=Derived(lambda env: 1 if _set(env, "KSR_REDIS_SENTINELS") else 0, "`1` with Sentinel, else `0`"),
    unit="count",
    help="Replicas that must acknowledge (`WAIT`) the writes exactly-once rests on: the claim, the "
    "Job's record, the term and the Redis lock; and, for `ksr submit` and `Client.submit`, the new "
    "entries (short: an error, the entries added all the same). `0` never waits.",
)
REDIS_WAIT_TIMEOUT = Variable(
    name="KSR_REDIS_WAIT_TIMEOUT",
    path="redis.wait_timeout",
    parse=seconds,
    default=1.0,
    unit="s",
    help="How long one `WAIT` may take. A claim or record short of replicas is logged and goes on "
    "(replays are harmless, docs/redis.md); a Redis lock write short of them counts as failed.",
)
STREAMS = Variable(
    name="KSR_STREAMS",
    path="streams.streams",
    parse=_streams,
    default=("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low"),
    unit="list",
    blank_is_unset=False,  # set but empty is a mistake, not a request for the default
    help="Job streams, **highest priority first**. No duplicates, none ending in `:dead`. Each has a "
    "dead-letter stream `<stream>:dead`. Set but empty is an error.",
)
GROUP = Variable(
    name="KSR_GROUP",
    path="streams.group",
    parse=key_name,
    default="ksr",
    unit="name",
    help="Consumer group; the consumer name is `POD_NAME`.",
)
READ_COUNT = Variable(
    name="KSR_READ_COUNT",
    path="streams.read_count",
    parse=integer(minimum=1, maximum=10_000),
    default=10,
    unit="entries",
    help="`COUNT` of one `XREADGROUP` (1..10000).",
)
STREAM_MAXLEN = Variable(
    name="KSR_STREAM_MAXLEN",
    path="streams.stream_maxlen",
    parse=integer(minimum=0, unit="entries"),
    default=100_000,
    unit="entries",
    help="The leader trims each stream towards this length every 5 s, by MINID below the oldest entry any "
    "group still owes (pending or undelivered): only done entries go. `0` never trims.",
)
BLOCK_MS = Variable(
    name="KSR_BLOCK_MS",
    path="streams.block_ms",
    parse=integer(minimum=1, unit="milliseconds"),
    default=2000,
    unit="ms",
    help="How long one blocking read waits when all streams are empty. Must be shorter than "
    "`KSR_STUCK_THRESHOLD`, and no longer than `KSR_LEASE_DURATION` minus `KSR_RENEW_DEADLINE` (a read "
    "must end before a leader that lost its term could be replaced).",
)
MAX_DELIVERIES = Variable(
    name="KSR_MAX_DELIVERIES",
    path="streams.max_deliveries",
    parse=integer(minimum=1),
    default=5,
    unit="deliveries",
    help="An entry the group has delivered this many times without an ack is poison: dead-lettered "
    "(the group's own delivery counter decides; a takeover's claim is no delivery, and a message whose "
    "Job is recorded is never poison).",
)
MAX_MESSAGE_BYTES = Variable(
    name="KSR_MAX_MESSAGE_BYTES",
    path="streams.max_message_bytes",
    parse=integer(minimum=1024, unit="bytes"),
    default=64 * 1024,
    unit="bytes",
    help="A `payload` larger than this is invalid (dead-lettered). At least 1024.",
)
EVENTS_STREAM = Variable(
    name="KSR_EVENTS_STREAM",
    path="streams.events_stream",
    parse=key_name,
    default="ksr:events",
    unit="name",
    help="Every status transition (id, status, detail) is appended here. Must not be one of `KSR_STREAMS`.",
)
EVENTS_MAXLEN = Variable(
    name="KSR_EVENTS_MAXLEN",
    path="streams.events_maxlen",
    parse=integer(minimum=1),
    default=100_000,
    unit="entries",
    help="Approximate cap of the events stream (`XADD MAXLEN ~`).",
)

KEY_PREFIX = Variable(
    name="CACHE_JOB_KEY_PREFIX",
    path="state.key_prefix",
    parse=_key_prefix,
    default="ksr:msg:",
    unit="key prefix",
    help="Record of message `<id>` is the hash `<prefix><id>`. Must look like `<namespace>:<name>:`; the "
    "active set is derived from it as `<namespace>:active` (`ksr:msg:` → `ksr:active`, `t1:msg:` → "
    "`t1:active`), outside the records' key space so no message id can collide with it.",
)
STATE_TTL = Variable(
    name="KSR_STATE_TTL",
    path="state.ttl_seconds",
    parse=integer(minimum=60, unit="seconds"),
    default=7 * 24 * 3600,
    default_doc="`604800` (7 days)",
    unit="s",
    help="How long a record is kept after its Job ended, so late duplicates are still recognised. It must "
    "exceed any Job's `ttlSecondsAfterFinished` plus the window in which you might replay entries; policy "
    "refuses messages whose `ttlSecondsAfterFinished` is not below it. At least 60. Replaying an id whose "
    "record expired needs `ksr replay --force`.",
)

EXECUTOR = Variable(
    name="KSR_EXECUTOR",
    path="kube.executor",
    parse=choice("kubernetes", "local"),
    default=Derived(
        lambda env: "kubernetes" if cluster_config_found(env) else "local", f"`kubernetes` {_IN_CLUSTER}, else `local`"
    ),
    unit="`kubernetes`\\|`local`",
    help="Where Jobs run.",
)
CLIENT_TIMEOUT = Variable(
    name="KUBERNETES_CLIENT_TIMEOUT",
    path="kube.client_timeout",
    parse=seconds,
    default=10.0,
    unit="s",
    help="Timeout of one Kubernetes API request.",
)
POLLING_INTERVAL = Variable(
    name="POLLING_INTERVAL",
    path="kube.polling_interval",
    parse=seconds,
    default=5.0,
    unit="s",
    help="Watcher resync / poll interval. Must be shorter than `KSR_STUCK_THRESHOLD`.",
)
POD_START_TIMEOUT = Variable(
    name="POD_START_TIMEOUT",
    path="kube.pod_start_timeout",
    parse=seconds,
    default=300.0,
    unit="s",
    help="A Job whose pod has not started by then (unschedulable, image pull errors) gets status `99`.",
)
CREATE_HORIZON = Variable(
    name="KSR_CREATE_HORIZON",
    path="kube.create_horizon",
    parse=seconds,
    default=300.0,
    unit="s",
    help="How long transient refusals of a Job create (any `403`, a full ResourceQuota among them; `429`, "
    "`5xx`, timeouts) are retried, with backoff and without spending the entry's deliveries, from the first "
    "refusal; then the message is dead-lettered (`create_refused`), its claim released, and its producer "
    "gets a `99` callback `CreateRefused` with the apiserver's words.",
)
CREATE_BACKOFF_CAP = Variable(
    name="KSR_CREATE_BACKOFF_CAP",
    path="kube.create_backoff_cap",
    parse=seconds,
    default=30.0,
    unit="s",
    help="The longest wait between two tries of such a refused create (1 s, doubling, jittered; "
    "`Retry-After` is a floor up to this cap). Must not exceed `KSR_CREATE_HORIZON`.",
)
MAX_ACTIVE_JOBS = Variable(
    name="KSR_MAX_ACTIVE_JOBS",
    path="kube.max_active_jobs",
    parse=integer(minimum=0),
    default=500,
    unit="Jobs",
    help="Backpressure: the leader stops reading at this many active Jobs and resumes as they end. `0` = no cap.",
)
WORKER_POOL_SIZE = Variable(
    name="QUEUE_WORKER_POOL_SIZE",
    path="kube.worker_pool_size",
    parse=integer(minimum=1, maximum=256),
    default=4,
    unit="workers",
    help="Job creates in parallel (1..256).",
)
KUBE_QPS = Variable(
    name="KSR_KUBE_QPS",
    path="kube.qps",
    parse=quantity(minimum=0, unit="requests per second"),
    default=500.0,
    unit="requests/s",
    help="Client-side limit on the runner's Kubernetes API requests (a token bucket, like client-go's "
    "`rest.Config` QPS), `0` = none. Creates wait for a token; the finalizer's release, gets and lists take "
    "theirs first, so finished Jobs are released while creates wait. The Lease renewals are never "
    "limited by it. The default fits one leader at full speed (about 250 Jobs/s, 2 requests a Job) and only "
    "stops a runaway; client-go's 5 would hold a Job creator to 2 Jobs/s. See docs/kubernetes-api.md.",
)
KUBE_BURST = Variable(
    name="KSR_KUBE_BURST",
    path="kube.burst",
    parse=integer(minimum=1, unit="requests"),
    default=1000,
    unit="requests",
    help="Requests `KSR_KUBE_QPS` lets through at once before pacing (the bucket's size; client-go's "
    "Burst). Ignored when `KSR_KUBE_QPS` is `0`.",
)

POD_NAMESPACE = Variable(
    name="POD_NAMESPACE",
    path="identity.pod_namespace",
    parse=text,
    default="default",
    unit="name",
    help="Where the Lease lives; the default of `KSR_ALLOWED_NAMESPACES`.",
)
POD_NAME = Variable(
    name="POD_NAME",
    path="identity.pod_name",
    parse=text,
    default=Derived(lambda env: socket.gethostname(), "the host name"),
    unit="name",
    help="Identity: consumer name in the group, Lease holder. Set from the downward API.",
)

ALLOWED_NAMESPACES = Variable(
    name="KSR_ALLOWED_NAMESPACES",
    path="policy.allowed_namespaces",
    parse=_namespaces,
    default=Derived(lambda env: (POD_NAMESPACE.read(env),), "the value of `POD_NAMESPACE`"),
    unit="list",
    help="Namespaces Jobs may be created in. `*` = any (the RBAC must then allow it).",
)
ALLOWED_IMAGES = Variable(
    name="KSR_ALLOWED_IMAGES",
    path="policy.allowed_images",
    parse=items,
    default=(),
    default_doc="empty = any image",
    unit="list of prefixes",
    help="An image must start with one of them (`registry.example/team/`, `busybox:`). Plain string "
    "prefixes: end a registry prefix with `/`.",
)
ALLOWED_ENVREFS = Variable(
    name="KSR_ALLOWED_ENVREFS",
    path="policy.allowed_envrefs",
    parse=items,
    default=(),
    default_doc="empty = any name",
    unit="list",
    help="ConfigMap/Secret names a message's `envRef` may name. Empty allows any, because producers "
    "routinely reference their own config; set it when the namespace holds Secrets that Jobs must not read.",
)
STRICT_ENVREF_NAMESPACES = Variable(
    name="KSR_STRICT_ENVREF_NAMESPACES",
    path="policy.strict_envref_namespaces",
    parse=items,
    default=(),
    default_doc="empty",
    unit="list",
    help="Namespaces where an `envRef` must be listed in `KSR_ALLOWED_ENVREFS` even when that list is "
    "empty (`*` there lists every name). The chart sets the release namespace: Jobs beside the runner "
    "read only the ConfigMaps/Secrets an operator listed.",
)
PROTECTED_NAMES = Variable(
    name="KSR_PROTECTED_NAMES",
    path="policy.protected_names",
    parse=_protected_names,
    default=(),
    default_doc="empty",
    unit="list",
    help="The runner's own ConfigMaps, Secrets and claims: `name` (refused in every namespace) or "
    "`namespace/name`. No `envRef` and no `volume.pvc` may name one, whatever `KSR_ALLOWED_ENVREFS` says "
    "(`*` included). The chart fills it with its own resources' names.",
)
ALLOWED_SERVICE_ACCOUNTS = Variable(
    name="KSR_ALLOWED_SERVICE_ACCOUNTS",
    path="policy.allowed_service_accounts",
    parse=items,
    default=(),
    default_doc="empty",
    unit="list",
    help="Service accounts a message may ask for, besides `default`. A pod whose message names a listed "
    "account runs as it **with its token mounted**; every other pod runs as `default` with "
    "`automountServiceAccountToken: false`. `*` = any.",
)
WEBHOOK_ALLOW = Variable(
    name="KSR_WEBHOOK_ALLOW",
    path="policy.webhook_allow",
    parse=_webhook_allow,
    default=Allowlist.parse(()),
    default_doc="empty",
    show=lambda allow: ",".join(allow.entries()),
    unit="list",
    help="Hosts (`receiver.ns.svc`), wildcard suffixes (`*.svc.cluster.local`), IP addresses or CIDRs "
    "exempt from the private-address refusal of webhook URLs (see [messages.md](messages.md#webhook-urls)). "
    "Tests with receivers on `127.0.0.1` list it here. Link-local addresses and cloud metadata endpoints "
    "stay refused for every host unless a CIDR inside that range is listed (`169.254.169.254`, "
    "`169.254.0.0/16`); `0.0.0.0/0` does not open them.",
)

WEBHOOK_SECRET = Variable(
    name="KSR_WEBHOOK_SECRET",
    path="callbacks.signing_keys",
    parse=_signing_keys,
    default=(),
    default_doc="empty = unsigned",
    secret=True,
    show=lambda keys: ",".join(MASK for _ in keys),
    unit="list of secrets",
    help="HMAC-SHA256 keys for `webhook-signature`. Several, comma-separated, during a rotation: the "
    "**first** signs new callbacks; every one produces a signature, so receivers holding either key "
    "verify. A secret `whsec_<base64>` (the Standard Webhooks form) is base64-decoded to its key bytes; "
    "any other string is used as its UTF-8 bytes.",
)
CALLBACK_QUEUE = Variable(
    name="KSR_CALLBACK_QUEUE",
    path="callbacks.queue",
    parse=key_name,
    default="ksr-callbacks",
    unit="name",
    help="RQ queue of callback deliveries; its slow lane is `<name>-slow`.",
)
CALLBACK_TIMEOUT = Variable(
    name="KSR_CALLBACK_TIMEOUT",
    path="callbacks.timeout",
    parse=seconds,
    default=10.0,
    unit="s",
    help="Wall-clock deadline of one delivery attempt (connect, TLS, request and answer together, however slowly the receiver trickles). A receiver that runs into it is served from the slow lane for a while.",
)
CALLBACK_RETRY_HORIZON = Variable(
    name="KSR_CALLBACK_RETRY_HORIZON",
    path="callbacks.retry_horizon",
    parse=seconds,
    default=3600.0,
    unit="s",
    help="Retries stop this long after the callback was first owed (`cb_<status>`; a takeover by the leader's recovery keeps it). Must be longer than `KSR_CALLBACK_TIMEOUT`.",
)
CALLBACK_MAX_ATTEMPTS = Variable(
    name="KSR_CALLBACK_MAX_ATTEMPTS",
    path="callbacks.max_attempts",
    parse=integer(minimum=1),
    default=12,
    unit="attempts",
    help="Retries also stop after this many attempts, whichever comes first; counted in the state record before each attempt, so an attempt whose worker was killed counts.",
)
CALLBACK_BACKOFF_BASE = Variable(
    name="KSR_CALLBACK_BACKOFF_BASE",
    path="callbacks.backoff_base",
    parse=seconds,
    default=1.0,
    unit="s",
    help="Wait before the first retry; it doubles per attempt, with full jitter (`Retry-After` is a floor).",
)
CALLBACK_BACKOFF_CAP = Variable(
    name="KSR_CALLBACK_BACKOFF_CAP",
    path="callbacks.backoff_cap",
    parse=seconds,
    default=300.0,
    unit="s",
    help="The longest wait between two attempts; must be >= the base.",
)

LOCK = Variable(
    name="KSR_LOCK",
    path="lock",
    parse=choice("lease", "redis"),
    default=Derived(
        lambda env: "lease" if cluster_config_found(env) else "redis", f"`lease` {_IN_CLUSTER}, else `redis`"
    ),
    unit="`lease`\\|`redis`",
    help="Lock backend: a `coordination.k8s.io/v1` Lease in `POD_NAMESPACE`, or a Redis key.",
)
LOCK_NAME = Variable(
    name=ENV_LOCK_NAME,
    path="election.lock_name",
    parse=text,
    default=_ELECTION.lock_name,
    unit="name",
    help="The Lease's name (DNS-1123 subdomain) / Redis lock key suffix.",
)
LEASE_DURATION = Variable(
    name=ENV_LEASE_DURATION,
    path="election.lease_duration",
    parse=seconds,
    default=_ELECTION.lease_duration,
    unit="s",
    help="Followers take over this long after they last saw the record change. Must exceed `KSR_RENEW_DEADLINE`.",
)
RENEW_DEADLINE = Variable(
    name=ENV_RENEW_DEADLINE,
    path="election.renew_deadline",
    parse=seconds,
    default=_ELECTION.renew_deadline,
    unit="s",
    help=f"A leader that could not renew for this long steps down. Must exceed {_ELECTION.jitter:g} × "
    "`KSR_RETRY_PERIOD`.",
)
RETRY_PERIOD = Variable(
    name=ENV_RETRY_PERIOD,
    path="election.retry_period",
    parse=seconds,
    default=_ELECTION.retry_period,
    unit="s",
    help="Interval between acquire/renew attempts.",
)

HTTP_PORT = Variable(
    name="HTTP_SERVER_PORT",
    path="server.http_port",
    parse=integer(minimum=1, maximum=65535),
    default=8080,
    unit="port",
    help="Probes, metrics and status (gunicorn).",
)
HTTP_HOST = Variable(
    name="KSR_HTTP_HOST",
    path="server.http_host",
    parse=text,
    default="0.0.0.0",
    unit="address",
    help="Address gunicorn binds (tests use `127.0.0.1`). `ksr dev` binds `127.0.0.1` unless `--host` (or this variable) says otherwise.",
)
HTTP_WORKERS = Variable(
    name="KSR_HTTP_WORKERS",
    path="server.http_workers",
    parse=integer(minimum=1, maximum=64),
    default=2,
    unit="processes",
    help="gunicorn workers serving the probes (1..64).",
)
HTTP_THREADS = Variable(
    name="KSR_HTTP_THREADS",
    path="server.http_threads",
    parse=integer(minimum=1, maximum=256),
    default=4,
    unit="threads",
    help="Threads per gunicorn worker (1..256), so a slow readiness check never blocks `/healthz`.",
)
STUCK_THRESHOLD = Variable(
    name="KSR_STUCK_THRESHOLD",
    path="server.stuck_threshold",
    parse=seconds,
    default=60.0,
    unit="s",
    help="Liveness fails when a runner loop has not beaten for this long. `KSR_BLOCK_MS` and "
    "`POLLING_INTERVAL` must be shorter.",
)
SHUTDOWN_GRACE = Variable(
    name="KSR_SHUTDOWN_GRACE",
    path="server.shutdown_grace",
    parse=seconds,
    default=20.0,
    unit="s",
    help="After SIGTERM, how long the runner may take to finish in-flight creates and release the Lease "
    "before `ksr run` exits 1; keep it below `terminationGracePeriodSeconds`.",
)
LOG_FORMAT = Variable(
    name="KSR_LOG_FORMAT",
    path="server.log_format",
    parse=choice("auto", "json", "text"),
    default="auto",
    unit="`auto`\\|`json`\\|`text`",
    help="`auto`: text on a terminal, JSON lines otherwise.",
)
LOG_LEVEL = Variable(
    name="KSR_LOG_LEVEL",
    path="server.log_level",
    parse=_log_level,
    default="INFO",
    unit="level",
    help="`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL` (any case), for the runner and gunicorn.",
)
RUNTIME_DIR = Variable(
    name="KSR_RUNTIME_DIR",
    path="server.runtime_dir",
    parse=path,
    default=Derived(
        _runtime_dir,
        "`<parent of PROMETHEUS_MULTIPROC_DIR>/ksr-runtime` if that is set, else `<tmp>/ksr-runtime-<uid>`",
    ),
    unit="path",
    help="The status board (`status.json`) the runner writes and the probes read. `ksr run` wipes it at start "
    "and locks it (`ksr.lock`) for its lifetime: one `ksr run` per directory, a second one exits 2.",
)
MULTIPROC_DIR = Variable(
    name="PROMETHEUS_MULTIPROC_DIR",
    path="server.metrics_dir",
    parse=path,
    default=Derived(lambda env: RUNTIME_DIR.read(env) / "metrics", "`<KSR_RUNTIME_DIR>/metrics`"),
    unit="path",
    help="prometheus_client's multiprocess directory: metric files of every process of the pod. "
    "`ksr run` wipes it at start.",
)
METRICS_MAX_LABEL_VALUES = Variable(
    name="KSR_METRICS_MAX_LABEL_VALUES",
    path="server.metrics_max_label_values",
    parse=integer(minimum=1, maximum=1000),
    default=20,
    unit="values",
    help="`ksr_jobs_finished_total` keeps this many distinct `job_service` values, and as many `job_namespace` "
    "values, per process (the first seen); later ones are counted as `other` (1..1000, docs/operations.md).",
)

SCHEDULE_POLL = Variable(
    name="KSR_SCHEDULE_POLL",
    path="schedule.poll",
    parse=seconds,
    default=1.0,
    unit="s",
    help="The longest the leader's scheduler sleeps: due delayed messages and cron ticks are honoured within "
    "this (it wakes at the next due time, or at once when a message is scheduled). Must be shorter than "
    "`KSR_STUCK_THRESHOLD`.",
)
SCHEDULE_MAX_AHEAD = Variable(
    name="KSR_SCHEDULE_MAX_AHEAD",
    path="schedule.max_ahead",
    parse=seconds,
    default=30 * 24 * 3600.0,
    default_doc="`2592000` (30 days)",
    unit="s",
    help="A message whose `runAt` / `delaySeconds` lies further ahead than this is invalid (dead-lettered).",
)
SCHEDULES = Variable(
    name="KSR_SCHEDULES",
    path="schedule.schedules_file",
    parse=path,
    default=None,
    unit="path",
    help="YAML file of recurring schedules (cron entries, docs/scheduling.md); read and checked at start, an "
    "invalid entry is refused naming it (`schedules[2].cron: ...`). Unset: no recurring schedules.",
)

TEST_CRASH_AT = Variable(
    name="KSR_TEST_CRASH_AT",
    path="test_crash_at",
    parse=_crash_step,
    default=None,
    unit="step name",
    help="Makes the runner exit hard at the named step boundary (crash-injection tests: "
    + ", ".join(f"`{s}`" for s in CRASH_STEPS)
    + "). Never set it in production.",
)

TEST_SLOW_TICK = Variable(
    name="KSR_TEST_SLOW_TICK",
    path="test_slow_tick",
    parse=seconds,
    default=None,
    unit="s",
    help="Makes every reconcile round of a leader's periodic work take this much longer, before it reads "
    "(tests that end a leader's term inside that window). Shorter than `KSR_STUCK_THRESHOLD`. "
    "Never set it in production.",
)


def _console_token(value: str) -> str:
    if len(value) < 16:
        raise ValueError(f"must be at least 16 characters, got {len(value)}")
    return value


CONSOLE_ENABLED = Variable(
    name="KSR_CONSOLE_ENABLED",
    path="console.enabled",
    parse=_flag,
    default=True,
    unit="bool",
    help="Serve the operator console under `/ui/` on the probes port (docs/console.md). `false`: `/ui/` answers 404.",
)
CONSOLE_ACTIONS = Variable(
    name="KSR_CONSOLE_ACTIONS",
    path="console.actions",
    parse=_flag,
    default=False,
    unit="bool",
    help="Allow the console's actions (replay, purge, cancel, pause and resume). They also need "
    "`KSR_CONSOLE_TOKEN`; without it they stay off.",
)
CONSOLE_TOKEN = Variable(
    name="KSR_CONSOLE_TOKEN",
    path="console.token",
    parse=_console_token,
    default=None,
    default_doc="unset = no login",
    secret=True,
    unit="secret",
    help="The operators' token (at least 16 characters; from a Secret): the console's login form or an "
    "`Authorization: Bearer` header. Compared in constant time.",
)
CONSOLE_READ_AUTH = Variable(
    name="KSR_CONSOLE_READ_AUTH",
    path="console.read_auth",
    parse=_flag,
    default=False,
    unit="bool",
    help="Reading the console needs the token too (payloads are producers' data; the probes port is "
    "reachable by every scraper). The chart turns it on; `ksr dev` on loopback leaves it off. Needs "
    "`KSR_CONSOLE_TOKEN`.",
)


SECTIONS: tuple[Section, ...] = (
    Section(
        "Redis and streams",
        (
            REDIS_URL,
            REDIS_USERNAME,
            REDIS_PASSWORD,
            REDIS_TLS_CA,
            REDIS_TLS_CERT,
            REDIS_TLS_KEY,
            REDIS_SENTINELS,
            REDIS_MASTER,
            REDIS_SENTINEL_USERNAME,
            REDIS_SENTINEL_PASSWORD,
            REDIS_SENTINEL_TLS,
            REDIS_MIN_REPLICAS,
            REDIS_WAIT_TIMEOUT,
            STREAMS,
            GROUP,
            READ_COUNT,
            STREAM_MAXLEN,
            BLOCK_MS,
            MAX_DELIVERIES,
            MAX_MESSAGE_BYTES,
            EVENTS_STREAM,
            EVENTS_MAXLEN,
        ),
    ),
    Section("State store", (KEY_PREFIX, STATE_TTL)),
    Section(
        "Kubernetes",
        (
            EXECUTOR,
            CLIENT_TIMEOUT,
            POLLING_INTERVAL,
            POD_START_TIMEOUT,
            CREATE_HORIZON,
            CREATE_BACKOFF_CAP,
            MAX_ACTIVE_JOBS,
            WORKER_POOL_SIZE,
            KUBE_QPS,
            KUBE_BURST,
        ),
    ),
    Section(
        "Policy (on top of message validation)",
        (
            ALLOWED_NAMESPACES,
            ALLOWED_IMAGES,
            ALLOWED_ENVREFS,
            STRICT_ENVREF_NAMESPACES,
            PROTECTED_NAMES,
            ALLOWED_SERVICE_ACCOUNTS,
            WEBHOOK_ALLOW,
        ),
    ),
    Section(
        "Callbacks",
        (
            WEBHOOK_SECRET,
            CALLBACK_QUEUE,
            CALLBACK_TIMEOUT,
            CALLBACK_RETRY_HORIZON,
            CALLBACK_MAX_ATTEMPTS,
            CALLBACK_BACKOFF_BASE,
            CALLBACK_BACKOFF_CAP,
        ),
    ),
    Section(
        "Election",
        (LOCK, LOCK_NAME, LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD),
        intro="Validated by `election.config.ElectionConfig` (whose defaults these are) and embedded as "
        "`settings.election`; its errors carry the variable's name and are reported as `ConfigError`s.",
    ),
    Section(
        "Identity, server, logging",
        (
            POD_NAME,
            POD_NAMESPACE,
            HTTP_PORT,
            HTTP_HOST,
            HTTP_WORKERS,
            HTTP_THREADS,
            STUCK_THRESHOLD,
            SHUTDOWN_GRACE,
            LOG_FORMAT,
            LOG_LEVEL,
            RUNTIME_DIR,
            MULTIPROC_DIR,
            METRICS_MAX_LABEL_VALUES,
        ),
    ),
    Section(
        "Scheduling (delayed messages, recurring schedules)",
        (SCHEDULE_POLL, SCHEDULE_MAX_AHEAD, SCHEDULES),
    ),
    Section(
        "Console",
        (CONSOLE_ENABLED, CONSOLE_ACTIONS, CONSOLE_TOKEN, CONSOLE_READ_AUTH),
        intro="The operator console under `/ui/` (docs/console.md): read-only unless actions are enabled "
        "and the operator logs in with the token.",
    ),
    Section("Tests only", (TEST_CRASH_AT, TEST_SLOW_TICK)),
)

VARIABLES: tuple[Variable, ...] = tuple(v for section in SECTIONS for v in section.variables)

_BY_NAME = {v.name: v for v in VARIABLES}


def by_name(name: str) -> Variable:
    return _BY_NAME[name]
