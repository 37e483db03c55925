"""One `ksr run` per runtime directory.

The supervisor wipes the metric files and the status board of its runtime directory at
start, and its probes serve that board: two processes sharing one directory would wipe
each other's metrics and show each other's leadership. So the supervisor holds an
exclusive `flock` on `<dir>/ksr.lock` for its lifetime. The kernel drops the lock when the
process dies, however it dies, so a crashed runner never blocks its restart; the file
itself stays (deleting a lock file races with the next taker) and names the last holder's
pid, for the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from runner.errors import ConfigError

__all__ = ["LOCK_FILE", "DirectoryLock"]

LOCK_FILE = "ksr.lock"


class DirectoryLock:
    """Held from construction until `release()` or the end of the process. The descriptor
    is not inherited by children (Python's default), so only this process holds it."""

    def __init__(self, directory: Path, *, variable: str) -> None:
        self.path = directory / LOCK_FILE
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                variable,
                f"{directory} is in use by another ksr process (pid {holder}); "
                "give each `ksr run` on this host a directory of its own",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
