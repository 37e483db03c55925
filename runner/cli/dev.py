"""`ksr dev`: the whole service on one machine, with an embedded default.

Without REDIS_URL it starts a private redis-server; without a cluster it uses the Redis
lock and the local executor (commands run as subprocesses here). It serves the probes
and the status page, receives the callbacks itself and prints them, and can submit the
sample jobs.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from election.clock import SYSTEM_CLOCK
from runner.cli._context import cli_context
from runner.cli._devfile import DEV_FILE, DevRuntime, well_known_path
from runner.lifecycle import CallbackStatus
from runner.settings import Settings
from runner.store.connection import connect

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "dev-jobs.jsonl"
STATUS_NAMES = {
    CallbackStatus.CREATED: "created",
    CallbackStatus.STARTED: "pod started",
    CallbackStatus.COMPLETED: "completed",
    CallbackStatus.FAILED: "failed",
    CallbackStatus.EXCEPTION: "exception",
}
TERMINAL = {2, 3, 99}


class CallbackPrinter:
    """A webhook receiver on loopback that prints every callback it gets."""

    def __init__(self) -> None:
        self.finished: set[str] = set()
        printer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status = body.get("status")
                click.echo(
                    f"callback  {body.get('id')}  {status} {STATUS_NAMES.get(status, '?'):11} "
                    f"{json.dumps(body.get('detail'))}"
                )
                if status in TERMINAL:
                    printer.finished.add(str(body.get("id")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _free_port(host: str) -> int:
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _submit_samples(settings: Settings, webhook: str) -> list[str]:
    conn = connect(settings.redis, socket_timeout=5.0)
    stream = next((s for s in settings.streams.streams if s.endswith("default")), settings.streams.streams[0])
    ids = []
    for line in SAMPLES.read_text().splitlines():
        msg = json.loads(line)
        msg["webhook"] = {"url": webhook}
        conn.xadd(stream, {"payload": json.dumps(msg)})
        ids.append(msg["id"])
    click.echo(f"submitted {len(ids)} sample jobs to {stream}: {', '.join(ids)}")
    return ids


@click.command()
@click.option(
    "--port",
    type=int,
    default=8080,
    envvar="HTTP_SERVER_PORT",
    show_default=True,
    show_envvar=True,
    help="Port of the probes and status page (0, or taken: a free one is picked).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    envvar="KSR_HTTP_HOST",
    show_default=True,
    show_envvar=True,
    help="Address the probes and status page bind (0.0.0.0: every interface).",
)
@click.option("--samples/--no-samples", default=False, help="Submit the sample jobs (runner/samples).")
@click.option("--exit-when-done", is_flag=True, help="Stop once every sample job has its final callback.")
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="With --exit-when-done: give up (exit 1) after this many seconds.",
)
def dev(port: int, host: str, samples: bool, exit_when_done: bool, timeout: float) -> None:
    """Run the service on this machine with an embedded default (no setup needed).

    Prints the lines that point another terminal's `ksr` at it, and writes them to its
    runtime file, which `ksr` reads when REDIS_URL is unset (docs/cli.md).
    """
    from runner.cli.run import serve
    from runner.process.embedded_redis import EmbeddedRedis

    ctx = cli_context()
    embedded = None
    if not (ctx.redis_url or os.environ.get("REDIS_URL")):
        embedded = EmbeddedRedis().start()
        os.environ["REDIS_URL"] = embedded.url
        click.echo(f"started a private redis-server at {embedded.url} (stopped on exit)")
    elif ctx.redis_url:
        os.environ["REDIS_URL"] = ctx.redis_url
    printer = CallbackPrinter()
    allow = [a for a in os.environ.get("KSR_WEBHOOK_ALLOW", "").split(",") if a]
    os.environ["KSR_WEBHOOK_ALLOW"] = ",".join([*allow, "127.0.0.1"])
    os.environ.setdefault("POD_NAME", f"ksr-dev-{socket.gethostname()}")
    os.environ.setdefault("KSR_LOG_FORMAT", "text")
    if port == 0 or not _port_free(host, port):  # 0: any free port
        port = _free_port(host)
    os.environ["HTTP_SERVER_PORT"] = str(port)
    os.environ["KSR_HTTP_HOST"] = host
    runtime: DevRuntime | None = None
    paths: list[Path] = []
    try:
        settings = Settings.from_env()
        if settings.kube.executor == "local":
            click.echo(
                "no Kubernetes cluster configured: LOCAL executor - each job's command runs as a "
                "subprocess on this machine (the image is not used); leader lock in Redis"
            )
        else:
            click.echo(f"Kubernetes executor: Jobs go to the cluster of KUBECONFIG; lock: {settings.lock}")
        status_url = f"http://{_url_host(host)}:{port}/"
        runtime = DevRuntime(
            pid=os.getpid(),
            redis_url=os.environ["REDIS_URL"],
            http_port=port,
            status_url=status_url,
            receiver_url=printer.url,
        )
        paths = [settings.server.runtime_dir / DEV_FILE, well_known_path()]
        console_url = status_url + "ui/" if settings.console.enabled else None
        click.echo(banner(runtime, embedded=embedded is not None, runtime_file=paths[1], console_url=console_url))
        ids = _submit_samples(settings, printer.url) if samples else []

        def on_started(supervisor: Any) -> None:
            assert runtime is not None
            runtime.write(*paths)  # the supervisor holds the runtime dir's lock from here
            if exit_when_done:
                threading.Thread(target=wait, args=(supervisor,), daemon=True).start()

        def wait(supervisor: Any) -> None:
            deadline = SYSTEM_CLOCK.monotonic() + timeout
            while SYSTEM_CLOCK.monotonic() < deadline and not supervisor.stop_event.is_set():
                if set(ids) <= printer.finished:
                    click.echo(f"all {len(ids)} sample jobs finished; stopping")
                    break
                SYSTEM_CLOCK.sleep(0.2)
            else:
                click.echo(f"sample jobs not finished within {timeout:g}s", err=True)
                outcome["timed_out"] = True
            supervisor.stop_event.set()

        outcome = {"timed_out": False}
        code = serve(settings, on_started=on_started)
    finally:
        if runtime is not None:
            runtime.remove(*paths)
        printer.server.shutdown()
        if embedded is not None:
            embedded.stop()
    sys.exit(1 if outcome["timed_out"] else code)


def banner(runtime: DevRuntime, *, embedded: bool, runtime_file: Path, console_url: str | None = None) -> str:
    """What a user pastes into another terminal, and where things are."""
    lines = ["", "In another terminal, paste these lines:"]
    if sys.prefix != sys.base_prefix:  # ksr runs from a virtualenv: put it on PATH there too
        lines.append(f"    . {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}")
    if embedded:
        lines.append(f"    export REDIS_URL={shlex.quote(runtime.redis_url)}")
    lines.append(f"    export HTTP_SERVER_PORT={runtime.http_port}")  # for ksr health
    lines.append(f"    export KSR_DEV_WEBHOOK={shlex.quote(runtime.receiver_url)}")
    lines.append("")
    if not embedded:
        lines.append("REDIS_URL     as given to ksr dev (export the same there)")
    lines += [
        f"status page   {runtime.status_url}   (also /metrics, /healthz, /readyz)",
        *(
            [f"console       {console_url}   (messages, dead letters, schedules; docs/console.md)"]
            if console_url
            else []
        ),
        f"dev receiver  {runtime.receiver_url}   (a webhook URL: each callback it gets is printed here)",
        f"runtime file  {runtime_file}   (ksr reads it when REDIS_URL is unset)",
        "",
    ]
    return "\n".join(lines)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"  # every interface: loopback among them
    return f"[{host}]" if ":" in host else host
