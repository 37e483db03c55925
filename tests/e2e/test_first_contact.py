"""First contact as the README walks it: `make run` (its `ksr dev` command, read from the
Makefile, run with the venv it installed), then, in another terminal, the lines its banner
printed, pasted as they are, and `ksr status` answers."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from tests.support.devproc import KSR, DevProcess, dev_env
from tests.support.pipeline import ROOT
from tests.support.ports import free_port, wait_for

ROOT_DIR = Path(ROOT)


def make_run_args() -> list[str]:
    """The arguments `make run` gives `ksr dev` (RUN_ARGS empty, as the README's command)."""
    recipe = re.search(r"^run:.*\n\t(.+)$", (ROOT_DIR / "Makefile").read_text(), flags=re.M)
    assert recipe, "no run: target in the Makefile"
    words = shlex.split(recipe[1].replace("$(RUN_ARGS)", ""))
    assert words[:2] == ["$(BIN)/ksr", "dev"], recipe[1]
    return words[2:]


def test_make_run_is_what_the_readme_says() -> None:
    readme = (ROOT_DIR / "README.md").read_text()
    assert "make run    #" in readme and "ksr dev --samples" in readme
    assert make_run_args() == ["--samples"]
    assert (ROOT_DIR / ".venv" / "bin" / "ksr") == KSR  # where the Makefile's $(BIN) puts it


def test_first_contact_by_pasting_the_banner(tmp_path: Path) -> None:
    port = free_port()  # make run's 8080, moved: tests share the host (README: HTTP_SERVER_PORT)
    dev = DevProcess(dev_env(tmp_path, HTTP_SERVER_PORT=str(port)), tmp_path / "dev.log", args=make_run_args())
    try:
        pasted = dev.paste_lines()
        assert [line.split("=")[0] for line in pasted] == [
            f". {ROOT_DIR / '.venv' / 'bin' / 'activate'}",
            "export REDIS_URL",
            "export HTTP_SERVER_PORT",
            "export KSR_DEV_WEBHOOK",
        ]
        assert dev.status_url == f"http://127.0.0.1:{port}/"
        assert pasted[3] == f"export KSR_DEV_WEBHOOK={dev.receiver_url}"
        # The other terminal: anywhere, no venv on PATH, no REDIS_URL, a HOME of its own.
        other = tmp_path / "elsewhere"
        other.mkdir()
        env = dev_env(other)
        venv_bin = str(ROOT_DIR / ".venv" / "bin")
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if p != venv_bin)
        env.pop("VIRTUAL_ENV", None)
        script = "\n".join([*pasted, "command -v ksr", "ksr status", "ksr health"])
        wait_for(lambda: "became the leader" in dev.output(), timeout=60, what="ksr dev leading")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], env=env, cwd=other, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines()[0] == venv_bin + "/ksr"
        assert re.search(r"^ksr:jobs:default +\d+ ", done.stdout, flags=re.M), done.stdout
        assert f"healthy (http://127.0.0.1:{port})" in done.stdout
        assert "REDIS_URL is not set" not in done.stderr  # the pasted REDIS_URL, not the runtime file
        # The samples make run submits end with their callbacks printed.
        wait_for(
            lambda: (
                "callback  sample-fail  3 failed" in dev.output()
                and "callback  sample-hello  2 completed" in dev.output()
            ),
            timeout=60,
            what="the samples' final callbacks",
        )
        assert dev.stop() == 0, dev.output()[-3000:]
        assert not (Path(dev.env["XDG_RUNTIME_DIR"]) / "kube-stream-runner" / "dev.json").exists()
    finally:
        dev.close()
