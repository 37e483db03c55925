"""`ksr dev` as a real process in tests: its own HOME, runtime dir and XDG_RUNTIME_DIR (so its
runtime file is the test's alone), a free port, and its banner read back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.pipeline import ROOT
from tests.support.ports import wait_for
from tests.support.procs import kill_tree

KSR = Path(ROOT) / ".venv" / "bin" / "ksr"

# What a machine's environment may carry that would point `ksr dev` elsewhere.
_DROPPED = ("REDIS_URL", "KSR_LOCK", "KSR_EXECUTOR", "HTTP_SERVER_PORT", "KSR_HTTP_HOST")
_CLUSTER = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")


def dev_env(home: Path, *, keep_cluster: bool = False, **extra: str) -> dict[str, str]:
    """This environment without a Redis, lock, executor or port choice (and, unless
    `keep_cluster`, no cluster); HOME, KSR_RUNTIME_DIR and XDG_RUNTIME_DIR under `home`."""
    dropped = _DROPPED if keep_cluster else _DROPPED + _CLUSTER
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    (home / "xdg").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), KSR_RUNTIME_DIR=str(home / "runtime"), XDG_RUNTIME_DIR=str(home / "xdg"), **extra)
    return env


class DevProcess:
    """`ksr dev ARGS` started in `cwd`; stdout and stderr both in `log`."""

    def __init__(self, env: Mapping[str, str], log: Path, args: Sequence[str] = ("--port", "0"), cwd: str = ROOT):
        self.env = dict(env)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(KSR), "dev", *args], env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_banner(self, timeout: float = 60) -> str:
        """The output once the banner's paste lines and status page are printed."""

        def printed() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"ksr dev exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            text = self.output()
            return text if "status page " in text else None

        return wait_for(printed, timeout=timeout, what="the banner of ksr dev")

    def paste_lines(self) -> list[str]:
        """The lines the banner says to paste into another terminal (indented, after the cue)."""
        text = self.wait_banner()
        block = text.split("In another terminal, paste these lines:\n", 1)[1]
        lines = []
        for line in block.splitlines():
            if not line.startswith("    "):
                break
            lines.append(line.strip())
        return lines

    def banner_value(self, label: str) -> str:
        match = re.search(rf"{re.escape(label)}\s+(\S+)", self.wait_banner(), flags=re.M)
        assert match, f"no {label!r} in the banner:\n{self.output()[-2000:]}"
        return match.group(1)

    @property
    def status_url(self) -> str:
        return self.banner_value("status page")

    @property
    def receiver_url(self) -> str:
        return self.banner_value("dev receiver")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200 (Redis answers, the elector runs)."""
        import urllib.request

        def ready() -> bool:
            with urllib.request.urlopen(self.status_url.rstrip("/") + "/readyz", timeout=2) as r:
                return int(r.status) == 200

        wait_for(ready, timeout=timeout, what="ksr dev's /readyz")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        """Signal `ksr dev` (its pid only, as a user's kill would) and wait for its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ksr dev did not exit within {timeout}s of {signal.Signals(sig).name}") from None

    def close(self) -> None:
        """A test's cleanup: stop it gracefully, and whatever is left of its tree hard."""
        try:
            self.stop(timeout=30)
        except AssertionError:
            pass
        self.kill()

    def kill(self) -> None:
        """The last resort of a test's cleanup: the whole tree, SIGKILL."""
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
        self.proc.wait(10)
