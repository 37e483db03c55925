"""Leader election: a lock protocol, its Lease and Redis backends, and the elector state machine.

    from election import Elector, ElectionConfig
    from election.lease_lock import LeaseLock, api_client_from_kubeconfig   # in a cluster
    from election.redis_lock import RedisLock                               # without one

The backends are imported from their modules so that importing `election` does not pull in
the kubernetes client. `election` never imports `runner`.
"""

from election.clock import SYSTEM_CLOCK, Clock, FakeClock, RandomSource, SystemClock
from election.config import ElectionConfig
from election.elector import Elector, ElectorStatus
from election.errors import (
    ConflictError,
    ElectionConfigError,
    ElectionError,
    LockError,
    LockUnavailable,
)
from election.lock import Lock
from election.memory_lock import MemoryLock
from election.record import LeaderRecord

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "ConflictError",
    "ElectionConfig",
    "ElectionConfigError",
    "ElectionError",
    "Elector",
    "ElectorStatus",
    "FakeClock",
    "LeaderRecord",
    "Lock",
    "LockError",
    "LockUnavailable",
    "MemoryLock",
    "RandomSource",
    "SystemClock",
]
