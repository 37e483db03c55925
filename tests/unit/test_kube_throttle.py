"""The runner's pacing of its Kubernetes requests (runner/jobs/throttle.py), on a fake clock:
the token bucket, creates taking tokens after every other verb, the apiserver's 429 closing
one class of requests for its Retry-After and then letting one request through at a time,
and KubeApi.call's use of both (a stub request stands in for the apiserver)."""

from __future__ import annotations

from typing import Any

import pytest

from election.clock import FakeClock
from runner.errors import KubeTransientError
from runner.jobs.kube import KubeApi
from runner.jobs.throttle import CALM_FACTOR, PROBE_POLL, KubeThrottle, ServerGate, Stopped, TokenBucket
from runner.process.statusboard import THROTTLE_SHOWN, StatusBoard, degraded_reasons, read_status
from runner.signals import KubeThrottled, Signal, Signals


def too_many(retry_after: float | None = 1.0) -> KubeTransientError:
    return KubeTransientError(429, "TooManyRequests", "Too many requests", retry_after=retry_after)


class Recorder:
    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def __call__(self, signal: Signal) -> None:
        self.signals.append(signal)

    def throttled(self) -> list[tuple[str, str, float]]:
        return [(s.verb, s.source, round(s.seconds, 3)) for s in self.signals if isinstance(s, KubeThrottled)]


def api_on(clock: FakeClock, *, qps: float = 0, burst: int = 1) -> tuple[KubeApi, Recorder]:
    recorder = Recorder()
    signals = Signals([recorder], clock=clock)
    throttle = KubeThrottle(qps=qps, burst=burst, signals=signals, clock=clock)
    api = KubeApi(object(), timeout=1, signals=signals, clock=clock, throttle=throttle)  # type: ignore[arg-type]
    return api, recorder


class Requests:
    """A stand-in request: answers from a script and notes the fake time of each call."""

    def __init__(self, clock: FakeClock, *answers: Any) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.at: list[float] = []

    def __call__(self) -> Any:
        self.at.append(self.clock.monotonic())
        answer = self.answers.pop(0) if self.answers else "ok"
        if isinstance(answer, BaseException):
            raise answer
        return answer


# -- the token bucket -----------------------------------------------------------------------


def test_the_bucket_lets_a_burst_through_then_paces_at_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.try_take() == 0.0
    clock.advance(10)  # a long quiet spell saves `burst` tokens, no more
    assert [bucket.try_take() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_other_verbs_take_their_token_before_a_waiting_create() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.try_take() == 0.0  # a create empties the bucket
    assert bucket.try_take() == pytest.approx(1.0)  # the next create waits a second
    assert bucket.reserve() == pytest.approx(1.0)  # a patch arrives: it takes the next token
    clock.advance(1.0)
    assert bucket.try_take() == pytest.approx(1.0)  # the patch had it: the create waits on
    clock.advance(1.0)
    assert bucket.try_take() == 0.0


@pytest.mark.parametrize("qps, burst", [(0, 1), (-1, 1), (1, 0)])
def test_a_bucket_without_rate_or_room_is_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(qps, burst, clock=FakeClock())


def test_creates_through_the_client_limit_go_at_qps_and_say_so() -> None:
    clock = FakeClock()
    api, recorder = api_on(clock, qps=5, burst=2)
    request = Requests(clock)
    for _ in range(6):
        api.call("create", request)
    gaps = [round(b - a, 3) for a, b in zip(request.at, request.at[1:], strict=False)]
    assert gaps == [0.0, 0.2, 0.2, 0.2, 0.2]
    assert recorder.throttled() == [("create", "client", 0.2)] * 4


def test_a_create_out_of_time_for_a_token_is_refused_for_now_without_a_request() -> None:
    clock = FakeClock()
    api, _ = api_on(clock, qps=0.1, burst=1)
    request = Requests(clock)
    api.call("create", request)
    started = clock.monotonic()
    with pytest.raises(KubeTransientError, match="KSR_KUBE_QPS=0.1") as refused:
        api.call("create", request, retry_for=5)  # the next token is 10 s away
    assert refused.value.temporary and refused.value.reason == "ClientThrottled"
    assert len(request.at) == 1 and clock.monotonic() == started


# -- the apiserver's 429 --------------------------------------------------------------------


def test_a_429_closes_creates_for_its_retry_after_and_is_counted() -> None:
    clock = FakeClock()
    api, recorder = api_on(clock)
    request = Requests(clock, too_many(3), too_many(3), {"metadata": {}})
    assert api.call("create", request) == {"metadata": {}}
    assert [round(b - a, 3) >= 3 for a, b in zip(request.at, request.at[1:], strict=False)] == [True, True]
    assert recorder.throttled() == [("create", "server", 3.0), ("create", "server", 3.0)]


def test_a_429_on_creates_does_not_hold_back_the_finalizer_release_or_reads() -> None:
    clock = FakeClock()
    api, _ = api_on(clock)
    api.throttle.refused("create", too_many(30))
    started = clock.monotonic()
    for verb in ("patch", "get", "list", "delete"):
        assert api.call(verb, Requests(clock)) == "ok"
    assert clock.monotonic() == started  # none of them waited
    assert api.throttle.gate("create").throttled and not api.throttle.gate("patch").throttled


def test_a_create_whose_deadline_comes_before_the_retry_after_gets_the_429_without_a_request() -> None:
    clock = FakeClock()
    api, _ = api_on(clock)
    error = too_many(30)
    api.throttle.refused("create", error)
    request = Requests(clock)
    started = clock.monotonic()
    with pytest.raises(KubeTransientError) as refused:
        api.call("create", request, retry_for=10)
    assert refused.value is error and request.at == []
    assert clock.monotonic() == started  # raised at once, not after holding a thread 10 s


def test_a_create_waiting_on_the_gate_stops_when_its_caller_does() -> None:
    clock = FakeClock()
    api, _ = api_on(clock)
    api.throttle.refused("create", too_many(30))
    asked: list[float] = []

    def keep_going() -> bool:
        asked.append(clock.monotonic())
        return len(asked) < 5

    with pytest.raises(Stopped):
        api.call("create", Requests(clock), keep_going=keep_going)
    assert clock.monotonic() - asked[0] <= 1.0  # asked at least every 0.25 s


def test_a_429_without_retry_after_waits_a_second() -> None:
    clock = FakeClock()
    api, recorder = api_on(clock)
    api.call("create", Requests(clock, too_many(None)))
    assert recorder.throttled() == [("create", "server", 1.0)]


def test_after_the_retry_after_one_request_at_a_time_until_calm() -> None:
    clock = FakeClock()
    gate = ServerGate(clock=clock)
    gate.refused(2.0, too_many(2))
    assert gate.try_enter() == pytest.approx(2.0)
    clock.advance(2.0)
    assert gate.try_enter() == 0.0  # the probe
    assert gate.try_enter() == PROBE_POLL  # the next waits its turn
    gate.leave()
    assert gate.try_enter() == 0.0  # the probe went through: the next one goes
    clock.advance(CALM_FACTOR * 2.0)  # calm: no more 429s
    assert gate.try_enter() == 0.0 and gate.try_enter() == 0.0  # all at once again
    for _ in range(3):
        gate.leave()


# -- /status -----------------------------------------------------------------------------


def test_throttling_is_a_degraded_reason_until_it_stops(tmp_path: Any) -> None:
    clock = FakeClock()
    board = StatusBoard(tmp_path / "status.json", clock=clock, min_interval=0)
    for _ in range(12):
        board.record_throttled("create", "server", 1.0)
        clock.advance(0.5)
    board.record_throttled("patch", "client", 0.25)
    assert read_status(board.path, monotonic=clock.monotonic())["degraded"] == [
        "KSR_KUBE_QPS/KSR_KUBE_BURST pacing patches: 1 waited for a token in the last 60 s, the last 0.25 s",
        "kubernetes API throttling creates: 12 429s in the last 60 s, Retry-After 1 s",
    ]
    clock.advance(THROTTLE_SHOWN + 0.1)
    assert read_status(board.path, monotonic=clock.monotonic())["degraded"] == []
    assert degraded_reasons({}, clock.monotonic()) == []


def test_the_board_keeps_counts_per_second_not_one_entry_per_request(tmp_path: Any) -> None:
    clock = FakeClock()
    board = StatusBoard(tmp_path / "status.json", clock=clock, min_interval=0)
    for _ in range(2000):  # 100 paced requests a second for 20 s
        board.record_throttled("create", "client", 0.01)
        clock.advance(0.01)
    doc = read_status(board.path, monotonic=clock.monotonic())
    assert len(doc["kube_throttled"]["client:create"]["seconds_counts"]) <= 21
    assert doc["degraded"] == [
        "KSR_KUBE_QPS/KSR_KUBE_BURST pacing creates: 2000 waited for a token in the last 60 s, the last 0.01 s"
    ]
