"""Job messages: the JSON in a stream entry's `payload` field, parsed and validated.

Validation is the schema only (types, ranges, names); what this runner *allows* (namespaces,
images, webhook hosts) is runner.pipeline.policy. Every problem is reported with its field path, all
of them at once: `InvalidMessage` renders them "; "-joined, e.g.
"job.gpuNumber: must be 1..4, got 9; job.image: required". Unknown fields are ignored, so
producers can send fields a newer runner understands.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from ksr_client.entries import payload_id
from runner import message_schema as rules
from runner.errors import InvalidMessage
from runner.message_schema import JOB, MESSAGE, DateTime, Integer, Number, Obj, Quantities, Text

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
    "payload_id",
    "peek_message_id",
    "rfc3339_problem",
]

T = TypeVar("T")

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
    """Collects (field path, problem) pairs while reading a JSON tree; each read takes its
    rule from the object's spec (runner.message_schema)."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append((path, problem))

    def get(self, obj: Mapping[str, Any], key: str) -> Any:
        value = obj.get(key, MISSING)
        return MISSING if value is None else value  # null is "not given"

    def _typed(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str, kind: type, expected: str) -> Any:
        """The value if given and of `kind`; else MISSING, with the problem noted."""
        value = self.get(parent, key)
        if value is MISSING:
            if spec[key].required:
                self.fail(path, "required")
            return MISSING
        if not isinstance(value, kind):
            self.fail(path, f"must be {expected}, got {_kind(value)}")
            return MISSING
        return value

    def obj(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str) -> Mapping[str, Any] | None:
        value = self._typed(parent, spec, key, path, dict, "an object")
        return None if value is MISSING else value

    def string(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str) -> str | None:
        """The string if given and valid; None when absent (or "" for a rule that allows it
        empty: absent is "") or invalid, with the problem noted."""
        rule = spec[key].rule
        assert isinstance(rule, Text), path
        value = self._typed(parent, spec, key, path, str, "a string")
        if value is MISSING:
            return "" if rule.empty else None
        return self.text(value, rule, path)

    def text(self, value: str, rule: Text, path: str) -> str | None:
        if not value and not rule.empty:
            self.fail(path, "must not be empty")
            return None
        if rule.max_len is not None and len(value) > rule.max_len:
            self.fail(path, f"must be at most {rule.max_len} characters, got {len(value)}")
            return None
        chosen = value.lower() if rule.ignore_case else value
        if (rule.choices and chosen not in rule.choices) or (rule.pattern and not _full(rule.pattern, value)):
            self.fail(path, f"must be {rule.what}, got {value[:100]!r}")
            return None
        return chosen

    def integer(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str) -> int | None:
        rule = spec[key].rule
        assert isinstance(rule, Integer), path
        value = self.get(parent, key)
        if value is MISSING:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 60.0 is 60; 60.5 is not an integer
        if isinstance(value, bool) or not isinstance(value, int):
            shown = f" {value!r}" if isinstance(value, (str, float, bool)) else ""
            self.fail(path, f"must be an integer, got {_kind(value)}{shown[:100]}")
            return None
        if not rule.low <= value <= rule.high:
            number = value if abs(value) < 10**20 else f"{value:.3g}"
            self.fail(path, f"must be {rule.over if value > rule.high and rule.over else rule.rule}, got {number}")
            return None
        return value

    def boolean(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str) -> bool | None:
        value = self._typed(parent, spec, key, path, bool, "true or false")
        return None if value is MISSING else value

    def strings(self, parent: Mapping[str, Any], spec: Obj, key: str, path: str) -> tuple[str, ...]:
        value = self._typed(parent, spec, key, path, list, "an array of strings")
        if value is MISSING:
            return ()
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        for i in bad:  # every one, as a schema validator names them
            self.fail(f"{path}[{i}]", f"must be a string, got {_kind(value[i])}")
        return () if bad else tuple(value)

    def items(
        self,
        parent: Mapping[str, Any],
        spec: Obj,
        key: str,
        path: str,
        read: Callable[[Mapping[str, Any], Obj, str], T | None],
    ) -> tuple[T, ...]:
        """An array of objects, each read by `read(obj, its spec, path_of_item)`."""
        value = self._typed(parent, spec, key, path, list, "an array")
        if value is MISSING:
            return ()
        item_spec = spec.items(key)
        out: list[T] = []
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.fail(item_path, f"must be an object, got {_kind(item)}")
                continue
            parsed = read(item, item_spec, item_path)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _full(pattern: str, value: str) -> bool:
    """Whole-value match: `$` alone would also match before a final newline."""
    return _compiled(pattern).fullmatch(value) is not None


# -- the message ----------------------------------------------------------------------------


def peek_message_id(fields: Mapping[Any, Any], *, max_bytes: int = 65536) -> str | None:
    """The message id an entry claims to carry, or None; never raises. For grouping entries
    and releasing claims of entries that are not (or no longer) valid messages."""
    try:
        raw = _load_json(_payload_of(fields), max_bytes=max_bytes)
    except InvalidMessage:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and _full(rules.MESSAGE_ID, value) else None


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
    message_id = c.string(raw, MESSAGE, "id", "id")
    service = c.string(raw, MESSAGE, "service", "service")
    job_obj = c.obj(raw, MESSAGE, "job", "job")
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
    hook = c.obj(raw, MESSAGE, "webhook", "webhook")
    return c.string(hook, MESSAGE.obj("webhook"), "url", "webhook.url") if hook is not None else None


def _timing(c: _Checker, raw: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """`runAt` (RFC 3339 with an offset) or `delaySeconds` (a number >= 0), never both.
    How far ahead is allowed is a setting, checked where the due time is computed."""
    at, delay = c.get(raw, "runAt"), c.get(raw, "delaySeconds")
    for first, second in MESSAGE.exclusive:
        if c.get(raw, first) is not MISSING and c.get(raw, second) is not MISSING:
            c.fail(first, f"give either {first} or {second}, not both")
    run_at = parse_rfc3339(c, at) if at is not MISSING else None
    delay_seconds = None
    if delay is not MISSING:
        rule = MESSAGE["delaySeconds"].rule
        assert isinstance(rule, Number)
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            c.fail("delaySeconds", f"must be a number of seconds, got {_kind(delay)}")
        elif delay < rule.low:
            c.fail("delaySeconds", f"must be >= {rule.low:g}, got {delay!r}")
        elif delay >= rule.below:
            c.fail("delaySeconds", f"must be below {rule.below:g}, got {delay:.6g}")
        else:
            delay_seconds = float(delay)
    return run_at, delay_seconds


def rfc3339_problem(value: str) -> str | None:
    """What is wrong with `value` as a runAt time (the message's own rule), or None: for
    an option that sets runAt (`ksr submit --at`) to name itself in the error."""
    c = _Checker()
    parse_rfc3339(c, value)
    return c.problems[0][1] if c.problems else None


def parse_rfc3339(c: _Checker, value: Any, path: str = "runAt") -> float | None:
    rule = MESSAGE["runAt"].rule
    assert isinstance(rule, DateTime)
    if not isinstance(value, str):
        c.fail(path, f"must be an RFC 3339 date-time string, got {_kind(value)}")
        return None
    if not _full(rule.pattern, value):
        if _full(rules.DATE_TIME_NO_OFFSET, value):
            c.fail(path, f"must carry a UTC offset (Z or +01:00), got {value[:64]!r}")
        else:
            c.fail(path, f"must be an RFC 3339 date-time such as 2026-12-01T10:00:00+01:00, got {value[:64]!r}")
        return None
    # The pattern holds the calendar too; Python reads only upper-case T and Z.
    return datetime.fromisoformat(value.upper()).timestamp()


def _job(c: _Checker, job: Mapping[str, Any]) -> JobSpec | None:
    prefix = c.string(job, JOB, "prefixName", "job.prefixName")
    namespace = c.string(job, JOB, "namespace", "job.namespace")
    image = c.string(job, JOB, "image", "job.image")
    command = c.strings(job, JOB, "command", "job.command")
    args = c.strings(job, JOB, "args", "job.args")
    service_account = c.string(job, JOB, "serviceAccount", "job.serviceAccount")
    ttl = c.integer(job, JOB, "ttlSecondsAfterFinished", "job.ttlSecondsAfterFinished")
    backoff = c.integer(job, JOB, "backoffLimit", "job.backoffLimit")
    deadline = c.integer(job, JOB, "activeDeadlineSeconds", "job.activeDeadlineSeconds")
    gpu_enable = c.boolean(job, JOB, "gpuEnable", "job.gpuEnable")
    gpu_number = c.integer(job, JOB, "gpuNumber", "job.gpuNumber")
    env = c.items(job, JOB, "env", "job.env", lambda o, s, p: _env_var(c, o, s, p))
    env_ref = c.items(job, JOB, "envRef", "job.envRef", lambda o, s, p: _env_ref(c, o, s, p))
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


def _env_var(c: _Checker, obj: Mapping[str, Any], spec: Obj, path: str) -> EnvVar | None:
    name = c.string(obj, spec, "name", f"{path}.name")
    value = c.string(obj, spec, "value", f"{path}.value")
    return EnvVar(name, value) if name is not None and value is not None else None


def _env_ref(c: _Checker, obj: Mapping[str, Any], spec: Obj, path: str) -> EnvRef | None:
    name = c.string(obj, spec, "name", f"{path}.name")
    kind = c.string(obj, spec, "type", f"{path}.type")  # lower-cased (ignore_case)
    return EnvRef(name, kind) if name is not None and kind is not None else None


def _resources(c: _Checker, job: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    resources = c.obj(job, JOB, "resources", "job.resources")
    if resources is None:
        return {}, {}
    spec = JOB.obj("resources")
    out: list[dict[str, str]] = []
    for part in ("limits", "requests"):
        path = f"job.resources.{part}"
        rule = spec[part].rule
        assert isinstance(rule, Quantities)
        table = c.obj(resources, spec, part, path)
        quantities: dict[str, str] = {}
        for name, value in (table or {}).items():
            item = f"{path}.{name}"
            if len(name) > (rule.name.max_len or 0) or not _full(rule.name.pattern or "", name):
                c.fail(item, f"must be {rule.name.what}")
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # as for every integer: 2.0 is 2
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)  # "cpu": 2 is common and unambiguous
            if not isinstance(value, str):
                c.fail(item, f"must be a quantity string such as '500m' or '1Gi', got {_kind(value)}")
            elif (quantity := c.text(value, rule.quantity, item)) is not None:
                quantities[name] = quantity
        out.append(quantities)
    return out[0], out[1]


def _node_selector(c: _Checker, job: Mapping[str, Any]) -> NodeSelector | None:
    sel = c.obj(job, JOB, "nodeSelector", "job.nodeSelector")
    if sel is None:
        return None
    spec = JOB.obj("nodeSelector")
    key = c.string(sel, spec, "matchKey", "job.nodeSelector.matchKey")
    value = c.string(sel, spec, "matchValue", "job.nodeSelector.matchValue")
    return NodeSelector(key, value) if key is not None and value is not None else None


def _toleration(c: _Checker, job: Mapping[str, Any]) -> Toleration | None:
    tol = c.obj(job, JOB, "toleration", "job.toleration")
    if tol is None:
        return None
    spec = JOB.obj("toleration")
    key = c.string(tol, spec, "key", "job.toleration.key")
    value = c.string(tol, spec, "value", "job.toleration.value")
    effect = c.string(tol, spec, "effect", "job.toleration.effect")
    if key is None or value is None or (effect is None and c.get(tol, "effect") is not MISSING):
        return None
    return Toleration(key, value or None, effect)  # no value: operator Exists


def _volume(c: _Checker, job: Mapping[str, Any]) -> Volume | None:
    vol = c.obj(job, JOB, "volume", "job.volume")
    if vol is None:
        return None
    spec = JOB.obj("volume")
    mount = c.string(vol, spec, "mountPath", "job.volume.mountPath")
    pvc = c.string(vol, spec, "pvc", "job.volume.pvc")
    return Volume(mount, pvc) if mount is not None and pvc is not None else None
