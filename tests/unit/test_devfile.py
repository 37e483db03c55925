"""The runtime file of `ksr dev` (runner/cli/_devfile.py): where it lives, who may remove it,
and a file whose process is gone is no `ksr dev`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from runner.cli._devfile import DevRuntime, discover, well_known_path


def _runtime(pid: int) -> DevRuntime:
    return DevRuntime(
        pid=pid,
        redis_url="redis://:secret@127.0.0.1:41234/0",
        http_port=41235,
        status_url="http://127.0.0.1:41235/",
        receiver_url="http://127.0.0.1:41236/callbacks",
    )


def test_the_well_known_place_is_under_xdg_runtime_dir_else_the_cache(tmp_path: Path) -> None:
    assert well_known_path({"XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u"}) == Path(
        "/run/user/7/kube-stream-runner/dev.json"
    )
    assert well_known_path({"HOME": "/home/u"}) == Path("/home/u/.cache/kube-stream-runner/dev.json")
    assert well_known_path({"XDG_RUNTIME_DIR": "", "HOME": "/home/u"}) == Path(
        "/home/u/.cache/kube-stream-runner/dev.json"
    )


def test_a_live_ksr_dev_is_found_and_its_file_is_private(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert discover(env) is None
    mine = _runtime(os.getpid())
    mine.write(well_known_path(env), tmp_path / "runtime" / "dev.json")
    assert discover(env) == (mine, well_known_path(env))
    assert stat.S_IMODE(well_known_path(env).stat().st_mode) == 0o600  # REDIS_URL may hold a password
    assert (tmp_path / "runtime" / "dev.json").read_text() == well_known_path(env).read_text()


def test_a_file_whose_process_is_gone_is_ignored(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _runtime(gone.pid).write(well_known_path(env))
    assert discover(env) is None


def test_each_ksr_dev_removes_only_a_file_that_still_names_it(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    first, second = _runtime(os.getpid()), _runtime(os.getppid())
    first.write(well_known_path(env))
    second.write(well_known_path(env))  # a later ksr dev took the well-known place
    first.remove(well_known_path(env))
    assert discover(env) == (second, well_known_path(env))
    second.remove(well_known_path(env))
    assert not well_known_path(env).exists()


def test_an_unreadable_or_foreign_file_is_no_ksr_dev(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    well_known_path(env).parent.mkdir(parents=True)
    for text in ("", "not json", '{"pid": "x"}', "[]", '{"pid": 1}'):
        well_known_path(env).write_text(text)
        assert discover(env) is None, text
