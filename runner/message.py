"""Job messages: the JSON in a stream entry's `payload` field, parsed and validated.

Validation is the schema only (types, ranges, names); what this runner *allows* (namespaces,
images, webhook hosts) is runner.pipeline.policy. Every problem is reported with its field path, all
of them at once: `InvalidMessage` renders them "; "-joined, e.g.
"job.gpuNumber: must be 1..4, got 9; job.image: required". Unknown fields are ignored, so
producers can send fields a newer runner understands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from runner.errors import InvalidMessage

__all__ = [
    "EnvRef",
    "EnvVar",
    "JobSpec",
    "Message",
    "NodeSelector",
    "Toleration",
    "Volume",
    "parse_entry",
    "parse_message",
    "peek_message_id",
    "rfc3339_problem",
]

T = TypeVar("T")

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Ids go into Redis keys, an annotation and the webhook-id header: no spaces, slashes or controls.
MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=~-]*$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ENVREF_TYPES = ("configmap", "secret")
# Date, "T" (or a space), time with optional fraction, optional offset (its absence is reported apart).
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?$")
# A message nests four levels (job.resources.limits); unknown fields may add some. Python's
# json recurses per level and raises RecursionError (not ValueError) near 1000: refuse first.
MAX_DEPTH = 64
# A JSON string (an unterminated one runs to the end, so the scan stays linear) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?$)|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class EnvRef:
    name: str  # a ConfigMap or Secret in the Job's namespace, loaded with envFrom
    type: str  # "configmap" | "secret"


@dataclass(frozen=True)
class NodeSelector:
    key: str  # matchKey
    value: str  # matchValue


@dataclass(frozen=True)
class Toleration:
    key: str
    value: str | None  # None or "": operator Exists
    effect: str | None  # None: every effect


@dataclass(frozen=True)
class Volume:
    mount_path: str
    pvc: str  # PersistentVolumeClaim name in the Job's namespace


@dataclass(frozen=True)
class JobSpec:
    """The `job` object. None means "not given": the Job gets Kubernetes' default."""

    prefix_name: str
    namespace: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    service_account: str | None = None
    ttl_seconds_after_finished: int | None = None
    backoff_limit: int | None = None
    active_deadline_seconds: int | None = None
    gpu_enable: bool = False
    gpu_number: int = 1
    env: tuple[EnvVar, ...] = ()
    env_ref: tuple[EnvRef, ...] = ()
    limits: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    requests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    node_selector: NodeSelector | None = None
    toleration: Toleration | None = None
    volume: Volume | None = None


@dataclass(frozen=True, eq=False)
class Message:
    id: str
    service: str
    job: JobSpec
    webhook_url: str | None
    raw: Mapping[str, Any] = field(repr=False)  # the parsed JSON as sent
    run_at: float | None = None  # runAt as Unix time: run no earlier (runner.pipeline.delay)
    delay_seconds: float | None = None  # delaySeconds: run this long after the entry was added


# -- the checker ----------------------------------------------------------------------------


class _Missing:
    pass


MISSING: Any = _Missing()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


class _Checker:
    """Collects (field path, problem) pairs while reading a JSON tree."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append((path, problem))

    def get(self, obj: Mapping[str, Any], key: str) -> Any:
        value = obj.get(key, MISSING)
        return MISSING if value is None else value  # null is "not given"

    def text_or_empty(self, parent: Mapping[str, Any], key: str) -> Any:
        """The value, or "" when it is absent or null (an empty value is a valid one)."""
        value = self.get(parent, key)
        return "" if value is MISSING else value

    def _typed(
        self, parent: Mapping[str, Any], key: str, path: str, kind: type, expected: str, *, required: bool = False
    ) -> Any:
        """The value if given and of `kind`; else MISSING, with the problem noted."""
        value = self.get(parent, key)
        if value is MISSING:
            if required:
                self.fail(path, "required")
            return MISSING
        if not isinstance(value, kind):
            self.fail(path, f"must be {expected}, got {_kind(value)}")
            return MISSING
        return value

    def obj(
        self, parent: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> Mapping[str, Any] | None:
        value = self._typed(parent, key, path, dict, "an object", required=required)
        return None if value is MISSING else value

    def string(
        self,
        parent: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        max_len: int = 4096,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        value = self._typed(parent, key, path, str, "a string", required=required)
        if value is MISSING:
            return None
        if not value:
            self.fail(path, "must not be empty")
            return None
        if len(value) > max_len:
            self.fail(path, f"must be at most {max_len} characters, got {len(value)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"must be {what}, got {value!r}")
            return None
        return value

    def integer(
        self, parent: Mapping[str, Any], key: str, path: str, *, low: int, high: int | None = None, rule: str
    ) -> int | None:
        value = self.get(parent, key)
        if value is MISSING:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 60.0 is 60; 60.5 is not an integer
        if isinstance(value, bool) or not isinstance(value, int):
            shown = f" {value!r}" if isinstance(value, (str, float, bool)) else ""
            self.fail(path, f"must be an integer, got {_kind(value)}{shown}")
            return None
        if value < low or (high is not None and value > high):
            self.fail(path, f"must be {rule}, got {value}")
            return None
        return value

    def boolean(self, parent: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = self._typed(parent, key, path, bool, "true or false")
        return None if value is MISSING else value

    def strings(self, parent: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = self._typed(parent, key, path, list, "an array of strings")
        if value is MISSING:
            return ()
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if bad:
            self.fail(f"{path}[{bad[0]}]", f"must be a string, got {_kind(value[bad[0]])}")
            return ()
        return tuple(value)

    def items(
        self, parent: Mapping[str, Any], key: str, path: str, read: Callable[[Mapping[str, Any], str], T | None]
    ) -> tuple[T, ...]:
        """An array of objects, each read by `read(obj, path_of_item)`."""
        value = self._typed(parent, key, path, list, "an array")
        if value is MISSING:
            return ()
        out: list[T] = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.fail(item_path, f"must be an object, got {_kind(item)}")
                continue
            parsed = read(item, item_path)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)


# -- the message ----------------------------------------------------------------------------


def payload_id(payload: str) -> str | None:
    """The `id` a payload's JSON carries, as written and not validated, or None; never raises.
    For naming a message in an error line or finding one by id in a stream."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def peek_message_id(fields: Mapping[Any, Any], *, max_bytes: int = 65536) -> str | None:
    """The message id an entry claims to carry, or None; never raises. For grouping entries
    and releasing claims of entries that are not (or no longer) valid messages."""
    try:
        raw = _load_json(_payload_of(fields), max_bytes=max_bytes)
    except InvalidMessage:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and MESSAGE_ID.match(value) else None


def parse_entry(fields: Mapping[Any, Any], *, max_bytes: int = 65536) -> Message:
    """Parse a stream entry's fields (bytes or str keys); the message is in `payload`."""
    return parse_message(_payload_of(fields), max_bytes=max_bytes)


def _payload_of(fields: Mapping[Any, Any]) -> bytes | str:
    for key in (b"payload", "payload"):
        if key in fields:
            value = fields[key]
            if isinstance(value, (bytes, str)):
                return value
            if isinstance(value, bytearray):
                return bytes(value)
            raise InvalidMessage("payload", f"must be bytes or text, got {type(value).__name__}")
    names = ", ".join(sorted(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in fields))
    raise InvalidMessage("payload", f"missing (the entry has {names or 'no fields'})")


def _load_json(payload: bytes | str, *, max_bytes: int) -> Any:
    """The JSON value of `payload`; InvalidMessage for anything else, whatever the bytes."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if len(data) > max_bytes:
        raise InvalidMessage("payload", f"larger than {max_bytes} bytes ({len(data)})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidMessage("payload", f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    depth = _nesting(text)
    if depth > MAX_DEPTH:
        raise InvalidMessage("payload", f"nested deeper than {MAX_DEPTH} levels ({depth})")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        raise InvalidMessage("payload", f"not valid JSON ({e})") from None
    except RecursionError:  # the depth check should make this unreachable; keep the promise anyway
        raise InvalidMessage("payload", "nested too deeply to parse") from None


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside JSON strings (an upper bound for invalid JSON)."""
    depth = deepest = 0
    for token in _STRING_OR_BRACKET.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth = max(0, depth - 1)
    return deepest


def parse_message(payload: bytes | str, *, max_bytes: int = 65536) -> Message:
    """Parse and validate one message; raises InvalidMessage listing every problem found."""
    raw = _load_json(payload, max_bytes=max_bytes)
    if not isinstance(raw, dict):
        raise InvalidMessage("payload", f"must be a JSON object, got {_kind(raw)}")

    c = _Checker()
    message_id = c.string(
        raw,
        "id",
        "id",
        required=True,
        max_len=253,
        pattern=MESSAGE_ID,
        what="letters, digits and . _ : @ + = ~ - (starting with a letter or digit)",
    )
    service = c.string(
        raw,
        "service",
        "service",
        required=True,
        max_len=63,
        pattern=LABEL_VALUE,
        what="a Kubernetes label value (letters, digits, - _ . ; starting and ending alphanumeric)",
    )
    job_obj = c.obj(raw, "job", "job", required=True)
    job = _job(c, job_obj) if job_obj is not None else None
    webhook_url = _webhook(c, raw)
    run_at, delay_seconds = _timing(c, raw)
    if c.problems or message_id is None or service is None or job is None:
        raise InvalidMessage.from_problems(c.problems or [("payload", "invalid")])
    return Message(
        id=message_id,
        service=service,
        job=job,
        webhook_url=webhook_url,
        raw=MappingProxyType(raw),
        run_at=run_at,
        delay_seconds=delay_seconds,
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _webhook(c: _Checker, raw: Mapping[str, Any]) -> str | None:
    hook = c.obj(raw, "webhook", "webhook")
    if hook is None:
        return None
    url = c.string(hook, "url", "webhook.url", max_len=2048)
    if url is None:
        return None
    if not re.match(r"^https?://[^/?#\s]+", url, re.IGNORECASE) or any(ch.isspace() for ch in url):
        c.fail("webhook.url", f"must be an http:// or https:// URL with a host, got {url[:100]!r}")
        return None
    return url


def _timing(c: _Checker, raw: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """`runAt` (RFC 3339 with an offset) or `delaySeconds` (a number >= 0), never both.
    How far ahead is allowed is a setting, checked where the due time is computed."""
    at, delay = c.get(raw, "runAt"), c.get(raw, "delaySeconds")
    if at is not MISSING and delay is not MISSING:
        c.fail("runAt", "give either runAt or delaySeconds, not both")
        return None, None
    if at is not MISSING:
        return parse_rfc3339(c, at), None
    if delay is not MISSING:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            c.fail("delaySeconds", f"must be a number of seconds, got {_kind(delay)}")
        elif not 0 <= delay < 1e9:
            c.fail("delaySeconds", f"must be >= 0, got {delay!r}")
        else:
            return None, float(delay)
    return None, None


def rfc3339_problem(value: str) -> str | None:
    """What is wrong with `value` as a runAt time (the message's own rule), or None: for
    an option that sets runAt (`ksr submit --at`) to name itself in the error."""
    c = _Checker()
    parse_rfc3339(c, value)
    return c.problems[0][1] if c.problems else None


def parse_rfc3339(c: _Checker, value: Any, path: str = "runAt") -> float | None:
    if not isinstance(value, str):
        c.fail(path, f"must be an RFC 3339 date-time string, got {_kind(value)}")
        return None
    try:
        when = datetime.fromisoformat(value) if RFC3339.match(value) else None
    except ValueError:
        when = None
    if when is None:
        c.fail(path, f"must be an RFC 3339 date-time such as 2026-12-01T10:00:00+01:00, got {value[:64]!r}")
        return None
    if when.tzinfo is None:
        c.fail(path, f"must carry a UTC offset (Z or +01:00), got {value[:64]!r}")
        return None
    return when.timestamp()


def _job(c: _Checker, job: Mapping[str, Any]) -> JobSpec | None:
    label = "a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
    subdomain = "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
    prefix = c.string(job, "prefixName", "job.prefixName", required=True, max_len=63, pattern=DNS1123_LABEL, what=label)
    namespace = c.string(
        job, "namespace", "job.namespace", required=True, max_len=63, pattern=DNS1123_LABEL, what=label
    )
    image = c.string(
        job,
        "image",
        "job.image",
        required=True,
        max_len=1024,
        pattern=re.compile(r"^[^\s\x00-\x1f]+$"),
        what="an image reference without spaces",
    )
    command = c.strings(job, "command", "job.command")
    args = c.strings(job, "args", "job.args")
    service_account = c.string(
        job, "serviceAccount", "job.serviceAccount", max_len=253, pattern=DNS1123_SUBDOMAIN, what=subdomain
    )
    ttl = c.integer(job, "ttlSecondsAfterFinished", "job.ttlSecondsAfterFinished", low=31, rule="> 30")
    backoff = c.integer(job, "backoffLimit", "job.backoffLimit", low=0, rule=">= 0")
    deadline = c.integer(
        job, "activeDeadlineSeconds", "job.activeDeadlineSeconds", low=60, high=86400, rule="60..86400"
    )
    gpu_enable = c.boolean(job, "gpuEnable", "job.gpuEnable")
    gpu_number = c.integer(job, "gpuNumber", "job.gpuNumber", low=1, high=4, rule="1..4")
    env = c.items(job, "env", "job.env", lambda o, p: _env_var(c, o, p))
    env_ref = c.items(job, "envRef", "job.envRef", lambda o, p: _env_ref(c, o, p))
    limits, requests = _resources(c, job)
    node_selector = _node_selector(c, job)
    toleration = _toleration(c, job)
    volume = _volume(c, job)
    if prefix is None or namespace is None or image is None:
        return None
    return JobSpec(
        prefix_name=prefix,
        namespace=namespace,
        image=image,
        command=command,
        args=args,
        service_account=service_account,
        ttl_seconds_after_finished=ttl,
        backoff_limit=backoff,
        active_deadline_seconds=deadline,
        gpu_enable=bool(gpu_enable),
        gpu_number=gpu_number or 1,
        env=env,
        env_ref=env_ref,
        limits=MappingProxyType(limits),
        requests=MappingProxyType(requests),
        node_selector=node_selector,
        toleration=toleration,
        volume=volume,
    )


def _env_var(c: _Checker, obj: Mapping[str, Any], path: str) -> EnvVar | None:
    name = c.string(
        obj,
        "name",
        f"{path}.name",
        required=True,
        max_len=253,
        pattern=ENV_NAME,
        what="an environment variable name (letters, digits, - . _; not starting with a digit)",
    )
    value = c.text_or_empty(obj, "value")
    if not isinstance(value, str):
        c.fail(f"{path}.value", f"must be a string, got {_kind(value)}")
        return None
    return EnvVar(name, value) if name is not None else None


def _env_ref(c: _Checker, obj: Mapping[str, Any], path: str) -> EnvRef | None:
    name = c.string(
        obj,
        "name",
        f"{path}.name",
        required=True,
        max_len=253,
        pattern=DNS1123_SUBDOMAIN,
        what="a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
    )
    kind = c.string(obj, "type", f"{path}.type", required=True, max_len=16)
    if kind is not None and kind.lower() not in ENVREF_TYPES:
        c.fail(f"{path}.type", f"must be configmap or secret, got {kind!r}")
        return None
    return EnvRef(name, kind.lower()) if name is not None and kind is not None else None


def _resources(c: _Checker, job: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    resources = c.obj(job, "resources", "job.resources")
    if resources is None:
        return {}, {}
    out: list[dict[str, str]] = []
    for part in ("limits", "requests"):
        path = f"job.resources.{part}"
        table = c.obj(resources, part, path)
        quantities: dict[str, str] = {}
        for name, value in (table or {}).items():
            item = f"{path}.{name}"
            if not RESOURCE_NAME.match(name) or len(name) > 253:
                c.fail(item, "must be a resource name such as cpu, memory or example.com/device")
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)  # "cpu": 2 is common and unambiguous
            if not isinstance(value, str):
                c.fail(item, f"must be a quantity string such as '500m' or '1Gi', got {_kind(value)}")
            elif not QUANTITY.match(value):
                c.fail(item, f"must be a quantity such as '500m' or '1Gi', got {value!r}")
            else:
                quantities[name] = value
        out.append(quantities)
    return out[0], out[1]


def _node_selector(c: _Checker, job: Mapping[str, Any]) -> NodeSelector | None:
    sel = c.obj(job, "nodeSelector", "job.nodeSelector")
    if sel is None:
        return None
    key = c.string(
        sel,
        "matchKey",
        "job.nodeSelector.matchKey",
        required=True,
        max_len=317,
        pattern=_LABEL_KEY,
        what="a label key such as kubernetes.io/hostname",
    )
    value = c.text_or_empty(sel, "matchValue")
    if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
        c.fail(
            "job.nodeSelector.matchValue", f"must be a label value (at most 63 letters, digits, - _ .), got {value!r}"
        )
        return None
    return NodeSelector(key, value) if key is not None else None


def _toleration(c: _Checker, job: Mapping[str, Any]) -> Toleration | None:
    tol = c.obj(job, "toleration", "job.toleration")
    if tol is None:
        return None
    key = c.string(tol, "key", "job.toleration.key", required=True, max_len=317, pattern=_LABEL_KEY, what="a taint key")
    value = (
        c.string(tol, "value", "job.toleration.value", max_len=63, pattern=LABEL_VALUE, what="a taint value")
        if tol.get("value") != ""
        else None
    )
    effect = c.string(tol, "effect", "job.toleration.effect", max_len=32)
    if effect is not None and effect not in TAINT_EFFECTS:
        c.fail("job.toleration.effect", f"must be one of {', '.join(TAINT_EFFECTS)}, got {effect!r}")
        return None
    return Toleration(key, value, effect) if key is not None else None


def _volume(c: _Checker, job: Mapping[str, Any]) -> Volume | None:
    vol = c.obj(job, "volume", "job.volume")
    if vol is None:
        return None
    mount = c.string(
        vol,
        "mountPath",
        "job.volume.mountPath",
        required=True,
        max_len=1024,
        pattern=re.compile(r"^/[^:\x00-\x1f]*$"),
        what="an absolute path without ':'",
    )
    if mount is not None and ".." in mount.split("/"):
        c.fail("job.volume.mountPath", f"must not contain '..', got {mount!r}")
        mount = None
    pvc = c.string(
        vol,
        "pvc",
        "job.volume.pvc",
        required=True,
        max_len=253,
        pattern=DNS1123_SUBDOMAIN,
        what="a PersistentVolumeClaim name (DNS-1123 subdomain)",
    )
    return Volume(mount, pvc) if mount is not None and pvc is not None else None


# label keys: optional DNS subdomain prefix (<= 253) and "/", then a name (<= 63)
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(?=[^/]{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
