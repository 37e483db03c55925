"""A private redis-server for `ksr dev`: started from PATH in a temporary directory on a
free loopback port, stopped (and its directory removed) on exit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from election.clock import SYSTEM_CLOCK
from runner.errors import ConfigError, RedisUnavailable
from runner.process.children import stop_child


def server_command(binary: str, directory: Path, port_args: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """redis-server on loopback only, its files in `directory`, no persistence."""
    return [
        binary,
        *port_args,
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        *extra,
    ]


class EmbeddedRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "REDIS_URL",
                "not set, and no redis-server on PATH to start a private one "
                "(install it: apt-get install redis-server)",
            )
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="ksr-dev-redis-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            server_command(self.binary, self.dir, ["--port", str(self.port)]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = SYSTEM_CLOCK.monotonic() + timeout  # a real process starting: real time
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or SYSTEM_CLOCK.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(
                        f"the private redis-server did not start; see {self.dir}/redis.log"
                    ) from None
                SYSTEM_CLOCK.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_child(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
