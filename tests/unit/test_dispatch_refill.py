"""Dispatcher.process_batch with a refill: a create thread that frees up takes the next
entries while a slow create of the batch goes on; entries of one message still go one after
the other; the refill's budget and deadline bound what it reads."""

from __future__ import annotations

import json
import threading
from typing import Any

from election.clock import FakeClock
from runner.pipeline.dispatcher import Dispatcher, Refill
from runner.settings import Settings
from runner.signals import Signals
from runner.store.streams import Entry
from runner.store.waiting import Waiting
from tests.support.ports import wait_for

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns", "QUEUE_WORKER_POOL_SIZE": "4"})


def entry(n: int, message_id: str | None = None) -> Entry:
    payload = json.dumps({"id": message_id or f"m{n}"}).encode()
    return Entry("ksr:jobs:default", f"{n + 1}-0", {b"payload": payload}, 1, False)


class Waits:
    def member(self, e: Entry) -> str:
        return e.entry_id


class Recording(Dispatcher):
    """`process` records what runs when, and holds the entries named in `hold` until released."""

    def __init__(self, hold: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__(
            redis_client=None,  # type: ignore[arg-type]
            reader=None,  # type: ignore[arg-type]
            state=None,  # type: ignore[arg-type]
            executor=None,  # type: ignore[arg-type]
            tracker=None,  # type: ignore[arg-type]
            settings=SETTINGS,
            holds_term=lambda term: True,
            signals=Signals([]),
            waiting=Waits(),  # type: ignore[arg-type]
        )
        self.hold = hold
        self.release = threading.Event()
        self.releases = {entry_id: threading.Event() for entry_id in hold}  # per entry, besides `release`
        self.started: list[str] = []
        self.ended: list[str] = []
        self._lock = threading.Lock()

    def process(self, e: Entry, term: int, *, waited: Waiting | None = None) -> str:
        with self._lock:
            self.started.append(e.entry_id)
        if e.entry_id in self.hold:
            assert wait_for(lambda: self.release.is_set() or self.releases[e.entry_id].is_set(), timeout=10)
        with self._lock:
            self.ended.append(e.entry_id)
        return "dispatched"


def refill_of(batches: list[list[Entry]], *, budget: int = 1000, until: float = float("inf"), **kw: Any) -> Refill:
    it = iter(batches)
    return Refill(read=lambda: next(it, []), budget=budget, until=until, **kw)


def test_free_threads_take_the_next_entries_while_a_slow_create_goes_on() -> None:
    d = Recording(hold={"1-0"})
    try:
        first = [entry(n) for n in range(4)]
        more = [[entry(n) for n in range(4, 8)], [entry(n) for n in range(8, 12)]]
        result: dict[str, int] = {}
        batch = threading.Thread(target=lambda: result.update(d.process_batch(first, 1, refill=refill_of(more))))
        batch.start()
        # Entries 1..11 all end while entry 0 (id 1-0) is still held: nobody waits for it.
        wait_for(lambda: len(d.ended) == 11, timeout=10, what="11 entries done")
        assert sorted(d.ended, key=lambda i: int(i.split("-")[0])) == [f"{n + 1}-0" for n in range(1, 12)]
        assert batch.is_alive(), "process_batch returned before its held entry ended"
        d.release.set()
        batch.join(10)
        assert result == {"dispatched": 12}
    finally:
        d.release.set()
        d.close()


def test_an_entry_of_a_message_in_flight_waits_for_it() -> None:
    d = Recording(hold={"1-0"})
    try:
        first = [entry(0, "same"), entry(1)]
        more = [[entry(2, "same"), entry(3)]]
        batch = threading.Thread(target=d.process_batch, args=(first, 1), kwargs={"refill": refill_of(more)})
        batch.start()
        wait_for(lambda: "4-0" in d.ended, timeout=10, what="entry 4-0 done")
        assert "4-0" in d.ended and "3-0" not in d.started, "the second entry of 'same' ran beside the first"
        d.release.set()
        batch.join(10)
        assert d.started.index("3-0") > d.ended.index("1-0")
    finally:
        d.release.set()
        d.close()


def test_the_refill_stops_at_its_budget_and_its_deadline() -> None:
    d = Recording()
    try:
        batches = [[entry(n) for n in range(k, k + 4)] for k in range(4, 40, 4)]
        assert d.process_batch([entry(n) for n in range(4)], 1, refill=refill_of(batches, budget=6)) == {
            "dispatched": 12  # 4, then reads of 4 until the budget of 6 is spent (4 + 4)
        }
        clock = FakeClock(start=0.0)
        late = refill_of(batches[3:], until=1.0, clock=clock)
        clock.advance(2.0)
        assert d.process_batch([entry(n) for n in range(100, 104)], 1, refill=late) == {"dispatched": 4}
    finally:
        d.close()


def test_an_entry_that_arrives_after_an_empty_read_waits_for_one_create_not_all() -> None:
    d = Recording(hold={"1-0", "2-0"})
    try:
        first = [entry(0), entry(1), entry(2)]
        reads = [[], [entry(3)]]  # nothing at the first read (after 3-0 ends), then 4-0
        batch = threading.Thread(target=d.process_batch, args=(first, 1), kwargs={"refill": refill_of(reads)})
        batch.start()
        wait_for(lambda: "3-0" in d.ended, timeout=10, what="entry 3-0 done")
        d.releases["1-0"].set()  # one create ends: the next read finds 4-0
        wait_for(lambda: "4-0" in d.ended, timeout=10, what="entry 4-0 done while 2-0 is still in flight")
        assert "2-0" not in d.ended
        d.release.set()
        batch.join(10)
    finally:
        d.release.set()
        d.close()
