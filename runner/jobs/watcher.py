"""Follows the Jobs we created, and their Pods, by label, while a term lasts: the three
parts put together.

- runner.jobs.informer: the watches (list, watch, 410 Gone, relist) and their view;
- runner.jobs.transitions: what each event means, as tracker calls;
- runner.jobs.reconcile: the periodic resync against the active set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from election.clock import SYSTEM_CLOCK, Clock
from runner.jobs.informer import Informer
from runner.jobs.kube import KubeApi
from runner.jobs.reconcile import Reconciler
from runner.jobs.tracker import Tracker
from runner.jobs.transitions import Transitions
from runner.settings import Settings
from runner.store.state import StateStore

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0  # seconds for all watch threads together to end after stop()


class KubeWatcher:
    def __init__(
        self,
        *,
        api: KubeApi,
        tracker: Tracker,
        state: StateStore,
        settings: Settings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api = api
        self.clock = clock
        allowed = settings.policy.allowed_namespaces
        self.namespaces: list[str | None] = [None] if "*" in allowed else list(allowed)
        self.transitions = Transitions(api=api, tracker=tracker, state=state)
        self.informer = Informer(
            api,
            namespaces=self.namespaces,
            handlers={"jobs": self.transitions.handle_job, "pods": self.transitions.handle_pod},
            clock=clock,
        )
        self.reconciler = Reconciler(
            api=api,
            tracker=tracker,
            state=state,
            settings=settings,
            transitions=self.transitions,
            namespaces=self.namespaces,
            view=lambda: self.informer.view,
            clock=clock,
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, keep_going: Callable[[], bool]) -> None:
        """Watch while `keep_going()` (our term) holds. Each start has a stop event of its
        own, so a thread of an earlier start that is still blocked in a watch never resumes."""
        self._stop = stop = threading.Event()
        following = lambda: keep_going() and not stop.is_set()  # noqa: E731
        self.transitions.follow(following)
        self._threads.extend(self.informer.start(stop, following))
        self._threads.append(self.reconciler.start(stop, following))

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every watch together: their reads are cut short, so this takes milliseconds
        whatever the number of namespaces; `timeout` bounds the whole wait, not each thread."""
        self._stop.set()
        self.informer.abort()
        deadline = self.clock.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - self.clock.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:  # they are fenced by their own stop event and end on their next read
            log.warning("%d watch threads still running after %gs", len(self._threads), timeout)

    def reconcile(self, keep_going: Callable[[], bool] | None = None) -> None:
        """The resync once, now (a takeover's): see runner.jobs.reconcile."""
        self.reconciler.reconcile(keep_going)

    def handle_job(
        self, job: dict[str, Any], deleted: bool = False, keep_going: Callable[[], bool] | None = None
    ) -> None:
        self.transitions.handle_job(job, deleted, keep_going)

    def handle_pod(
        self, pod: dict[str, Any], deleted: bool = False, keep_going: Callable[[], bool] | None = None
    ) -> None:
        self.transitions.handle_pod(pod, deleted, keep_going)
