"""Fixtures shared by the integration and e2e tiers (imported by their conftest.py).

Real servers only: a redis-server and the Kubernetes test bed, each started once per
test run. A server that cannot start fails the run; it is skipped only when
KSR_TESTS_ALLOW_SKIP=1 and not under CI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

from tests.support.receiver import Receiver
from tests.support.redis_server import RedisServer


def _unavailable(what: str, why: str) -> None:
    if os.environ.get("CI") != "true" and os.environ.get("KSR_TESTS_ALLOW_SKIP") == "1":
        pytest.skip(f"{what} unavailable: {why}")
    pytest.fail(f"{what} unavailable: {why}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except Exception as e:  # missing binary, port trouble: say so and fail
        _unavailable("redis-server", str(e))
    yield server
    server.close()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the shared server, with every database flushed before the test."""
    if not redis_server.running:  # a test that stopped it must not break the next one
        redis_server.start()
    conn = redis_server.client()
    conn.flushall()
    yield conn
    conn.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop and restart it."""
    try:
        server = RedisServer().start()
    except Exception as e:
        _unavailable("redis-server", str(e))
    yield server
    server.close()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.kube import KubeBed, binaries_built

    if not binaries_built():
        _unavailable("Kubernetes test bed", "binaries not built; run `scripts/kube-testenv build` (make test does)")
    try:
        bed = KubeBed(tmp_path_factory.mktemp("kube"))
    except Exception as e:  # up() stops what it started before raising
        _unavailable("Kubernetes test bed", str(e))
    try:
        yield bed
    finally:
        bed.close()


@pytest.fixture
def namespace(kube) -> Iterator[str]:
    from tests.support.kube import delete_namespace, new_namespace

    name = new_namespace(kube)
    yield name
    delete_namespace(kube, name)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 recording every callback."""
    r = Receiver().start()
    yield r
    r.close()


@pytest.fixture(scope="session")
def image() -> str:
    """The image built from the Dockerfile by scripts/build-image with podman (cached)."""
    from tests.support import containers

    if shutil.which("podman") is None:
        containers.unavailable("podman is not installed (make test installs it with scripts/install-system-deps)")
    base = containers.build_image("--base-only")  # mmdebstrap + import: no container run yet
    tried = containers.podman("run", "--rm", "--network=host", base, "true", check=False)
    if tried.returncode != 0:
        containers.unavailable(tried.stderr.strip()[-2000:])
    return containers.build_image()


@pytest.fixture(scope="session", autouse=True)
def no_ksr_dev_of_the_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`ksr` without REDIS_URL uses a running `ksr dev` found through its runtime file under
    XDG_RUNTIME_DIR (runner/cli/_devfile.py): a test must never find the user's own."""
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("xdg-runtime"))
    yield
    if saved is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
