"""The multiprocess metrics as the processes of a pod leave them, checked by a real `promtool`
(an outside binary: integration tier, not unit)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest

from tests.support.metrics_process import run_python


def test_multiprocess_wipe_sum_and_promtool(tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    (mp / "counter_1.db").write_bytes(b"stale from the previous container")
    writer = """
        from runner import metrics
        m = metrics.get()
        m.count_message("dispatched")
        m.dispatch_latency.observe(0.2)
        m.leader.set(1)
        m.callbacks.labels(status="0", outcome="delivered").inc()
        m.heartbeat("reader", 1700000000.0)
        m.set_stream_stats({"ksr:jobs:default": {"length": 3, "pending": 1, "lag": 2, "dead": 0}})
    """
    first = run_python(
        f"""
        from runner import metrics
        metrics.setup_multiprocess(wipe=True)
        import os; assert not os.path.exists({str(mp / "counter_1.db")!r})
        {textwrap.dedent(writer).strip().replace(chr(10), chr(10) + "        ")}
    """,
        mp,
    )
    assert first.returncode == 0, first.stderr
    second = run_python(writer, mp)  # another process, as a gunicorn worker or the RQ worker
    assert second.returncode == 0, second.stderr
    rendered = run_python(
        """
        import sys
        from runner import metrics
        metrics.setup_multiprocess()
        body, ctype = metrics.render()
        assert ctype.startswith("text/plain"), ctype
        sys.stdout.write(body.decode())
    """,
        mp,
    )
    assert rendered.returncode == 0, rendered.stderr
    text = rendered.stdout
    assert 'ksr_messages_total{outcome="dispatched"} 2.0' in text
    assert "ksr_messages_processed_total 2.0" in text
    assert 'ksr_callbacks_total{outcome="delivered",status="0"} 2.0' in text
    assert "ksr_leader 1.0" in text  # livemax: one series, no pid label
    assert 'ksr_queue_length{stream="ksr:jobs:default"} 3.0' in text
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (scripts/install-system-deps promtool)")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
