#!/usr/bin/env python3
"""A fault campaign against three `ksr run` replicas on the real control plane.

Three replicas (each its own runtime directory, as each pod has its own emptyDir) share a
redis-server with AOF on. A producer XADDs messages over the three priority streams (some
invalid, some sent twice under the same id) while the faults run:

- SIGKILL of the current leader's whole process tree, `--kills` times, each replica
  restarted, alternately under the same POD_NAME and a new one;
- one SIGSTOP of the leader for longer than the lease, then SIGCONT;
- one redis-server restart with AOF (nothing lost);
- one kube-apiserver restart;
- the webhook receiver down for `--receiver-down` seconds;
- at the end, one redis-server restart without its data (no persistence: NOGROUP, a lost
  state store, lost dead letters), after which the producer sends every valid message
  again: deterministic Job names and adoption must keep it at one Job per message.

Then the checks, and one line `lost=0 duplicates=0 ...`; the exit status is 1 if any is not 0.

    scripts/chaos.py                              # the full campaign (own bed, own Redis)
    scripts/chaos.py --messages 150 --kills 3 --receiver-down 10    # the bounded one
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from tests.support.messages import message  # noqa: E402
from tests.support.pipeline import base_env  # noqa: E402
from tests.support.pods import Pod, _marked  # noqa: E402
from tests.support.ports import free_port, wait_for  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
ANNOTATION = "kube-stream-runner/message-id"
LEASE = 4.0  # base_env's KSR_LEASE_DURATION


@dataclass
class Plan:
    messages: int = 1000
    kills: int = 10
    kill_interval: float = 5.0
    receiver_down: float = 30.0
    invalid_every: int = 20  # one message in this many is invalid
    duplicate_every: int = 15  # one in this many is sent a second time, same id
    settle_timeout: float = 600.0


@dataclass
class Campaign:
    """The parts under test and what happened to them."""

    plan: Plan
    bed: Any  # scripts/testenv/bed.py Bed
    redis_server: RedisServer
    namespace: str
    workdir: Path
    log: Any = print
    pods: list[Pod] = field(default_factory=list)
    killed_marks: list[str] = field(default_factory=list)
    receivers: list[Receiver] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    payloads: dict[str, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    generation: int = 0
    unsettled: int = 0  # waits for the campaign to settle that ran out of time

    def __post_init__(self) -> None:
        self.receiver_port = free_port()  # kept across the outage
        self.receivers.append(Receiver(self.receiver_port).start())
        self.env = base_env(
            redis_url=self.redis_server.url,
            namespace=self.namespace,
            kubeconfig=str(self.bed.kubeconfig),
            KSR_LOG_LEVEL="INFO",
            KSR_CALLBACK_BACKOFF_CAP="3",
        )
        self.redis = self.redis_server.client()

    # -- replicas ----------------------------------------------------------------------
    def start_pod(self, name: str) -> Pod:
        self.generation += 1
        pod = Pod(self.env, self.workdir, name, self.generation)
        self.pods.append(pod)
        return pod

    def live_pods(self) -> list[Pod]:
        return [p for p in self.pods if p.proc.poll() is None]

    def leader(self, timeout: float = 60.0) -> Pod:
        def one() -> Pod | None:
            leading = [p for p in self.live_pods() if p.leading()]
            return leading[0] if len(leading) == 1 else None

        found: Pod = wait_for(one, timeout=timeout, interval=0.2, what="one leader")  # type: ignore[assignment]
        return found

    def kill_leader(self, n: int) -> None:
        leader = self.leader()
        leader.kill_container()
        self.killed_marks.append(leader.mark)
        self.pods.remove(leader)
        name = leader.name if n % 2 == 0 else f"replica-{uuid.uuid4().hex[:5]}"
        self.start_pod(name)
        self.faults.append(f"kill {leader.name} -> {name}")

    # -- faults ------------------------------------------------------------------------
    def stop_leader_longer_than_lease(self) -> None:
        leader = self.leader()
        os.kill(leader.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(LEASE * 2)  # the fault itself: the leader frozen past its lease
        finally:
            os.kill(leader.proc.pid, signal.SIGCONT)
        self.faults.append(f"sigstop {leader.name} {LEASE * 2:.0f}s")

    def restart_redis(self, *, keep_data: bool) -> None:
        self.redis_server.stop()
        if not keep_data:
            for child in self.redis_server.dir.iterdir():
                if child.name != "redis.log":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.redis_server.start()
        self.faults.append(f"redis restart {'with AOF' if keep_data else 'without data'}")

    def restart_apiserver(self) -> None:
        self.bed.stop("kube-apiserver")
        self.bed.start("kube-apiserver")
        self.bed.wait_ready(timeout=90)
        self.faults.append("kube-apiserver restart")

    def receiver_outage(self) -> None:
        self.receivers[-1].close()
        time.sleep(self.plan.receiver_down)  # the fault itself: nobody answers meanwhile
        self.receivers.append(Receiver(self.receiver_port).start())
        self.faults.append(f"receiver down {self.plan.receiver_down:.0f}s")

    # -- the producer ------------------------------------------------------------------
    def prepare(self) -> list[tuple[str, str]]:
        rng = random.Random(7)
        url = f"http://127.0.0.1:{self.receiver_port}/hook"
        sends: list[tuple[str, str]] = []
        for n in range(self.plan.messages):
            mid = f"chaos-{n}-{uuid.uuid4().hex[:6]}"
            stream = STREAMS[n % 3]
            if n % self.plan.invalid_every == 3:
                doc = message(mid, self.namespace, webhook=url, ttlSecondsAfterFinished=1800)
                del doc["job"]["image"]  # invalid: job.image is required
                self.invalid.append(mid)
            else:
                doc = message(mid, self.namespace, webhook=url, ttlSecondsAfterFinished=1800)
                self.valid.append(mid)
            payload = json.dumps(doc)
            self.payloads[mid] = payload
            sends.append((stream, payload))
            if n % self.plan.duplicate_every == 5:
                sends.append((STREAMS[(n + 1) % 3], payload))  # the same id again, another stream
        rng.shuffle(sends)
        return sends

    def produce(self, sends: list[tuple[str, str]], seconds: float) -> None:
        for stream, payload in sends:
            self._xadd(stream, payload)
            time.sleep(seconds / len(sends))  # the offered rate, not synchronisation

    def _xadd(self, stream: str, payload: str) -> None:
        """As a producer does: retry while Redis is away (bounded)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                self.redis_server.client().xadd(stream, {"payload": payload})
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # -- the run -----------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        plan = self.plan
        for n in range(3):
            self.start_pod(f"replica-{n}")
        self.leader(timeout=90)
        sends = self.prepare()
        duration = plan.kills * plan.kill_interval + plan.receiver_down
        producer = threading.Thread(target=self.produce, args=(sends, duration), daemon=True)
        producer.start()
        special = {
            1: self.stop_leader_longer_than_lease,
            2: lambda: self.restart_redis(keep_data=True),
            3: self.restart_apiserver,
        }
        outage: threading.Thread | None = None
        for n in range(plan.kills):
            time.sleep(plan.kill_interval)  # the fault schedule
            self.kill_leader(n)
            self.log(f"  fault {len(self.faults)}: {self.faults[-1]}")
            if n in special:
                special[n]()
                self.log(f"  fault {len(self.faults)}: {self.faults[-1]}")
            if n == 0:
                outage = threading.Thread(target=self.receiver_outage, daemon=True)
                outage.start()
        for fault in (1, 2, 3):  # fewer kills than special faults: run the rest now
            if fault >= plan.kills:
                special[fault]()
                self.log(f"  fault {len(self.faults)}: {self.faults[-1]}")
        producer.join(duration + 300)
        if outage is not None:
            outage.join(plan.receiver_down + 60)
        self.log(f"  produced {len(sends)} entries; waiting for every Job to end and every callback")
        self.wait_settled()
        dead = self.dead_ids()
        # The Redis that loses everything; the producer sends every valid message again.
        self.restart_redis(keep_data=False)
        self.log(f"  fault {len(self.faults)}: {self.faults[-1]}; every valid message sent again")
        for n, mid in enumerate(self.valid):
            self._xadd(STREAMS[n % 3], self.payloads[mid])
        self.wait_settled(replayed=True)
        return self.check(dead)

    def streams_idle(self) -> bool:
        r = self.redis_server.client()
        for stream in STREAMS:
            if not r.exists(stream):
                continue
            groups = r.xinfo_groups(stream)
            if not groups:  # after a restart without data: not recreated (read) yet
                return False
            for group in groups:
                if group["pending"] or group.get("lag"):
                    return False
        return r.scard("ksr:active") == 0

    def wait_settled(self, *, replayed: bool = False) -> None:
        def done() -> bool:
            statuses = self.statuses()
            return all(2 in statuses.get(mid, []) for mid in self.valid) and self.streams_idle()

        r = self.redis_server.client()
        try:
            wait_for(done, timeout=self.plan.settle_timeout, interval=1.0, what="every valid message to finish")
            if replayed:  # read and acked again: every valid message recorded anew (its Job adopted)
                wait_for(
                    lambda: all(r.exists(f"ksr:msg:{mid}") for mid in self.valid) and self.streams_idle(),
                    timeout=self.plan.settle_timeout,
                    interval=1.0,
                    what="every replayed message recorded",
                )
        except TimeoutError as e:  # go on to the checks, which say what is missing
            self.unsettled += 1
            self.log(f"  {e}")
            self.diagnose()

    def diagnose(self, most: int = 12) -> None:
        """What became of the messages that did not finish: enough to tell which step lost them."""
        r = self.redis_server.client()
        statuses = self.statuses()
        jobs = {_message_id(j): j for j in self._listed_jobs()}
        stuck = [mid for mid in self.valid if 2 not in statuses.get(mid, [])]
        self.log(f"  unfinished: {len(stuck)} of {len(self.valid)}; active set {r.scard('ksr:active')}")
        owed = {m.decode() for m in r.zrange("ksr:callbacks:owed", 0, -1)}
        for stream in STREAMS:
            if r.exists(stream):
                for g in r.xinfo_groups(stream):
                    self.log(f"  {stream}: pending {g['pending']} lag {g.get('lag')} last {g['last-delivered-id']!r}")
        for mid in stuck[:most]:
            record = {k.decode(): v.decode("utf-8", "replace") for k, v in r.hgetall(f"ksr:msg:{mid}").items()}
            job = jobs.get(mid)
            job_view = (
                None
                if job is None
                else {
                    "status": {k: job["status"].get(k) for k in ("active", "succeeded", "failed")},
                    "finalizers": job["metadata"].get("finalizers"),
                }
            )
            self.log(
                f"  {mid}: callbacks {statuses.get(mid, [])} active {bool(r.sismember('ksr:active', mid))}"
                f" owed {sorted(o for o in owed if o.startswith(mid))} job {job_view} record {record}"
            )

    def statuses(self) -> dict[str, list[int]]:
        """Per message id, callback statuses in arrival order over every receiver, deduplicated by webhook-id."""
        seen: set[str] = set()
        out: dict[str, list[int]] = {}
        for receiver in self.receivers:
            with receiver._mutex:
                requests = list(receiver.requests)
            for r in requests:
                wid = r["headers"]["webhook-id"]
                if wid not in seen:
                    seen.add(wid)
                    out.setdefault(r["body"]["id"], []).append(r["body"]["status"])
        return out

    def dead_ids(self) -> set[str]:
        ids: set[str] = set()
        for stream in STREAMS:
            for _, fields in self.redis.xrange(f"{stream}:dead"):
                try:
                    ids.add(json.loads(fields[b"payload"])["id"])
                except (KeyError, ValueError):
                    ids.add("?")
        return ids

    def _listed_jobs(self) -> list[dict[str, Any]]:
        _, body = self.bed.request("GET", f"/apis/batch/v1/namespaces/{self.namespace}/jobs", timeout=30)
        return list(body.get("items", []))

    def jobs(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._listed_jobs():
            mid = _message_id(job)
            counts[mid] = counts.get(mid, 0) + 1
        return counts

    def check(self, dead: set[str]) -> dict[str, int]:
        jobs = self.jobs()
        statuses = self.statuses()
        r = self.redis_server.client()
        pending = sum(g["pending"] for s in STREAMS if r.exists(s) for g in r.xinfo_groups(s))
        return {
            "lost": sum(1 for mid in self.valid if not jobs.get(mid)),
            "duplicates": sum(n - 1 for n in jobs.values() if n > 1) + sum(jobs.get(mid, 0) for mid in self.invalid),
            "out_of_order": sum(1 for mid in self.valid if statuses.get(mid, []) != sorted(statuses.get(mid, []))),
            "incomplete_callbacks": sum(1 for mid in self.valid if sorted(statuses.get(mid, [])) != [0, 1, 2]),
            "dead_mismatch": len(dead ^ set(self.invalid)),
            "pending": pending,
            "active": int(r.scard("ksr:active")),
            "unsettled": self.unsettled,
        }

    def close(self) -> int:
        """Stop every replica; the number of processes of killed replicas still alive."""
        for pod in self.pods:
            pod.stop()
        for receiver in self.receivers[-1:]:
            receiver.close()
        return sum(len(_marked(mark)) for mark in self.killed_marks)


def _message_id(job: dict[str, Any]) -> str:
    return str((job["metadata"].get("annotations") or {}).get(ANNOTATION, "?"))


def summary_line(results: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in results.items())


def _exit_once(*_: object) -> None:
    """SIGTERM: exit through the clean-up. A second one (`timeout` forwarding the signal
    to a process that got it already) must not cut the clean-up short and leave a bed running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def main() -> int:
    from testenv import bed as testbed

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--kill-interval", type=float, default=5.0)
    parser.add_argument("--receiver-down", type=float, default=30.0)
    parser.add_argument("--keep", type=Path, help="copy the replicas' logs and runtime directories here at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_once)
    plan = Plan(
        messages=args.messages, kills=args.kills, kill_interval=args.kill_interval, receiver_down=args.receiver_down
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ksr-chaos-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(args=("--appendonly", "yes", "--appendfsync", "always"))
        campaign: Campaign | None = None
        try:
            bed = testbed.up(work / "bed", progress=lambda m: print(f"  bed: {m}", flush=True), owned=True)
            redis_server.start()
            namespace = f"chaos-{uuid.uuid4().hex[:6]}"
            bed.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
            wait_for(
                lambda: bed.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")[0] == 200,
                timeout=60,
                what="the namespace's default ServiceAccount",
            )
            campaign = Campaign(plan, bed, redis_server, namespace, work, log=lambda m: print(m, flush=True))
            results = campaign.run()
        finally:
            orphans = campaign.close() if campaign is not None else 0
            if args.keep is not None:
                shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("bed", "*.sock"))
            testbed.down(work / "bed")
            redis_server.close()
    results["orphans"] = orphans
    assert campaign is not None
    print(f"faults: {len(campaign.faults)} ({'; '.join(campaign.faults)}) in {time.monotonic() - started:.0f}s")
    print(summary_line(results))
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
