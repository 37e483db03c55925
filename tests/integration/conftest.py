"""Integration tier: real redis-server and real kube-apiserver, one each per test run."""

from tests.support.fixtures import (  # noqa: F401
    kube, namespace, private_redis, receiver, redis_client, redis_server,
)
