"""The test bed's own decisions, without starting it: what the start-up check blames for each
way a Job can fail to finish (a scripted stand-in for Bed.request), and what `up` finds in a
directory an earlier start left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from testenv import bed as testbed  # noqa: E402
from testenv import selfcheck, stale  # noqa: E402


def _pod(uid: str, *, node: str | None = None, phase: str = "Pending", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"ksr-testenv-check-{uid}", "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


class ScriptedBed:
    """Answers the check's requests: the Job never completes; the pod lists come from `pods`, in turn."""

    def __init__(self, directory: Path, pods: list[list[dict[str, Any]]], complete_at: int | None = None) -> None:
        self.dir = directory
        self.pods = pods
        self.complete_at = complete_at
        self.polls = 0
        self.deleted: list[str] = []

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
        if method == "POST":
            return 201, {}
        if method == "DELETE":
            self.deleted.append(path)
            return 200, {}
        if "/pods" in path:
            items = self.pods[min(self.polls, len(self.pods) - 1)]
            self.polls += 1
            return 200, {"items": items}
        done = self.complete_at is not None and self.polls >= self.complete_at
        return 200, {"status": {"conditions": [{"type": "Complete", "status": "True"}] if done else []}}

    def running(self) -> dict[str, bool]:
        return {"etcd": True, "kube-apiserver": True, "kwok": False}


@pytest.mark.parametrize(
    ("pods", "blamed"),
    [
        ([[]], "no pod was created: the Job controller (kube-controller-manager) did not act"),
        ([[_pod("a")]], "pod ksr-testenv-check-a was not bound to a node (phase Pending): kube-scheduler"),
        ([[_pod("a", node="kwok-node-0")]], "was bound to kwok-node-0 but never started: kwok did not run it"),
        ([[_pod("a", node="kwok-node-1", phase="Running")]], "runs on kwok-node-1 but never finished: kwok"),
        ([[_pod("a", node="n", phase="Succeeded")]], "ended Succeeded on n but the Job was not marked Complete"),
    ],
)
def test_check_names_the_step_that_did_not_happen(tmp_path: Path, pods: list, blamed: str) -> None:
    bed = ScriptedBed(tmp_path, pods)
    with pytest.raises(selfcheck.CheckFailed) as failed:
        selfcheck.run(bed, timeout=0.5)  # type: ignore[arg-type]
    message = str(failed.value)
    assert message.startswith("start-up check: Job default/ksr-testenv-check not complete after 0s: ")
    assert blamed in message
    assert message.endswith(f"; not running: kwok; logs in {tmp_path}/<component>.log")
    assert bed.deleted == ["/apis/batch/v1/namespaces/default/jobs/ksr-testenv-check"]


@pytest.mark.parametrize(
    "pods",
    [
        [[_pod("a", node="n", phase="Running")], []],  # listed, then gone
        [[_pod("a", node="n", phase="Running", deleting=True)]],  # being deleted
    ],
)
def test_check_fails_at_once_on_a_pod_deleted_before_the_end(tmp_path: Path, pods: list) -> None:
    bed = ScriptedBed(tmp_path, pods)
    with pytest.raises(selfcheck.CheckFailed) as failed:
        selfcheck.run(bed, timeout=30)  # type: ignore[arg-type]
    assert "pod ksr-testenv-check-a of Job default/ksr-testenv-check was deleted before the Job completed" in str(
        failed.value
    )
    assert bed.polls <= 2  # no waiting out the timeout
    assert bed.deleted


def test_check_returns_once_the_job_is_complete(tmp_path: Path) -> None:
    bed = ScriptedBed(tmp_path, [[_pod("a", node="n", phase="Succeeded")]], complete_at=1)
    assert selfcheck.run(bed, timeout=30) < 5  # type: ignore[arg-type]
    assert bed.deleted


@pytest.fixture
def gone_pid() -> Iterator[int]:
    proc = subprocess.Popen(["true"])
    proc.wait()
    yield proc.pid


def test_survey_of_an_interrupted_start(tmp_path: Path, gone_pid: int) -> None:
    (tmp_path / "etcd" / "member").mkdir(parents=True)
    (tmp_path / "etcd" / "member" / "db").write_bytes(b"x" * 2_000_000)
    (tmp_path / "ca.crt").write_text("old")
    (tmp_path / "notes.txt").write_text("not ours")
    state = {"ready": False, "owner": gone_pid, "ports": {}, "procs": {"etcd": {"pid": gone_pid, "cmd": ["etcd"]}}}
    (tmp_path / "state.json").write_text(json.dumps(state))

    left = stale.survey(tmp_path)

    assert left.notes == [
        "the last `up` never finished (interrupted or failed start)",
        f"its owner (pid {gone_pid}) is gone",
        f"etcd pid {gone_pid} recorded but gone",
        "etcd data of an earlier start (2.0 MB)",
    ]
    assert left.processes == {}
    assert sorted(p.name for p in left.files) == ["ca.crt", "etcd", "state.json"]
    assert not stale.in_use(tmp_path, left)

    stale.clear(tmp_path, left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # only what up generated goes


def test_survey_of_an_empty_directory_finds_nothing(tmp_path: Path) -> None:
    assert not stale.survey(tmp_path).found


def test_processes_of_a_directory_are_only_those_naming_a_file_in_it(tmp_path: Path) -> None:
    assert stale.processes_of(tmp_path) == {}
    assert stale._names_dir(f"--data-dir={tmp_path}/etcd", tmp_path)
    assert stale._names_dir(f"{tmp_path}/kwok-stages.yaml", tmp_path)
    assert not stale._names_dir(f"--data-dir={tmp_path}/sub/etcd", tmp_path)  # a bed of a subdirectory
    assert not stale._names_dir(f"--data-dir={tmp_path}x/etcd", tmp_path)
    assert not stale._names_dir("--etcd-servers=http://127.0.0.1:2379", tmp_path)
    assert os.getpid() not in stale.processes_of(Path("/"))  # python is not a bed component


def test_a_port_taken_since_this_start_is_told_apart_from_an_earlier_one(tmp_path: Path) -> None:
    (tmp_path / "etcd.log").write_bytes(b"listen tcp 127.0.0.1:1: bind: address already in use\n")
    (tmp_path / "kube-apiserver.log").write_bytes(b"started\n")
    since = testbed._log_sizes(tmp_path, ["etcd", "kube-apiserver", "kwok"])
    assert since == {"etcd": 53, "kube-apiserver": 8, "kwok": 0}
    assert testbed._port_taken(tmp_path, since) == []  # the earlier attempt's line does not count
    with open(tmp_path / "kube-apiserver.log", "ab") as log:
        log.write(b'failed to listen on 127.0.0.1:2: bind: address already in use"\n')
    assert testbed._port_taken(tmp_path, since) == ["kube-apiserver"]
