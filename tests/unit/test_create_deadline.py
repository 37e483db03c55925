"""The create's retry budget (CREATE_DEADLINE) is judged on the clock the Kubernetes API
retries on: with the API on a FakeClock, an apiserver answering 503 is retried for
CREATE_DEADLINE fake seconds, then the entry waits. A deadline read from another clock than
the one it is compared with retries forever (or not at all) once the clocks disagree."""

from __future__ import annotations

import json
import random
from typing import Any

from kubernetes.client.exceptions import ApiException

from election.clock import FakeClock
from runner.jobs.executors import KubernetesExecutor
from runner.jobs.kube import KubeApi
from runner.lifecycle import DispatchOutcome
from runner.message import Message
from runner.pipeline.dispatcher import CREATE_DEADLINE, Dispatcher
from runner.settings import Settings
from runner.signals import Signals
from runner.store.state import ClaimResult, ClaimStatus
from runner.store.streams import Entry
from runner.store.waiting import Waiting
from tests.support.messages import message

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})
MAX_ATTEMPTS = 200  # far more than CREATE_DEADLINE allows at the backoff's cap


class Unavailable:
    """The apiserver's requests (runner.jobs.rest.Rest), answering every create 503."""

    def __init__(self) -> None:
        self.creates = 0

    def request(self, method: str, path: str, **kw: Any) -> Any:
        assert method == "POST", method
        self.creates += 1
        raise ApiException(status=503, reason="Service Unavailable")


class Claims:
    """The state store's claim: always new; the fence always passes."""

    def claim(self, message_id: str, **kw: Any) -> ClaimResult:
        return ClaimResult(ClaimStatus.NEW, None)  # type: ignore[arg-type]

    def fence(self, term: int) -> None:
        pass


class WaitRecorder(Dispatcher):
    """The dispatcher, with the refused create's wait recorded instead of stored."""

    def __init__(self, executor: KubernetesExecutor, batch: Unavailable) -> None:
        super().__init__(
            redis_client=None,  # type: ignore[arg-type]
            reader=None,  # type: ignore[arg-type]
            state=Claims(),  # type: ignore[arg-type]
            executor=executor,
            tracker=None,  # type: ignore[arg-type]
            settings=SETTINGS,
            holds_term=lambda term: batch.creates < MAX_ATTEMPTS,  # a leader that never stops retrying
            signals=Signals([]),
            waiting=None,  # type: ignore[arg-type]
        )
        self.waits: list[str] = []

    def _wait(self, entry: Entry, message: Message, words: str, term: int, waited: Waiting | None, **kw: Any) -> Any:
        self.waits.append(words)
        return DispatchOutcome.WAITING


def test_a_create_retries_for_the_deadline_on_the_api_clock_then_waits() -> None:
    clock = FakeClock(start=0.0)  # far from the host's monotonic seconds, either way
    batch = Unavailable()
    api = KubeApi(object(), timeout=1, signals=Signals([]), clock=clock, rng=random.Random(7))  # type: ignore[arg-type]
    api.rest = batch  # type: ignore[assignment]
    d = WaitRecorder(KubernetesExecutor(api, SETTINGS), batch)
    try:
        payload = json.dumps(message("m1", "ns")).encode()
        entry = Entry("ksr:jobs:default", "1-0", {b"payload": payload}, 1, False)
        outcome = d.process(entry, 1)
    finally:
        d.close()
    assert 1 < batch.creates < MAX_ATTEMPTS, f"{batch.creates} create attempts"
    assert 0 < sum(clock.sleeps) <= CREATE_DEADLINE, f"retried for {sum(clock.sleeps):.2f} fake seconds"
    assert d.waits and "503" in d.waits[0], d.waits
    assert outcome == DispatchOutcome.WAITING
