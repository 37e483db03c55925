"""The errors of `election`, translated from redis / kubernetes errors at the lock boundary.

`election` must not import `runner`, so it has its own small root. The runner maps these into
its own vocabulary where it calls the elector (they are few, and they all mean "no lock now").
"""

from __future__ import annotations

__all__ = ["ConflictError", "ElectionConfigError", "ElectionError", "LockError", "LockUnavailable"]


class ElectionError(Exception):
    """Root of every error raised by `election`."""


class ElectionConfigError(ElectionError, ValueError):
    """The election settings are inconsistent. `variable` is the environment variable (or,
    for a value that has none, the field) at fault; `problem` says what is wrong with it."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class LockError(ElectionError):
    """The lock backend refused or failed a request (e.g. 403 Forbidden, a malformed record)."""


class ConflictError(LockError):
    """Optimistic concurrency failed: the record changed since we read it (HTTP 409), or a
    create found it already there. Someone else wrote first; read again."""


class LockUnavailable(LockError):
    """Transport trouble: the backend did not answer (connection refused, timeout, 5xx, 429).
    The request may or may not have been applied."""
