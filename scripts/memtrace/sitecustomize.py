"""Benchmark-only: tracemalloc snapshots of one process on request (scripts/bench_dispatch.py
`--tracemalloc-at`). Nothing of the product imports this; the benchmark puts this folder on
PYTHONPATH for the leader it starts, with KSR_BENCH_TRACEMALLOC=<dir>.

The process that reads the variable first (the `ksr run` main process: the runner) takes it
out of its environment, so its children (gunicorn, the RQ worker) are not traced. A daemon
thread then answers `<dir>/start.request` by starting tracemalloc (not earlier: tracing
the imports slows the start thirty-fold), and each `<dir>/<label>.request` with
`<dir>/<label>.snap` (the snapshot) and `<dir>/<label>.json` (RSS, traced bytes, live
objects by type). The diff of two snapshots taken after the start shows what grew."""

from __future__ import annotations

import os

_DIR = os.environ.pop("KSR_BENCH_TRACEMALLOC", "")
_FRAMES = int(os.environ.pop("KSR_BENCH_TRACEMALLOC_FRAMES", "12") or 12)
_here = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != _here
)
if not os.environ["PYTHONPATH"]:
    del os.environ["PYTHONPATH"]


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _answer(path: str, label: str) -> None:
    import collections
    import gc
    import json
    import tracemalloc

    if label == "start":
        tracemalloc.start(_FRAMES)
        return
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(os.path.join(path, f"{label}.snap.tmp"))
    os.replace(os.path.join(path, f"{label}.snap.tmp"), os.path.join(path, f"{label}.snap"))
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    current, peak = tracemalloc.get_traced_memory()
    facts = {
        "rss_kb": _rss_kb(),
        "traced": current,
        "traced_peak": peak,
        "overhead": tracemalloc.get_tracemalloc_memory(),
        "types": dict(types.most_common(40)),
    }
    with open(os.path.join(path, f"{label}.json.tmp"), "w") as f:
        json.dump(facts, f)
    os.replace(os.path.join(path, f"{label}.json.tmp"), os.path.join(path, f"{label}.json"))


def _serve(path: str) -> None:
    import time

    for _ in range(86400 * 2):  # bounded: two days at 2 polls a second
        for name in sorted(os.listdir(path)):
            if name.endswith(".request"):
                label = name[: -len(".request")]
                os.unlink(os.path.join(path, name))
                try:
                    _answer(path, label)
                except Exception as e:  # the benchmark reports a missing answer
                    with open(os.path.join(path, f"{label}.error"), "w") as f:
                        f.write(repr(e))
        time.sleep(0.5)


if _DIR:
    import threading

    threading.Thread(target=_serve, args=(_DIR,), name="bench-tracemalloc", daemon=True).start()
