#!/usr/bin/env python3
"""Probe latency under load, and what probe load costs the dispatch rate.

    .venv/bin/python scripts/bench_probes.py [--seconds 10] [--rate 50] [--connections 4]

1. Starts a redis-server and the `ksr run` process model (supervisor, gunicorn, RQ worker)
   on loopback, unless --url points at a running probes server (then --redis-url too).
2. Measures the dispatch rate alone and with wrk hitting /healthz and /metrics at a fixed
   rate each, in interleaved phases (unloaded, loaded, unloaded, ...; --rounds).
3. Prints /healthz and /metrics latency p50/p99 (wrk --latency) and the ratio
   loaded/baseline dispatch rate (target >= 0.95).

Debian's wrk has no wrk2-style --rate; a Lua `delay()` paces each connection instead, so
the rate is fixed (connections / delay) and latencies exclude the pacing.

Dispatch is the real pipeline: a `ksr run` process (Redis lock, local executor, so no
cluster is needed; each message runs `true`) kept fed with a backlog; a phase's rate is the
number of Jobs created (status-0 events in ksr:events) per second. `--stand-in` replaces it
with the pipeline's per-message Redis and metrics work only (no runner, no Jobs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Dispatcher = Callable[[float], int]  # run for `seconds`, return messages dispatched

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """p50/p99 in seconds, requests/s and error counts from `wrk --latency` output."""
    out: dict[str, Any] = {"raw_tail": text.strip().splitlines()[-12:]}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            out[f"p{pct}"] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", text)
    out["socket_errors"] = m.group(0) if m else None
    return out


def start_wrk(url: str, *, seconds: float, rate: float, connections: int, workdir: Path) -> subprocess.Popen[str]:
    script = workdir / f"pace-{abs(hash(url))}.lua"
    delay_ms = 0 if rate <= 0 else 1000.0 * connections / rate
    script.write_text(f"function delay()\n  return {delay_ms:.3f}\nend\n")
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def redis_dispatch(redis_url: str, *, stream: str = "bench:jobs", group: str = "ksr") -> Dispatcher:
    """A stand-in for the pipeline's per-message Redis and metrics work."""
    import redis

    from runner import metrics

    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError:
        pass
    m = metrics.get()

    def dispatch(seconds: float) -> int:
        done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for _ in range(10):
                pipe.xadd(stream, {"payload": '{"id": "bench"}'}, maxlen=10_000, approximate=True)
            pipe.execute()
            replies: Any = client.xreadgroup(group, "bench", {stream: ">"}, count=10)
            for _, entries in replies or []:
                ids = []
                for entry_id, _fields in entries:
                    ms = int(bytes(entry_id).split(b"-")[0])
                    m.dispatch_latency.observe(max(0.0, time.time() - ms / 1000))
                    m.count_message("dispatched")
                    ids.append(entry_id)
                if ids:
                    client.xack(stream, group, *ids)
                    done += len(ids)
        return done

    return dispatch


def pipeline_dispatch(
    redis_url: str, *, events_stream: str = "ksr:events", stream: str = "ksr:jobs:default", backlog: int = 3000
) -> Dispatcher:
    """Feed the real runner and count the Jobs it creates in a window."""
    import redis

    client: Any = redis.Redis.from_url(redis_url)
    fed = [0]

    def feed() -> None:
        pending = int(client.xlen(stream))
        pipe = client.pipeline(transaction=False)
        for _ in range(max(0, backlog - pending)):
            fed[0] += 1
            msg = {
                "id": f"bench-{fed[0]}",
                "service": "bench",
                "job": {"prefixName": "bench", "namespace": "bench", "image": "none", "command": ["true"]},
            }
            pipe.xadd(stream, {"payload": json.dumps(msg)})
        pipe.execute()
        # Acked entries are done with: trim them so XLEN stays the backlog.
        client.xtrim(stream, minid=_oldest_unread(client, stream))

    def dispatch(seconds: float) -> int:
        feed()
        start_ms = int(time.time() * 1000)
        time.sleep(seconds)  # the runner works meanwhile; we only observe
        end_ms = int(time.time() * 1000)
        events: Any = client.xrange(events_stream, min=f"{start_ms}-0", max=f"{end_ms}-0")
        return len([1 for _, fields in events if fields.get(b"status") == b"0"])

    return dispatch


def _oldest_unread(client: Any, stream: str) -> str:
    groups = client.xinfo_groups(stream)
    last = groups[0]["last-delivered-id"] if groups else b"0-0"
    pending = client.xpending(stream, "ksr")
    floor = pending["min"] if pending and pending.get("pending") else last
    return floor.decode() if isinstance(floor, bytes) else str(floor)


def start_runner(work: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "KSR_LOCK": "redis",
        "KSR_EXECUTOR": "local",
        "POD_NAME": "bench",
        "POD_NAMESPACE": "bench",
        "KSR_ALLOWED_NAMESPACES": "bench",
        "HTTP_SERVER_PORT": str(port),
        "KSR_HTTP_HOST": "127.0.0.1",
        "KSR_RUNTIME_DIR": str(work / "runtime"),
        "KSR_MAX_ACTIVE_JOBS": "0",
        "KSR_LOG_FORMAT": "json",
        "KSR_LOG_LEVEL": "WARNING",
        "KSR_STUCK_THRESHOLD": "30",
    }
    env.pop("KUBECONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "run"],
        env=env,
        cwd=REPO,
        stdout=open(work / "runner.log", "ab"),
        stderr=subprocess.STDOUT,
    )


def measure(dispatch: Dispatcher, seconds: float) -> float:
    started = time.monotonic()
    n = dispatch(seconds)
    return n / (time.monotonic() - started)


def run(args: argparse.Namespace, dispatch: Dispatcher | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ksr-bench-"))
    redis_server = stack = runner = None
    try:
        if args.url:
            url, redis_url = args.url.rstrip("/"), args.redis_url
        else:
            from tests.support.ports import free_port, wait_for
            from tests.support.redis_server import RedisServer

            redis_server = RedisServer().start()
            redis_url = redis_server.url
            port = free_port()
            if args.stand_in:
                from tests.support.probe_stack import ProbeStack

                stack = ProbeStack(
                    work / "stack",
                    redis_url=redis_url,
                    port=port,
                    extra_env={"KSR_STUCK_THRESHOLD": "30", "KSR_LOG_FORMAT": "json"},
                ).start()
                # The stand-in's metrics go to the stack's directory, as the runner's would.
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(stack.runtime / "metrics")
            else:
                runner = start_runner(work, redis_url, port)
            url = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                import urllib.request

                with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                    return resp.status == 200

            wait_for(healthy, timeout=60, what="the probes")
        if dispatch is None:
            if not redis_url:
                raise SystemExit("--redis-url is needed with --url")
            dispatch = redis_dispatch(redis_url) if args.stand_in else pipeline_dispatch(redis_url)

        dispatch(3.0)  # warm up connections, metric files, the stream's memory
        # Interleaved phases (base, loaded, base, ...): a shared host drifts, so the baseline
        # is the mean of the unloaded phases around the loaded ones.
        bases, loads = [measure(dispatch, args.seconds)], []
        results: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            wrks = {
                path: start_wrk(
                    url + path, seconds=args.seconds, rate=args.rate, connections=args.connections, workdir=work
                )
                for path in ("/healthz", "/metrics")
            }
            loads.append(measure(dispatch, args.seconds))
            for path, proc in wrks.items():
                out, _ = proc.communicate(timeout=args.seconds + 30)
                results.setdefault(path, []).append(parse_wrk(out))
            bases.append(measure(dispatch, args.seconds))
        baseline, loaded = statistics.mean(bases), statistics.mean(loads)
        probes = {
            path: {
                "p50": statistics.median(r["p50"] for r in rounds if "p50" in r),
                "p99": max(r["p99"] for r in rounds if "p99" in r),
                "rps": statistics.mean(r["rps"] or 0 for r in rounds),
                "non_2xx": sum(r["non_2xx"] for r in rounds),
                "socket_errors": "; ".join(r["socket_errors"] for r in rounds if r["socket_errors"]) or None,
            }
            for path, rounds in results.items()
        }
        return {
            "seconds": args.seconds,
            "rate_per_endpoint": args.rate,
            "connections": args.connections,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "rounds": args.rounds,
            "dispatch_rate": {
                "unloaded_phases": bases,
                "loaded_phases": loads,
                "baseline": baseline,
                "loaded": loaded,
                "ratio": loaded / baseline if baseline else None,
            },
            "dispatcher": "stand-in" if args.stand_in else "ksr run, local executor",
            "probes": probes,
            "wrk_rounds": results,
        }
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(30)
        if stack is not None:
            stack.stop()
        if redis_server is not None:
            redis_server.close()
        shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    lines = [
        f"probe load: {r['rate_per_endpoint']:g} req/s per endpoint over {r['connections']} connections, "
        f"{r['seconds']:g}s per phase; {r['cpus']} CPUs, load average {r['load_average'][0]:.2f}"
    ]
    for path, w in r["probes"].items():

        def ms(key: str) -> str:
            return f"{w[key] * 1000:.2f} ms" if key in w else "?"

        lines.append(
            f"  {path:9s} p50 {ms('p50'):>10s}  p99 {ms('p99'):>10s}  {w['rps'] or 0:8.1f} req/s  "
            f"non-2xx {w['non_2xx']}" + (f"  {w['socket_errors']}" if w["socket_errors"] else "")
        )
    d = r["dispatch_rate"]
    lines.append(f"dispatcher: {r['dispatcher']}")
    lines.append(
        "dispatch rate: unloaded "
        + ", ".join(f"{x:.0f}" for x in d["unloaded_phases"])
        + "/s; under probe load "
        + ", ".join(f"{x:.0f}" for x in d["loaded_phases"])
        + f"/s -> ratio {d['ratio']:.3f} (target >= 0.95)"
    )
    lines.append("  (p50: median over rounds, p99: worst round)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--rate", type=float, default=50.0, help="requests/s per endpoint (0: as fast as possible)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="loaded phases, each between two unloaded ones")
    p.add_argument("--url", help="a running probes server (default: start the stack here)")
    p.add_argument("--redis-url", help="its Redis")
    p.add_argument(
        "--stand-in", action="store_true", help="measure the per-message Redis/metrics work instead of the real runner"
    )
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: scripts/install-system-deps wrk", file=sys.stderr)
        return 2
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
