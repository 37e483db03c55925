#!/usr/bin/env python3
"""Failover and handover times of the election, on the Redis lock and the Lease lock.

Three candidate processes (tests/support/election_candidate.py) compete. Each round lets
the candidates settle (a few retry periods and a random offset), finds the leader, then either SIGKILLs it (failover: the others must wait out the lease) or SIGTERMs
it (handover: it releases, the next retry takes over), measures until another candidate's
`on_started_leading` fired, and starts a replacement. Times are CLOCK_MONOTONIC, shared by
all processes on the machine.

    scripts/bench_election.py                     # Redis (own redis-server) and, with KUBECONFIG, the Lease
    scripts/bench_election.py --rounds 20 --lease 15 --renew 10 --retry 2
    KUBECONFIG=... scripts/bench_election.py --locks lease --namespace default

The Lease lock needs KUBECONFIG (e.g. from `scripts/kube-testenv up`); without it the Lease
lock is skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.election_candidate import Candidate, leaders  # noqa: E402
from tests.support.ports import wait_for  # noqa: E402


def one_leader(cands: list[Candidate], timeout: float) -> Candidate:
    def single() -> Candidate | None:
        now = leaders(cands)
        return now[0] if len(now) == 1 else None

    leader: Candidate = wait_for(single, timeout=timeout, what="exactly one leader")  # type: ignore[assignment]
    return leader


def run_rounds(kind: str, lock_args: list[str], sig: int, args: argparse.Namespace, workdir: Path) -> list[float]:
    counter = iter(range(1, 10_000))

    def spawn() -> Candidate:
        return Candidate.make(
            f"{kind}-{sig}-{next(counter)}",
            workdir,
            lock_args,
            lease=args.lease,
            renew=args.renew,
            retry=args.retry,
            request_timeout=args.request_timeout,
        ).start()

    cands = [spawn() for _ in range(3)]
    times: list[float] = []
    rng = random.Random()
    try:
        wait_for(lambda: all(c.lines("ready") for c in cands), timeout=60, what="candidates started")
        for n in range(args.rounds):
            leader = one_leader(cands, timeout=args.lease * 3 + 30)
            # Steady state: every candidate has been in the election for a few retry periods
            # plus a random offset, so the followers' retry phases are random with respect to
            # the signal (right after a takeover they are not: the newest candidate has just
            # made its first attempt).
            settle = 2 * args.retry * 1.2 + rng.uniform(0, args.retry * 1.2)
            joined = max(c.lines("ready")[0]["at"] for c in cands)
            wait_for(
                lambda: all((last := c.last()) and last["at"] >= joined + settle for c in cands),
                timeout=settle + 30,
                what="candidates settled",
            )
            others = [c for c in cands if c is not leader]
            t0 = time.monotonic()
            leader.signal(sig)
            if sig == signal.SIGKILL:
                leader.proc.wait()  # type: ignore[union-attr]

            def started() -> float | None:
                rows = [r for c in others if (r := c.started_after(t0))]
                return min(r["at"] for r in rows) if rows else None

            at: float = wait_for(started, timeout=args.lease * 3 + 30, what="a new leader")  # type: ignore[assignment]
            times.append(at - t0)
            print(f"  {kind:5} {signal.Signals(sig).name:7} round {n + 1:2}: {at - t0:6.3f} s", flush=True)
            leader.terminate()
            leader.close()
            cands = others + [spawn()]
            wait_for(lambda: cands[-1].lines("ready"), timeout=60, what="replacement started")
    finally:
        for c in cands:
            c.close()
    return times


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):6.3f} s   max {max(times):6.3f} s   (n={len(times)})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--locks", default="redis,lease", help="comma-separated: redis, lease")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--renew", type=float, default=2.0)
    p.add_argument("--retry", type=float, default=0.5)
    p.add_argument("--request-timeout", type=float, default=1.0)
    p.add_argument("--redis-url", help="use this Redis instead of starting a redis-server")
    p.add_argument("--namespace", default="default", help="namespace of the Lease (default: %(default)s)")
    args = p.parse_args()
    locks = [x.strip() for x in args.locks.split(",") if x.strip()]

    results: dict[tuple[str, str], list[float]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="ksr-bench-election-"))
    print(
        f"lease {args.lease:g} s, renew deadline {args.renew:g} s, retry {args.retry:g} s "
        f"(jitter up to x1.2), {args.rounds} rounds each; logs in {workdir}"
    )

    for kind in locks:
        server = None
        if kind == "redis":
            url = args.redis_url
            if url is None:
                from tests.support.redis_server import RedisServer

                server = RedisServer().start()
                url = server.url
            lock_args = ["--lock", "redis", "--redis-url", url]
        elif kind == "lease":
            kubeconfig = os.environ.get("KUBECONFIG")
            if not kubeconfig:
                print("lease: skipped, KUBECONFIG is not set (scripts/kube-testenv up prints one)")
                continue
            lock_args = ["--lock", "lease", "--kubeconfig", kubeconfig, "--namespace", args.namespace]
        else:
            p.error(f"unknown lock {kind!r}")
        try:
            for sig, label in ((signal.SIGKILL, "failover after SIGKILL"), (signal.SIGTERM, "handover after SIGTERM")):
                name = f"ksr-bench-{uuid.uuid4().hex[:6]}"  # a fresh lock per series
                results[(kind, label)] = run_rounds(kind, lock_args + ["--name", name], sig, args, workdir)
        finally:
            if server is not None:
                server.close()

    print()
    for (kind, label), times in results.items():
        print(f"{kind:5}  {label:24} {summary(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
