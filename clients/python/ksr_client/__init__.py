"""kube-stream-runner's producer client: submit, status, wait and cancel job messages over
Redis, with redis-py as its only dependency (docs/producer.md)."""

from __future__ import annotations

from ksr_client.client import (
    AlreadyFinished,
    Cancellation,
    Client,
    ClientError,
    InvalidMessage,
    Status,
    UnknownStream,
    WaitTimeout,
    rfc3339,
)
from ksr_client.config import Config, ConfigError

__all__ = [
    "AlreadyFinished",
    "Cancellation",
    "Client",
    "ClientError",
    "Config",
    "ConfigError",
    "InvalidMessage",
    "Status",
    "UnknownStream",
    "WaitTimeout",
    "rfc3339",
]
__version__ = "0.1.0"
