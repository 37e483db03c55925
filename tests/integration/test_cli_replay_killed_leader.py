"""`ksr pending list|replay` on what a killed leader left behind, with a real runner after
it: the replayed entries give exactly one Job per message (dedup and the 409 adoption make
the replay harmless) and every callback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from runner.cli import main
from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.receiver import Receiver

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"


def test_replay_of_entries_left_pending_by_a_killed_leader(redis_server, redis_client, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    cli_env = {"REDIS_URL": redis_server.url, "KUBECONFIG": kube.kubeconfig, "POD_NAMESPACE": namespace}
    ids = [f"left-{i}" for i in range(3)]
    leader = Pod({**env, "KSR_TEST_CRASH_AT": "after_claim"}, tmp_path, "leader-a")
    try:
        wait_for(leader.leading, timeout=60, what="leader-a leading")
        with redis_client.pipeline(transaction=True) as pipe:  # one batch: all three get delivered
            for mid in ids:
                pipe.xadd(STREAM, {"payload": json.dumps(message(mid, namespace, webhook=receiver.url))})
            pipe.execute()
        assert leader.proc.wait(60) == 70  # died right after claiming the first message
        leader.kill_container()

        listed = CliRunner().invoke(main, ["pending", "list", "--json"], env=cli_env)
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert sorted(r["message_id"] for r in rows) == ids
        assert {r["consumer"] for r in rows} == {"leader-a"}

        dry = CliRunner().invoke(main, ["pending", "replay", "--all"], env=cli_env)
        assert dry.exit_code == 0, dry.output
        assert redis_client.xpending(STREAM, "ksr")["pending"] == 3  # a dry run changes nothing
        done = CliRunner().invoke(main, ["pending", "replay", "--all", "--yes"], env=cli_env)
        assert done.exit_code == 0, done.output
        assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
        assert redis_client.xlen(STREAM) == 6  # the three originals (acked) and their replays

        successor = Pod(env, tmp_path, "leader-b")  # its own RQ worker delivers the callbacks
        try:
            wait_for(successor.leading, timeout=60, what="leader-b leading")
            receiver.wait_for_callbacks(ids, timeout=120, what="callbacks 0, 1, 2 for the replayed messages")
        finally:
            successor.kill_container()
        assert job_message_ids(kube, namespace) == ids
    finally:
        leader.kill_container()
        receiver.close()
