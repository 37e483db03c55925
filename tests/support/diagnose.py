"""What every store holds for messages whose callbacks did not all arrive, for a failure
message: so that a failure of a long chaos run explains itself instead of needing a rerun.

Per message (the first `detail` of them in full, every one in the summary): its state record
(on the primary and on each data node, which shows a lagging or freshly synced replica), the
active set, the owed index, the RQ jobs of its chain (status, queue list, registries), its
Jobs (conditions, finalizers, deletion), its stream entry and whether the group still owes
it, and its events. Then the replication links, the sentinels' and servers' log tails, and each
pod's log tail and the lines that name a missing message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from runner.callbacks.chain import owed_key, owed_member
from runner.jobs.manifest import MESSAGE_ID_ANNOTATION
from runner.settings import Settings
from runner.store.record import StateRecord
from runner.store.replies import text
from tests.support.kube import KubeBed, managed_jobs

STATUSES = (0, 1, 2, 3, 99)
_LOG_LINES = 60  # per pod: the tail, plus the lines that name a missing message (capped)


def explain_missing(
    conn: redis.Redis,
    settings: Settings,
    ids: Sequence[str],
    *,
    kube: KubeBed | None = None,
    namespace: str = "",
    data_nodes: Iterable[redis.Redis] = (),
    node_logs: Iterable[Path] = (),
    pod_logs: Iterable[tuple[str, Path]] = (),
    detail: int = 8,
) -> str:
    """A report on `ids` (the messages whose callbacks are incomplete). Never raises: a store
    that does not answer is reported as such."""
    ids = list(ids)
    nodes = list(data_nodes)
    out: list[str] = [f"=== {len(ids)} messages with incomplete callbacks: {_ranges(ids)}"]
    jobs = _guard(lambda: _jobs_by_message(kube, namespace), {}) if kube is not None else {}
    facts = {mid: _guard(lambda mid=mid: _facts(conn, settings, mid, jobs.get(mid, [])), {"error": "?"}) for mid in ids}
    out.append("summary: " + _summary(facts))
    for mid in ids[:detail]:
        out.append(f"--- {mid}")
        for name, value in facts[mid].items():
            out.append(f"  {name}: {value}")
        for node in nodes:
            where = node.connection_pool.connection_kwargs.get("port")
            out.append(f"  record on :{where}: {_guard(lambda n=node: dict(_record(n, settings, mid)), '?')}")
    out.append("=== where Redis is")
    for node in nodes:
        port = node.connection_pool.connection_kwargs.get("port")
        out.append(f"  :{port} {_guard(lambda n=node: _replication(n), '?')}")
    for path in node_logs:
        out.append(f"=== {path.parent.name}/{path.name} (tail)")
        out.append(_tail(path, 25))
    wanted = set(ids[:detail])
    for name, path in pod_logs:
        out.append(f"=== {name}: lines naming {sorted(wanted)[:3]}... (at most {_LOG_LINES})")
        out.append(_naming(path, wanted))
        out.append(f"=== {name} (tail)")
        out.append(_tail(path, _LOG_LINES))
    return "\n".join(out)


# -- one message ---------------------------------------------------------------------------
def _facts(conn: redis.Redis, settings: Settings, mid: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    record = _record(conn, settings, mid)
    owed = {
        s: conn.zscore(owed_key(settings), owed_member(mid, s))
        for s in STATUSES
        if conn.zscore(owed_key(settings), owed_member(mid, s)) is not None
    }
    chain = {s: _rq_job(conn, record.callback_chain(s)) for s in STATUSES if record.callback_chain(s)}
    return {
        "record": dict(record) or None,
        "ttl": conn.ttl(settings.state.record_key(mid)),
        "active": bool(conn.sismember(settings.state.active_key, mid)),
        "owed (status: score)": owed,
        "callbacks owed per record": record.callbacks(owed=True),
        "rq chain": chain,
        "jobs": jobs,
        "entry": _entry(conn, settings, record),
        "events": _events(conn, settings, mid),
    }


def _record(conn: redis.Redis, settings: Settings, mid: str) -> StateRecord:
    return StateRecord.from_reply(conn.hgetall(settings.state.record_key(mid)))


def _rq_job(conn: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = {text(k): text(v) for k, v in conn.hgetall(f"rq:job:{job_id}").items() if text(k) != "data"}
    if not raw:
        return {"id": job_id, "hash": None}
    origin = raw.get("origin", "")
    keep = ("status", "origin", "worker_name", "enqueued_at", "started_at", "ended_at")
    found = {k: raw[k] for k in keep if k in raw}
    found["in queue list"] = conn.lpos(f"rq:queue:{origin}", job_id) is not None
    for registry in ("scheduled", "started", "failed", "deferred", "finished"):
        if conn.zscore(f"rq:{registry}:{origin}", job_id) is not None:
            found["registry"] = registry
    if "exc_info" in raw:
        found["exc_info"] = raw["exc_info"][-300:]
    return {"id": job_id, **found}


def _entry(conn: redis.Redis, settings: Settings, record: StateRecord) -> dict[str, Any]:
    stream, entry_id = record.get("stream"), record.get("entry_id")
    if not stream or not entry_id:
        return {}
    rows = conn.xpending_range(stream, settings.streams.group, min=entry_id, max=entry_id, count=1)
    return {
        "stream": stream,
        "id": entry_id,
        "exists": bool(conn.xrange(stream, entry_id, entry_id)),
        "pending": [{k: text(v) if isinstance(v, bytes) else v for k, v in r.items()} for r in rows],
    }


def _events(conn: redis.Redis, settings: Settings, mid: str) -> list[tuple[str, Any]]:
    found = []
    for event_id, fields in conn.xrange(settings.streams.events_stream, "-", "+"):
        if fields.get(b"id") == mid.encode():
            found.append((text(event_id), text(fields.get(b"status", b""))))
    return found


def _jobs_by_message(kube: KubeBed | None, namespace: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for job in managed_jobs(kube, namespace) if kube is not None else []:
        mid = (job.metadata.annotations or {}).get(MESSAGE_ID_ANNOTATION, "")
        conditions = [c.type for c in (job.status.conditions or []) if c.status == "True"]
        out.setdefault(mid, []).append(
            {
                "name": job.metadata.name,
                "uid": job.metadata.uid,
                "created": str(job.metadata.creation_timestamp),
                "conditions": conditions,
                "finalizers": job.metadata.finalizers or [],
                "deleting": job.metadata.deletion_timestamp is not None,
                "active/succeeded/failed": (job.status.active, job.status.succeeded, job.status.failed),
            }
        )
    return out


def _summary(facts: dict[str, dict[str, Any]]) -> str:
    counts: Counter[str] = Counter()
    for f in facts.values():
        record = f.get("record") or {}
        counts[f"state={record.get('state', 'no record')}"] += 1
        counts[f"jobs={len(f.get('jobs') or [])}"] += 1
        counts["active" if f.get("active") else "not active"] += 1
        counts[f"owed={sorted(f.get('owed (status: score)') or {})}"] += 1
        counts[f"marked={sorted(k for k in record if k.startswith('cb_'))}"] += 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))


# -- the rest ------------------------------------------------------------------------------
def _replication(node: redis.Redis) -> dict[str, Any]:
    info = node.info("replication")
    keep = ("role", "master_port", "master_link_status", "master_sync_in_progress", "master_repl_offset")
    return {k: v for k, v in info.items() if k in keep or k.startswith("slave")}


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(unreadable: {e})"


def _naming(path: Path, ids: set[str]) -> str:
    try:
        hits = [line for line in path.read_text(errors="replace").splitlines() if any(i in line for i in ids)]
    except OSError as e:
        return f"(unreadable: {e})"
    return "\n".join(hits[:_LOG_LINES])


def _ranges(ids: Sequence[str]) -> str:
    return ", ".join(ids[:3]) + (f" ... {ids[-1]}" if len(ids) > 3 else "")


def _guard(call: Any, default: Any) -> Any:
    try:
        return call()
    except Exception as e:  # a diagnostic must never hide the failure it explains
        return {"error": repr(e)} if isinstance(default, dict) else f"{default} ({e!r})"
