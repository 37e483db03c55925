"""A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC), the
controller manager, the scheduler and kwok with two fake nodes.

Everything runs from a state directory; `state.json` there records each process's
pid and command line, so `down` stops exactly what `up` started (and a component can
be stopped and started again by name, for outage tests). `up` first clears whatever an
earlier start left in the directory (stale.py) and last runs one Job through the bed
(selfcheck.py), so a bed that cannot run Jobs fails its own start. Standard library
only, so the script runs before any virtualenv exists.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from testenv import build, selfcheck, stale
from testenv.stale import COMPONENTS

HERE = Path(__file__).resolve().parent
STAGES = HERE / "kwok-stages.yaml"
CONTROLLERS = (
    "job-controller",
    # Deployments for `helm install --wait` (kwok runs their pods as a kubelet would).
    "deployment-controller",
    "replicaset-controller",
    "resourcequota-controller",  # ResourceQuota usage: admission refuses quotas it never computed
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
# For benchmarks (`up(bench=True)`): the controllers' default client limits (QPS 20, burst 30;
# 5 Job syncs) make the bed, not the runner, the bottleneck at a few hundred Jobs a second.
CLIENT_RATE = ("--kube-api-qps=300", "--kube-api-burst=600")  # the bed's controllers, shared by test processes
BENCH_FLAGS = {
    "kube-controller-manager": [
        "--kube-api-qps=1000",
        "--kube-api-burst=2000",
        "--concurrent-job-syncs=50",
        "--concurrent-ttl-after-finished-syncs=20",
        "--concurrent-gc-syncs=50",
    ],
    "kube-scheduler": ["--kube-api-qps=1000", "--kube-api-burst=2000"],
    "kube-apiserver": ["--max-requests-inflight=1600", "--max-mutating-requests-inflight=800"],
}
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
ADMIN_TOKEN_USER = "ksr-admin"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int, binary: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # The pid may have been reused by something else: only ours counts.
    return cmdline.split(b"\0", 1)[0].decode(errors="replace") == binary


def _dies_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the kernel SIGKILLs the child when the thread that started it ends,
    so a killed test run leaves no control plane holding ports and CPU."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the owner died between the fork and the prctl
            os._exit(1)

    return in_child


@dataclass
class Bed:
    dir: Path
    bin: Path = field(default_factory=build.bin_dir)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, dict] = field(default_factory=dict)
    token: str = ""
    owner: int | None = None  # the pid whose death ends the bed (tests), None for a CLI bed
    ready: bool = False  # set once `up` has finished, start-up check included

    # -- persistence -----------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def save(self) -> None:
        data = {
            "bin": str(self.bin),
            "ports": self.ports,
            "procs": self.procs,
            "token": self.token,
            "owner": self.owner,
            "ready": self.ready,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, directory: Path) -> Bed:
        data = json.loads((directory / "state.json").read_text())
        return cls(
            dir=directory,
            bin=Path(data["bin"]),
            ports=data["ports"],
            procs=data["procs"],
            token=data["token"],
            owner=data.get("owner"),
            ready=data.get("ready", True),  # files from before the flag: only finished starts were kept
        )

    # -- set-up ----------------------------------------------------------------------
    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)

    def _certificates(self) -> None:
        (self.dir / "san.ext").write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        )
        self._openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=ksr-testenv-ca",
        )
        self._openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=kube-apiserver",
        )
        self._openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "3650",
            "-extfile",
            "san.ext",
        )
        self._openssl("genrsa", "-out", "sa.key", "2048")
        self._openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _credentials(self) -> None:
        self.token = os.urandom(24).hex()
        (self.dir / "tokens.csv").write_text(f'{self.token},{ADMIN_TOKEN_USER},1,"system:masters"\n')
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "ksr-testenv",
                    "cluster": {"server": self.server, "certificate-authority": str(self.dir / "ca.crt")},
                }
            ],
            "users": [{"name": ADMIN_TOKEN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "ksr-testenv", "context": {"cluster": "ksr-testenv", "user": ADMIN_TOKEN_USER}}],
            "current-context": "ksr-testenv",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=1))  # JSON is valid YAML
        self.kubeconfig.chmod(0o600)

    def _commands(self, *, bench: bool = False, audit: bool = False) -> dict[str, list[str]]:
        commands = self._base_commands()
        if bench:
            for name, flags in BENCH_FLAGS.items():
                commands[name] = [*commands[name], *flags]
        if audit:
            commands["kube-apiserver"] = [*commands["kube-apiserver"], *self._audit_flags()]
        return commands

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def _audit_flags(self) -> list[str]:
        """Every request at the Metadata level (who, verb, object, code; no bodies), one JSON
        line each once answered: what scripts/bench_dispatch.py counts per Job."""
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(json.dumps(AUDIT_POLICY))  # JSON is valid YAML
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]

    def _base_commands(self) -> dict[str, list[str]]:
        d, b, p, kc = self.dir, self.bin, self.ports, str(self.kubeconfig)
        served = [
            "--bind-address=127.0.0.1",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--kubeconfig={kc}",
            "--leader-elect=false",
        ]
        return {
            "etcd": [
                str(b / "etcd"),
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{p['etcd_peer']}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(b / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={d / 'server.crt'}",
                f"--tls-private-key-file={d / 'server.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",  # loopback advertise address: no kubernetes Endpoints
                # No node-lifecycle controller runs to lift the not-ready taint this plugin puts on new nodes.
                "--disable-admission-plugins=TaintNodesByCondition",
                f"--cert-dir={d / 'apiserver-certs'}",
                "--profiling=false",
                "--event-ttl=1h",
            ],
            "kube-controller-manager": [
                str(b / "kube-controller-manager"),
                *served,
                f"--secure-port={p['controller_manager']}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-job-syncs=10",
                # Each controller's client shares one rate limit (default 20/s) among its
                # writes and its events: the Job controller's ~7 requests per Job made it
                # ~3 Jobs/s for a whole parallel test run, its events 2 minutes late (seen).
                *CLIENT_RATE,
                "--profiling=false",
            ],
            "kube-scheduler": [
                str(b / "kube-scheduler"),
                *served,
                f"--secure-port={p['scheduler']}",
                *CLIENT_RATE,
                "--profiling=false",
            ],
            "kwok": [
                str(b / "kwok"),
                f"--kubeconfig={kc}",
                f"--config={STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{p['kwok']}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.244.0.1",
                "--node-lease-duration-seconds=40",
            ],
        }

    # -- processes -------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Start one component with the command recorded for it (same ports, same data).

        In the owner's process the component dies with the calling thread (PR_SET_PDEATHSIG):
        start components from the thread that owns the bed, as the tests' main thread does."""
        cmd = self.procs[name]["cmd"]
        owned = self.owner is not None and self.owner == os.getpid()
        with open(self.dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_dies_with_parent(os.getpid()) if owned else None,
            )
        self.procs[name]["pid"] = proc.pid
        self.save()

    def stop(self, name: str, *, timeout: float = 15.0) -> None:
        info = self.procs.get(name) or {}
        pid, binary = info.get("pid"), info.get("cmd", [""])[0]
        if not pid or not _pid_alive(pid, binary):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid, binary) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _pid_alive(pid, binary):
            os.kill(pid, signal.SIGKILL)
            _reap(pid, block=True)
        info["pid"] = None
        self.save()

    def running(self) -> dict[str, bool]:
        return {n: bool(i.get("pid")) and _pid_alive(i["pid"], i["cmd"][0]) for n, i in self.procs.items()}

    # -- API helpers (stdlib only) --------------------------------------------------
    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()})
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()})

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            started = {n for n, i in self.procs.items() if i.get("pid")}
            dead = [n for n, alive in self.running().items() if n in started and not alive]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited during start-up; see {self.dir}/<name>.log")
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return
                last = f"{status} {str(body)[:200]}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last}")

    def wait_for(self, what: str, predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def create_nodes(self) -> None:
        for name in FAKE_NODES:
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "500", "nvidia.com/gpu": "8"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "500", "nvidia.com/gpu": "8"},
                },
            }
            status, body = self.request("POST", "/api/v1/nodes", node)
            if status == 409:  # stale.clear removed the etcd data: someone else's objects are here
                raise RuntimeError(f"node {name} existed before this start created it: etcd data not fresh")
            if status != 201:
                raise RuntimeError(f"creating node {name}: {status} {body}")

    def nodes_ready(self) -> bool:
        status, body = self.request("GET", "/api/v1/nodes")
        if status != 200:
            return False
        ready = [
            n
            for n in body.get("items", [])
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        ]
        return len(ready) >= len(FAKE_NODES)

    def default_service_account(self) -> bool:
        status, _ = self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200


def _reap(pid: int, block: bool = False) -> None:
    try:
        os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        pass


def up(
    directory: Path,
    *,
    progress: Callable[[str], object] = print,
    bench: bool = False,
    audit: bool = False,
    owned: bool = False,
    check_timeout: float = 60.0,
) -> Bed:
    """Start a bed in `directory`, from nothing: whatever an earlier start left there is
    stopped and removed first (and logged through `progress`). `owned`: the components die
    with the calling thread (tests, benchmarks); without it they outlive the caller (the CLI).
    The start ends with one Job run through the bed (selfcheck.py), bounded by `check_timeout`.
    `audit`: the apiserver writes an audit log of every request (`Bed.audit_log`)."""
    if not build.is_built():
        raise SystemExit("kube-testenv: binaries are not built yet; run `scripts/kube-testenv build` first")
    directory = directory.resolve()  # the components' arguments, and stale.py's matching, use full paths
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "up.lock", "w") as lock:  # held while this up runs; the kernel drops it if we die
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"kube-testenv: another `up` is starting the bed in {directory} right now") from None
        start = functools.partial(
            _up, directory, progress=progress, bench=bench, audit=audit, owned=owned, check_timeout=check_timeout
        )
        for _ in range(_PORT_ATTEMPTS - 1):
            try:
                return start()
            except PortTaken as e:
                progress(f"{e}; starting again with new ports")
        return start()


# free_port() only finds a port free: another process (a parallel test's server) may take
# it before a component binds it. That start is retried with new ports, a bounded number of times.
_PORT_ATTEMPTS = 3


class PortTaken(RuntimeError):
    """A component could not bind its port: it was taken after free_port() chose it."""


def _log_sizes(directory: Path, names: Iterable[str]) -> dict[str, int]:
    logs = {n: directory / f"{n}.log" for n in names}
    return {n: log.stat().st_size if log.exists() else 0 for n, log in logs.items()}


def _port_taken(directory: Path, since: dict[str, int]) -> list[str]:
    """The components whose log says, since `since` (the logs are appended to), that a port was taken."""
    taken = []
    for name, offset in since.items():
        path = directory / f"{name}.log"
        if path.exists():
            with open(path, "rb") as log:
                log.seek(offset)
                if b"address already in use" in log.read():
                    taken.append(name)
    return taken


def _up(
    directory: Path, *, progress: Callable[[str], object], bench: bool, audit: bool, owned: bool, check_timeout: float
) -> Bed:
    started = time.monotonic()
    _start_clean(directory, progress)
    bed = Bed(dir=directory, owner=os.getpid() if owned else None)
    bed.ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok")}
    bed._certificates()
    bed._credentials()
    bed.procs = {name: {"cmd": cmd, "pid": None} for name, cmd in bed._commands(bench=bench, audit=audit).items()}
    bed.save()
    logs_at = _log_sizes(directory, bed.procs)
    try:
        for name in ("etcd", "kube-apiserver"):
            bed.start(name)
        bed.wait_ready()
        progress(f"kube-apiserver ready at {bed.server} after {time.monotonic() - started:.1f}s")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            bed.start(name)
        bed.create_nodes()
        bed.wait_for("fake nodes Ready", bed.nodes_ready)
        bed.wait_for("the default ServiceAccount", bed.default_service_account)
        took = selfcheck.run(bed, timeout=check_timeout)
        progress(f"start-up check: a Job ran to Complete in {took:.1f}s")
        bed.ready = True
        bed.save()
    except BaseException as e:
        taken = _port_taken(directory, logs_at) if isinstance(e, Exception) else []
        down(directory)
        if taken:
            raise PortTaken(f"{', '.join(taken)} found its port taken") from e
        raise
    progress(f"test bed up in {time.monotonic() - started:.1f}s ({directory})")
    return bed


def _start_clean(directory: Path, progress: Callable[[str], object]) -> None:
    left = stale.survey(directory)
    if not left.found:
        return
    if stale.in_use(directory, left) and _answers(directory):
        pids = ", ".join(f"{name} {pid}" for pid, name in sorted(left.processes.items()))
        raise SystemExit(f"kube-testenv: the bed in {directory} is up and answering ({pids}); `down` it first")
    progress(f"found stale state in {directory}: {'; '.join(left.notes) or 'generated files'}")
    stale.clear(directory, left)
    ended = f"stopped {len(left.processes)} leftover process(es), " if left.processes else ""
    progress(f"cleared it ({ended}removed {len(left.files)} generated file(s)); starting fresh")


def _answers(directory: Path) -> bool:
    try:
        status, _ = Bed.load(directory).request("GET", "/readyz", timeout=3.0)
    except (OSError, ValueError, KeyError):
        return False
    return status == 200


def down(directory: Path, *, timeout: float = 15.0) -> list[str]:
    """Stop what `up` started in `directory`, and any other component still running from it
    (a start interrupted before it recorded its processes). Returns the names stopped."""
    directory = directory.resolve()
    running = stale.processes_of(directory)
    if (directory / "state.json").exists():
        try:
            bed = Bed.load(directory)
        except (OSError, ValueError, KeyError):
            bed = None
        if bed is not None:
            for info in bed.procs.values():
                if info.get("pid") in running:
                    info["pid"] = None  # stopped below, with the rest
            bed.save()
    # etcd last: a kube-apiserver whose etcd went first spends its whole grace period shutting down.
    _terminate({p: n for p, n in running.items() if n != "etcd"}, timeout=timeout)
    _terminate({p: n for p, n in running.items() if n == "etcd"}, timeout=timeout)
    return [running[pid] for pid in sorted(running, key=lambda p: COMPONENTS.index(running[p]))]


def _terminate(processes: dict[int, str], *, timeout: float) -> None:
    """SIGTERM all at once, SIGKILL whatever still runs at the deadline; bounded by `timeout`."""
    for pid in processes:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(stale.alive(p) for p in processes) and time.monotonic() < deadline:
        for pid in processes:
            _reap(pid)
        time.sleep(0.05)
    for pid in processes:
        if stale.alive(pid):
            os.kill(pid, signal.SIGKILL)
            _reap(pid, block=True)
