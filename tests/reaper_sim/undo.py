"""REAPER's undo history as the simulation keeps it: saved project states, not diffs.

REAPER saves the whole project state (tracks, their items and takes, selection) at each
undo point, as it is *after* the change the point names. Undo loads the state saved at
the point before; redo loads the next one. A change made without an undo point is in no
saved state: the next undo point includes it, and an undo or redo drops it. Extension
state (ExtState, ProjExtState) is not part of an undo state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UndoHistory:
    """The saved states of one project: `base` (before the first point) and `points`
    (description, state after); `pos` points are applied (`pos - 1` is the current)."""

    base: list[Any] | None = None
    points: list[tuple[str, list[Any]]] = field(default_factory=list)
    pos: int = 0

    def ensure_base(self, tracks: list[Any]) -> None:
        """The project as it was before any undo point (the first change's "before")."""
        if self.base is None:
            self.base = copy.deepcopy(tracks)

    def add(self, desc: str, tracks: list[Any]) -> None:
        """A new undo point holding `tracks` as they are now; the redo states go."""
        self.ensure_base(tracks)
        del self.points[self.pos:]
        self.points.append((desc, copy.deepcopy(tracks)))
        self.pos = len(self.points)

    def applied(self) -> list[tuple[str, list[Any]]]:
        return self.points[:self.pos]

    def can_undo(self) -> str | None:
        return self.points[self.pos - 1][0] if self.pos > 0 else None

    def can_redo(self) -> str | None:
        return self.points[self.pos][0] if self.pos < len(self.points) else None

    def undo(self) -> tuple[str, list[Any]] | None:
        """(description undone, a fresh copy of the state to load), or None."""
        if self.pos == 0:
            return None
        self.pos -= 1
        desc = self.points[self.pos][0]
        state = self.points[self.pos - 1][1] if self.pos > 0 else (self.base or [])
        return desc, copy.deepcopy(state)

    def redo(self) -> tuple[str, list[Any]] | None:
        if self.pos >= len(self.points):
            return None
        desc, state = self.points[self.pos]
        self.pos += 1
        return desc, copy.deepcopy(state)
