"""What the watches have seen of our Jobs and Pods: the periodic resync reads this instead
of listing every Job and Pod from the apiserver (client-go's informer cache, in small).

Each watch keeps its own part (one kind in one namespace) current: a relist replaces it,
each event updates it, and a failure marks it stale until the next relist. The resync
reads the view only while every part is current; otherwise it lists, as at a takeover.

Only what the handlers read is kept (metadata and status, never the spec), and only of the
objects that can still change an outcome: a Job that has not ended or still holds our
finalizer, a Pod that has not ended. Of the other Jobs (ended and released, kept until
their TTL) the view keeps the message id and the name alone, so "is there a Job for this
message" is still answered, and the memory grows with the active set, not with the last
TTL's Jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from runner.jobs.manifest import holds_finalizer, message_id_of

Part = tuple[str, str | None]  # (kind, namespace): one watch's share
# What the view keeps of one object: (message id, the slim object or None once settled,
# namespace, name); and by what key (its uid).
Seen = tuple[str, dict[str, Any] | None, str, str]
Kept = tuple[str, Seen]
_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "finalizers", "deletionTimestamp")


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields the watcher's handlers read: metadata (our annotations only) and status."""
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    annotations = meta.get("annotations") or {}
    kept["annotations"] = {k: v for k, v in annotations.items() if k.startswith("kube-stream-runner/")}
    return {"metadata": kept, "status": obj.get("status") or {}}


def _ended(obj: dict[str, Any], kind: str) -> bool:
    status = obj.get("status") or {}
    if kind == "pods":
        return status.get("phase") in ("Succeeded", "Failed")
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _followed(obj: dict[str, Any], kind: str) -> bool:
    return (kind == "jobs" and holds_finalizer(obj)) or not _ended(obj, kind)


class WatchedView:
    def __init__(self, parts: Iterable[Part]) -> None:
        self._mutex = threading.Lock()
        self._objects: dict[Part, dict[str, Seen]] = {p: {} for p in parts}  # per part, by uid
        self._current: set[Part] = set()

    @property
    def current(self) -> bool:
        """Every part has been listed and its watch has not failed since (a view of no
        watches, before they start, never is)."""
        with self._mutex:
            return bool(self._objects) and self._current == set(self._objects)

    @staticmethod
    def keep(kind: str, obj: dict[str, Any]) -> Kept | None:
        """What the view keeps of `obj`; None for what it drops (not ours, an ended pod)."""
        mid = message_id_of(obj)
        if not mid:
            return None
        meta = obj["metadata"]
        ref = (meta.get("namespace", ""), meta.get("name", ""))
        if _followed(obj, kind):
            return _key(obj), (mid, slim(obj), *ref)
        return (_key(obj), (mid, None, *ref)) if kind == "jobs" else None  # an ended pod: nothing more to learn

    def replace(self, part: Part, kept: Iterable[Kept]) -> None:
        """A relist's whole result for one part (what `keep` made of it): current from now on."""
        objects = dict(kept)
        with self._mutex:
            self._objects[part] = objects
            self._current.add(part)

    def apply(self, part: Part, obj: dict[str, Any], *, deleted: bool) -> None:
        kept = None if deleted else self.keep(part[0], obj)
        with self._mutex:
            objects = self._objects.setdefault(part, {})
            if kept is None:
                objects.pop(_key(obj), None)
            else:
                objects[kept[0]] = kept[1]

    def stale(self, part: Part) -> None:
        """The part's watch failed: events may be missed until it is listed again."""
        with self._mutex:
            self._current.discard(part)

    def objects(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
        """The followed objects of `kind`, and the settled ones' (namespace, name) by message id."""
        followed: list[dict[str, Any]] = []
        settled: dict[str, tuple[str, str]] = {}
        with self._mutex:
            for (k, _), objects in self._objects.items():
                if k != kind:
                    continue
                for mid, obj, namespace, name in objects.values():
                    if obj is None:
                        settled[mid] = (namespace, name)
                    else:
                        followed.append(obj)
        return followed, settled


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
