"""The runtime directory's lock: one holder at a time, free again once released."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.process.runtime_lock import LOCK_FILE, DirectoryLock


def test_a_second_holder_is_refused_naming_the_variable_and_the_holder(tmp_path):
    first = DirectoryLock(tmp_path / "rt", variable="KSR_RUNTIME_DIR")
    try:
        with pytest.raises(ConfigError) as refused:
            DirectoryLock(tmp_path / "rt", variable="KSR_RUNTIME_DIR")  # flock is per open file: refused here too
        assert refused.value.variable == "KSR_RUNTIME_DIR"
        assert str(tmp_path / "rt") in str(refused.value)
        assert f"(pid {(tmp_path / 'rt' / LOCK_FILE).read_text().strip()})" in str(refused.value)
    finally:
        first.release()


def test_a_released_lock_can_be_taken_again(tmp_path):
    DirectoryLock(tmp_path, variable="KSR_RUNTIME_DIR").release()
    again = DirectoryLock(tmp_path, variable="KSR_RUNTIME_DIR")
    again.release()
