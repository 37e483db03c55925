"""The leader's reader of the job streams, through the consumer group.

One `StreamReader` per leader: strict priority across the configured streams, this
consumer's own pending entries first, the group's own delivery counter on every entry,
takeover (`XAUTOCLAIM`), groups recreated when they vanish, acks, and trimming that never
drops an entry the group still owes. Inspecting the streams without reading them (pending
lists, lengths, lag) is runner.store.stream_inspection's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import ResponseError

from runner.errors import RedisUnavailable
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.replies import text
from runner.store.streams import GROUP_START_ID, Entry, id_key, next_id

__all__ = ["StreamReader"]

log = logging.getLogger(__name__)

CLAIM_PAGE = 500
# A stream nobody writes: with every stream paused, the reader blocks on it for block_ms (so
# the loop neither spins nor sleeps on its own clock), then looks at the pauses again.
PAUSED_WAIT_KEY = "ksr:paused:wait"
TRIM_SCAN_PAGE = 1000


def _stream_replies(response: Any) -> list[tuple[str, list[tuple[Any, dict[bytes, bytes]]]]]:
    """XREADGROUP's answer as [(stream, entries)], whichever shape redis-py hands back."""
    if not response:
        return []
    items = response.items() if isinstance(response, dict) else response
    out = []
    for stream, entries in items:
        # the RESP3 legacy shape wraps the list once more
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        out.append((text(stream), list(entries or [])))
    return out


class StreamReader:
    """Consumer `consumer` of group `group` on `streams` (highest priority first)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        streams: Sequence[str],
        group: str,
        consumer: str,
        count: int = 10,
        block_ms: int = 2000,
        paused: Callable[[], Collection[str]] = lambda: (),
    ) -> None:
        """`paused` names the streams not to read new entries from (runner.store.pause),
        asked once per batch; this consumer's own pending entries are still read again."""
        if not streams:
            raise ValueError("at least one stream is needed")
        if count < 1:
            raise ValueError("count must be >= 1")
        self.redis = redis_client
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.count = count
        # 0 (or less) means never block. Keep it below the client's socket_timeout, or a
        # quiet stream looks like a Redis outage.
        self.block_ms = block_ms
        self.groups_recreated = 0
        self.on_group_recreated: list[Callable[[str], None]] = []
        # stream -> id after which this consumer's own pending entries are still to be read
        self._pending_cursor: dict[str, str] = {}
        self._keep_going: Callable[[], bool] = lambda: True  # read_batch's, for its helpers
        self._paused = paused
        self._readable = list(self.streams)  # the streams not paused, as of this batch
        self._take_over_script = scripts.load(redis_client, "take_over")
        self.rescan_pending()

    # -- groups ------------------------------------------------------------------------

    def ensure_groups(self) -> list[str]:
        """Create the group on every stream (MKSTREAM) where it is missing; return those."""
        created = []
        with self._translate():
            for stream in self.streams:
                try:
                    self.redis.xgroup_create(stream, self.group, id=GROUP_START_ID, mkstream=True)
                except ResponseError as e:
                    if not str(e).startswith("BUSYGROUP"):
                        raise
                else:
                    created.append(stream)
        return created

    def _recreate_groups(self, error: ResponseError) -> None:
        # Redis lost the stream or the group (restart without persistence, a stray DEL):
        # recreate and go on; the state store stays the source of truth for duplicates.
        created = self.ensure_groups()
        self.rescan_pending()
        for stream in created:
            self.groups_recreated += 1
            log.warning("consumer group %s on stream %s had vanished (%s); recreated", self.group, stream, error)
            for hook in list(self.on_group_recreated):
                try:
                    hook(stream)
                except Exception:  # a subscriber must never break the read loop
                    log.exception("on_group_recreated hook %r failed", hook)

    # -- reading -----------------------------------------------------------------------

    def rescan_pending(self) -> None:
        """Read this consumer's own pending entries again before any new ones."""
        self._pending_cursor = {stream: "0" for stream in self.streams}

    def paused(self) -> frozenset[str]:
        """The streams an operator paused, as Redis has them now (runner.store.pause)."""
        return frozenset(self._paused())

    def read_batch(self, keep_going: Callable[[], bool] = lambda: True) -> list[Entry]:
        """The next batch: own pending first, then new entries in strict priority.

        Returns [] when nothing arrived within `block_ms`, and without reading further once
        `keep_going()` is false: it is asked before every XREADGROUP (a leader's term check:
        what a reader gets lands in its own pending list, where nobody else looks).
        """
        self._keep_going = keep_going
        paused = set(self._paused())
        self._readable = [s for s in self.streams if s not in paused]
        for attempt in (1, 2):
            try:
                with self._translate():
                    if self._pending_cursor:
                        batch = self._read_own_pending()
                        if batch:
                            return batch
                    batch = self._read_new()
                    if batch or self.block_ms <= 0 or not keep_going():
                        return batch
                    return self._read_new_blocking()
            except ResponseError as e:
                if attempt == 2 or not _is_lost_group(e):
                    raise
                self._recreate_groups(e)
        return []  # unreachable; keeps mypy content

    def read_more(self, *, through: str, keep_going: Callable[[], bool] = lambda: True) -> list[Entry]:
        """New entries of the streams up to `through` in priority order, without blocking: what
        free create threads take while a batch read from `through` is still being created
        (never a lower priority: those wait until the batch is done). [] when there are none."""
        self._keep_going = keep_going
        with self._translate():
            return self._read_new([s for s in self.streams[: self.streams.index(through) + 1] if s in self._readable])

    def _read_own_pending(self) -> list[Entry]:
        for stream in self.streams:
            while stream in self._pending_cursor and self._keep_going():
                cursor = self._pending_cursor[stream]
                replies = _stream_replies(
                    self.redis.xreadgroup(self.group, self.consumer, {stream: cursor}, count=self.count)
                )
                raw = replies[0][1] if replies else []
                if not raw:
                    del self._pending_cursor[stream]  # drained until the next rescan
                    break
                self._pending_cursor[stream] = text(raw[-1][0])
                entries = self._with_counts(stream, raw, from_pending=True)
                if entries:
                    return entries
        return []

    def _read_new(self, streams: Sequence[str] | None = None) -> list[Entry]:
        # One stream at a time, highest priority first, so a busy low stream never
        # delays a critical entry that is already there.
        for stream in self._readable if streams is None else streams:
            if not self._keep_going():
                return []
            replies = _stream_replies(self.redis.xreadgroup(self.group, self.consumer, {stream: ">"}, count=self.count))
            entries = [e for _, raw in replies for e in self._fresh(stream, raw)]
            if entries:
                return entries
        return []

    def _read_new_blocking(self) -> list[Entry]:
        if not self._readable:  # every stream paused: wait as long as a read would, for nothing
            self.redis.xread({PAUSED_WAIT_KEY: "$"}, block=self.block_ms)
            return []
        response = self.redis.xreadgroup(
            self.group, self.consumer, {s: ">" for s in self._readable}, count=self.count, block=self.block_ms
        )
        by_stream = dict(_stream_replies(response))
        if not by_stream:
            return []
        # Redis < 7.2 wakes us with only the stream that got data first; a higher
        # priority stream may have been filled in the same instant, so look there too.
        top = min(self.streams.index(s) for s in by_stream)
        for stream in [s for s in self.streams[:top] if s in self._readable]:
            by_stream.update(
                _stream_replies(self.redis.xreadgroup(self.group, self.consumer, {stream: ">"}, count=self.count))
            )
        # Everything returned is now in our pending list, so all of it is handed out, in
        # priority order (and the higher streams are read whatever keep_going says: what
        # this read got is ours either way).
        return [e for s in self.streams for e in self._fresh(s, by_stream.get(s, []))]

    @staticmethod
    def _fresh(stream: str, raw: list[tuple[Any, dict[bytes, bytes]]]) -> list[Entry]:
        return [Entry(stream, text(i), dict(f), 1, False) for i, f in raw]

    def _ack_vanished(self, stream: str, entry_ids: list[str], how: str) -> None:
        """Ack pending entries whose stream entries are gone (nothing is left to run), and say so."""
        if entry_ids:
            self.redis.xack(stream, self.group, *entry_ids)
            log.warning(
                "acked %d pending entries of %s that %s: %s", len(entry_ids), stream, how, ", ".join(entry_ids[:10])
            )

    def _with_counts(
        self, stream: str, raw: list[tuple[Any, dict[bytes, bytes]]], *, from_pending: bool
    ) -> list[Entry]:
        """Entries with the group's delivery counter; deleted ones (no fields) are acked."""
        self._ack_vanished(stream, [text(i) for i, f in raw if not f], "were deleted")
        live = [(text(i), dict(f)) for i, f in raw if f]
        if not live:
            return []
        counts = self._delivery_counts(stream, [i for i, _ in live])
        return [Entry(stream, i, f, counts.get(i, 1), from_pending) for i, f in live]

    def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        """The group's times-delivered for `ids` (all owned by this consumer), via XPENDING."""
        wanted = set(ids)
        counts: dict[str, int] = {}
        low = min(ids, key=id_key)
        high = max(ids, key=id_key)
        while len(counts) < len(wanted):
            rows = self.redis.xpending_range(
                stream,
                self.group,
                min=low,
                max=high,
                count=max(len(wanted), CLAIM_PAGE),
                consumername=self.consumer,
            )
            if not rows:
                break
            for row in rows:
                entry_id = text(row["message_id"])
                if entry_id in wanted:
                    counts[entry_id] = int(row["times_delivered"])
            low = "(" + text(rows[-1]["message_id"])
        return counts

    # -- acking and takeover -----------------------------------------------------------

    def ack(self, entry: Entry) -> int:
        return self.ack_many([entry])

    def ack_many(self, entries: Sequence[Entry]) -> int:
        """XACK the entries (one pipeline); returns how many were still pending."""
        if not entries:
            return 0
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        with self._translate():
            pipe = self.redis.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.group, *ids)
            return sum(int(n) for n in pipe.execute())

    def take_over(self, *, page: int = CLAIM_PAGE) -> int:
        """Make every pending entry of the group ours (a new leader's takeover); returns how many.

        XAUTOCLAIM JUSTID, paged until its cursor comes back "0-0": a claim that returns only
        ids counts no delivery. The entries are then read from our own pending list, which
        counts one, just before they are processed: a leader that dies during its recovery
        has delivered nothing, so leader churn alone never makes an entry poison. Ids whose
        entries were trimmed or deleted cannot be processed: they are acked and logged.
        """
        claimed = 0
        for stream in self.streams:
            claimed += self._take_over_stream(stream, page=page)
        if claimed:
            log.info("claimed %d pending entries for %s", claimed, self.consumer)
        self.rescan_pending()
        return claimed

    def claim_abandoned(self, *, min_idle_ms: int, page: int = CLAIM_PAGE) -> int:
        """Make other consumers' pending entries idle for at least `min_idle_ms` ours; returns how many.

        A leader calls it while it leads: a deposed leader may read entries after the next
        leader's takeover claimed everything, and nobody else reads its pending list. As in
        `take_over`, the claim counts no delivery; reading them from our pending list does.
        At most `page` entries per consumer and stream per call; the rest at the next.
        """
        claimed = 0
        for stream in self.streams:
            try:
                with self._translate():
                    for consumer in self._pending_consumers(stream):
                        if consumer == self.consumer:
                            continue
                        rows = self.redis.xpending_range(
                            stream, self.group, min="-", max="+", count=page, consumername=consumer, idle=min_idle_ms
                        )
                        ids: list[Any] = [text(r["message_id"]) for r in rows]
                        if not ids:
                            continue
                        # XCLAIM checks the idle time again: an entry its owner touched since stays.
                        reply: Any = self.redis.xclaim(stream, self.group, self.consumer, min_idle_ms, ids, justid=True)
                        taken = [text(i) for i in reply or []]
                        if taken:
                            log.warning(
                                "claimed %d entries of %s that %s has held for over %.0fs: %s",
                                len(taken),
                                stream,
                                consumer,
                                min_idle_ms / 1000,
                                ", ".join(taken[:10]),
                            )
                        claimed += len(taken)
            except ResponseError as e:
                if not _is_lost_group(e):
                    raise
                self._recreate_groups(e)  # a new group has nothing pending
        if claimed:
            self.rescan_pending()
        return claimed

    def _pending_consumers(self, stream: str) -> list[str]:
        return [text(c["name"]) for c in self.redis.xpending(stream, self.group)["consumers"]]

    def _take_over_stream(self, stream: str, *, page: int) -> int:
        cursor = "0-0"
        claimed = 0
        while True:
            try:
                with self._translate():
                    reply = self._take_over_script(keys=[stream], args=[self.group, self.consumer, cursor, page])
                    cursor = text(reply[0])
                    claimed += len(reply[1] or [])
                    # Redis 7 already dropped these from the PEL; the ack is for older servers.
                    deleted = [text(i) for i in (reply[2] if len(reply) > 2 else [])]
                    self._ack_vanished(stream, deleted, "no longer exist (trimmed or deleted)")
            except ResponseError as e:
                if not _is_lost_group(e):
                    raise
                self._recreate_groups(e)
                return claimed  # a new group has nothing pending
            if cursor == "0-0":
                return claimed

    # -- trimming ----------------------------------------------------------------------

    def trim(self, stream: str, maxlen: int) -> int:
        """Cut `stream` towards `maxlen` entries without losing one any group still owes.

        XTRIM MAXLEN would drop the oldest entries whatever their state, so we trim by
        MINID instead, with a floor: the oldest pending id and the first undelivered id
        of every group on the stream. Nothing at or after the floor is removed, so the
        stream may stay longer than `maxlen`. The floor only moves forward (acks shrink
        the pending list, reads advance last-delivered), so computing it before XTRIM is
        safe without a transaction. Returns the number of entries removed.
        """
        with self._translate():
            length = int(self.redis.xlen(stream))
            excess = length - maxlen
            if excess <= 0:
                return 0
            floor = self._trim_floor(stream)
            if floor is None:
                return 0
            cutoff = self._cutoff(stream, excess, floor)
            if cutoff is None:
                return 0
            removed = int(self.redis.xtrim(stream, minid=cutoff, approximate=False))
        if removed:
            log.debug("trimmed %d entries of %s below %s", removed, stream, cutoff)
        return removed

    def _trim_floor(self, stream: str) -> tuple[int, int] | None:
        groups = self.redis.xinfo_groups(stream)
        if not groups:
            return None  # no group yet: every entry is still to be delivered
        floors = []
        for g in groups:
            floors.append(id_key(next_id(text(g["last-delivered-id"]))))
            if int(g["pending"]):
                oldest = self.redis.xpending(stream, text(g["name"]))["min"]
                if oldest:
                    floors.append(id_key(text(oldest)))
        return min(floors)

    def _cutoff(self, stream: str, excess: int, floor: tuple[int, int]) -> str | None:
        """The id of the first entry to keep: `excess` entries in, but never past `floor`."""
        start, seen = "-", 0
        while True:
            page = self.redis.xrange(stream, start, "+", count=min(excess - seen + 1, TRIM_SCAN_PAGE))
            if not page:
                return None
            for raw_id, _ in page:
                entry_id = text(raw_id)
                if seen == excess or id_key(entry_id) >= floor:
                    return entry_id if seen else None
                seen += 1
            start = "(" + text(page[-1][0])

    # -- errors ------------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            with redis_errors():
                yield
        except RedisUnavailable:
            # After a reconnect our own pending entries come first again.
            self.rescan_pending()
            raise


def _is_lost_group(error: ResponseError) -> bool:
    text = str(error)
    # UNBLOCKED: Redis 7 wakes a blocked XREADGROUP with it when the stream is deleted.
    return text.startswith("NOGROUP") or text.startswith("UNBLOCKED")
