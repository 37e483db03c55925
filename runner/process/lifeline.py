"""Supervised processes die with their parent, even when it is SIGKILLed.

The supervisor's children run in sessions of their own (it alone decides when they stop),
so outside a container nothing else would ever end them: a `ksr run` killed hard would
leave gunicorn and an RQ worker retrying a Redis that is gone. Each child calls
`die_with_parent()` first thing; it asks the kernel (Linux `PR_SET_PDEATHSIG`) for SIGTERM
when the parent dies, and arranges the same for every process it forks later (gunicorn's
workers, RQ's scheduler), so the whole tree follows, each process with its own graceful
SIGTERM handling.

The supervisor names itself in KSR_PARENT_PID: a child whose parent is already another
process (the supervisor died before the child got this far) stops at once, and a process
started without it (a test's own RQ worker) is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import MutableMapping

__all__ = ["ENV_PARENT_PID", "die_with_parent"]

log = logging.getLogger(__name__)

ENV_PARENT_PID = "KSR_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_SIGNAL = signal.SIGTERM  # every process here stops gracefully on it

_forks_follow = False
_forking_pid = 0  # the pid that called fork(), seen from the child


def die_with_parent(env: MutableMapping[str, str] | None = None) -> None:
    """Make this process, and every process it forks from now on, end with its parent.
    No-op unless KSR_PARENT_PID is set (it is consumed: descendants must not judge their
    own parent against the supervisor's pid)."""
    global _forks_follow
    env = os.environ if env is None else env
    expected = env.pop(ENV_PARENT_PID, None)
    if not expected:
        return
    if not _set_parent_death_signal():
        return
    _stop_if_orphaned(int(expected))
    if not _forks_follow:
        _forks_follow = True
        os.register_at_fork(before=_remember_forking_pid, after_in_child=_follow_forking_parent)


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        log.debug("no PR_SET_PDEATHSIG on %s: children do not follow a killed parent", sys.platform)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(_SIGNAL), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _stop_if_orphaned(parent: int) -> None:
    # The parent may have died between our fork and the prctl: no signal will come then,
    # and nobody is left to stop gracefully for.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _remember_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _follow_forking_parent() -> None:
    if _set_parent_death_signal():
        _stop_if_orphaned(_forking_pid)
