"""The Runner builds nothing: made from hand-made collaborators, with no Redis and no
apiserver, its loop takes over in the order DESIGN "Takeover" gives, dispatches what it
reads in its term, and steps down when the elector stops leading."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from election.clock import FakeClock
from election.elector import ElectorStatus
from runner.pipeline.loop import Runner, Tenure
from runner.settings import Settings
from runner.signals import Leadership, Signal, Signals
from runner.store.streams import Entry

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})
ENTRY = Entry("ksr:jobs:default", "1-0", {b"payload": b"{}"}, 1, False)


class Calls:
    """One list of what every fake was asked, in order, across all of them."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def fake(self, name: str, **answers: Any) -> Any:
        calls = self

        class Fake:
            def __getattr__(self, method: str) -> Callable[..., Any]:
                def call(*args: Any, **kwargs: Any) -> Any:
                    calls.log.append(f"{name}.{method}")
                    answer = answers.get(method)
                    return answer(*args, **kwargs) if callable(answer) else answer

                return call

        return Fake()


class Elector:
    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.term: int | None = None  # leading in it while set
        self.leader: str | None = None

    def status(self) -> ElectorStatus:
        leading = self.term is not None
        return ElectorStatus(
            identity=self.identity,
            at=0.0,
            leading=leading,
            believes_leading=leading,
            healthy=True,
            term=self.term,
            leader=self.identity if leading else None,
            tenure_term=self.term,
            since=None,
            until=None,
            last_renew=None,
            last_error=None,
        )

    def holds_term(self, term: int) -> bool:
        return self.term == term

    def run(self, stop: threading.Event) -> None:
        stop.wait()


def runner(calls: Calls, elector: Elector, seen: list[Signal]) -> tuple[Runner, Tenure, list[Any]]:
    tenure = Tenure()
    batches: list[Any] = []
    r = Runner(
        settings=SETTINGS,
        clock=FakeClock(),
        signals=Signals([seen.append]),
        redis_client=calls.fake("redis", scard=0),
        reader=calls.fake("reader", take_over=2, read_batch=lambda keep_going: [ENTRY] if keep_going() else []),
        inspection=calls.fake("inspection", stats={}),
        state=calls.fake("state", advance_term=lambda term: term),
        callbacks=calls.fake("callbacks", sweep=0),
        waiting=calls.fake("waiting", due=[]),
        tracker=calls.fake("tracker"),
        tenure=tenure,
        capacity=threading.Event(),
        executor=calls.fake("executor"),
        watcher=calls.fake("watcher"),
        local=None,
        elector=elector,  # type: ignore[arg-type]
        scheduler=calls.fake("scheduler"),
        dispatcher=calls.fake("dispatcher", process_batch=lambda entries, term, **kw: batches.append((entries, term))),
    )
    return r, tenure, batches


def test_a_runner_of_hand_made_parts_takes_over_dispatches_and_steps_down() -> None:
    calls, elector, seen = Calls(), Elector("r0"), []
    r, tenure, batches = runner(calls, elector, seen)
    stop = threading.Event()

    r._tick(stop)  # following: nothing is asked of the pipeline's parts
    assert (calls.log, r.term, tenure.term) == ([], None, None)

    elector.term = 7
    r._tick(stop)
    takeover = calls.log[: calls.log.index("scheduler.start") + 1]
    assert takeover == [
        "state.advance_term",  # the stored term fenced first
        "reader.ensure_groups",
        "reader.take_over",  # (a) pending reclaimed
        "watcher.reconcile",  # (b) active set against the Jobs
        "callbacks.sweep",  # (c) owed callbacks
        "watcher.start",
        "scheduler.start",
    ]
    assert (r.term, tenure.term) == (7, 7)  # the tracker's tenure is the runner's
    assert batches == [([ENTRY], 7)]
    assert any(isinstance(s, Leadership) and s.leading and s.term == 7 for s in seen)

    calls.log.clear()
    elector.term = None  # the lease lost
    r._tick(stop)
    assert calls.log == ["scheduler.stop", "watcher.stop"]
    assert (r.term, tenure.term) == (None, 7)  # late writes of term 7 stay fenced by it
