"""Where the runner keeps things, read from the environment variables the runner reads
(REDIS_URL, KSR_STREAMS, ...), with the runner's defaults (ksr_client._contract)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ksr_client._contract import DEFAULTS

__all__ = ["Config", "ConfigError", "default_stream_of"]


class ConfigError(ValueError):
    """A variable is malformed; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


def default_stream_of(streams: tuple[str, ...]) -> str:
    """The "default" priority stream: the one whose last segment is `default`, else the first."""
    return next((s for s in streams if s.rsplit(":", 1)[-1] == "default"), streams[0])


@dataclass(frozen=True, kw_only=True)
class Config:
    redis_url: str = DEFAULTS["REDIS_URL"]
    streams: tuple[str, ...] = tuple(DEFAULTS["KSR_STREAMS"].split(","))  # highest priority first
    group: str = DEFAULTS["KSR_GROUP"]  # the runner's consumer group
    events_stream: str = DEFAULTS["KSR_EVENTS_STREAM"]
    key_prefix: str = DEFAULTS["CACHE_JOB_KEY_PREFIX"]  # the record of message <id> is <prefix><id>
    state_ttl: int = int(DEFAULTS["KSR_STATE_TTL"])  # seconds a cancelled record is kept
    max_message_bytes: int = int(DEFAULTS["KSR_MAX_MESSAGE_BYTES"])

    def __post_init__(self) -> None:
        if not self.streams or any(not s for s in self.streams):
            raise ConfigError("KSR_STREAMS", f"must be stream names, comma-separated, got {','.join(self.streams)!r}")

    @property
    def default_stream(self) -> str:
        return default_stream_of(self.streams)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = env.get(name, "").strip()
            return value or DEFAULTS[name]

        def number(name: str) -> int:
            try:
                return int(get(name))
            except ValueError:
                raise ConfigError(name, f"must be an integer, got {get(name)!r}") from None

        return cls(
            redis_url=get("REDIS_URL"),
            streams=tuple(s.strip() for s in get("KSR_STREAMS").split(",")),
            group=get("KSR_GROUP"),
            events_stream=get("KSR_EVENTS_STREAM"),
            key_prefix=get("CACHE_JOB_KEY_PREFIX"),
            state_ttl=number("KSR_STATE_TTL"),
            max_message_bytes=number("KSR_MAX_MESSAGE_BYTES"),
        )
