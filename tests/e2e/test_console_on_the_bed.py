"""The console of real replicas on the bed, in Debian's Chromium (tests/support/browser.py):
two `ksr run` processes (A leads, B follows) over the real Redis and control plane, a known
workload through Redis and the webhook receiver, and B's console read and driven in the
browser as an operator would, its values checked against what Redis and the bed hold.

The workload: two messages whose Jobs complete via kwok (callbacks 0, 1, 2), one whose pod
fails (kwok's `ksr-test-fail`: callback 3), one whose pod never starts (`ksr-test-pending`:
an active Job), one delayed an hour, one for a namespace that does not exist yet (the
apiserver's 404: dead letter `api_rejected`, replayed once the namespace is made), one
whose id is markup (the schema refuses such an id: dead letter `invalid`, found by that id),
and one whose command is markup (it runs: its payload is shown)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from kubernetes import client

from tests.support.browser import chromium, log_in
from tests.support.console import HOSTILE_COMMAND, HOSTILE_ID
from tests.support.kube import delete_namespace, managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

STREAM = "ksr:jobs:default"
LOCK = "ksr-leader"
TOKEN = "console-bed-token-0123456789"
MAX_ACTIVE = 5
SECRET = "s3cr3t-env-value-never-shown"
SCHEDULED = STREAM + ":scheduled"  # delayed messages held (runner.store.schedule)


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    """Every Pod the test starts goes here; all are killed at the end whatever happened."""
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.kill_container()


@pytest.fixture
def late_namespace(kube: Any, namespace: str) -> Iterator[str]:
    """A namespace the policy allows that does not exist until the test makes it."""
    name = f"{namespace}-late"
    yield name
    delete_namespace(kube, name)


def make_namespace(kube: Any, name: str) -> None:
    core = client.CoreV1Api(kube.api_client())
    core.create_namespace({"metadata": {"name": name, "labels": {"ksr-test": "true"}}})
    wait_for(lambda: core.read_namespaced_service_account("default", name), timeout=30, what=f"default SA in {name}")


def lease_term(kube: Any, namespace: str) -> tuple[str, int]:
    spec = client.CoordinationV1Api(kube.api_client()).read_namespaced_lease(LOCK, namespace).spec
    return spec.holder_identity, int(spec.lease_transitions or 0)


def heartbeat(redis_client: Any, identity: str) -> dict[str, Any] | None:
    raw = redis_client.get(f"ksr:replica:{identity}")
    return None if raw is None else dict(json.loads(raw))


def state(redis_client: Any, message_id: str) -> str | None:
    raw = redis_client.hget(f"ksr:msg:{message_id}", "state")
    return None if raw is None else raw.decode()


def cells(page: Any, selector: str) -> list[list[str]]:
    """The text of each cell of each row matching `selector`."""
    return page.eval_on_selector_all(
        selector, "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))"
    )


def test_the_console_of_a_follower_shows_and_steers_the_real_deployment(
    pods, redis_server, redis_client, kube, namespace, late_namespace, receiver, tmp_path
):
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_ALLOWED_NAMESPACES=f"{namespace},{late_namespace}",
        KSR_MAX_ACTIVE_JOBS=str(MAX_ACTIVE),
        KSR_CONSOLE_TOKEN=TOKEN,
        KSR_CONSOLE_ACTIONS="true",
        KSR_CONSOLE_READ_AUTH="true",  # the chart's default
    )
    pods.append(Pod(env, tmp_path, "console-a"))
    a = pods[-1]
    wait_for(a.leading, timeout=60, what="console-a leading")
    pods.append(Pod(env, tmp_path, "console-b"))
    b = pods[-1]
    wait_for(b.status, timeout=60, what="console-b serving /status")
    with chromium() as browser:
        page = browser.new_page()
        try:
            _operate(page, a, b, redis_client, kube, namespace, late_namespace, receiver)
        except BaseException:
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
            print(f"the page when it failed: {page.url}, {tmp_path / 'failed.png'}")
            for p in pods:
                print(f"--- {p.name}\n{p.tail()}")
            raise


def _operate(page: Any, a: Pod, b: Pod, redis_client: Any, kube: Any, namespace: str, late: str, receiver: Any) -> None:
    ok = ["bed-ok-0", "bed-ok-1"]
    for mid in ok:
        xadd(
            redis_client,
            STREAM,
            message(mid, namespace, webhook=receiver.url, env=[{"name": "DB_PASSWORD", "value": SECRET}]),
        )
    xadd(redis_client, STREAM, message("bed-failed", namespace, service="ksr-test-fail", webhook=receiver.url))
    xadd(redis_client, STREAM, message("bed-stuck", namespace, service="ksr-test-pending"))
    xadd(redis_client, STREAM, {**message("bed-delayed", namespace), "delaySeconds": 3600})
    xadd(redis_client, STREAM, message("bed-late", late))
    xadd(redis_client, STREAM, message(HOSTILE_ID, namespace))
    xadd(redis_client, STREAM, message("bed-hostile", namespace, command=["/bin/sh", "-c", HOSTILE_COMMAND]))

    receiver.wait_for_callbacks(ok, timeout=60, what="the completed messages' callbacks")
    # each attempt's note (the record's cbl_<status>) is written once the receiver has answered
    wait_for(
        lambda: all(redis_client.hexists(f"ksr:msg:{m}", f"cbl_{s}") for m in ok for s in (0, 1, 2)),
        timeout=15,
        what="the callback attempts noted",
    )
    wait_for(lambda: receiver.statuses().get("bed-failed") == [0, 1, 3], timeout=60, what="bed-failed's callbacks")

    def ends() -> dict[str, Any]:
        return {
            "dead letters": redis_client.xlen(STREAM + ":dead"),
            "bed-hostile": state(redis_client, "bed-hostile"),
            "bed-stuck": state(redis_client, "bed-stuck"),  # its Job made, its pod never starts
            "held": redis_client.zcard(SCHEDULED),
        }

    wanted = {"dead letters": 2, "bed-hostile": "completed", "bed-stuck": "created", "held": 1}
    try:
        wait_for(lambda: ends() == wanted, timeout=60, what="the workload's other ends")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {ends()}") from None
    leader, term = lease_term(kube, namespace)
    assert leader == "console-a"
    # Both heartbeats as they are now (written every 3 s): A leading in that term, B following A.
    wait_for(
        lambda: (
            (heartbeat(redis_client, "console-a") or {}).get("term") == term
            and (heartbeat(redis_client, "console-b") or {}).get("leader") == "console-a"
        ),
        timeout=15,
        what="both heartbeats",
    )

    base = f"http://127.0.0.1:{b.port}"
    page.goto(base + "/ui/")
    assert page.url.startswith(base + "/ui/login"), "reading needs the token (KSR_CONSOLE_READ_AUTH)"
    log_in(page, base, TOKEN)

    # -- B's overview: A leads in the Lease's term; both replicas; the streams and Jobs as they are.
    assert page.text_content("#leader") == "console-a"
    assert page.text_content("#leader + .s").split("·")[0].strip() == f"term {term}"
    assert "served by console-b" in " ".join(page.text_content("header .who").split())
    replicas = [row[:2] for row in cells(page, "#replicas tbody tr")]
    assert replicas == [["console-a", "leader"], ["console-b", "follower"]]
    ready, pending, lag, dead, _oldest, kept = cells(page, f'#streams tr[data-stream="{STREAM}"]')[0][1:7]
    assert (ready, pending, lag, dead) == ("0", "0", "0", "2")
    assert int(kept) == redis_client.xlen(STREAM)
    assert int(redis_client.xpending(STREAM, "ksr")["pending"]) == 0
    unfinished = [j.metadata.name for j in managed_jobs(kube, namespace) if not (j.status.succeeded or j.status.failed)]
    assert len(unfinished) == redis_client.scard("ksr:active") == 1  # bed-stuck's Job
    assert " ".join(page.text_content("#active-jobs").split()) == f"1 / {MAX_ACTIVE}"
    scheduled = page.locator(".card", has_text="scheduled").locator(".v").inner_text()
    assert scheduled == "1" == str(redis_client.zcard(SCHEDULED))

    # -- Search a completed message: its Job as the bed names it, the timeline in order, callbacks delivered.
    (job,) = [
        j for j in managed_jobs(kube, namespace) if j.metadata.annotations["kube-stream-runner/message-id"] == ok[0]
    ]
    page.goto(base + "/ui/messages")
    page.fill("#search-id", ok[0])
    page.click("#search-go")
    page.wait_for_selector("#timeline")
    assert page.text_content("#message-id") == ok[0]
    assert page.text_content("#job-name") == f"{namespace}/{job.metadata.name}"
    assert page.text_content("#record-state") == "completed"
    stamps = [int(x) for x in page.eval_on_selector_all("#timeline tr[data-at]", "rows => rows.map(r => r.dataset.at)")]
    kinds = page.eval_on_selector_all("#timeline tr[data-kind]", "rows => rows.map(r => r.dataset.kind)")
    assert stamps == sorted(stamps), stamps
    assert kinds[0] == "added" and kinds.index("job_created") < kinds.index("pod_started") < kinds.index("ended")
    attempts = [(row[1], row[2]) for row in cells(page, '#timeline tr[data-kind="callback_attempt"]')]
    assert attempts == [(f"callback_attempt callback {s} attempt 1", "200") for s in (0, 1, 2)], attempts
    assert SECRET not in page.content()

    # -- Failures by error code; dead letters by reason.
    page.goto(base + "/ui/failures")
    failures = cells(page, "#failures tbody tr")
    # the failed Job, and the dead letter with a usable id (its end is a 99 DeadLettered)
    assert sorted(row[:3] for row in failures) == [
        ["BackoffLimitExceeded", "1", "bed-failed"],
        ["DeadLettered", "1", "bed-late"],
    ], failures
    page.goto(base + "/ui/dead")
    groups = {row[1]: row[2] for row in cells(page, "#dead-groups tbody tr")}
    assert groups == {"api_rejected": "1", "invalid": "1"}, groups
    assert page.evaluate("window.__pwned") is None

    # -- The namespace made, the api_rejected dead letter replayed through the confirm step.
    make_namespace(kube, late)
    page.locator('#dead-groups tr[data-reason="api_rejected"]').get_by_text("replay…").click()
    page.wait_for_selector("#confirm")
    assert page.text_content("h1") == "Replay 1 dead letter?"
    before = redis_client.xlen(STREAM)
    page.click("#confirm")
    page.wait_for_selector("#outcome")
    assert page.text_content("#outcome") == "replayed 1, refused 0"
    assert redis_client.xlen(STREAM) == before + 1
    (_, fields), *_ = redis_client.xrevrange(STREAM, count=1)
    assert json.loads(fields[b"payload"])["id"] == "bed-late"
    assert [f[b"reason"] for _, f in redis_client.xrange(STREAM + ":dead")] == [b"invalid"]
    audit = [f for _, f in redis_client.xrevrange("ksr:events", count=50) if f.get(b"action") == b"dead.replay"]
    assert audit and audit[0][b"by"].decode().startswith("alice@"), audit
    wait_for(lambda: state(redis_client, "bed-late") == "completed", timeout=60, what="the replayed message's Job")

    # -- The delayed message, held until its time.
    page.goto(base + "/ui/message?id=bed-delayed")
    assert page.text_content("#where") == "scheduled"
    assert page.locator("#cancel").count() == 1  # a held message may be cancelled

    # -- Hostile strings render as text and run nothing.
    page.goto(base + "/ui/message?id=" + quote(HOSTILE_ID, safe=""))
    assert page.text_content("#message-id") == HOSTILE_ID
    assert page.text_content("#where") == "dead"
    assert page.locator("#main img").count() == 0 and page.evaluate("window.__pwned") is None
    page.goto(base + "/ui/message?id=bed-hostile")
    assert json.loads(page.text_content("#payload"))["job"]["command"][2] == HOSTILE_COMMAND
    assert page.locator("#main script").count() == 0 and page.evaluate("window.__pwned") is None

    # -- A stops (SIGTERM): B leads in the next term, and its overview says so.
    a.stop()
    assert a.proc.returncode == 0
    wait_for(b.leading, timeout=30, what="console-b leading")
    assert lease_term(kube, namespace) == ("console-b", term + 1)
    page.goto(base + "/ui/")
    assert page.text_content("#leader") == "console-b"
    assert page.text_content("#leader + .s").split("·")[0].strip() == f"term {term + 1}"
    roles = dict(row[:2] for row in cells(page, "#replicas tbody tr"))
    assert roles["console-b"] == "leader" and roles.get("console-a", "follower") == "follower", roles
