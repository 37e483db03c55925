"""Benchmark-only: the start and end of every `KubeApi.create_job` call, so a send -> Job
latency splits into the wait before the create, the create call, and the watch's delivery
(scripts/bench_dispatch.py `--trace-creates`). Nothing of the product imports this; the
benchmark puts this folder on PYTHONPATH for the baseline and the runner alike, with
KSR_BENCH_CREATES=<dir>. Each process appends `<message id> <start> <end>` (wall clock) to
`<dir>/<pid>.txt` once `runner.jobs.kube` is imported; the module is wrapped, not changed."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import threading
import time
from typing import Any

_DIR = os.environ.get("KSR_BENCH_CREATES", "")
_ANNOTATION = "kube-stream-runner/message-id"


class _WrapCreates(importlib.abc.MetaPathFinder):
    def __init__(self, out: Any) -> None:
        self._out = out
        self._lock = threading.Lock()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "runner.jobs.kube":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        load = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            load(module)
            create = module.KubeApi.create_job

            def create_job(api: Any, manifest: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
                mid = (manifest.get("metadata", {}).get("annotations") or {}).get(_ANNOTATION, "")
                started = time.time()
                try:
                    return create(api, manifest, *args, **kwargs)
                finally:
                    with self._lock:
                        self._out.write(f"{mid} {started:.6f} {time.time():.6f}\n")

            module.KubeApi.create_job = create_job

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _DIR:
    sys.meta_path.insert(0, _WrapCreates(open(os.path.join(_DIR, f"{os.getpid()}.txt"), "a", buffering=1)))
