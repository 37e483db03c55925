"""A real redis-server on a free loopback port, in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from runner.process.children import stop_child
from runner.process.embedded_redis import server_command
from tests.support.ports import free_port, wait_for
from tests.support.tls import Pki


class RedisServer:
    """One redis-server process; `stop()`/`start()` again keep the same port (for outage tests)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        args: tuple[str, ...] = (),
        tls: Pki | None = None,
        directory: Path | None = None,
    ) -> None:
        """`args` are added to redis-server's; with `tls` the port speaks only TLS and
        requires a client certificate signed by `tls.ca`. `directory` keeps its files (the
        log) after close(); by default they are in a temporary directory removed then."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (make test installs it: apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self._keep = directory is not None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="ksr-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args = args
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0, **kw: object) -> redis.Redis:
        if self.tls is not None:
            kw.update(
                ssl=True,
                ssl_ca_certs=str(self.tls.ca),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5, **kw)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        if self.tls is not None:
            t = self.tls
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(t.server_cert),
                     "--tls-key-file", str(t.server_key), "--tls-ca-cert-file", str(t.ca), "--tls-auth-clients", "yes"]  # fmt: skip
        else:
            ports = ["--port", str(self.port)]
        args = server_command(
            self.binary, self.dir, ports, ("--protected-mode", "yes", "--databases", "16", *self.extra_args)
        )
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.client().ping(), timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self, *, save: bool = False) -> None:
        """SIGTERM: the data is lost (no persistence). `save`: SHUTDOWN SAVE instead, so the
        next start() loads it again, as a Redis with persistence restarts."""
        if save and self.proc and self.proc.poll() is None:
            try:
                self.client().shutdown(save=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it goes
            self.proc.wait(timeout=10)
        if self.proc:
            stop_child(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if not self._keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
