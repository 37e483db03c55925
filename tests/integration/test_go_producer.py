"""The Go producer example (clients/go-example) against a real runner: it validates with
docs/message.schema.json and XADDs; the runner (local executor) runs what it sent, and what
it refuses never reaches the stream, with the fields named. Its validator (RE2 patterns,
santhosh-tekuri/jsonschema) names the same fields as the runner's on the edge cases.

The binary is built by `make go-example` (a prerequisite of `make test`), never here."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.client import Client
from runner.settings import Settings
from tests.support.fixtures import _unavailable
from tests.support.message_cases import runner_fields, tricky_messages
from tests.support.messages import VALID, message
from tests.support.pipeline import ROOT, base_env, runner_thread

sys.path.insert(0, str(Path(ROOT) / "scripts"))
from testenv import go_example  # noqa: E402

SCHEMA = str(Path(ROOT) / "docs" / "message.schema.json")


@pytest.fixture(scope="module")
def example() -> str:
    binary = go_example.binary()
    if not binary.exists():
        _unavailable("the Go producer example", f"{binary} is not built; run `make go-example` (make test does)")
    return str(binary)


def run(example: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([example, "-schema", SCHEMA, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_a_message_it_sends_becomes_a_job_that_completes(example, redis_server, redis_client, tmp_path) -> None:
    msg = message("go-1", "default", command=["/bin/sh", "-c", "exit 0"])
    path = tmp_path / "message.json"
    path.write_text(json.dumps(msg, indent=2))
    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None)
    client = Client(Settings.from_env(env))
    try:
        with runner_thread(env):
            sent = run(example, "-redis", redis_server.url, "-stream", "ksr:jobs:default", str(path))
            assert sent.returncode == 0, sent.stderr
            status = client.wait("go-1", timeout=60)
    finally:
        client.close()
    assert status.state == "completed" and status.stream == "ksr:jobs:default"
    assert status.record["entry_id"] == sent.stdout.strip()  # the entry it printed is the one run
    assert json.loads(redis_client.xrange("ksr:jobs:default")[0][1][b"payload"]) == msg


def test_a_message_it_refuses_is_not_sent_and_the_fields_are_named(example, redis_server, redis_client) -> None:
    bad = copy.deepcopy(VALID)
    del bad["job"]["image"]
    bad["job"]["gpuNumber"] = 9
    bad["job"]["env"][0]["name"] = "1x"
    refused = run(example, "-redis", redis_server.url, "-", stdin=json.dumps(bad))
    assert refused.returncode == 1
    fields = [line.split(": ", 1)[0] for line in refused.stderr.splitlines()]
    assert fields == ["job.env[0].name", "job.gpuNumber", "job.image"], refused.stderr
    assert "got 9, want 4" in refused.stderr
    assert redis_client.exists("ksr:jobs:default") == 0
    not_json = run(example, "-", stdin="{")
    assert not_json.returncode == 1 and not_json.stderr.startswith("payload: ")


def test_the_go_validator_agrees_with_the_runner_on_the_edge_cases(example) -> None:
    docs = [d for d in tricky_messages() if "\ud800" not in json.dumps(d, ensure_ascii=False)]
    # Excluded: a lone surrogate, which Go's UTF-8 strings cannot hold (it reads U+FFFD).
    done = run(example, "-batch", stdin="".join(json.dumps(d) + "\n" for d in docs))
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(docs) > 1000
    disagree = [
        (doc, by_go, by_runner)
        for doc, by_go in zip(docs, answers)
        if (set(by_go) if by_go else None) != (by_runner := runner_fields(doc))
    ]
    assert not disagree, disagree[:3]
