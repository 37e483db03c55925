"""A Sentinel-managed Redis on loopback: one primary, two replicas, three sentinels, each a
real process (Debian's redis-server and redis-sentinel), with failover in about 2 s.

`kill_primary()` SIGKILLs whichever server is primary now, waits until the sentinels name
another, and starts the killed one again as a replica of the new primary (as a StatefulSet
would bring the pod back), so the bed always returns to one primary and two replicas."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.ports import free_port, wait_for
from tests.support.redis_server import RedisServer

MASTER = "ksr-primary"
DOWN_AFTER_MS = 1000  # a primary silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 4000
SYNC_NOW = ("--repl-diskless-sync-delay", "0")  # a replica that asks for a full sync gets it at once


class SentinelBed:
    def __init__(self, directory: Path | None = None) -> None:
        """`directory` keeps every log (sentinels', servers') after close(), for a failure's
        explanation; by default a temporary directory is removed then."""
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError("redis-sentinel is not on PATH (make setup installs it: scripts/install-system-deps)")
        self.sentinel_binary = binary
        self._keep = directory is not None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="ksr-sentinel-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.servers = [RedisServer(directory=self.dir / f"server-{n}" if self._keep else None) for n in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []

    # -- life -----------------------------------------------------------------------------
    def start(self) -> SentinelBed:
        for server in self.servers:
            server.extra_args = SYNC_NOW
        primary = self.servers[0].start()
        for replica in self.servers[1:]:
            replica.extra_args = (*SYNC_NOW, "--replicaof", "127.0.0.1", str(primary.port))
            replica.start()
        wait_for(lambda: self._replicas_online(primary.port) == 2, timeout=30, what="two replicas in sync")
        for n, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 2\n"
            )
            log = open(self.dir / f"sentinel-{n}.log", "ab")
            self.sentinel_procs.append(
                subprocess.Popen([self.sentinel_binary, str(conf)], stdout=log, stderr=subprocess.STDOUT)
            )
        wait_for(self._sentinels_agree, timeout=30, what="three sentinels that see both replicas and each other")
        return self

    def close(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for server in self.servers:
            server.close()
        if not self._keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- what it looks like ---------------------------------------------------------------
    @property
    def sentinels(self) -> str:
        """KSR_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def sentinel(self, n: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[n], socket_timeout=2)

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for n in range(len(self.sentinel_ports)):
            try:
                addr = self.sentinel(n).sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        return None

    def replication(self) -> dict[int, object]:
        """Each server's role and links, for failure messages."""
        out: dict[int, object] = {}
        for s in self.servers:
            try:
                info = redis.Redis(host="127.0.0.1", port=s.port, socket_timeout=2).info("replication")
            except redis.RedisError as e:
                out[s.port] = repr(e)
                continue
            keep = ("role", "master_port", "master_link_status", "master_sync_in_progress")
            out[s.port] = {k: v for k, v in info.items() if k in keep or k.startswith("slave")}
        return out

    def failovers(self) -> int:
        """Promotions the first sentinel logged so far: the kills' and any it started itself
        (a primary slower than DOWN_AFTER_MS to answer looks down)."""
        try:
            return (self.dir / "sentinel-0.log").read_text(errors="replace").count("+switch-master")
        except OSError:
            return -1

    def server_on(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def _replicas_online(self, port: int) -> int:
        try:
            info = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).info("replication")
        except redis.RedisError:
            return 0
        return sum(
            1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def _sentinels_agree(self) -> bool:
        try:
            for n in range(len(self.sentinel_ports)):
                state = self.sentinel(n).sentinel_master(MASTER)
                if int(state["num-slaves"]) < 2 or int(state["num-other-sentinels"]) < 2:
                    return False
        except redis.RedisError:
            return False
        return True

    # -- chaos ----------------------------------------------------------------------------
    def force_failover(self, *, timeout: float = 60.0) -> tuple[int, int, float]:
        """`SENTINEL FAILOVER`: promote a replica while the primary is alive, as Sentinel does
        by itself when a primary answers too late. The old primary is demoted and resyncs,
        losing what it had not replicated; clients still connected to it get READONLY.
        Returns (old port, new port, seconds until the sentinels name the new one)."""
        old = self.primary_port()
        assert old is not None, "no primary"
        started = time.monotonic()
        try:
            self.sentinel(0).sentinel_failover(MASTER)
        except redis.ResponseError as e:  # Sentinel began one by itself (a loaded machine): the same failover
            if "INPROG" not in str(e):
                raise
        new = self._promoted_from(old, timeout=timeout, what=f"Sentinel to promote a replica of {old}")
        promoted_after = time.monotonic() - started
        self._settled(new, timeout=timeout, what=f"{old} a replica of {new}")
        return old, new, promoted_after

    def kill_primary(self, *, timeout: float = 60.0) -> tuple[int, int, float]:
        """SIGKILL the primary, wait for Sentinel to promote a replica, bring the killed
        server back as a replica. Returns (old port, new port, seconds until promotion)."""
        old = self.primary_port()
        assert old is not None, "no primary to kill"
        victim = self.server_on(old)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        victim.proc = None
        killed_at = time.monotonic()
        new = self._promoted_from(old, timeout=timeout, what=f"Sentinel to promote a replica after killing {old}")
        promoted_after = time.monotonic() - killed_at
        victim.extra_args = (*SYNC_NOW, "--replicaof", "127.0.0.1", str(new))
        victim.start()
        self._settled(new, timeout=timeout, what=f"{old} back as a replica of {new}")
        return old, new, promoted_after

    def _promoted_from(self, old: int, *, timeout: float, what: str) -> int:
        """The port the sentinels name as primary once it is no longer `old`."""
        return int(
            wait_for(lambda: p if (p := self.primary_port()) not in (None, old) else None, timeout=timeout, what=what)
        )

    def _settled(self, new: int, *, timeout: float, what: str) -> None:
        """Both other servers replicate `new`, and every sentinel sees them."""
        try:
            wait_for(lambda: self._replicas_online(new) == 2, timeout=timeout, what=what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; replication: {self.replication()}") from None
        wait_for(self._sentinels_agree, timeout=timeout, what="the sentinels to see both replicas again")
