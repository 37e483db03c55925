"""Where the deployment keeps what the read layer looks at: every key name, from the settings.

One frozen value handed to every reader of runner.inspect, so a reader never parses the
environment itself and a test can point it at its own names.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.settings import Settings
from runner.store.pause import pause_namespace
from runner.store.schedule import CANCELS_KEY
from runner.store.streams import DEAD_SUFFIX
from runner.store.waiting import waiting_index

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    streams: tuple[str, ...]  # KSR_STREAMS, highest priority first
    group: str  # KSR_GROUP
    record_prefix: str  # CACHE_JOB_KEY_PREFIX: the record of <id> is <record_prefix><id>
    active_key: str  # the set of ids whose Jobs have not ended
    events_stream: str  # KSR_EVENTS_STREAM
    cancels_key: str = CANCELS_KEY
    dead_suffix: str = DEAD_SUFFIX

    @classmethod
    def from_settings(cls, settings: Settings) -> Layout:
        return cls(
            streams=settings.streams.streams,
            group=settings.streams.group,
            record_prefix=settings.state.key_prefix,
            active_key=settings.state.active_key,
            events_stream=settings.streams.events_stream,
        )

    @property
    def namespace(self) -> str:
        """`ksr` for `ksr:active`: where the pause hashes live (runner.store.pause)."""
        return pause_namespace(self.active_key)

    @property
    def waiting_index(self) -> str:
        """The sorted set of creates that wait (runner.store.waiting)."""
        return waiting_index(self.active_key)

    def record_key(self, message_id: str) -> str:
        return self.record_prefix + message_id

    def dead_stream(self, stream: str) -> str:
        return stream + self.dead_suffix
