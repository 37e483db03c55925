"""What this replica tells its side channels about the election: the elector's view,
sampled by the runner loop on every beat, turned into `Leadership` and `ElectorState`
signals when it changes.

A leader transition is a new holder or a new term after the first holder this replica saw:
the first observation is the starting point, not a change (every replica would otherwise
count one at start), and a release (no holder, same term) is not one either; the holder
that takes over next is. This is the only place that decides what a transition is, so
`ksr_leader_transitions_total` counts each change once.
"""

from __future__ import annotations

from typing import Protocol

from runner.signals import ElectorState, Leadership, Signal

__all__ = ["ElectorSnapshot", "LeadershipView"]


class ElectorSnapshot(Protocol):
    """One consistent reading of the elector (election.ElectorStatus is one)."""

    @property
    def leading(self) -> bool: ...
    @property
    def leader(self) -> str | None: ...
    @property
    def term(self) -> int | None: ...
    @property
    def healthy(self) -> bool: ...


class LeadershipView:
    """Not thread-safe: one caller (the runner loop)."""

    def __init__(self) -> None:
        self._leadership: tuple[bool, str | None, int | None] | None = None
        self._holder: tuple[str, int | None] | None = None  # the last (holder, term) seen
        self._elector: ElectorState | None = None

    def observe(self, *, leading: bool, leader: str | None, term: int | None) -> Leadership | None:
        """The signal to emit for this view of the election, or None when nothing changed."""
        if (leading, leader, term) == self._leadership:
            return None
        self._leadership = (leading, leader, term)
        transition = False
        if leader is not None:
            transition = self._holder is not None and (leader, term) != self._holder
            self._holder = (leader, term)
        return Leadership(leading=leading, leader=leader, term=term, transition=transition)

    def changes(self, status: ElectorSnapshot, *, running: bool) -> list[Signal]:
        """Signals for what changed since the last call: the election as `status` shows
        it, and whether the elector thread runs."""
        out: list[Signal] = []
        leadership = self.observe(leading=status.leading, leader=status.leader, term=status.term)
        if leadership is not None:
            out.append(leadership)
        state = ElectorState(running=running, healthy=status.healthy)
        if state != self._elector:
            self._elector = state
            out.append(state)
        return out
