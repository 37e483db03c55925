"""While it leads, the leader takes over entries that another consumer (a deposed leader)
has held longer than the abandonment bound, not only at takeover; younger ones it leaves
alone. The runner with the local executor and the Redis lock, against a real Redis."""

from __future__ import annotations

from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

STREAM = "ksr:jobs:default"
STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
GHOST = "deposed-leader"


def owners(redis_client) -> dict[str, tuple[str, int]]:
    rows = redis_client.xpending_range(STREAM, "ksr", min="-", max="+", count=100)
    return {r["message_id"].decode(): (r["consumer"].decode(), int(r["times_delivered"])) for r in rows}


def test_entries_abandoned_after_takeover_are_reclaimed_without_a_leader_change(redis_server, redis_client):
    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None)
    abandoned = xadd(redis_client, STREAM, message("abandoned", "default", command=["true"]))
    young = xadd(redis_client, STREAM, message("young", "default", command=["true"]))
    for s in STREAMS:  # the group starts after both: the leader never reads them as new
        redis_client.xgroup_create(s, "ksr", id="$", mkstream=True)
    with runner_thread(env) as runner:
        xadd(redis_client, STREAM, message("warm-up", "default", command=["true"]))
        wait_for(lambda: redis_client.hget("ksr:msg:warm-up", "job_name"), timeout=30, what="the takeover done")
        term = runner.term
        assert term is not None
        # A deposed leader read both after this leader's takeover (so its XAUTOCLAIM did not
        # see them): one it has held for ten minutes, one it got just now.
        for entry_id, idle in ((abandoned, 600_000), (young, 0)):
            got = redis_client.xclaim(STREAM, "ksr", GHOST, 0, [entry_id], idle=idle, retrycount=1, force=True)
            assert [i.decode() for i, _ in got] == [entry_id]
        wait_for(
            lambda: redis_client.hget("ksr:msg:abandoned", "state") == b"completed",
            timeout=20,
            what="the abandoned entry's job done",
        )
        wait_for(lambda: abandoned not in owners(redis_client), timeout=10, what="the abandoned entry acked")
        # The young one is below the bound (lease + create deadline): still the other consumer's.
        assert owners(redis_client) == {young: (GHOST, 1)}
        assert redis_client.exists("ksr:msg:young") == 0
        assert runner.term == term and runner.elector.holds_term(term)
        assert int(redis_client.hget("ksr:election:ksr-leader", "transitions")) == term
