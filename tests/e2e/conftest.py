"""End-to-end tier: several `ksr run` processes against the real Redis and control plane."""

from tests.support.fixtures import kube, namespace, private_redis, redis_client, redis_server  # noqa: F401
