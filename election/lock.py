"""The lock protocol the elector speaks: read, create, and compare-and-set one record.

Like client-go's `resourcelock.Interface`, and nothing more: no expiry logic lives here. A
backend only has to give linearizable optimistic concurrency on one record.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from election.record import LeaderRecord

__all__ = ["Lock"]


@runtime_checkable
class Lock(Protocol):
    def get(self) -> LeaderRecord | None:
        """The stored record with its `version`, or None when there is none.

        Raises `LockUnavailable` on transport trouble, `LockError` otherwise."""
        ...

    def create(self, record: LeaderRecord) -> LeaderRecord:
        """Store `record` if there is no record yet; return it with its new `version`.

        Raises `ConflictError` when a record already exists."""
        ...

    def update(self, record: LeaderRecord) -> LeaderRecord:
        """Replace the stored record if its version is still `record.version`; return the
        stored record with its new `version`.

        Raises `ConflictError` when the version differs. When the record is gone, Redis
        raises `ConflictError`; the apiserver creates the Lease (create-on-update), which is
        as safe as `create`: writers still holding the old version then get a conflict."""
        ...

    def describe(self) -> str:
        """Where the lock lives, for logs (e.g. `lease default/ksr-leader`)."""
        ...
