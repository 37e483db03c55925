"""Sentinel chaos: a primary, two replicas and three sentinels (real processes); three
`ksr run` replicas on the Lease lock and the real control plane, dispatching 500 messages
that producers XADD and then `WAIT` for both replicas; the primary is SIGKILLed mid-stream
three times and Sentinel promotes a replica each time, then a live primary is failed over
(demoted). Afterwards: exactly one Job per message, every callback sequence complete, the
PEL empty; /healthz never failed, /readyz came back.

Prints `lost=0 duplicates=0` and the measured times (docs/redis.md quotes them)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
import redis

from runner.settings import Settings
from runner.store.connection import connect
from tests.support.diagnose import explain_missing
from tests.support.fixtures import _unavailable
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.receiver import Receiver
from tests.support.sentinel import MASTER, SentinelBed

pytestmark = pytest.mark.kube

MESSAGES = 500
KILL_AFTER = (120, 250, 380)  # produced messages before each SIGKILL of the primary
FORCED_AFTER = 450  # then a failover of the live primary (SENTINEL FAILOVER)
STREAM = "ksr:jobs:default"
PRODUCE_DEADLINE = 180.0  # seconds for the producer to get every XADD replicated


@pytest.fixture
def bed(tmp_path):
    try:
        started = SentinelBed(tmp_path / "sentinel").start()  # its logs stay with the test's
    except Exception as e:
        _unavailable("redis-sentinel", str(e))
    yield started
    started.close()


def _code(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


class Producer(threading.Thread):
    """XADD then WAIT for every replica, as docs/redis.md asks of producers; a message is
    re-sent (same id) until all `replicas` acknowledged it. Bounded by PRODUCE_DEADLINE.

    WAIT 1 is not enough: Sentinel may promote the replica that did not acknowledge (seen
    here: a failover Sentinel started by itself, a second after a promotion, on a loaded
    machine, promoted the replica that lacked 45 XADDs the other one had acknowledged)."""

    def __init__(self, client: redis.Redis, namespace: str, webhook: str, *, replicas: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.replicas = replicas
        self.namespace = namespace
        self.webhook = webhook
        self.replicated: list[str] = []
        self.resent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + PRODUCE_DEADLINE
        try:
            for n in range(MESSAGES):
                mid = f"chaos-{n:03d}"
                payload = json.dumps(message(mid, self.namespace, webhook=self.webhook))
                while True:
                    assert time.monotonic() < deadline, f"{mid} not replicated within {PRODUCE_DEADLINE}s"
                    try:
                        pipe = self.client.pipeline(transaction=False)  # WAIT counts this connection's writes
                        pipe.xadd(STREAM, {"payload": payload})
                        pipe.execute_command("WAIT", self.replicas, 2000)
                        _, acked = pipe.execute()
                        if int(acked) >= self.replicas:
                            break
                    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                        pass
                    self.resent += 1
                    time.sleep(0.1)
                self.replicated.append(mid)
                time.sleep(0.02)  # a steady stream, so that the kills land mid-stream
        except BaseException as e:
            self.error = e


def test_three_primary_kills_lose_nothing_and_duplicate_no_job(bed, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(
        redis_url="redis://127.0.0.1/0",  # with Sentinel only the scheme and database count
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_REDIS_SENTINELS=bed.sentinels,
        KSR_REDIS_MASTER=MASTER,
        QUEUE_WORKER_POOL_SIZE="8",
        KSR_READ_COUNT="20",
    )
    settings = Settings.from_env({**env, "POD_NAME": "producer"})
    assert settings.redis.min_replicas == 1 and settings.lock == "lease"
    client = connect(settings.redis, socket_timeout=5.0, retries=3)
    pods = [Pod(env, tmp_path, f"replica-{i}") for i in range(3)]
    try:
        wait_for(lambda: any(p.leading() for p in pods), timeout=60, what="a leader")
        producer = Producer(client, namespace, receiver.url, replicas=len(bed.servers) - 1)
        producer.start()
        health_failures: list[str] = []
        reconnects: list[float] = []
        promotions: list[float] = []
        for threshold in KILL_AFTER:
            wait_for(lambda t=threshold: len(producer.replicated) >= t or producer.error, timeout=120, what="messages")
            assert producer.error is None, producer.error
            killed_at = time.monotonic()
            watch = _ProbeWatch(pods)
            watch.start()
            old, new, promoted = bed.kill_primary()
            promotions.append(promoted)
            # Reconnected: every replica's /readyz passes again (it fails while no primary answers).
            wait_for(lambda: all(_code(p.port, "/readyz") == 200 for p in pods), timeout=60, what="/readyz back")
            watch.stop()
            health_failures += watch.health_failures
            # /readyz said so while no primary answered: on every replica the watch sampled in
            # that window (1.5-2.3 s; a loaded machine can sample one replica only after it)
            assert watch.unready, "no replica's /readyz failed while no primary answered"
            # The reconnect time: from the SIGKILL to the last /readyz that failed, on any replica.
            reconnects.append(max(0.0, (watch.last_unready or killed_at) - killed_at))
            print(
                f"killed primary {old}: {new} promoted after {promoted:.1f}s; /readyz failed on "
                f"{sorted(watch.unready)} until {reconnects[-1]:.1f}s after the kill"
            )
        # A failover of a live primary, as Sentinel starts by itself when a primary answers late:
        # it is demoted, not dead, so what still talks to it gets READONLY, not a refusal.
        wait_for(lambda: len(producer.replicated) >= FORCED_AFTER or producer.error, timeout=120, what="messages")
        old, new, promoted = bed.force_failover()
        promotions.append(promoted)
        print(f"forced a failover of the live primary {old}: {new} promoted after {promoted:.1f}s")
        producer.join(PRODUCE_DEADLINE)
        assert producer.error is None, producer.error
        assert len(producer.replicated) == MESSAGES
        ids = sorted(producer.replicated)

        receiver.wait_for_callbacks(
            ids,
            timeout=420,
            interval=1.0,
            what=f"callbacks 0, 1, 2 for all {MESSAGES} messages",
            explain=lambda: _explain(client, settings, list(receiver.incomplete(ids)), bed, kube, namespace, pods),
        )
        jobs = Counter(j.metadata.annotations["kube-stream-runner/message-id"] for j in managed_jobs(kube, namespace))
        lost = [m for m in ids if jobs[m] == 0]
        duplicates = {m: n for m, n in jobs.items() if n > 1}
        pending = sum(client.xpending(s, "ksr")["pending"] for s in settings.streams.streams)
        print(
            f"lost={len(lost)} duplicates={len(duplicates)} pending={pending} resent_xadds={producer.resent} "
            f"failovers={bed.failovers()} "
            f"promotion_s={[round(x, 1) for x in promotions]} reconnect_s={[round(x, 1) for x in reconnects]}"
        )
        assert lost == [] and duplicates == {}, _explain(client, settings, lost, bed, kube, namespace, pods)
        assert set(jobs) == set(ids)
        assert pending == 0
        assert health_failures == []  # /healthz stayed live through every failover
    finally:
        for p in pods:
            p.kill_container()
        receiver.close()
        client.close()


def _explain(client, settings, ids, bed, kube, namespace, pods) -> str:
    """Everything the stores and logs hold about `ids`, for the failure message."""
    return explain_missing(
        client,
        settings,
        ids,
        kube=kube,
        namespace=namespace,
        data_nodes=[s.client() for s in bed.servers if s.running],
        node_logs=[*sorted(bed.dir.glob("sentinel-*.log")), *(s.log for s in bed.servers)],
        pod_logs=[(p.name, p.log) for p in pods],
    )


class _ProbeWatch(threading.Thread):
    """Samples every pod's /healthz and /readyz while a failover runs (bounded: stopped by the test)."""

    def __init__(self, pods: list[Pod]) -> None:
        super().__init__(daemon=True)
        self.pods = pods
        self.health_failures: list[str] = []
        self.unready: set[str] = set()  # pods whose /readyz failed at least once
        self.last_unready: float | None = None  # monotonic time of the last failed /readyz
        self._done = threading.Event()

    def run(self) -> None:
        for _ in range(1200):  # 0.1 s apart: two minutes at most
            if self._done.is_set():
                return
            for p in self.pods:
                code = _code(p.port, "/healthz")
                if code != 200:
                    self.health_failures.append(f"{p.name} /healthz {code}")
                if _code(p.port, "/readyz") != 200:
                    self.unready.add(p.name)
                    self.last_unready = time.monotonic()
            self._done.wait(0.1)

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def test_what_a_failover_can_lose_is_replayed_into_the_same_job(redis_server, redis_client, kube, namespace):
    """Deterministically, what the chaos above may or may not hit: after a message's whole
    life, Redis loses every write the runner made for it (its record, its active-set entry,
    the group's delivery and ack), as a promoted replica that lags would. The entry is read
    again, claimed NEW, and the create finds the Job by its deterministic name: adopted,
    not made twice."""
    from tests.support.pipeline import rq_worker, runner_thread, xadd

    receiver = Receiver().start()
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    mid = "lost-suffix"
    try:
        entry = xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
        with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
            wait_for(lambda: receiver.statuses().get(mid) == [0, 1, 2], timeout=90, what="the first life")
            (job,) = managed_jobs(kube, namespace)
            # The lost suffix: the record, the active set's member, the delivery and the ack.
            redis_client.delete(f"ksr:msg:{mid}")
            redis_client.srem("ksr:active", mid)
            redis_client.xgroup_setid(STREAM, "ksr", "0")
            wait_for(
                lambda: (
                    redis_client.hget(f"ksr:msg:{mid}", "job_uid") == job.metadata.uid.encode()
                    and redis_client.xpending(STREAM, "ksr")["pending"] == 0
                    and redis_client.hget(f"ksr:msg:{mid}", "state") == b"completed"
                ),
                timeout=90,
                what="the replay adopting the same Job and recording its end",
            )
        jobs = managed_jobs(kube, namespace)
        assert [j.metadata.uid for j in jobs] == [job.metadata.uid]  # the same Job, and only it
        assert receiver.statuses()[mid] == [0, 1, 2]  # repeats carry the same webhook-id
        assert redis_client.xinfo_groups(STREAM)[0]["last-delivered-id"].decode() == entry
    finally:
        receiver.close()
