"""End-to-end tier: several `ksr run` processes against the real Redis and control plane."""

from tests.support.fixtures import (  # noqa: F401
    kube, namespace, private_redis, receiver, redis_client, redis_server,
)
