"""KubeApi's decisions that a real apiserver shows only in races: a 409 whose Job is gone on
the read, and a finalizer list that moved under a JSON patch. A stub stands in for the
requests (runner.jobs.rest.Rest) (pure logic; the integration tests run the same paths for real)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from runner.errors import KubeForbidden
from runner.jobs.kube import KubeApi
from runner.jobs.manifest import FINALIZER
from runner.signals import Signals


class Response:
    def __init__(self, data: bytes) -> None:
        self.data = data


class StubRest:
    """Answers from a script: each request pops the next answer of its verb (an exception
    is raised)."""

    VERBS = {"POST": "create", "GET": "read", "PATCH": "patch"}

    def __init__(self, **answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []

    def request(self, method: str, path: str, *, body: bytes | None = None, **kw: Any) -> Any:
        verb = self.VERBS[method]
        if verb == "create":
            arg = json.loads(body or b"")["metadata"]["name"]
        elif verb == "patch":
            assert kw.get("content_type") == "application/json-patch+json"
            arg = json.loads(body or b"")
        else:
            arg = path.rsplit("/", 1)[1]
        self.calls.append((verb, arg))
        answer = self.answers[verb].pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def api_with(rest: StubRest) -> KubeApi:
    api = KubeApi(object(), timeout=1, signals=Signals([]))  # type: ignore[arg-type]
    api.rest = rest  # type: ignore[assignment]
    return api


def error(status: int) -> ApiException:
    return ApiException(status=status, reason={409: "Conflict", 404: "Not Found", 422: "Invalid"}.get(status, "x"))


MANIFEST = {"metadata": {"name": "job-1", "namespace": "ns"}}


def test_a_409_whose_job_is_gone_is_not_created_again() -> None:
    batch = StubRest(create=[error(409)], read=[error(404)])
    ref = api_with(batch).create_job(MANIFEST, message_id="m1")
    assert (ref.name, ref.namespace, ref.uid, ref.adopted, ref.gone) == ("job-1", "ns", "", True, True)
    assert [verb for verb, _ in batch.calls] == ["create", "read"]  # no second create


def job(*finalizers: str) -> dict[str, Any]:
    return {"metadata": {"name": "job-1", "namespace": "ns", "finalizers": list(finalizers)}}


def test_the_finalizer_patch_tests_its_index_then_removes_it() -> None:
    batch = StubRest(patch=[Response(b"{}")])
    api_with(batch).remove_finalizer(job("foregroundDeletion", FINALIZER), FINALIZER)
    assert batch.calls == [
        (
            "patch",
            [
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ],
        )
    ]


def test_a_moved_finalizer_list_is_read_again() -> None:
    fresh = Response(
        b'{"metadata": {"name": "job-1", "namespace": "ns", "finalizers": ["kube-stream-runner/outcome"]}}'
    )
    batch = StubRest(patch=[error(422), Response(b"{}")], read=[fresh])
    api_with(batch).remove_finalizer(job("foregroundDeletion", FINALIZER), FINALIZER)
    assert [(verb, arg[0]["path"] if verb == "patch" else arg) for verb, arg in batch.calls] == [
        ("patch", "/metadata/finalizers/1"),
        ("read", "job-1"),
        ("patch", "/metadata/finalizers/0"),
    ]


@pytest.mark.parametrize("answers", [{"patch": [error(404)]}, {"patch": [error(409)], "read": [error(404)]}])
def test_a_job_gone_meanwhile_needs_nothing_more(answers: dict[str, list[Any]]) -> None:
    api_with(StubRest(**answers)).remove_finalizer(job(FINALIZER), FINALIZER)


def test_without_our_finalizer_nothing_is_sent_and_a_refusal_is_raised() -> None:
    batch = StubRest()
    api_with(batch).remove_finalizer(job("foregroundDeletion"), FINALIZER)
    assert batch.calls == []
    with pytest.raises(KubeForbidden):
        api_with(StubRest(patch=[error(403)])).remove_finalizer(job(FINALIZER), FINALIZER)
