"""The Redis fixture is a real server, and each test starts from an empty one."""

from __future__ import annotations


def test_redis_is_real_and_clean(redis_client, redis_server):
    assert redis_client.dbsize() == 0
    info = redis_client.info("server")
    assert int(info["tcp_port"]) == redis_server.port
    redis_client.xadd("ksr:jobs:default", {"payload": b"{}"})
    assert redis_client.xlen("ksr:jobs:default") == 1


def test_redis_leftovers_do_not_leak(redis_client):
    assert redis_client.exists("ksr:jobs:default") == 0
