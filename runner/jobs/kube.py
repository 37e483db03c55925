"""The Kubernetes API as the pipeline uses it: create Jobs idempotently, list and watch
Jobs and Pods by label as raw JSON, with retries for transient errors.

Bodies are JSON both ways, encoded and decoded with orjson: watch events are most of the
leader's decoding, and orjson reads a pod's event in 40 % of json's time and writes a
manifest in 5 % (docs/benchmarks.md, "Cost per Job"). Errors are translated once, here
(`kube_error_from`); every request is reported as a `KubeRequest` signal (verb, code,
latency), which the metrics observer counts in `ksr_kube_requests_total`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from kubernetes import client as k8s

from election.clock import SYSTEM_CLOCK, Clock
from runner import backoff
from runner.errors import (
    KubeApiError,
    KubeConflict,
    KubeNotFound,
    kube_error_from,
)
from runner.jobs.manifest import managed_selector, message_id_of
from runner.jobs.rest import JSON_PATCH, Rest, path_of
from runner.jobs.throttle import KubeThrottle, Stopped
from runner.signals import KubeRequest, Signals

log = logging.getLogger(__name__)

T = TypeVar("T")
_PATCH_ATTEMPTS = 5
LIST_PAGE = 500  # items a list request asks for (client-go's reflector pages by 500 too)


@dataclass(frozen=True)
class JobRef:
    name: str
    namespace: str
    uid: str
    adopted: bool = False  # it existed already (made before a crash) and is ours
    gone: bool = False  # it existed (409) and has been deleted since: never made again


def _always() -> bool:
    return True


class KubeApi:
    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        timeout: float,
        signals: Signals,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        max_attempts: int = 0,
        list_page: int = LIST_PAGE,
        throttle: KubeThrottle | None = None,
    ) -> None:
        """`max_attempts` 0 retries transient errors for as long as `keep_going()` says;
        `list_page` is the number of items one list request asks for; `throttle` paces the
        requests (runner.jobs.throttle; default: the apiserver's 429s only, no client limit)."""
        self.api_client = api_client
        self.rest = Rest(api_client, clock=clock)
        self.timeout = timeout
        self._clock = clock
        self._rng = rng or random.Random()
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_attempts = max_attempts
        self.list_page = list_page
        self.signals = signals
        self.throttle = throttle or KubeThrottle(qps=0, burst=0, signals=signals, clock=clock)

    # -- the retry loop ---------------------------------------------------------------
    def call(
        self,
        verb: str,
        fn: Callable[[], T],
        *,
        keep_going: Callable[[], bool] = _always,
        retry_for: float | None = None,
    ) -> T:
        """`fn()` with transient errors retried while `keep_going()`; once `retry_for` seconds
        have passed the last transient error is raised for the caller to decide (the
        dispatcher then lets the create wait without holding a worker). The caller gives a
        duration, not a deadline: only this object's clock judges it."""
        deadline = None if retry_for is None else self._clock.monotonic() + retry_for
        attempt = 0
        while True:
            attempt += 1
            if not keep_going():
                raise Stopped(verb)
            # Waits for the throttle (runner.jobs.throttle); raises Stopped, or the last 429 /
            # a client-side refusal when `deadline` would pass first: no request is sent then.
            with self.throttle.admit(verb, keep_going=keep_going, deadline=deadline):
                started = self._clock.monotonic()
                try:
                    result = fn()
                except Exception as e:  # translated right here, the boundary
                    cause: Exception | None = e
                    err = e if isinstance(e, KubeApiError) else kube_error_from(e)
                    self.signals.emit(KubeRequest(verb, err.status or None, self._clock.monotonic() - started))
                    self.throttle.refused(verb, err)  # a 429 closes the gate before the next one enters
                else:
                    cause = None
            if cause is not None:
                if not err.retryable or (self._max_attempts and attempt >= self._max_attempts):
                    raise err from cause
                retry_after = None if err.retry_after is None else min(err.retry_after, 60.0)
                delay = backoff.delay(
                    attempt, base=self._base, cap=self._cap, jitter="equal", rng=self._rng, floor=retry_after
                )
                if deadline is not None and self._clock.monotonic() + delay > deadline:
                    raise err from cause
                log.warning("kubernetes %s failed (%s), retry %d in %.2fs", verb, err, attempt, delay)
                self._clock.sleep(delay)
                continue
            self.signals.emit(KubeRequest(verb, _code_of(verb), self._clock.monotonic() - started))
            return result

    # -- Jobs --------------------------------------------------------------------------
    def create_job(
        self,
        manifest: dict[str, Any],
        *,
        message_id: str,
        keep_going: Callable[[], bool] = _always,
        retry_for: float | None = None,
    ) -> JobRef:
        """Create the Job; when it exists already and carries this message id, adopt it."""
        ns = manifest["metadata"]["namespace"]
        name = manifest["metadata"]["name"]
        body = orjson.dumps(manifest)
        try:
            job = self.call(
                "create",
                lambda: _json(self.rest.request("POST", path_of("jobs", ns), body=body, timeout=self.timeout)),
                keep_going=keep_going,
                retry_for=retry_for,
            )
            return JobRef(name=name, namespace=ns, uid=job["metadata"]["uid"])
        except KubeConflict:
            existing = self.get_job(ns, name, keep_going=keep_going)
            if existing is None:
                # The 409 proves our Job existed; it has ended and been deleted since. A second
                # create would run the message twice: record it as gone (its end is unknown).
                log.warning("job %s/%s existed for message %s and is gone: not created again", ns, name, message_id)
                return JobRef(name=name, namespace=ns, uid="", adopted=True, gone=True)
            owner = message_id_of(existing)
            if owner != message_id:
                raise KubeConflict(
                    409, "AlreadyExists", f"jobs.batch {name!r} exists in {ns} and belongs to message {owner!r}"
                ) from None
            log.info("job %s/%s exists already for message %s: adopted", ns, name, message_id)
            return JobRef(name=name, namespace=ns, uid=existing["metadata"]["uid"], adopted=True)

    def get_job(self, namespace: str, name: str, *, keep_going: Callable[[], bool] = _always) -> dict | None:
        try:
            return self.call(
                "get",
                lambda: _json(self.rest.request("GET", path_of("jobs", namespace, name), timeout=self.timeout)),
                keep_going=keep_going,
            )
        except KubeNotFound:
            return None

    def delete_job(self, namespace: str, name: str, *, keep_going: Callable[[], bool] = _always) -> None:
        try:
            self.call(
                "delete",
                lambda: _drain(
                    self.rest.request(
                        "DELETE",
                        path_of("jobs", namespace, name),
                        query={"propagationPolicy": "Background"},
                        timeout=self.timeout,
                    )
                ),
                keep_going=keep_going,
            )
        except KubeNotFound:
            pass

    def remove_finalizer(
        self, job: dict[str, Any], finalizer: str, *, keep_going: Callable[[], bool] = _always
    ) -> None:
        """Take `finalizer` off `job`. A JSON patch that first tests the entry is still at the
        index seen, so a concurrent change to the list (the garbage collector's own
        finalizers) is never clobbered; on a mismatch the Job is read again. 404: done."""
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        for _ in range(_PATCH_ATTEMPTS):
            finalizers = job["metadata"].get("finalizers") or []
            if finalizer not in finalizers:
                return
            at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
            patch = [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]
            body = orjson.dumps(patch)
            try:
                self.call(
                    "patch",
                    lambda: _drain(
                        self.rest.request(
                            "PATCH",
                            path_of("jobs", ns, name),
                            body=body,
                            content_type=JSON_PATCH,
                            timeout=self.timeout,
                        )
                    ),
                    keep_going=keep_going,
                )
                return
            except KubeNotFound:
                return
            except KubeApiError as e:
                if e.status not in (409, 422):  # 422: the test failed, the list has moved
                    raise
            fresh = self.get_job(ns, name, keep_going=keep_going)
            if fresh is None:
                return
            job = fresh
        raise KubeConflict(409, "Conflict", f"finalizers of jobs.batch {name!r} in {ns} kept changing")

    def list_jobs(
        self, namespace: str | None, *, selector: str | None = None, keep_going: Callable[[], bool] = _always
    ) -> tuple[list[dict], str]:
        return self._list("jobs", namespace, selector, keep_going)

    def list_pods(
        self, namespace: str | None, *, selector: str | None = None, keep_going: Callable[[], bool] = _always
    ) -> tuple[list[dict], str]:
        return self._list("pods", namespace, selector, keep_going)

    def job_pages(
        self, namespace: str | None, *, selector: str | None = None, keep_going: Callable[[], bool] = _always
    ) -> Iterator[tuple[list[dict], str]]:
        return self._pages("jobs", namespace, selector, keep_going)

    def pod_pages(
        self, namespace: str | None, *, selector: str | None = None, keep_going: Callable[[], bool] = _always
    ) -> Iterator[tuple[list[dict], str]]:
        return self._pages("pods", namespace, selector, keep_going)

    def _list(
        self, kind: str, namespace: str | None, selector: str | None, keep_going: Callable[[], bool]
    ) -> tuple[list[dict], str]:
        items: list[dict] = []
        rv = ""
        for page, page_rv in self._pages(kind, namespace, selector, keep_going):
            items.extend(page)
            rv = page_rv
        return items, rv

    def _pages(
        self, kind: str, namespace: str | None, selector: str | None, keep_going: Callable[[], bool]
    ) -> Iterator[tuple[list[dict], str]]:
        """The list, `list_page` items a request, each page with the list's resourceVersion
        (every page is of the first one's snapshot). A relist holds one page, however many
        Jobs are kept until their TTL. A continue token that expired meanwhile (410) is
        raised like any error: the caller lists again."""
        path = path_of(kind, namespace)
        token: str | None = None
        rv = ""
        while True:  # ends with the last page: the apiserver sends no continue token
            query = {
                "labelSelector": selector or managed_selector(),
                "limit": self.list_page,
                **({"continue": token} if token else {}),
            }
            body = self.call(
                "list",
                lambda: _json(self.rest.request("GET", path, query=query, timeout=self.timeout)),
                keep_going=keep_going,
            )
            meta = body.get("metadata") or {}
            rv = rv or meta.get("resourceVersion", "")
            token = meta.get("continue") or None
            yield body.get("items") or [], rv
            if token is None:
                return

    def watch(
        self,
        kind: str,
        namespace: str | None,
        resource_version: str,
        *,
        timeout_seconds: int,
        selector: str | None = None,
    ) -> WatchStream:
        """Raw watch events ({type, object}) from `resource_version` until the server ends
        the watch or `abort()` is called. Errors are raised translated; a 410 arrives as an
        ERROR event. The request is sent when the iteration starts."""
        path = path_of(kind, namespace)
        query = {
            "labelSelector": selector or managed_selector(),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
            **({"resourceVersion": resource_version} if resource_version else {}),
        }

        def open_response() -> Any:
            return self.rest.request("GET", path, query=query, timeout=(self.timeout, timeout_seconds + self.timeout))

        return WatchStream(open_response, on_open=lambda: self.signals.emit(KubeRequest("watch", 200, 0.0)))


class WatchStream:
    """One watch request's events. `abort()`, from any thread, ends the iteration at once:
    it shuts the socket down under a read that would otherwise block until the server's
    next event or the end of the watch (minutes), so stopping many watches takes no time."""

    def __init__(self, open_response: Callable[[], Any], *, on_open: Callable[[], None]) -> None:
        self._open = open_response
        self._on_open = on_open
        self._mutex = threading.Lock()
        self._response: Any = None
        self._aborted = False

    def abort(self) -> None:
        with self._mutex:
            self._aborted = True
            response = self._response
        if response is not None:
            try:
                response.shutdown()  # urllib3: the blocked read in the other thread returns
            except (OSError, ValueError, RuntimeError):  # already closed or released
                pass

    def __iter__(self) -> Iterator[dict]:
        if self._aborted:
            return
        try:
            response = self._open()
        except Exception as e:
            raise kube_error_from(e) from e
        with self._mutex:
            self._response = response
            aborted = self._aborted
        self._on_open()
        buffer = b""
        complete = False
        try:
            if aborted:
                return
            for chunk in response.stream(amt=None, decode_content=False):
                *lines, buffer = (buffer + chunk).split(b"\n")  # one copy a chunk, not one per event
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            complete = not self._aborted
        except Exception as e:
            if self._aborted:
                return  # the read we cut short
            raise kube_error_from(e) from e
        finally:
            if complete:
                response.release_conn()
            else:
                response.close()  # read halfway (aborted, or the caller stopped): not back into the pool


def _json(response: Any) -> Any:
    """The body of a `_preload_content=False` response (urllib3's, whatever the stubs say).
    Called inside `call`, so a garbled body is translated like any other API error."""
    return orjson.loads(response.data)


def _drain(response: Any) -> None:
    """Read a `_preload_content=False` response whose body we do not need: the client's
    model objects for a whole Job cost more CPU than the request (a finalizer patch per Job).
    Read to its end, so its connection goes back to the pool."""
    _ = response.data


def _code_of(verb: str) -> int:
    return 201 if verb == "create" else 200
