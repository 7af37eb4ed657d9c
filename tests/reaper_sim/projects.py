"""The simulated REAPER's projects and undo history: the open projects, their paths,
cursor and play state, undo blocks and points (saved states, `undo.UndoHistory`), undo
and redo (actions 40029/40030), ValidatePtr, UI refresh. A mixin of `sim.ReaperSim`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.reaper_sim.model import Item, NotSimulated, Project, Source, Take, Track, _alive


class ProjectsMixin:
    """Projects, undo/redo, ValidatePtr; `user_edit` for tests."""

    projects: list[Project]
    active: int
    resource_path: str
    refresh_lock: int
    _guids: itertools.count[int]

    @property
    def project(self) -> Project:
        return self.projects[self.active]

    def _proj(self, proj: Any) -> Project:
        if isinstance(proj, Project):
            return proj
        return self.project  # nil or 0: the active project

    def _guid(self) -> str:
        n = next(self._guids)
        return f"{{{n:08X}-0000-4000-8000-{n:012X}}}"

    def tracks(self, project: Project | None = None) -> list[Track]:
        return (project or self.project).tracks

    def _load_state(self, proj: Project, tracks: list[Track]) -> None:
        for tr in proj.tracks:
            tr.alive = False
        for tr in tracks:
            tr.alive = True
        proj.tracks = tracks
        proj.changes += 1

    def undo(self, project: Project | None = None) -> str | None:
        """Edit > Undo: the project loads the state saved at the undo point before the
        current one; returns the description undone (None: nothing to undo)."""
        proj = project or self.project
        done = proj.history.undo()
        if done is None:
            return None
        self._load_state(proj, done[1])
        return done[0]

    def redo(self, project: Project | None = None) -> str | None:
        """Edit > Redo: the project loads the state saved at the next undo point."""
        proj = project or self.project
        done = proj.history.redo()
        if done is None:
            return None
        self._load_state(proj, done[1])
        return done[0]

    def user_edit(self, desc: str, change: Callable[[], Any],
                  project: Project | None = None) -> None:
        """The user edits the project (`change()` on the sim's objects): one undo point."""
        proj = project or self.project
        proj.history.ensure_base(proj.tracks)
        change()
        proj.changes += 1
        proj.history.add(desc, proj.tracks)

    # ------------------------------------------------------------------ projects, undo

    def _EnumProjects(self, idx: int) -> tuple[Any, str]:
        i = int(idx)
        if i == -1:
            return self.project, ""
        if 0 <= i < len(self.projects):
            return self.projects[i], ""
        return None, ""

    def _GetProjectPathEx(self, proj: Any) -> str:
        p = self._proj(proj)
        if not p.path:
            p.path = str(Path(self.resource_path) / "Media")
        return p.path

    def _GetCursorPositionEx(self, proj: Any) -> float:
        return self._proj(proj).cursor

    def _GetPlayPositionEx(self, proj: Any) -> float:
        return self._proj(proj).play_position

    def _GetPlayStateEx(self, proj: Any) -> int:
        return self._proj(proj).play_state

    def _Undo_BeginBlock2(self, proj: Any) -> None:
        p = self._proj(proj)
        if p.undo_depth == 0:
            p.history.ensure_base(p.tracks)
        p.undo_depth += 1

    def _Undo_EndBlock2(self, proj: Any, desc: str, flags: int) -> None:
        p = self._proj(proj)
        if p.undo_depth <= 0:
            raise RuntimeError("Undo_EndBlock without Undo_BeginBlock")
        p.undo_depth -= 1
        if p.undo_depth == 0:
            p.history.add(desc, p.tracks)

    def _Undo_OnStateChange2(self, proj: Any, desc: str) -> None:
        p = self._proj(proj)
        if p.undo_depth == 0:  # inside a block, the block's end makes the point
            p.history.add(desc, p.tracks)

    def _Undo_OnStateChange(self, desc: str) -> None:
        self._Undo_OnStateChange2(None, desc)

    def _Undo_DoUndo2(self, proj: Any) -> int:
        return 0 if self.undo(self._proj(proj)) is None else 1

    def _Undo_DoRedo2(self, proj: Any) -> int:
        return 0 if self.redo(self._proj(proj)) is None else 1

    def _Undo_CanUndo2(self, proj: Any) -> str | None:
        return self._proj(proj).history.can_undo()

    def _Undo_CanRedo2(self, proj: Any) -> str | None:
        return self._proj(proj).history.can_redo()

    def _GetProjectStateChangeCount(self, proj: Any) -> int:
        return self._proj(proj).changes

    def _Main_OnCommandEx(self, command: int, flag: int, proj: Any) -> None:
        actions = {40029: self.undo, 40030: self.redo}  # Edit: Undo, Edit: Redo
        act = actions.get(int(command))
        if act is None:
            raise NotSimulated(f"action {int(command)} is not simulated yet")
        act(self._proj(proj))

    def _Main_OnCommand(self, command: int, flag: int) -> None:
        self._Main_OnCommandEx(command, flag, None)

    def _Undo_BeginBlock(self) -> None:
        self._Undo_BeginBlock2(None)

    def _Undo_EndBlock(self, desc: str, flags: int) -> None:
        self._Undo_EndBlock2(None, desc, flags)

    @property
    def undo_points(self) -> list[str]:
        return [d for d, _ in self.project.undo_points]

    def _PreventUIRefresh(self, prevent_count: int) -> None:
        self.refresh_lock += int(prevent_count)

    def _UpdateArrange(self) -> None:
        pass

    def _UpdateItemInProject(self, item: Item) -> None:
        pass

    def _ColorToNative(self, r: int, g: int, b: int) -> int:
        return int(r) | (int(g) << 8) | (int(b) << 16)  # Windows/Linux order

    def _ValidatePtr(self, pointer: Any, ctypename: str) -> bool:
        return self._ValidatePtr2(None, pointer, ctypename)

    def _ValidatePtr2(self, proj: Any, pointer: Any, ctypename: str) -> bool:
        kind = {"MediaTrack*": Track, "MediaItem*": Item, "MediaItem_Take*": Take,
                "PCM_source*": Source, "ReaProject*": Project}.get(ctypename)
        if kind is None:
            raise NotSimulated(f"ValidatePtr for {ctypename!r} is not simulated yet")
        if not isinstance(pointer, kind) or not _alive(pointer):
            return False
        if kind is Project:
            return pointer in self.projects
        if proj is None or kind is Source:
            return True
        p = self._proj(proj)
        if isinstance(pointer, Take):
            pointer = pointer.item
        if isinstance(pointer, Item):
            pointer = pointer.track
        return pointer in p.tracks

