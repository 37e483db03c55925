"""Every command of README.md and docs/*.md runs: the ```` ```sh runnable ```` blocks of each
file in one bash session against one `ksr dev` (its own HOME, runtime dir, ports), in a
shell set up by pasting the lines its banner prints; every other shell block is listed
below with what executes it instead. Conventions: tests/support/doccmds.py, tests/README.md."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devproc import DevProcess, dev_env
from tests.support.doccmds import Block, blocks_of, doc_files, run_blocks
from tests.support.pipeline import ROOT
from tests.support.ports import wait_for

ROOT_DIR = Path(ROOT)

# Shell blocks that cannot run against `ksr dev` (they need a cluster, an image, a second
# terminal, or they never end), keyed by (file, first command line), and what executes each
# instead: a test ("path" or "path::test_name", checked to exist) or "untested: why".
NOT_RUNNABLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("README.md", "make run    # installs everything, then runs the service end to end on an embedded default"): (
        "tests/e2e/test_first_contact.py::test_first_contact_by_pasting_the_banner",
        ".ci/run",  # make test: CI runs it and nothing else
    ),
    ("README.md", "scripts/kube-testenv build             # compile and cache (a second build does nothing)"): (
        "tests/integration/test_testbed.py",  # the same bed, through scripts/testenv's `up` (tests/support/kube.py)
    ),
    ("docs/cli.md", 'eval "$(_KSR_COMPLETE=bash_source ksr)"'): (
        "tests/unit/test_cli_common.py::test_shell_completion_script",
    ),
    ("docs/deploy.md", "docker build -t registry.example/kube-stream-runner:0.1.0 .   # what a user runs"): (
        "tests/e2e/test_pod_rehearsal.py",  # the `image` fixture runs scripts/build-image (make image)
    ),
    (
        "docs/deploy.md",
        "mmdebstrap --variant=apt --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \\",
    ): ("tests/e2e/test_pod_rehearsal.py",),  # scripts/build-image's podman path, through the `image` fixture
    ("docs/deploy.md", "kubectl -n ksr create secret generic ksr-secrets \\"): ("tests/e2e/test_helm_install.py",),
    ("docs/deploy.md", "kubectl get jobs -n NS -l app.kubernetes.io/managed-by=kube-stream-runner -o name |"): (
        "untested: the manual finalizer removal after an uninstall; the finalizer itself: tests/unit/test_kube_api.py",
    ),
    (
        "docs/deploy.md",
        ".venv/bin/python -m pytest -q tests/integration/test_chart.py tests/integration/test_chart_hooks.py \\",
    ): ("tests/integration/test_chart.py", "tests/integration/test_chart_hooks.py"),
    (
        "docs/producer.md",
        "make go-example     # builds it once into ~/.cache/kube-stream-runner/bin/, keyed by its sources",
    ): (
        "tests/integration/test_go_producer.py",  # make test builds it first; the test runs the binary
    ),
    ("docs/producer.md", "pip install ./clients/python        # from a checkout; brings redis, nothing else"): (
        "tests/integration/test_producer_client.py",  # installs it with pip into a fresh venv
    ),
    (
        "docs/console.md",
        "KSR_CONSOLE_SCREENSHOTS=docs .venv/bin/python -m pytest -q -n 0 tests/e2e/test_console_browser.py",
    ): (
        "tests/e2e/test_console_browser.py",  # the test itself; the variable only moves its screenshots
    ),
    (
        "docs/deploy.md",
        ".venv/bin/python -m pytest -q -s tests/e2e/test_pod_rehearsal.py tests/e2e/test_helm_install.py \\",
    ): (
        "tests/e2e/test_pod_rehearsal.py",
        "tests/e2e/test_helm_install.py",
        "tests/e2e/test_prometheus.py",
    ),
}


def _all_blocks() -> dict[str, list[Block]]:
    return {str(p.relative_to(ROOT_DIR)): blocks_of(p, ROOT_DIR) for p in doc_files(ROOT_DIR)}


RUNNABLE_FILES = [name for name, blocks in _all_blocks().items() if any(b.runnable for b in blocks)]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    home = tmp_path_factory.mktemp("docs-dev")
    process = DevProcess(dev_env(home), home / "dev.log")
    try:
        process.wait_banner()
        process.wait_ready()
        yield process
    finally:
        process.close()


def _shell_env(dev: DevProcess, home: Path) -> dict[str, str]:
    """A user's other terminal: no REDIS_URL, no venv on PATH (the pasted lines bring them),
    a HOME of its own, the same XDG_RUNTIME_DIR as the ksr dev."""
    env = dev_env(home)
    env["XDG_RUNTIME_DIR"] = dev.env["XDG_RUNTIME_DIR"]
    venv_bin = str(ROOT_DIR / ".venv" / "bin")
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if p != venv_bin)
    for name in ("VIRTUAL_ENV", "KSR_RUNTIME_DIR"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("doc", RUNNABLE_FILES)
def test_runnable_commands_of(doc: str, dev: DevProcess, tmp_path: Path) -> None:
    blocks = [b for b in _all_blocks()[doc] if b.runnable]
    work = tmp_path / "work"
    work.mkdir()
    failure = run_blocks(blocks, env=_shell_env(dev, tmp_path / "home"), cwd=work, prelude=dev.paste_lines())
    assert failure is None, str(failure)
    if doc == "README.md":  # the walk's callbacks reached the dev receiver, which printed them
        wait_for(
            lambda: all(f"callback  hello-1  {s} " in dev.output() for s in (0, 1, 2)),
            timeout=30,
            what="callbacks 0, 1, 2 of hello-1 printed by ksr dev",
        )


def test_the_cli_finds_ksr_dev_through_its_runtime_file(dev: DevProcess, tmp_path: Path) -> None:
    """Only the activation pasted, no REDIS_URL: `ksr` reads the runtime file and says so."""
    activate = [line for line in dev.paste_lines() if line.startswith(". ")]
    assert len(activate) == 1, dev.paste_lines()
    env = _shell_env(dev, tmp_path / "home")
    script = f"{activate[0]}\nksr status\nksr health\nksr config --json"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    note = f"REDIS_URL is not set: using the ksr dev running here (pid {dev.pid}, status page {dev.status_url}"
    assert done.stderr.count(note) == 3, done.stderr
    assert "ksr:jobs:default" in done.stdout and f"healthy ({dev.status_url.rstrip('/')})" in done.stdout
    config = json.loads(done.stdout[done.stdout.index("{") :])
    assert config["REDIS_URL"] == dev.banner_value("redis-server at")


def test_every_shell_block_runs_or_names_what_runs_it() -> None:
    blocks = [b for bs in _all_blocks().values() for b in bs if b.is_shell]
    listed = {(b.path, b.first_line) for b in blocks if not b.runnable}
    missing = sorted(listed - NOT_RUNNABLE.keys())
    assert not missing, (
        "shell blocks neither ```sh runnable nor in NOT_RUNNABLE (tests/e2e/test_docs_commands.py) with the test that "
        "runs them:\n" + "\n".join(f"  {path}: {line!r}" for path, line in missing)
    )
    stale = sorted(NOT_RUNNABLE.keys() - listed)
    assert not stale, "NOT_RUNNABLE entries whose block is gone or now runnable:\n" + "\n".join(map(repr, stale))
    for key, refs in NOT_RUNNABLE.items():
        assert refs, key
        for ref in refs:
            if ref.startswith("untested: "):
                continue
            path, _, name = ref.partition("::")
            assert (ROOT_DIR / path).is_file(), f"{key}: {path} does not exist"
            if name:
                assert f"def {name}(" in (ROOT_DIR / path).read_text(), f"{key}: no {name} in {path}"


def test_a_failing_command_is_named_with_its_file_line_and_output(tmp_path: Path) -> None:
    """The harness itself: state carries across blocks, and a failure points at its line."""
    doc = tmp_path / "docs" / "x.md"
    doc.parent.mkdir()
    doc.write_text(
        "# x\n\n```sh runnable\ngreeting=hello\nmkdir sub && cd sub\n```\n\n"
        'text\n\n```sh runnable\necho "$greeting from $(basename "$PWD")"\nls /nonexistent-ksr-doc \\\n  -d\necho never\n```\n'
    )
    blocks = [b for b in blocks_of(doc, tmp_path) if b.runnable]
    assert [(b.line, b.lines[0]) for b in blocks] == [
        (4, "greeting=hello"),
        (11, 'echo "$greeting from $(basename "$PWD")"'),
    ]
    failure = run_blocks(blocks, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert failure is not None
    assert (failure.block.path, failure.line, failure.command) == ("docs/x.md", 12, "ls /nonexistent-ksr-doc -d")
    assert failure.status == "exit 2"
    assert failure.output.splitlines()[0] == "hello from sub"
    assert "No such file or directory" in failure.output and "never" not in failure.output
    assert str(failure).startswith("docs/x.md:12: `ls /nonexistent-ksr-doc -d` failed (exit 2)")
