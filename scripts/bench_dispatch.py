#!/usr/bin/env python3
"""The real path (stream -> Job on the real apiserver) against its limit on this machine.

Starts its own redis-server and its own control plane (`bed.up(bench=True)`: the
controllers' client limits raised, so the bed is not the bottleneck), and one `ksr run`
leader (a real process tree: runner, gunicorn, RQ worker). Every time is taken in this
process from the Job's watch event (ADDED), so the baseline and the runner are measured
by the same observer; both create from processes of their own.

  (a) baseline: the same Jobs (the runner's manifests) created straight through the
      runner's client (`KubeApi`), QUEUE_WORKER_POOL_SIZE threads: the path's limit.
  (b) end to end: N messages XADDed up front; seconds until every Job exists.
  (c) latency XADD (or create call) -> Job ADDED, at fixed offered rates.
  (d) the leader's RSS while a 100,000-entry backlog drains; Redis bytes per finished message.
  (e) handover (SIGTERM of the leader, a standby, 3 namespaces watched) and failover (SIGKILL).

Phases are interleaved (base, ours, base, ours, ...) and medians printed; the (b)/(a)
ratio is the last line.

    scripts/bench_dispatch.py                       # everything, defaults below
    scripts/bench_dispatch.py --parts b --n 2000 --rounds 3
    scripts/bench_dispatch.py --parts c --rates 5,20,50 --seconds 30
    scripts/bench_dispatch.py --parts c --rates 20 --trace-creates   # where a latency goes

Each throughput phase prints the CPU per Job of every bed process and of the creator (the
baseline process, or the runner's whole pod): both sides keep the two cores busy, so the
ratio is the ratio of what each costs per Job.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

ANNOTATION = "kube-stream-runner/message-id"
STREAM = "ksr:jobs:default"


# -- the observer: a raw watch of Jobs, first ADDED time per message id ------------------
class JobWatch:
    """Watches Jobs in `namespace` (raw JSON, no model objects: cheap enough to keep up)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.batch = client.BatchV1Api(api_client)
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError(f"the watch of Jobs in {namespace} did not start")

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            if rv is None:
                listed = json.loads(self.batch.list_namespaced_job(self.namespace, _preload_content=False).data)
                rv = listed["metadata"]["resourceVersion"]
                now = time.time()
                for item in listed["items"]:
                    self._add(item, now)
            resp = self.batch.list_namespaced_job(
                self.namespace,
                watch=True,
                resource_version=rv,
                timeout_seconds=300,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
            self._ready.set()
            try:
                for line in resp:  # urllib3 yields chunks; split them into lines
                    for raw in line.splitlines():
                        if not raw.strip():
                            continue
                        event = json.loads(raw)
                        if event["type"] == "ERROR":
                            rv = None
                            break
                        rv = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] == "ADDED":
                            self._add(event["object"], time.time())
                    if self._stop.is_set():
                        break
            finally:
                resp.release_conn()

    def _add(self, job: dict[str, Any], at: float) -> None:
        mid = (job["metadata"].get("annotations") or {}).get(ANNOTATION)
        if mid:
            with self._lock:
                self.seen.setdefault(mid, at)

    def times(self, ids: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(i in self.seen for i in ids):
                    return {i: self.seen[i] for i in ids}
            time.sleep(0.02)
        with self._lock:
            missing = [i for i in ids if i not in self.seen]
        raise TimeoutError(f"{len(missing)} of {len(ids)} Jobs not seen after {timeout}s (e.g. {missing[:3]})")

    def close(self) -> None:
        self._stop.set()


# -- the baseline, in a process of its own ----------------------------------------------
def baseline_main(argv: list[str]) -> int:
    """`bench_dispatch.py _baseline NS POOL RATE COUNT`: reads message ids on stdin (one
    line, JSON), builds the runner's manifests, prints `ready`, waits for `go`, creates
    (all at once when RATE is 0, else at RATE per second) and prints each create's start and
    the CPU seconds it used from `go` on (its creates alone)."""
    namespace, pool, rate = argv[0], int(argv[1]), float(argv[2])
    from election.lease_lock import api_client_from_kubeconfig
    from runner.jobs.kube import KubeApi
    from runner.jobs.manifest import FINALIZER, build_job
    from runner.message import parse_entry
    from runner.settings import Settings
    from runner.signals import Signals
    from tests.support.messages import message

    ids = json.loads(sys.stdin.readline())
    settings = Settings.from_env(dict(os.environ))
    api = KubeApi(api_client_from_kubeconfig(), timeout=settings.kube.client_timeout, signals=Signals([]))
    manifests = []
    for i, mid in enumerate(ids):
        msg = parse_entry({b"payload": json.dumps(message(mid, namespace)).encode()})
        manifest = build_job(msg, settings, stream=STREAM, entry_id=f"{i + 1}-0")
        # Nobody here takes the runner's finalizer off again; creating with or without it costs the same.
        manifest["metadata"]["finalizers"] = [f for f in manifest["metadata"].get("finalizers", []) if f != FINALIZER]
        manifests.append((mid, manifest))
    print("ready", flush=True)
    sys.stdin.readline()
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_go = own.ru_utime + own.ru_stime
    started: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=pool) as workers:
        t0 = time.monotonic()
        futures = []
        for n, (mid, manifest) in enumerate(manifests):
            if rate:
                delay = t0 + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            started[mid] = time.time()
            futures.append(workers.submit(api.create_job, manifest, message_id=mid))
        for f in futures:
            f.result()
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"started": started, "creates_cpu": own.ru_utime + own.ru_stime - cpu_at_go}), flush=True)
    return 0


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, *, audit: bool = False) -> None:
        from benchcosts import OBSERVER_AGENT

        from testenv import bed as testbed
        from tests.support.redis_server import RedisServer

        self.args = args
        self.workdir = workdir
        self.redis_server = RedisServer().start()
        self.redis = self.redis_server.client()
        self.bed = testbed.up(
            workdir / "bed", progress=lambda m: print(f"  bed: {m}", flush=True), bench=True, audit=audit, owned=True
        )
        os.environ["KUBECONFIG"] = str(self.bed.kubeconfig)
        from kubernetes import client, config

        self.api_client = config.new_client_from_config(config_file=str(self.bed.kubeconfig))
        self.api_client.user_agent = OBSERVER_AGENT  # (r) tells this script's requests from the creators'
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.namespaces = {k: self._namespace(k) for k in ("base", "ours", "extra-1", "extra-2")}
        self.env = self._env()
        self.creates = workdir / "creates"  # --trace-creates: scripts/createtrace writes here
        if args.trace_creates:
            self.creates.mkdir()
            self.env.update(KSR_BENCH_CREATES=str(self.creates), PYTHONPATH=str(ROOT / "scripts" / "createtrace"))
        self.pods: list[Any] = []
        self.profiles = 0
        self.creates_cpu = 0.0  # the last baseline's CPU seconds from `go` on: its creates alone
        self.creates_ms: list[float] = []
        self.creator_ms: dict[str, list[float]] = {"base": [], "ours": []}  # per Job, each throughput phase
        self.bed_ms: dict[str, list[float]] = {"base": [], "ours": []}  # the bed's processes and Redis, per Job

    def _namespace(self, kind: str) -> str:
        from tests.support.ports import wait_for

        name = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        wait_for(lambda: self.core.read_namespaced_service_account("default", name), timeout=60, what="default SA")
        return name

    def _env(self, **extra: str) -> dict[str, str]:
        from tests.support.pipeline import base_env

        env = base_env(
            redis_url=self.redis_server.url,
            namespace=self.namespaces["ours"],
            kubeconfig=str(self.bed.kubeconfig),
            KSR_ALLOWED_NAMESPACES=",".join(v for k, v in self.namespaces.items() if k != "base"),
            QUEUE_WORKER_POOL_SIZE=str(self.args.pool),
            KSR_MAX_ACTIVE_JOBS=str(self.args.max_active),
            KSR_LOG_LEVEL="WARNING",
        )
        for default in (
            "KSR_LEASE_DURATION",
            "KSR_RENEW_DEADLINE",
            "KSR_RETRY_PERIOD",
            "KSR_BLOCK_MS",
            "POLLING_INTERVAL",
        ):
            del env[default]  # the defaults, as deployed
        env.update(extra)
        return env

    # -- processes ---------------------------------------------------------------------
    def pod(self, name: str, **extra: str) -> Any:
        from tests.support.pods import Pod

        p = Pod({**self.env, **extra}, self.workdir, name)
        self.pods.append(p)
        return p

    def leader(self, **extra: str) -> Any:
        from tests.support.ports import wait_for

        p = self.pod(f"bench-{uuid.uuid4().hex[:5]}", **extra)
        wait_for(p.leading, timeout=90, what=f"{p.name} to lead")
        return p

    def baseline(self, ids: list[str], rate: float) -> tuple[float, dict[str, float]]:
        """Start the baseline process, then time it: (monotonic start, create start per id)."""
        proc = subprocess.Popen(
            [sys.executable, __file__, "_baseline", self.namespaces["base"], str(self.args.pool), str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **self.env, "POD_NAMESPACE": self.namespaces["base"]},
            text=True,
        )
        assert proc.stdin and proc.stdout
        proc.stdin.write(json.dumps(ids) + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.time()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = json.loads(proc.stdout.readline())
        if proc.wait(60) != 0:
            raise RuntimeError("the baseline process failed")
        self.creates_cpu = float(done["creates_cpu"])
        return t0, done["started"]

    def ours(self, ids: list[str], rate: float) -> tuple[float, dict[str, float]]:
        from tests.support.messages import message

        ns = self.namespaces["ours"]
        payloads = [json.dumps(message(mid, ns)) for mid in ids]
        t0 = time.time()
        sent: dict[str, float] = {}
        if not rate:
            pipe = self.redis.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(STREAM, {"payload": payload})
            pipe.execute()
            return t0, {mid: t0 for mid in ids}
        start = time.monotonic()
        for n, (mid, payload) in enumerate(zip(ids, payloads)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[mid] = time.time()
            self.redis.xadd(STREAM, {"payload": payload})
        return t0, sent

    def settle(self, kind: str) -> None:
        """Between phases: the runner has seen every Job end, and the phase's Jobs are gone."""
        from tests.support.ports import wait_for

        ns = self.namespaces[kind]
        if kind == "ours":
            wait_for(lambda: self.redis.scard("ksr:active") == 0, timeout=300, interval=0.5, what="active set empty")

        def delete() -> bool:
            # Its answer lists every deleted Job (megabytes): not read; retried when cut short.
            resp = self.batch.delete_collection_namespaced_job(
                ns, propagation_policy="Background", _preload_content=False, _request_timeout=120
            )
            resp.release_conn()
            return True

        wait_for(delete, timeout=300, interval=1.0, what=f"the Jobs of {ns} deleted")

        def gone() -> bool:
            jobs = self.batch.list_namespaced_job(ns, limit=1, _preload_content=False)
            pods = self.core.list_namespaced_pod(ns, limit=1, _preload_content=False)
            return not json.loads(jobs.data)["items"] and not json.loads(pods.data)["items"]

        wait_for(gone, timeout=300, interval=0.5, what=f"the Jobs and Pods of {ns} gone")

    def phase(self, kind: str, count: int, rate: float) -> tuple[float, list[float]]:
        """(seconds from start to the last Job, per-Job latencies from its send)."""
        ids = [f"{kind}-{uuid.uuid4().hex[:12]}" for _ in range(count)]
        watch = JobWatch(self.api_client, self.namespaces[kind])
        before = self.cpu(kind)
        profiler = self._profile(kind, rate)
        try:
            t0, sent = (self.baseline if kind == "base" else self.ours)(ids, rate)
            seen = watch.times(ids, timeout=max(120.0, count / 5))
        finally:
            watch.close()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                profiler.wait(60)
        if not rate:
            used = {k: v - before.get(k, 0.0) for k, v in self.cpu(kind).items()}
            self.creator_ms[kind].append(used["creator"] * 1000 / count)
            if kind == "base":
                self.creates_ms.append(self.creates_cpu * 1000 / count)
                print(
                    f"      the baseline's creates alone (its start and manifests aside): {self.creates_ms[-1]:.2f} ms"
                )
            self.bed_ms[kind].append(sum(v for k, v in used.items() if k != "creator") * 1000 / count)
            print(f"    {kind}: {max(seen.values()) - t0:.2f} s; settling", flush=True)
            print("      CPU ms per Job: " + ", ".join(f"{k} {v * 1000 / count:.1f}" for k, v in used.items()))
        if self.args.dump:
            self._dump(kind, rate, sent, seen)
        if self.args.trace_creates:  # in (b) every message is sent at once: send->create is its queueing
            print(f"      {kind}: " + self._split(sent, seen), flush=True)
        self.settle(kind)
        return max(seen.values()) - t0, [seen[i] - sent[i] for i in ids]

    def _profile(self, kind: str, rate: float) -> subprocess.Popen[bytes] | None:
        """--profile: py-spy samples the runner's pods (every process) during a throughput
        phase, as collapsed stacks (`--format raw`, one file per phase)."""
        if not self.args.profile or kind != "ours" or rate:
            return None
        directory = Path(self.args.profile)
        directory.mkdir(parents=True, exist_ok=True)
        self.profiles += 1
        leader = self.pods[-1].proc.pid
        out = directory / f"ours-{self.profiles}.txt"
        spy = str(Path(sys.executable).with_name("py-spy"))
        cmd = [spy, "record", "--format", "raw", "--rate", "100", "--threads", "--nonblocking"]
        return subprocess.Popen([*cmd, *self.args.profile_flags, "-o", str(out), "--pid", str(leader)])

    def cpu(self, kind: str) -> dict[str, float]:
        """CPU seconds so far of the bed's processes and of the creator: the baseline process
        (a child waited for, in RUSAGE_CHILDREN) or the runner's pods (every process of them)."""
        from tests.support.pods import _marked

        used = {name: cpu_seconds(info["pid"]) for name, info in self.bed.procs.items() if info.get("pid")}
        assert self.redis_server.proc is not None
        used["redis-server"] = cpu_seconds(self.redis_server.proc.pid)
        if kind == "base":
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            used["creator"] = children.ru_utime + children.ru_stime
        else:
            used["creator"] = sum(cpu_seconds(pid) for p in self.pods for pid in _marked(p.mark))
        return used

    def _split(self, sent: dict[str, float], seen: dict[str, float]) -> str:
        """p50/p99 of the three parts of send -> ADDED: before the create call, the call,
        and from its start to the observer's ADDED (--trace-creates)."""
        calls: dict[str, tuple[float, float]] = {}
        for path in self.creates.glob("*.txt"):
            for line in path.read_text().splitlines():
                mid, start, end = line.split()
                if mid in sent:
                    calls[mid] = (float(start), float(end))
        parts = {
            "send->create": [calls[m][0] - sent[m] for m in calls],
            "create call": [calls[m][1] - calls[m][0] for m in calls],
            "create->ADDED": [seen[m] - calls[m][0] for m in calls],
        }
        split = ", ".join(
            f"{name} p50 {pct(v, 0.5) * 1000:.1f} p99 {pct(v, 0.99) * 1000:.1f} ms" for name, v in parts.items() if v
        )
        if not calls:
            return split
        # How full the create threads were: the calls' summed time over the span they cover.
        span = max(end for _, end in calls.values()) - min(start for start, _ in calls.values())
        in_flight = sum(end - start for start, end in calls.values()) / span if span > 0 else 0.0
        return f"{split}, creates in flight {in_flight:.1f} on average"

    def _dump(self, kind: str, rate: float, sent: dict[str, float], seen: dict[str, float]) -> None:
        """One JSON line per phase: each message's send time and its Job's ADDED time (wall
        clock), to see when in a phase the slow ones were sent (--dump)."""
        row = {"kind": kind, "rate": rate, "at": time.time(), "sent": sent, "seen": seen}
        with open(self.args.dump, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        from testenv import bed as testbed

        for p in self.pods:
            p.stop()
        testbed.down(self.workdir / "bed")
        self.redis_server.close()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of `pid`, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(bench: Bench, args: argparse.Namespace) -> dict[str, float]:
    print(f"(a)/(b) {args.n} Jobs, pool {args.pool}, {args.rounds} rounds interleaved", flush=True)
    times: dict[str, list[float]] = {"base": [], "ours": []}
    for n in range(args.rounds):
        for kind in ("base", "ours"):
            seconds, _ = bench.phase(kind, args.n, 0)
            times[kind].append(seconds)
            print(f"  round {n + 1} {kind:4}: {seconds:6.2f} s  {args.n / seconds:6.1f} Jobs/s", flush=True)
    base, ours = statistics.median(times["base"]), statistics.median(times["ours"])
    print(f"  median base {base:.2f} s ({args.n / base:.1f}/s), ours {ours:.2f} s ({args.n / ours:.1f}/s)")
    cpu = {k: statistics.median(v) for k, v in bench.creator_ms.items()}
    print(
        f"  creator CPU per Job, median: base {cpu['base']:.2f} ms, ours {cpu['ours']:.2f} ms: "
        f"ours/base {cpu['ours'] / cpu['base']:.2f}; the baseline's creates alone {statistics.median(bench.creates_ms):.2f}"
        f" ms: ours/creates {cpu['ours'] / statistics.median(bench.creates_ms):.2f} (target <= 1.5)"
    )
    # Both sides keep the two cores busy, so throughput goes as 1 / (all CPU per Job). Ours
    # also costs the bed what following a Job costs (the watches' events, the finalizer's
    # release): with a runner as cheap as the baseline's creator, (b)/(a) would be this.
    bed = {k: statistics.median(v) for k, v in bench.bed_ms.items()}
    ceiling = (bed["base"] + cpu["base"]) / (bed["ours"] + cpu["base"])
    print(
        f"  bed CPU per Job, median: base {bed['base']:.2f} ms, ours {bed['ours']:.2f} ms; "
        f"(b)/(a) if our tree cost what the creator does: {ceiling:.2f}"
    )
    return {"base": base, "ours": ours}


def costs(bench: Bench, args: argparse.Namespace) -> None:
    """(r): per Job over its whole life, on an audited bed (scripts/benchcosts.py)."""
    import benchcosts as bc

    from tests.support.ports import wait_for

    n = args.cost_n
    log, etcd = bench.bed.audit_log, f"http://127.0.0.1:{bench.bed.ports['etcd']}"
    print(f"(r) cost per Job: {n} Jobs a side, from the first create to the cluster's last request about them")
    for kind in ("base", "ours"):
        ns = bench.namespaces[kind]
        ids = [f"{kind}-{uuid.uuid4().hex[:12]}" for _ in range(n)]
        watch = JobWatch(bench.api_client, ns)
        offset, started = log.stat().st_size, time.monotonic()
        cpu0, redis0 = bench.cpu(kind), bc.redis_calls(bench.redis)
        try:
            (bench.baseline if kind == "base" else bench.ours)(ids, 0)
            watch.times(ids, timeout=120)
        finally:
            watch.close()
        polls: Counter[str] = Counter({"info": 1})  # this script's own Redis commands, not counted

        def done() -> bool:
            jobs = json.loads(bench.batch.list_namespaced_job(ns, _preload_content=False).data)["items"]
            ended = all((j.get("status") or {}).get("succeeded") for j in jobs) and len(jobs) == n
            if kind == "base" or not ended:
                return ended
            polls["scard"] += 1
            held = any(bc.FINALIZER in (j["metadata"].get("finalizers") or []) for j in jobs)
            return not held and bench.redis.scard("ksr:active") == 0

        wait_for(done, timeout=300, interval=1.0, what=f"the {kind} Jobs ended and released")
        bc.quiet_since(log, offset, ns, quiet=bc.QUIET, timeout=120)
        cpu1, redis1 = bench.cpu(kind), bc.redis_calls(bench.redis)
        requests, _ = bc.requests_in(log, offset, ns)
        names = sorted(
            json.loads(bench.batch.list_namespaced_job(ns, limit=5, _preload_content=False).data)["items"],
            key=lambda j: j["metadata"]["name"],
        )
        job_bytes = [bc.stored_bytes(etcd, ns, j["metadata"]["name"]) for j in names]
        redis = redis1 - redis0 - polls - Counter({"xadd": n if kind == "ours" else 0})
        cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}
        print(f"  {kind}: {n} Jobs, whole life: {time.monotonic() - started:.1f} s", flush=True)
        for line in bc.report(kind, n, requests, cpu, redis, job_bytes):
            print(line, flush=True)
        bench.settle(kind)


def latency(bench: Bench, args: argparse.Namespace) -> None:
    print(f"(c) latency send -> Job ADDED, {args.seconds:.0f} s per phase, {args.latency_rounds} rounds", flush=True)
    for rate in args.rates:
        pooled: dict[str, list[list[float]]] = {"base": [], "ours": []}
        for _ in range(args.latency_rounds):
            for kind in ("base", "ours"):
                _, lat = bench.phase(kind, int(rate * args.seconds), rate)
                pooled[kind].append(lat)
        row = []
        for kind in ("base", "ours"):
            p = {q: statistics.median(pct(r, q) * 1000 for r in pooled[kind]) for q in (0.5, 0.95, 0.99)}
            row.append(f"{kind} p50 {p[0.5]:6.1f} p95 {p[0.95]:6.1f} p99 {p[0.99]:6.1f} ms")
        print(f"  {rate:4.0f}/s  " + "   ".join(row), flush=True)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kb(mark_pids: Callable[[], list[int]]) -> int:
    total = 0
    for pid in mark_pids():
        try:
            total += rss_kb(pid)
        except OSError:
            pass
    return total


def memory(bench: Bench, args: argparse.Namespace, leader: Any) -> None:
    from tests.support.messages import message
    from tests.support.pods import _marked
    from tests.support.ports import wait_for
    from tests.support.receiver import Receiver

    print("(d) Redis bytes per finished message (with a webhook, callbacks 0, 1, 2 delivered)", flush=True)
    receiver = Receiver().start()
    ns = bench.namespaces["ours"]
    ids = [f"mem-{uuid.uuid4().hex[:12]}" for _ in range(200)]
    try:
        before = bench.redis.info("memory")["used_memory"]
        pipe = bench.redis.pipeline(transaction=False)
        for mid in ids:
            pipe.xadd(STREAM, {"payload": json.dumps(message(mid, ns, webhook=receiver.url))})
        pipe.execute()
        wait_for(
            lambda: (
                all(receiver.statuses().get(i) == [0, 1, 2] for i in ids)
                and bench.redis.scard("ksr:active") == 0
                and not bench.redis.zcard("ksr:callbacks:owed")
            ),
            timeout=300,
            interval=0.5,
            what="every callback delivered",
        )
        bench.redis.xtrim(STREAM, maxlen=0)  # the job stream's entries are trimmed in time; not counted
        after = bench.redis.info("memory")["used_memory"]
        record = statistics.median(bench.redis.memory_usage(f"ksr:msg:{i}") or 0 for i in ids)
        events = bench.redis.xlen("ksr:events")
        events_bytes = bench.redis.memory_usage("ksr:events", samples=0) or 0
        rq_keys = sum(1 for _ in bench.redis.scan_iter("rq:job:*"))
        ttl = bench.redis.ttl(f"ksr:msg:{ids[0]}")
        print(
            f"  used_memory +{(after - before) / len(ids):.0f} B/message; state record {record:.0f} B "
            f"(TTL {ttl} s, KSR_STATE_TTL); ksr:events {events} entries, {events_bytes / max(events, 1):.0f} B each "
            f"(capped by KSR_EVENTS_MAXLEN); rq:job:* keys left {rq_keys}",
            flush=True,
        )
    finally:
        receiver.close()
        bench.settle("ours")

    print(f"(d) leader RSS while a {args.backlog}-entry backlog drains ({args.memory_seconds:.0f} s)", flush=True)
    pipe = bench.redis.pipeline(transaction=False)
    for n in range(args.backlog):
        pipe.xadd("ksr:jobs:low", {"payload": json.dumps(message(f"backlog-{n}", ns))})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    snaps = Snapshots(bench.workdir / "tracemalloc", args.tracemalloc_at)
    samples: list[RssSample] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.memory_seconds:
        at = time.monotonic() - t0
        lag = bench.redis.xinfo_groups("ksr:jobs:low")[0].get("lag") or 0
        samples.append(
            RssSample(
                at=at,
                runner_kb=rss_kb(leader.proc.pid),
                pod_kb=tree_rss_kb(lambda: _marked(leader.mark)),
                active=int(bench.redis.scard("ksr:active")),
                read=args.backlog - lag,
                load=os.getloadavg()[0],
            )
        )
        snaps.maybe_request(at, samples[-1].read)
        time.sleep(2)
    snaps.report()
    leader.stop()
    for stream in ("ksr:jobs:low",):
        bench.redis.delete(stream)
    rss_verdict(samples, cap=500)


class RssSample(NamedTuple):
    at: float  # seconds into the drain
    runner_kb: int  # the runner process (the main process of `ksr run`)
    pod_kb: int  # every process of the pod
    active: int  # ksr:active
    read: int  # backlog entries read so far (the group's lag gone)
    load: float


def rss_verdict(samples: list[RssSample], *, cap: int) -> None:
    """Per-minute medians, then one line: first, max, the slope once the active set is full."""
    mb = [s.runner_kb / 1024 for s in samples]
    print("  minute  runner MB (median)  pod MB  active  read    load", flush=True)
    for minute in range(int(samples[-1].at // 60) + 1):
        rows = [s for s in samples if minute * 60 <= s.at < (minute + 1) * 60]
        if rows:
            print(
                f"  {minute:6d}  {statistics.median(r.runner_kb for r in rows) / 1024:18.1f}"
                f"  {statistics.median(r.pod_kb for r in rows) / 1024:6.1f}"
                f"  {statistics.median(r.active for r in rows):6.0f}  {rows[-1].read:6d}"
                f"  {statistics.median(r.load for r in rows):5.1f}",
                flush=True,
            )
    full = next((i for i, s in enumerate(samples) if s.active >= cap * 0.95), None)

    def slope(rows: list[RssSample]) -> float:
        if len(rows) < 10:
            return float("nan")
        return statistics.linear_regression([r.at / 60 for r in rows], [r.runner_kb / 1024 for r in rows]).slope

    tail = samples[full:] if full is not None else []
    read = tail[-1].read - tail[0].read if tail else 0
    per_k = (tail[-1].runner_kb - tail[0].runner_kb) / 1024 / read * 1000 if read else float("nan")
    print(
        f"  rss_first={mb[0]:.1f}MB rss_max={max(mb):.1f}MB rss_last={mb[-1]:.1f}MB "
        f"pod_last={samples[-1].pod_kb / 1024:.1f}MB slope_MB_per_min={slope(tail):.2f} "
        f"(from the active set full at {tail[0].at if tail else float('nan'):.0f}s; "
        f"second half {slope(samples[len(samples) // 2 :]):.2f}) "
        f"MB_per_1000_read={per_k:.3f} read={samples[-1].read} "
        f"{'under' if max(mb) < 150 else 'OVER'} 150MB",
        flush=True,
    )


class Snapshots:
    """tracemalloc snapshots of the leader's runner at chosen seconds of the drain (the
    leader runs with scripts/memtrace on PYTHONPATH), and the diff of the last to the first."""

    def __init__(self, directory: Path, at: list[float]) -> None:
        self.dir = directory
        self.at = sorted(at)
        self.read: dict[str, int] = {}
        if self.at:
            (self.dir / "start.request").write_text("")  # tracing from the drain's start

    @staticmethod
    def env(directory: Path) -> dict[str, str]:
        directory.mkdir(parents=True, exist_ok=True)
        return {"KSR_BENCH_TRACEMALLOC": str(directory), "PYTHONPATH": str(ROOT / "scripts" / "memtrace")}

    def maybe_request(self, at: float, read: int) -> None:
        while self.at and at >= self.at[0]:
            label = f"t{self.at.pop(0):.0f}"
            self.read[label] = read
            (self.dir / f"{label}.request").write_text("")

    def report(self) -> None:
        import tracemalloc

        from tests.support.ports import wait_for

        labels = list(self.read)
        if len(labels) < 2:
            return
        wait_for(
            lambda: all((self.dir / f"{x}.json").exists() or (self.dir / f"{x}.error").exists() for x in labels),
            timeout=300,
            interval=1.0,
            what="the tracemalloc snapshots",
        )
        first, last = labels[0], labels[-1]
        facts = {x: json.loads((self.dir / f"{x}.json").read_text()) for x in (first, last)}
        read = self.read[last] - self.read[first]
        print(f"  tracemalloc {first} -> {last}: {read} entries read between them", flush=True)
        for x in (first, last):
            f = facts[x]
            print(
                f"    {x}: rss {f['rss_kb'] / 1024:.1f} MB, traced {f['traced'] / 2**20:.1f} MB "
                f"(tracemalloc's own {f['overhead'] / 2**20:.1f} MB)",
                flush=True,
            )
        grown = sorted(
            ((n, facts[last]["types"].get(n, 0) - facts[first]["types"].get(n, 0)) for n in facts[last]["types"]),
            key=lambda r: -abs(r[1]),
        )[:12]
        print("    live objects by type, change: " + ", ".join(f"{n} {d:+d}" for n, d in grown), flush=True)
        a = tracemalloc.Snapshot.load(str(self.dir / f"{first}.snap"))
        b = tracemalloc.Snapshot.load(str(self.dir / f"{last}.snap"))
        for key, top in (("lineno", 20), ("traceback", 6)):
            print(f"    top {top} by {key}:", flush=True)
            for stat in b.compare_to(a, key)[:top]:
                print(
                    f"      {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks "
                    f"(now {stat.size / 1024:.1f} KiB)",
                    flush=True,
                )
                frames = stat.traceback.format(limit=None if key == "traceback" else 1, most_recent_first=True)
                for line in frames[: 14 if key == "traceback" else 2]:
                    print(f"        {line.strip()}", flush=True)


def handover(bench: Bench, args: argparse.Namespace) -> None:
    from tests.support.messages import message
    from tests.support.pods import Pod
    from tests.support.ports import wait_for

    target_ns = bench.namespaces["extra-2"]
    print(
        f"(e) handover and failover, default timings, 3 namespaces watched, {args.handover_rounds} rounds", flush=True
    )
    results: dict[str, list[float]] = {"SIGTERM": [], "SIGKILL": []}

    def job_exists(mid: str) -> bool:
        jobs = json.loads(bench.batch.list_namespaced_job(target_ns, _preload_content=False).data)["items"]
        return any((j["metadata"].get("annotations") or {}).get(ANNOTATION) == mid for j in jobs)

    leader: Pod = bench.leader()
    try:
        for n in range(args.handover_rounds):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                standby = bench.pod(f"standby-{uuid.uuid4().hex[:5]}")
                wait_for(
                    lambda: (standby.status() or {}).get("leader") == leader.name,
                    timeout=90,
                    what="the standby to see the leader",
                )
                time.sleep(2 * 2.0 * 1.2)  # a few retry periods: the standby's retry phase is random to the signal
                sent = time.monotonic()
                mid = f"handover-{uuid.uuid4().hex[:8]}"
                if sig == signal.SIGTERM:
                    leader.proc.send_signal(signal.SIGTERM)
                    wait_for(
                        lambda: (leader.status() or {}).get("runner", {}).get("state") != "running",
                        timeout=10,
                        what="the leader to stop",
                    )
                else:
                    leader.kill_container()
                bench.redis.xadd(STREAM, {"payload": json.dumps(message(mid, target_ns))})
                wait_for(lambda: job_exists(mid), timeout=90, interval=0.05, what="the standby's Job")
                took = time.monotonic() - sent
                results[sig.name].append(took)
                print(f"  round {n + 1} {sig.name}: next Job after {took:.2f} s", flush=True)
                leader.stop()
                leader = standby
    finally:
        leader.stop()
    for name, values in results.items():
        print(f"  median {name}: {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")


def _exit_once(*_: Any) -> None:
    """SIGTERM: exit through the clean-up. A second one (`timeout` forwarding the signal
    to a process that got it already) must not cut the clean-up short and leave a bed running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        return baseline_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="b,c,d,e", help="which of b (with a), c, d, e, r to run")
    parser.add_argument("--cost-n", type=int, default=100, help="(r): Jobs a side")
    parser.add_argument("--n", type=int, default=2000, help="messages per throughput phase")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (base, ours each)")
    parser.add_argument("--pool", type=int, default=10, help="QUEUE_WORKER_POOL_SIZE, and the baseline's threads")
    parser.add_argument(
        "--max-active", type=int, default=5000, help="KSR_MAX_ACTIVE_JOBS for (b) and (c); (d) uses the default"
    )
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[5.0, 20.0, 50.0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per latency phase")
    parser.add_argument("--latency-rounds", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    parser.add_argument(
        "--tracemalloc-at",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[],
        help="(d): seconds of the drain at which to snapshot the leader's runner (e.g. 120,540); "
        "traces the leader, so its RSS figures are not the product's",
    )
    parser.add_argument("--handover-rounds", type=int, default=3)
    parser.add_argument(
        "--trace-creates",
        action="store_true",
        help="(c): time every create call (scripts/createtrace) and split each phase's latency into "
        "the wait before the create, the call, and the watch's delivery",
    )
    parser.add_argument(
        "--profile",
        help="(b): py-spy record the runner's pods during each of our throughput phases, "
        "collapsed stacks into this directory (scripts/profile_summary.py reads them)",
    )
    parser.add_argument(
        "--profile-flags", type=lambda s: s.split(), default=[], help="more py-spy record flags, e.g. '--gil --idle'"
    )
    parser.add_argument("--dump", help="append each phase's send and ADDED times to this file (JSON lines)")
    args = parser.parse_args()
    # A SIGTERM (e.g. `timeout`) still stops the bed and the pods this run started.
    signal.signal(signal.SIGTERM, _exit_once)
    parts = set(args.parts.split(","))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    ratio = None
    if parts - {"r"}:
        with tempfile.TemporaryDirectory(prefix="ksr-bench-") as tmp:
            bench = Bench(args, Path(tmp))
            try:
                if parts & {"b", "c"}:
                    leader = bench.leader()
                    if "b" in parts:
                        medians = throughput(bench, args)
                        ratio = medians["base"] / medians["ours"]
                    if "c" in parts:
                        latency(bench, args)
                    leader.stop()
                if "d" in parts:
                    bench.env = bench._env(KSR_MAX_ACTIVE_JOBS="500")
                    trace = Snapshots.env(bench.workdir / "tracemalloc") if args.tracemalloc_at else {}
                    memory(bench, args, bench.leader(**trace))
                if "e" in parts:
                    handover(bench, args)
            finally:
                bench.close()
    if "r" in parts:  # a bed of its own: the audit log costs the apiserver CPU the others would feel
        with tempfile.TemporaryDirectory(prefix="ksr-bench-r-") as tmp:
            bench = Bench(args, Path(tmp), audit=True)
            try:
                bench.leader()
                costs(bench, args)
            finally:
                bench.close()
    if ratio is not None:
        print(f"ratio (b)/(a) throughput: {ratio:.2f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
