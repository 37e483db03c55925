"""Election with every candidate in its own OS process, on a real Redis and a real Lease.

Timings are short (lease 3 s, renew deadline 2 s, retry 0.5 s). Each candidate appends its
elector's status to a file every 50 ms and on every callback, with CLOCK_MONOTONIC times that
all processes on the machine share; see `election_candidate.py`.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.election_candidate import (
    Candidate,
    assert_no_overlap,
    leaders,
    tenures,
)
from tests.support.ports import wait_for

LEASE, RENEW, RETRY = 3.0, 2.0, 0.5

pytestmark = pytest.mark.slow


@dataclass
class Backend:
    kind: str
    lock_args: list[str]
    request_timeout: float
    stop_server: Callable[[], None]
    start_server: Callable[[], None]
    restart_timeout: float


@pytest.fixture(scope="module")
def kube(own_kube):
    """The outage test stops the kube-apiserver: this module gets a bed of its own (and its
    namespaces are made there)."""
    return own_kube


@pytest.fixture(params=["redis", pytest.param("lease", marks=pytest.mark.kube)])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        server = request.getfixturevalue("private_redis")  # its own server: tests stop it
        return Backend(
            "redis",
            ["--lock", "redis", "--redis-url", server.url, "--name", f"ksr-leader-{uuid.uuid4().hex[:6]}"],
            0.5,
            server.stop,
            server.start,
            10.0,
        )
    kube = request.getfixturevalue("kube")
    ns = request.getfixturevalue("namespace")
    return Backend(
        "lease",
        ["--lock", "lease", "--kubeconfig", kube.kubeconfig, "--namespace", ns, "--name", "ksr-leader"],
        1.0,
        kube.stop_apiserver,
        kube.start_apiserver,
        90.0,
    )


@pytest.fixture
def spawn(backend: Backend, tmp_path: Path) -> Iterator[Callable[[str], Candidate]]:
    started: list[Candidate] = []

    def start(identity: str) -> Candidate:
        c = Candidate.make(
            identity,
            tmp_path,
            backend.lock_args,
            lease=LEASE,
            renew=RENEW,
            retry=RETRY,
            request_timeout=backend.request_timeout,
        ).start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.close()


def start_three(spawn: Callable[[str], Candidate]) -> list[Candidate]:
    cands = [spawn(f"c{i}") for i in range(1, 4)]
    wait_for(lambda: all(c.lines("ready") for c in cands), timeout=60, what="candidates started")
    return cands


def one_leader(cands: list[Candidate], *, timeout: float = 30.0) -> Candidate:
    def single() -> Candidate | None:
        now = leaders(cands)
        return now[0] if len(now) == 1 else None

    return wait_for(single, timeout=timeout, what="exactly one leader")


def three_with_a_leader(spawn: Callable[[str], Candidate]) -> tuple[list[Candidate], Candidate, list[Candidate]]:
    """Three candidates once one of them leads: all of them, the leader, the other two."""
    cands = start_three(spawn)
    leader = one_leader(cands)
    return cands, leader, [c for c in cands if c is not leader]


def first_start_after(cands: list[Candidate], t: float) -> dict | None:
    rows = [r for c in cands if (r := c.started_after(t))]
    return min(rows, key=lambda r: r["at"]) if rows else None


def failed_with_logs(cands: list[Candidate]) -> str:
    return "\n".join(f"--- {c.identity}\n{c.log_text()[-3000:]}" for c in cands)


def test_never_two_leaders_at_one_instant(backend: Backend, spawn: Callable[[str], Candidate]) -> None:
    """30 s of sampling every 50 ms, with the leader frozen, released and killed on the way so
    that leadership changes hands several times; tenures never overlap."""
    cands = start_three(spawn)
    t0 = time.monotonic()
    everyone = list(cands)

    leader = one_leader(cands)
    leader.signal(signal.SIGSTOP)  # frozen past its lease: someone else takes over
    stopped_at = time.monotonic()
    wait_for(
        lambda: first_start_after([c for c in cands if c is not leader], stopped_at),
        timeout=LEASE + 10,
        what="takeover from a frozen leader",
    )
    leader.signal(signal.SIGCONT)

    leader = one_leader(cands)
    leader.terminate()  # releases
    cands.remove(leader)
    cands.append(spawn("c4"))
    everyone.append(cands[-1])

    leader = one_leader(cands)
    leader.signal(signal.SIGKILL)
    leader.proc.wait()  # type: ignore[union-attr]
    cands.remove(leader)
    one_leader(cands, timeout=LEASE + 10)

    wait_for(lambda: all(c.last()["at"] >= t0 + 30 for c in cands), timeout=60, what="30 s of samples")
    for c in cands:
        samples = [r for r in c.lines("sample") if r["at"] >= t0]
        gaps = [b["at"] - a["at"] for a, b in zip(samples, samples[1:])]
        assert len(samples) >= 300 and sorted(gaps)[len(gaps) // 2] < 0.1, f"{c.identity} sampled too rarely"

    spans = assert_no_overlap(everyone)
    assert len({(s.identity, s.term) for s in spans}) >= 4, spans
    terms = [s.term for s in spans]
    assert terms == sorted(terms) and len(set(terms)) == len(terms), f"terms must increase: {spans}"


def test_sigkill_the_leader_another_leads_within_lease_plus_retry(
    backend: Backend, spawn: Callable[[str], Candidate]
) -> None:
    cands, leader, others = three_with_a_leader(spawn)
    term = leader.last()["tenure_term"]  # type: ignore[index]

    killed_at = time.monotonic()
    leader.signal(signal.SIGKILL)
    row = wait_for(
        lambda: first_start_after(others, killed_at), timeout=LEASE + RETRY + 10, what="a new leader after SIGKILL"
    )
    took = row["at"] - killed_at
    print(f"{backend.kind}: failover after SIGKILL {took:.2f}s")
    assert took <= LEASE + RETRY + 1, f"failover took {took:.2f}s\n{failed_with_logs(cands)}"
    assert row["started_term"] > term
    assert_no_overlap(cands)


def test_sigterm_the_leader_releases_and_another_leads_within_a_retry(
    backend: Backend, spawn: Callable[[str], Candidate]
) -> None:
    cands, leader, others = three_with_a_leader(spawn)

    termed_at = time.monotonic()
    assert leader.terminate() == 0
    exit_row = leader.last()
    assert exit_row is not None and exit_row["kind"] == "exit" and exit_row["released"]
    row = wait_for(lambda: first_start_after(others, termed_at), timeout=RETRY + 10, what="a new leader after SIGTERM")
    took = row["at"] - termed_at
    print(f"{backend.kind}: handover after SIGTERM {took:.2f}s")
    assert took <= RETRY + 1, f"handover took {took:.2f}s\n{failed_with_logs(cands)}"
    assert_no_overlap(cands)


def test_server_outage_leader_stops_leading_in_time_and_election_resumes(
    backend: Backend, spawn: Callable[[str], Candidate]
) -> None:
    cands, leader, _ = three_with_a_leader(spawn)
    term_before = leader.last()["tenure_term"]  # type: ignore[index]
    pids = [c.pid for c in cands]

    down_at = time.monotonic()
    backend.stop_server()
    wait_for(
        lambda: any(r["at"] > down_at and not r["leading"] for r in leader.lines("sample")),
        timeout=RENEW + 5,
        what="the leader to report not leading",
    )
    first_not_leading = min(r["at"] for r in leader.lines("sample") if r["at"] > down_at and not r["leading"])
    assert first_not_leading - down_at <= RENEW + 1, f"still leading {first_not_leading - down_at:.2f}s into the outage"
    # The sampler can see the flag down before the callback, which runs just after, has written
    wait_for(lambda: leader.lines("stopped"), timeout=2, what="on_stopped_leading to be called")
    assert not leaders(cands), "nobody may lead while the server is down"

    backend.start_server()  # returns once the server answers (the apiserver: once ready)
    wait_for(
        lambda: first_start_after(cands, down_at),
        timeout=LEASE + 10,
        what="election to resume after the server came back",
    )
    one_leader(cands)
    assert [c.pid for c in cands] == pids and all(c.alive() for c in cands), "no candidate was restarted"
    row = first_start_after(cands, down_at)
    assert row is not None and row["started_term"] > term_before, (
        "terms keep increasing, even when Redis lost the record"
    )
    assert_no_overlap(cands)


def test_sigstop_the_leader_past_its_lease_its_fencing_check_fails_on_waking(
    backend: Backend, spawn: Callable[[str], Candidate]
) -> None:
    cands, leader, others = three_with_a_leader(spawn)
    old_term = leader.last()["tenure_term"]  # type: ignore[index]

    frozen_at = time.monotonic()
    leader.signal(signal.SIGSTOP)
    last_renew = max(r["last_renew"] for r in leader.lines() if r["at"] < frozen_at and r["last_renew"])
    row = wait_for(
        lambda: first_start_after(others, frozen_at), timeout=LEASE + 10, what="another candidate to take over"
    )
    # it waited out the whole lease after the frozen leader's last renew (a later renew that
    # no sample showed would only make this bound tighter)
    assert row["since"] >= last_renew + LEASE, (row, last_renew)
    new_leader = next(c for c in others if c.identity == row["identity"])
    woken_at = time.monotonic()
    leader.signal(signal.SIGCONT)

    wait_for(
        lambda: [r for r in leader.lines() if r["at"] > woken_at and r["kind"] == "sample"],
        timeout=10,
        what="the old leader to run again",
    )
    wait_for(lambda: leader.lines("stopped"), timeout=RENEW + 5, what="the old leader to step down")
    after = [r for r in leader.lines() if r["at"] >= woken_at]
    assert after and not any(r["leading"] for r in after), (
        f"old leader passed its fencing check after waking: {[r for r in after if r['leading']][:3]}"
    )
    assert row["started_term"] > old_term
    assert new_leader.leading_now()
    assert_no_overlap(cands)
    assert [s.identity for s in tenures(cands)][-2:] == [leader.identity, new_leader.identity]


def test_the_overlap_check_is_not_vacuous(tmp_path: Path) -> None:
    """The harness itself: two candidates whose lines claim overlapping tenures are caught."""
    import json

    def write(identity: str, rows: list[dict]) -> Candidate:
        c = Candidate(identity=identity, out=tmp_path / f"{identity}.jsonl", argv=[])
        c.out.write_text("".join(json.dumps({"kind": "sample", "identity": identity, **r}) + "\n" for r in rows))
        return c

    a = write("a", [{"at": 10.0, "leading": True, "tenure_term": 1, "since": 9.0, "until": 12.0}])
    b = write("b", [{"at": 11.5, "leading": True, "tenure_term": 2, "since": 11.0, "until": 13.0}])
    with pytest.raises(AssertionError, match="overlapping tenures"):
        assert_no_overlap([a, b])
    b_later = write("b", [{"at": 12.5, "leading": True, "tenure_term": 2, "since": 12.0, "until": 14.0}])
    assert len(assert_no_overlap([a, b_later])) == 2
