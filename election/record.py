"""The leader record, and pure conversions to and from its stored forms.

`LeaderRecord` mirrors client-go's `LeaderElectionRecord` plus an opaque `version` (the Lease's
`resourceVersion`, or the Redis lock's counter) used for optimistic concurrency. Timestamps in
the record are wall-clock and informational (for `kubectl get lease -o yaml` and humans):
the elector never judges expiry on them.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from election.errors import LockError

__all__ = ["LeaderRecord", "format_time", "from_dict", "from_lease_spec", "parse_time", "to_dict", "to_lease_spec"]

_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"  # metav1.MicroTime (RFC 3339 with exactly 6 fraction digits)


@dataclass(frozen=True)
class LeaderRecord:
    """Who holds the lock, for how long, since when, and in which term.

    `holder` is None when nobody holds it (released). `transitions` counts holder changes and
    is the term: a fencing token. `version` is opaque and set only by the lock backend.
    """

    holder: str | None
    lease_duration: float
    acquire_time: _dt.datetime | None = None
    renew_time: _dt.datetime | None = None
    transitions: int = 0
    version: str | None = None


def format_time(t: _dt.datetime | None) -> str | None:
    """A MicroTime string the kube-apiserver accepts (always 6 fraction digits, `Z`)."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC).strftime(_MICRO)


def parse_time(value: Any) -> _dt.datetime | None:
    """Accept a datetime (kubernetes client models) or an RFC 3339 string (raw JSON, Redis)."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as e:
            raise LockError(f"malformed time in leader record: {value!r}") from e
    else:
        raise LockError(f"malformed time in leader record: {value!r}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC)


def _get(spec: Any, camel: str, snake: str) -> Any:
    if isinstance(spec, Mapping):
        return spec.get(camel, spec.get(snake))
    return getattr(spec, snake, None)


def to_lease_spec(record: LeaderRecord) -> dict[str, Any]:
    """The Lease `spec` as JSON (camelCase). A dict, not a V1LeaseSpec, because the client
    serialises datetimes with `isoformat()`, which drops the fraction when it is zero and the
    apiserver then rejects the MicroTime. `leaseDurationSeconds` is an integer in the API: a
    fractional duration is rounded up, so others never judge our lease shorter than we do."""
    spec: dict[str, Any] = {
        "holderIdentity": record.holder or "",
        "leaseDurationSeconds": max(1, math.ceil(record.lease_duration)),
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = format_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = format_time(record.renew_time)
    return spec


def from_lease_spec(spec: Any, *, version: str | None = None) -> LeaderRecord:
    """A record from a Lease spec: a `V1LeaseSpec` (datetimes) or its JSON dict (strings)."""
    if spec is None:
        return LeaderRecord(holder=None, lease_duration=0.0, version=version)
    duration = _get(spec, "leaseDurationSeconds", "lease_duration_seconds")
    transitions = _get(spec, "leaseTransitions", "lease_transitions")
    return LeaderRecord(
        holder=_get(spec, "holderIdentity", "holder_identity") or None,
        lease_duration=float(duration or 0),
        acquire_time=parse_time(_get(spec, "acquireTime", "acquire_time")),
        renew_time=parse_time(_get(spec, "renewTime", "renew_time")),
        transitions=int(transitions or 0),
        version=version,
    )


def to_dict(record: LeaderRecord) -> dict[str, str]:
    """Flat string fields (the Redis hash), without the version, which the store owns."""
    return {
        "holder": record.holder or "",
        "lease_duration": repr(float(record.lease_duration)),
        "acquire_time": format_time(record.acquire_time) or "",
        "renew_time": format_time(record.renew_time) or "",
        "transitions": str(int(record.transitions)),
    }


def from_dict(fields: Mapping[Any, Any]) -> LeaderRecord:
    """Inverse of `to_dict`; bytes or str keys and values (as redis-py returns them); the
    version is read from field `version`."""
    text = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }

    def s(key: str) -> str:
        return text.get(key, "")

    try:
        return LeaderRecord(
            holder=s("holder") or None,
            lease_duration=float(s("lease_duration") or 0),
            acquire_time=parse_time(s("acquire_time")),
            renew_time=parse_time(s("renew_time")),
            transitions=int(s("transitions") or 0),
            version=s("version") or None,
        )
    except ValueError as e:
        raise LockError(f"malformed leader record {dict(fields)!r}") from e
