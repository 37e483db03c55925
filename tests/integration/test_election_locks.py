"""The lock contract on real servers: both backends give the same answers, and a request to
a server that does not answer ends within its timeout."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from election.errors import ConflictError, LockError, LockUnavailable
from election.lease_lock import LeaseLock
from election.record import LeaderRecord
from election.redis_lock import RedisLock
from tests.support.ports import free_port

UTC = dt.UTC


@pytest.fixture(params=["redis", pytest.param("lease", marks=pytest.mark.kube)])
def lock(request: pytest.FixtureRequest) -> Any:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        request.getfixturevalue("redis_client")  # flushed
        return RedisLock.from_url(server.url, name=f"contract-{uuid.uuid4().hex[:6]}", request_timeout=2.0)
    kube = request.getfixturevalue("kube")
    ns = request.getfixturevalue("namespace")
    return LeaseLock(kube.api_client(), namespace=ns, name="contract", request_timeout=5.0)


def record(holder: str | None, *, transitions: int = 0, micro: int = 0, version: str | None = None) -> LeaderRecord:
    t = dt.datetime(2024, 5, 1, 12, 0, 0, micro, tzinfo=UTC)
    return LeaderRecord(
        holder=holder, lease_duration=3.0, acquire_time=t, renew_time=t, transitions=transitions, version=version
    )


def same(a: LeaderRecord | None, b: LeaderRecord) -> bool:
    """Equal up to the version, and up to the microsecond the Lease lock may add to a
    timestamp with no fraction (see LeaseLock._body)."""
    assert a is not None

    def norm(r: LeaderRecord) -> tuple:
        return (
            r.holder,
            r.lease_duration,
            r.transitions,
            r.acquire_time and r.acquire_time.replace(microsecond=0),
            r.renew_time and r.renew_time.replace(microsecond=0),
        )

    return norm(a) == norm(b)


def test_get_create_update_with_optimistic_concurrency(lock: Any) -> None:
    assert lock.get() is None
    created = lock.create(record("a"))
    assert created.version and same(lock.get(), record("a"))
    assert lock.get().version == created.version

    with pytest.raises(ConflictError):
        lock.create(record("b"))

    renewed = lock.update(record("a", micro=250000, version=created.version))
    assert renewed.version != created.version
    got = lock.get()
    assert got == renewed and got.renew_time == dt.datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)

    with pytest.raises(ConflictError):  # a stale version loses
        lock.update(record("b", transitions=1, version=created.version))
    assert lock.get().holder == "a"

    released = lock.update(record(None, version=renewed.version))
    assert lock.get().holder is None and released.version != renewed.version
    taken = lock.update(record("b", transitions=1, version=released.version))
    assert lock.get() == taken and taken.transitions == 1


def test_update_of_a_vanished_record(lock: Any) -> None:
    """Redis refuses it. The apiserver creates a Lease on update when none exists (leases
    allow create-on-update); that is as safe as a create: one writer wins, and any other
    writer still holding the old version gets a 409."""
    if isinstance(lock, RedisLock):
        with pytest.raises(ConflictError):
            lock.update(record("a", version="1"))
        return
    created = lock.update(record("a", version="1"))
    assert same(lock.get(), record("a"))
    with pytest.raises(ConflictError):
        lock.update(record("b", version="1"))
    assert lock.get() == created


def test_redis_record_is_readable_with_redis_cli(redis_server: Any, redis_client: Any) -> None:
    lock = RedisLock.from_url(redis_server.url, name="ksr-leader")
    lock.create(record("pod-a", transitions=2))
    fields = {k.decode(): v.decode() for k, v in redis_client.hgetall("ksr:election:ksr-leader").items()}
    assert fields == {
        "holder": "pod-a",
        "lease_duration": "3.0",
        "transitions": "2",
        "version": "1",
        "acquire_time": "2024-05-01T12:00:00.000000Z",
        "renew_time": "2024-05-01T12:00:00.000000Z",
    }


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def lease_lock_at(port: int, timeout: float) -> LeaseLock:
    cfg = k8s.Configuration()
    cfg.host = f"https://127.0.0.1:{port}"
    cfg.verify_ssl = False
    cfg.retries = False
    return LeaseLock(k8s.ApiClient(cfg), namespace="default", name="x", request_timeout=timeout)


@pytest.mark.parametrize("kind", ["redis", "lease"])
def test_a_server_that_does_not_answer_times_out_as_unavailable(kind: str, silent_server: int) -> None:
    lock: Any = (
        RedisLock.from_url(f"redis://127.0.0.1:{silent_server}/0", name="x", request_timeout=0.5)
        if kind == "redis"
        else lease_lock_at(silent_server, 0.5)
    )
    for call in (lock.get, lambda: lock.create(record("a")), lambda: lock.update(record("a", version="1"))):
        began = time.monotonic()
        with pytest.raises(LockUnavailable):
            call()
        assert time.monotonic() - began < 1.5


@pytest.mark.parametrize("kind", ["redis", "lease"])
def test_a_closed_port_is_unavailable(kind: str) -> None:
    port = free_port()
    lock: Any = (
        RedisLock.from_url(f"redis://127.0.0.1:{port}/0", name="x", request_timeout=0.5)
        if kind == "redis"
        else lease_lock_at(port, 0.5)
    )
    with pytest.raises(LockUnavailable):
        lock.get()


@pytest.mark.kube
def test_lease_lock_without_permission_is_a_lock_error_not_unavailable(kube: Any, namespace: str) -> None:
    nobody = kube.service_account_client(namespace, "nobody")
    lock = LeaseLock(nobody, namespace=namespace, name="ksr-leader", request_timeout=5.0)
    with pytest.raises(LockError) as info:
        lock.get()
    assert not isinstance(info.value, LockUnavailable) and "403" in str(info.value)
