"""One election candidate in its own OS process, and the test-side handle on it.

As a script it runs an `Elector` on a Redis or Lease lock and appends JSON lines to `--out`:
a `sample` every `--sample` seconds and one line per callback, each carrying the elector's
status snapshot (`ElectorStatus`: `at`, `leading`, `tenure_term`, `since`, `until`, ...).
All times are CLOCK_MONOTONIC, which every process on the machine shares, so the test can
lay the candidates' tenures side by side. SIGTERM stops the elector (which releases the lock)
and exits 0.

    python tests/support/election_candidate.py --lock redis --redis-url redis://... \
        --name ksr-leader --identity c1 --lease 3 --renew 2 --retry 0.5 --out c1.jsonl

As a module it gives the tests `Candidate` (start, signal, read its lines) and `tenures` /
`assert_no_overlap` for the "never two leaders at one instant" check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve()


# --------------------------------------------------------------------------- the process


def _main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from election.config import ElectionConfig
    from election.elector import Elector

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lock", choices=["redis", "lease"], required=True)
    p.add_argument("--redis-url")
    p.add_argument("--kubeconfig")
    p.add_argument("--namespace", default="default")
    p.add_argument("--name", default="ksr-leader")
    p.add_argument("--identity", required=True)
    p.add_argument("--lease", type=float, default=3.0)
    p.add_argument("--renew", type=float, default=2.0)
    p.add_argument("--retry", type=float, default=0.5)
    p.add_argument("--request-timeout", type=float, default=None)
    p.add_argument("--sample", type=float, default=0.05)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("KSR_ELECTION_DEBUG") else logging.INFO,
        format=f"%(asctime)s {args.identity} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = ElectionConfig(
        lease_duration=args.lease, renew_deadline=args.renew, retry_period=args.retry, lock_name=args.name
    )
    timeout = args.request_timeout or config.request_timeout
    if args.lock == "redis":
        from election.redis_lock import RedisLock

        lock: Any = RedisLock.from_url(args.redis_url, name=args.name, request_timeout=timeout)
    else:
        from election.lease_lock import LeaseLock, api_client_from_kubeconfig

        lock = LeaseLock(
            api_client_from_kubeconfig(args.kubeconfig),
            namespace=args.namespace,
            name=args.name,
            request_timeout=timeout,
        )

    out = open(args.out, "a", buffering=1)
    write_lock = threading.Lock()
    elector: Elector

    def emit(kind: str, **extra: Any) -> None:
        line = {"kind": kind, "pid": os.getpid(), **dataclasses.asdict(elector.status()), **extra}
        with write_lock:
            out.write(json.dumps(line) + "\n")

    elector = Elector(
        lock,
        identity=args.identity,
        config=config,
        on_started_leading=lambda term: emit("started", started_term=term),
        on_stopped_leading=lambda: emit("stopped"),
        on_new_leader=lambda who: emit("new_leader", new_leader=who),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=elector.run, args=(stop,), name="elector", daemon=True)
    thread.start()
    emit("ready")
    while not stop.wait(args.sample):
        emit("sample")
    thread.join(timeout=args.renew + 5)
    emit("exit", released=not thread.is_alive())
    out.close()
    return 0


# --------------------------------------------------------------------------- the test side


@dataclasses.dataclass
class Candidate:
    """A candidate process started by a test. `lines()` re-reads its output file."""

    identity: str
    out: Path
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @classmethod
    def make(
        cls,
        identity: str,
        directory: Path,
        lock_args: list[str],
        *,
        lease: float,
        renew: float,
        retry: float,
        request_timeout: float | None = None,
    ) -> Candidate:
        out = directory / f"{identity}.jsonl"
        argv = [
            sys.executable,
            str(SCRIPT),
            *lock_args,
            "--identity",
            identity,
            "--lease",
            str(lease),
            "--renew",
            str(renew),
            "--retry",
            str(retry),
            "--out",
            str(out),
        ]
        if request_timeout is not None:
            argv += ["--request-timeout", str(request_timeout)]
        return cls(identity=identity, out=out, argv=argv)

    def start(self) -> Candidate:
        self.log = open(self.out.with_suffix(".log"), "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case the test left it stopped
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def lines(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        text = self.out.read_text()
        complete = text[: text.rfind("\n") + 1]
        rows = [json.loads(line) for line in complete.splitlines() if line]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def last(self) -> dict[str, Any] | None:
        rows = self.lines()
        return rows[-1] if rows else None

    def leading_now(self, *, fresh: float = 0.5) -> bool:
        """Its latest line says it leads, and that line is recent (a stopped or killed
        process's last line would otherwise say so forever)."""
        row = self.last()
        return bool(row and row["leading"] and time.monotonic() - row["at"] < fresh)

    def started_after(self, t: float) -> dict[str, Any] | None:
        """Its first `started` line after monotonic time `t`."""
        for row in self.lines("started"):
            if row["at"] > t:
                return row
        return None

    def log_text(self) -> str:
        path = self.out.with_suffix(".log")
        return path.read_text(errors="replace") if path.exists() else ""


@dataclasses.dataclass(frozen=True)
class Tenure:
    identity: str
    term: int
    since: float
    until: float


def tenures(candidates: Iterable[Candidate]) -> list[Tenure]:
    """Each candidate's tenures as [since, until] on the monotonic clock, from its lines.

    `since` is when the winning request was sent (is_leading() cannot be true before);
    `until` is taken from the tenure's *latest* line: the end of is_leading() as known then
    (the step-down moment once it stepped down). A killed process's last line stands."""
    result: list[Tenure] = []
    for c in candidates:
        latest: dict[tuple[int, float], dict[str, Any]] = {}
        for row in c.lines():
            if row["since"] is None or row["tenure_term"] is None:
                continue
            key = (row["tenure_term"], row["since"])
            if key not in latest or row["at"] >= latest[key]["at"]:
                latest[key] = row
        for (term, since), row in latest.items():
            result.append(Tenure(c.identity, term, since, row["until"]))
    return sorted(result, key=lambda t: t.since)


def assert_no_overlap(candidates: list[Candidate]) -> list[Tenure]:
    """No instant at which two candidates could both pass is_leading(); also every sample
    that said `leading` lies inside its own tenure."""
    spans = tenures(candidates)
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if a.identity != b.identity:
                assert a.until <= b.since or b.until <= a.since, f"overlapping tenures: {a} and {b}"
    for c in candidates:
        own = [t for t in spans if t.identity == c.identity]
        for row in c.lines():
            if row["leading"]:
                assert any(t.since <= row["at"] < t.until for t in own), f"leading sample outside a tenure: {row}"
    return spans


def leaders(candidates: Iterable[Candidate], *, fresh: float = 0.5) -> list[Candidate]:
    return [c for c in candidates if c.alive() and c.leading_now(fresh=fresh)]


if __name__ == "__main__":
    sys.exit(_main())
