"""Integration tier: real redis-server and real kube-apiserver, one each per test run."""

from tests.support.fixtures import kube, namespace, private_redis, redis_client, redis_server  # noqa: F401
