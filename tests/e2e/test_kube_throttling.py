"""`ksr run` under the apiserver's API Priority and Fairness, and under its own client limit.

APF: the test creates, through the real kube-apiserver, a PriorityLevelConfiguration of no
concurrency of its own (nominalConcurrencyShares 0, nothing lent or borrowed; `Reject`) and a
FlowSchema sending the Job creates of a ServiceAccount of this test's own to it. The bed's
server concurrency is 2400 seats (--max-requests-inflight 1600 + mutating 800), so even a
share of 1 would be ceil(2400 / 246) = 10 seats, which the runner on two cores never fills:
0 is the level the bed can make bite. A level of no seats still runs one request when it runs
none (the queueset's rule for a request wider than the limit), so the flow gets one create at
a time and every create that overlaps another is answered 429 with APF's Retry-After. Only
that ServiceAccount's creates match, so nothing else on the shared bed is slowed, and both
objects are deleted at the end.

While the creates are refused, Jobs made before keep going to their end: their pods are held
Pending by a node label the test adds only once the throttle is in force, so their
completion, the finalizer's release and the callbacks happen while creates are throttled.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from runner.jobs.manifest import FINALIZER
from runner.process.statusboard import THROTTLE_SHOWN
from tests.support.kube import KubeBed, job_message_ids, managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.scrape import Samples, scrape

pytestmark = pytest.mark.kube

ACCOUNT = "ksr-throttled"
POOL = 4  # QUEUE_WORKER_POOL_SIZE: creates in flight at once when nothing holds them back
# LATE: enough that one create at a time takes several seconds (about 25 creates/s on the
# 2-core host), so the early Jobs end while the backlog is still throttled.
EARLY, LATE, AFTER = 4, 200, 20
# 429s allowed while throttled. After a 429 the creates wait Retry-After (1 s), then go one at
# a time until 2 Retry-Afters pass without a 429, then the whole pool again: at most POOL - 1
# refused per 3 s, and POOL - 1 in the first wave (in flight when the first 429 came). Measured
# on the 2-core host: 7 refused in 11.2 s; with each request only backing off on its own (the
# gate disabled) 25 in 18.6 s, over this bound. From 3 refused a second the apiserver doubles its
# Retry-After, which the degraded reason would show.
REFUSED_PER_SECOND = (POOL - 1) / 3
REFUSED_MARGIN = POOL - 1
RECOVERY_BUDGET = 10.0  # seconds from the FlowSchema deleted to the next AFTER messages' Jobs
THROTTLED = "ksr_kube_throttled_total"


def service_account_kubeconfig(kube: KubeBed, namespace: str, path: Path) -> str:
    """A kubeconfig acting as ServiceAccount ACCOUNT of `namespace`, allowed everything there
    (the Role is gone with the namespace)."""
    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": ACCOUNT}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
        },
    )
    token = kube.service_account_client(namespace, ACCOUNT).configuration.api_key["authorization"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {"name": "bed", "cluster": {"server": kube.server, "certificate-authority": kube.ca_file}}
                ],
                "users": [{"name": ACCOUNT, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "bed", "user": ACCOUNT, "namespace": namespace}}],
            }
        )
    )
    return str(path)


class Apf:
    """The test's PriorityLevelConfiguration and FlowSchema (cluster-scoped: removed at exit)."""

    def __init__(self, kube: KubeBed, namespace: str) -> None:
        self.api = client.FlowcontrolApiserverV1Api(kube.api_client())
        self.name = f"ksr-test-{uuid.uuid4().hex[:8]}"
        self.namespace = namespace

    def throttle_creates(self) -> None:
        self.api.create_priority_level_configuration(
            {
                "metadata": {"name": self.name},
                "spec": {
                    "type": "Limited",
                    "limited": {
                        "nominalConcurrencyShares": 0,
                        "lendablePercent": 0,
                        "borrowingLimitPercent": 0,
                        "limitResponse": {"type": "Reject"},
                    },
                },
            },
            _preload_content=False,
        )
        self.api.create_flow_schema(
            {
                "metadata": {"name": self.name},
                "spec": {
                    "priorityLevelConfiguration": {"name": self.name},
                    "matchingPrecedence": 1000,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [
                        {
                            "subjects": [
                                {
                                    "kind": "ServiceAccount",
                                    "serviceAccount": {"name": ACCOUNT, "namespace": self.namespace},
                                }
                            ],
                            "resourceRules": [
                                {
                                    "verbs": ["create"],
                                    "apiGroups": ["batch"],
                                    "resources": ["jobs"],
                                    "namespaces": [self.namespace],
                                }
                            ],
                        }
                    ],
                },
            },
            _preload_content=False,
        )

    def lift(self) -> None:
        try:
            self.api.delete_flow_schema(self.name, _preload_content=False)
        except client.ApiException as e:
            if e.status != 404:
                raise

    def close(self) -> None:
        self.lift()
        try:
            self.api.delete_priority_level_configuration(self.name, _preload_content=False)
        except client.ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture
def apf(kube: KubeBed, namespace: str) -> Iterator[Apf]:
    config = Apf(kube, namespace)
    yield config
    config.close()


@pytest.fixture
def gate_label(kube: KubeBed) -> Iterator[tuple[str, str]]:
    """A node label no node has yet: pods selecting it stay Pending until `open_gate`."""
    key = f"ksr-test-gate-{uuid.uuid4().hex[:8]}"
    yield key, "open"
    core = client.CoreV1Api(kube.api_client())
    for node in core.list_node().items:
        if key in (node.metadata.labels or {}):
            core.patch_node(node.metadata.name, {"metadata": {"labels": {key: None}}})


def open_gate(kube: KubeBed, key: str, value: str) -> None:
    core = client.CoreV1Api(kube.api_client())
    for node in core.list_node().items:
        if (node.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake":
            core.patch_node(node.metadata.name, {"metadata": {"labels": {key: value}}})


def create_refused(kube: KubeBed, namespace: str) -> bool:
    """Whether one of 2 Job creates sent at once as the ServiceAccount is answered 429 (dry
    runs: nothing is made). Two, not more: each refusal counts towards APF's Retry-After."""
    batch = client.BatchV1Api(kube.service_account_client(namespace, ACCOUNT))
    job = {
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}},
    }

    def one(_: int) -> int:
        try:
            batch.create_namespaced_job(namespace, job, dry_run="All", _preload_content=False)
        except client.ApiException as e:
            return int(e.status)
        return 201

    with ThreadPoolExecutor(2) as pool:
        return 429 in list(pool.map(one, range(2)))


def released(kube: KubeBed, namespace: str, ids: set[str]) -> bool:
    """Every Job of `ids` complete and without the runner's outcome finalizer."""
    jobs = [j for j in managed_jobs(kube, namespace) if j.metadata.annotations["kube-stream-runner/message-id"] in ids]
    return len(jobs) == len(ids) and all(FINALIZER not in (j.metadata.finalizers or []) for j in jobs)


def degraded(pod: Pod) -> list[str]:
    return list((pod.status() or {}).get("degraded") or [])


def refused_creates(samples: Samples) -> float:
    return samples.value("ksr_kube_requests_total", verb="create", code="429")


def test_apf_throttling_creates_slows_only_creates_and_loses_nothing(
    redis_server: Any,
    redis_client: Any,
    kube: KubeBed,
    namespace: str,
    apf: Apf,
    gate_label: Any,
    receiver: Any,
    tmp_path: Path,
) -> None:
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=service_account_kubeconfig(kube, namespace, tmp_path / "sa.kubeconfig"),
        QUEUE_WORKER_POOL_SIZE=str(POOL),
        KSR_CREATE_BACKOFF_CAP="2",  # an entry that waited out of the stream is back within 2 s
    )
    pod = Pod(env, tmp_path, "throttled-0")
    try:
        wait_for(pod.leading, timeout=60, what="the runner to lead")
        key, value = gate_label
        early = [f"early-{i}" for i in range(EARLY)]
        late = [f"late-{i}" for i in range(LATE)]
        after = [f"after-{i}" for i in range(AFTER)]
        gated = {"matchKey": key, "matchValue": value}
        for mid in early:
            xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url, nodeSelector=gated))
        wait_for(lambda: job_message_ids(kube, namespace) == sorted(early), timeout=30, what="the early Jobs")

        apf.throttle_creates()
        wait_for(lambda: create_refused(kube, namespace), timeout=30, interval=0.2, what="APF to refuse creates")
        throttled_at = time.monotonic()
        before = scrape(pod.port)
        for mid in late:
            xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url))
        wait_for(
            lambda: scrape(pod.port).value(THROTTLED, verb="create", source="server") > 0,
            timeout=30,
            interval=0.05,
            what="the runner to meet a 429 on a create",
        )
        reason = wait_for(
            lambda: next((r for r in degraded(pod) if r.startswith("kubernetes API throttling creates: ")), None),
            timeout=10,
            interval=0.05,
            what="the degraded reason on /status",
        )
        # APF doubles its Retry-After (1 s, 2, 4 ... 32) each Retry-After in which a level's flows
        # are refused 3 times or more: the first wave (POOL - 1 = 3 refused at once) may double it
        # once; hot retries would go on doubling it.
        assert re.fullmatch(r"kubernetes API throttling creates: \d+ 429s in the last 60 s, Retry-After [12] s", reason)

        # Creates throttled: the early Jobs run now, end, are released and called back.
        open_gate(kube, key, value)
        receiver.wait_for_callbacks(early, timeout=60, what="the early Jobs' callbacks while creates are throttled")
        wait_for(lambda: released(kube, namespace, set(early)), timeout=30, what="the early Jobs released")
        made = len(job_message_ids(kube, namespace)) - EARLY
        assert made < LATE, "the early Jobs were released only once the throttled creates were done"

        wait_for(
            lambda: job_message_ids(kube, namespace) == sorted(early + late),
            timeout=120,
            what="every late Job, one create at a time",
        )
        during = scrape(pod.port)
        window = time.monotonic() - throttled_at
        refused = refused_creates(during) - refused_creates(before)
        assert refused == during.value(THROTTLED, verb="create", source="server")  # each 429 counted once
        assert refused <= REFUSED_PER_SECOND * window + REFUSED_MARGIN, (
            f"{refused:.0f} creates refused in {window:.1f}s"
        )
        for verb in ("patch", "get", "list", "delete"):  # the release and the reads were never held back
            assert during.value(THROTTLED, verb=verb, source="server") == 0, verb

        apf.lift()
        lifted = time.monotonic()
        lifted_samples = scrape(pod.port)
        for mid in after:
            xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url))
        wait_for(
            lambda: job_message_ids(kube, namespace) == sorted(early + late + after),
            timeout=RECOVERY_BUDGET + 30,
            interval=0.05,
            what="the Jobs after the lift",
        )
        recovered = time.monotonic() - lifted
        print(
            f"APF: {refused:.0f} creates refused in {window:.1f}s of throttling, the early Jobs released with "
            f"{made}/{LATE} late Jobs made; {AFTER} Jobs {recovered:.1f}s after the lift"
        )
        assert recovered <= RECOVERY_BUDGET, f"{AFTER} Jobs took {recovered:.1f}s after the FlowSchema went"
        receiver.wait_for_callbacks(late + after, timeout=90, what="the late Jobs' callbacks")
        wait_for(lambda: not degraded(pod), timeout=THROTTLE_SHOWN + 20, what="the degraded reason to go")
        final = scrape(pod.port)
        # at most one create in flight at the lift is refused after it
        assert refused_creates(final) - refused_creates(lifted_samples) <= 1

        # Lost 0, duplicates 0: exactly one Job and one callback 0 per message.
        everyone = early + late + after
        assert job_message_ids(kube, namespace) == sorted(everyone)
        statuses = receiver.statuses()
        assert {mid: statuses.get(mid, []).count(0) for mid in everyone} == dict.fromkeys(everyone, 1)
    except BaseException:
        print(pod.tail())
        raise
    finally:
        pod.stop()


def test_the_client_limit_paces_every_request_and_shows_on_status(
    redis_server: Any, redis_client: Any, kube: KubeBed, namespace: str, receiver: Any, tmp_path: Path
) -> None:
    qps, burst = 4.0, 2
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_KUBE_QPS=str(qps),
        KSR_KUBE_BURST=str(burst),
        KSR_CREATE_BACKOFF_CAP="2",
    )
    pod = Pod(env, tmp_path, "paced-0")
    try:
        wait_for(pod.leading, timeout=60, what="the runner to lead")
        ids = [f"paced-{i}" for i in range(12)]
        started = time.monotonic()
        before = scrape(pod.port)
        for mid in ids:
            xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url))
        wait_for(
            lambda: any(r.startswith("KSR_KUBE_QPS/KSR_KUBE_BURST pacing creates: ") for r in degraded(pod)),
            timeout=30,
            what="the pacing on /status",
        )
        receiver.wait_for_callbacks(ids, timeout=90, what="every paced message's callbacks")
        after = scrape(pod.port)
        window = time.monotonic() - started
        sent = after.total("ksr_kube_requests_total") - before.total("ksr_kube_requests_total")
        print(f"KSR_KUBE_QPS={qps:g}: {sent:.0f} requests in {window:.1f}s")
        assert sent <= burst + qps * window + 1, f"{sent:.0f} requests in {window:.1f}s at KSR_KUBE_QPS={qps:g}"
        assert after.value(THROTTLED, verb="create", source="client") >= 1
        assert after.value(THROTTLED, verb="create", source="server") == 0
        assert job_message_ids(kube, namespace) == sorted(ids)
    except BaseException:
        print(pod.tail())
        raise
    finally:
        pod.stop()
