"""A lock held in this process's memory: the elector's unit tests and examples use it.

It is a faithful backend (versioned compare-and-set, thread-safe), just not shared between
processes. `fail_with` makes every call raise (an unreachable server); `fail_ops` makes
calls of one kind raise (e.g. `{"update": ConflictError("...")}`: someone else wrote first).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from election.errors import ConflictError, LockError
from election.record import LeaderRecord

__all__ = ["MemoryLock"]


class MemoryLock:
    def __init__(self, name: str = "ksr-leader") -> None:
        self.name = name
        self._record: LeaderRecord | None = None
        self._counter = 0
        self._mutex = threading.Lock()
        self.fail_with: LockError | None = None
        self.fail_ops: dict[str, LockError] = {}
        self.calls: list[str] = []

    def get(self) -> LeaderRecord | None:
        with self._mutex:
            self._call("get")
            return self._record

    def create(self, record: LeaderRecord) -> LeaderRecord:
        with self._mutex:
            self._call("create")
            if self._record is not None:
                raise ConflictError(f"{self.describe()} already exists")
            return self._store(record)

    def update(self, record: LeaderRecord) -> LeaderRecord:
        with self._mutex:
            self._call("update")
            if self._record is None or self._record.version != record.version:
                raise ConflictError(
                    f"{self.describe()} changed: expected version {record.version}, "
                    f"found {self._record.version if self._record else None}"
                )
            return self._store(record)

    def put(self, record: LeaderRecord | None) -> LeaderRecord | None:
        """Overwrite the record as another writer would (tests: someone else took it)."""
        with self._mutex:
            if record is None:
                self._record = None
                return None
            return self._store(record)

    def describe(self) -> str:
        return f"memory lock {self.name}"

    def _call(self, op: str) -> None:
        self.calls.append(op)
        if self.fail_with is not None:
            raise self.fail_with
        if op in self.fail_ops:
            raise self.fail_ops[op]

    def _store(self, record: LeaderRecord) -> LeaderRecord:
        self._counter += 1
        self._record = replace(record, version=str(self._counter))
        return self._record
