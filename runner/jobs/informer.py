"""Lists and watches our Jobs and Pods, one thread per kind and namespace, and keeps the
watched view (runner.jobs.view) of what it has seen: client-go's informer, in small.

Each watch (raw JSON, from a resourceVersion) relists when it starts and after a 410 Gone
or a failure; every listed object and every event goes to the kind's handler. What an
event means is not decided here (runner.jobs.transitions), nor what the periodic resync
does with the view (runner.jobs.reconcile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from election.clock import SYSTEM_CLOCK, Clock
from runner import backoff
from runner.errors import KsrError
from runner.jobs.kube import KubeApi, Stopped, WatchStream
from runner.jobs.view import Kept, Part, WatchedView

log = logging.getLogger(__name__)

KINDS = ("jobs", "pods")
WATCH_SECONDS = 240


class Handler(Protocol):
    def __call__(
        self, obj: dict[str, Any], /, deleted: bool = False, keep_going: Callable[[], bool] | None = None
    ) -> None: ...


class Informer:
    """The watches of `namespaces` ([None]: all of them) for every kind of `handlers`."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespaces: list[str | None],
        handlers: Mapping[str, Handler],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.namespaces = namespaces
        self.handlers = handlers
        self.clock = clock
        self.view = WatchedView(())  # the started watches' view; none current before start()
        self.open_watches: set[WatchStream] = set()  # cut short by abort()
        self._watches_mutex = threading.Lock()

    def start(self, stop: threading.Event, keep_going: Callable[[], bool]) -> list[threading.Thread]:
        """One started thread per kind and namespace, watching until `stop` is set or
        `keep_going()` (our term) fails; a fresh view, current once every part is listed."""
        self.view = WatchedView((kind, ns) for ns in self.namespaces for kind in self.handlers)
        threads = []
        for ns in self.namespaces:
            for kind in self.handlers:
                t = threading.Thread(
                    target=self._watch_loop,
                    args=(kind, ns, stop, keep_going),
                    daemon=True,
                    name=f"watch-{kind}-{ns or 'all'}",
                )
                t.start()
                threads.append(t)
        return threads

    def abort(self) -> None:
        """Cut every open watch short (their `stop` is set already), and forget the view: a
        later start lists afresh."""
        self.view = WatchedView(())
        with self._watches_mutex:
            streams = list(self.open_watches)
        for stream in streams:
            stream.abort()

    def _watch_loop(
        self, kind: str, namespace: str | None, stop: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        handle = self.handlers[kind]
        view, part = self.view, (kind, namespace)
        rv: str | None = None
        failures = 0
        while not stop.is_set():
            try:
                if rv is None:
                    rv = self._relist(part, view, handle, keep_going)
                stream = self.api.watch(kind, namespace, rv, timeout_seconds=WATCH_SECONDS)
                with self._watches_mutex:
                    if stop.is_set():
                        return
                    self.open_watches.add(stream)
                try:
                    rv = self._follow(stream, part, view, handle, rv, stop, keep_going)
                finally:
                    with self._watches_mutex:
                        self.open_watches.discard(stream)
                failures = 0
            except Stopped:
                return
            except (KsrError, OSError, ValueError) as e:
                view.stale(part)
                failures += 1
                rv = None  # after an outage the apiserver may have compacted past us
                delay = backoff.delay(failures + 1, base=0.5, cap=10.0)
                log.warning("watch %s in %s failed (%s); relisting in %.1fs", kind, namespace or "all", e, delay)
                self.clock.wait(stop, delay)
            except Exception:  # a bug must not silently end the watch
                view.stale(part)
                log.exception("watch %s crashed; restarting", kind)
                rv = None
                self.clock.wait(stop, 1.0)

    def _relist(self, part: Part, view: WatchedView, handle: Handler, keep_going: Callable[[], bool]) -> str:
        """Handle every listed object, page by page, and make the view's part what was
        listed; the list's resourceVersion, to watch from."""
        kind, namespace = part
        rv = ""
        listed: list[Kept] = []  # the part stays stale (not yet listed, or its watch failed) until replaced
        for items, page_rv in (self.api.job_pages if kind == "jobs" else self.api.pod_pages)(
            namespace, keep_going=keep_going
        ):
            rv = page_rv
            for obj in items:
                handle(obj, keep_going=keep_going)
                kept = view.keep(kind, obj)
                if kept is not None:
                    listed.append(kept)
        view.replace(part, listed)
        return rv

    def _follow(
        self,
        stream: WatchStream,
        part: Part,
        view: WatchedView,
        handle: Handler,
        rv: str,
        stop: threading.Event,
        keep_going: Callable[[], bool],
    ) -> str | None:
        """Handle one watch's events; returns the resourceVersion to go on from (None: relist)."""
        for event in stream:
            if stop.is_set():
                break
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                view.stale(part)
                if obj.get("code") == 410:  # our resourceVersion is too old: relist
                    log.info("watch %s: 410 Gone, relisting", part[0])
                return None
            rv = obj.get("metadata", {}).get("resourceVersion") or rv
            if event.get("type") == "BOOKMARK":
                continue
            if not keep_going():
                raise Stopped(f"watch {part[0]}")
            deleted = event.get("type") == "DELETED"
            view.apply(part, obj, deleted=deleted)
            handle(obj, deleted=deleted, keep_going=keep_going)
        return rv
