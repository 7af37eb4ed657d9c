"""The simulated REAPER: project state plus the `reaper` table a Lua 5.4 script sees.

Exactly the functions of api.txt exist. Simulated ones check their arguments against
the documented signature, as REAPER does. The others raise `NotSimulated`, so a script
that needs one fails its test until the simulation grows it. Indices are 0-based where
REAPER's are (tracks, items); undo points are recorded per Undo_BeginBlock/EndBlock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.reaper_sim.api import Signature, load


class NotSimulated(RuntimeError):
    """A real REAPER function the simulation does not implement (yet)."""


class ReaperArgError(TypeError):
    """Bad arguments, as REAPER reports them ("bad argument #n to 'X'")."""


@dataclass(eq=False)
class Track:
    name: str = ""
    folder_depth: int = 0
    color: int = 0
    mute: bool = False
    alive: bool = True


@dataclass
class Project:
    tracks: list[Track] = field(default_factory=list)


def _check(sig: Signature, args: tuple[Any, ...]) -> None:
    from lupa.lua54 import lua_type

    for i, p in enumerate(sig.params):
        value = args[i] if i < len(args) else None
        where = f"bad argument #{i + 1} ({p.name}) to 'reaper.{sig.name}'"
        if value is None:
            if p.optional or p.type in ("ReaProject",):
                continue
            raise ReaperArgError(f"{where}: {p.type} expected, got nil")
        if p.type == "integer":
            good = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer())
        elif p.type == "number":
            good = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif p.type == "string":
            good = isinstance(value, str)
        elif p.type == "boolean":
            good = isinstance(value, bool)
        elif p.type == "function":
            good = lua_type(value) == "function"
        else:  # object handles: any simulated object (or 0 for the project)
            good = p.type == "any" or not isinstance(value, (str, bool))
        if not good:
            raise ReaperArgError(f"{where}: {p.type} expected")


class ReaperSim:
    """One REAPER instance with one project; `lua` runs scripts against it."""

    def __init__(self) -> None:
        from lupa import lua54

        self.api = load()
        self.project = Project()
        self.console: list[str] = []
        self.messages: list[tuple[str, str, int]] = []
        self.mb_answer = 1
        self.ext_state: dict[tuple[str, str], str] = {}
        self.undo_points: list[str] = []
        self.undo_depth = 0
        self.refresh_lock = 0
        self.deferred: list[Any] = []
        self.lua = lua54.LuaRuntime(unpack_returned_tuples=True)
        self._install()

    # ------------------------------------------------------------------ plumbing

    def _install(self) -> None:
        impl: dict[str, Callable[..., Any]] = {
            name[1:]: getattr(self, name) for name in dir(self)
            if name.startswith("_") and name[1:] in self.api
        }
        table = self.lua.table()
        gfx = self.lua.table()
        for name, sig in self.api.items():
            fn = impl.get(name)
            wrapped = self._wrap(sig, fn)
            if name.startswith("gfx."):
                gfx[name[4:]] = wrapped
            else:
                table[name] = wrapped
        self.lua.globals().reaper = table
        self.lua.globals().gfx = gfx

    def _wrap(self, sig: Signature, fn: Callable[..., Any] | None) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            if fn is None:
                raise NotSimulated(f"reaper.{sig.name} exists in REAPER but is not simulated "
                                   "yet: add it to tests/reaper_sim/sim.py")
            _check(sig, args)
            return fn(*args)

        return call

    def run(self, code: str) -> Any:
        return self.lua.execute(code)

    def step(self, ticks: int = 1) -> int:
        """Run `ticks` rounds of the defer queue; returns how many callbacks ran."""
        ran = 0
        for _ in range(ticks):
            queue, self.deferred = self.deferred, []
            for fn in queue:
                fn()
                ran += 1
        return ran

    def _track(self, proj: Any, idx: Any) -> Track | None:
        tracks = self.project.tracks
        i = int(idx)
        return tracks[i] if 0 <= i < len(tracks) else None

    # ------------------------------------------------------------------ the API

    def _ShowConsoleMsg(self, msg: str) -> None:
        self.console.append(msg)

    def _MB(self, msg: str, title: str, kind: int) -> int:
        self.messages.append((msg, title, int(kind)))
        return self.mb_answer

    def _GetExtState(self, section: str, key: str) -> str:
        return self.ext_state.get((section, key), "")

    def _SetExtState(self, section: str, key: str, value: str, persist: bool) -> None:
        self.ext_state[(section, key)] = value

    def _HasExtState(self, section: str, key: str) -> bool:
        return (section, key) in self.ext_state

    def _DeleteExtState(self, section: str, key: str, persist: bool) -> None:
        self.ext_state.pop((section, key), None)

    def _defer(self, func: Any) -> bool:
        self.deferred.append(func)
        return True

    def _CountTracks(self, proj: Any) -> int:
        return len(self.project.tracks)

    def _GetTrack(self, proj: Any, idx: int) -> Track | None:
        return self._track(proj, idx)

    def _InsertTrackAtIndex(self, idx: int, want_defaults: bool) -> None:
        i = max(0, min(int(idx), len(self.project.tracks)))
        self.project.tracks.insert(i, Track())

    def _GetSetMediaTrackInfo_String(self, tr: Track, parm: str, value: str, set_new: bool
                                     ) -> tuple[bool, str]:
        if parm != "P_NAME":
            raise NotSimulated(f"GetSetMediaTrackInfo_String {parm!r} is not simulated yet")
        if set_new:
            tr.name = value
        return True, tr.name

    _TRACK_VALUES = {"I_FOLDERDEPTH": "folder_depth", "I_CUSTOMCOLOR": "color", "B_MUTE": "mute"}

    def _GetMediaTrackInfo_Value(self, tr: Track, parm: str) -> float:
        attr = self._TRACK_VALUES.get(parm)
        if attr is None:
            raise NotSimulated(f"track parameter {parm!r} is not simulated yet")
        return float(getattr(tr, attr))

    def _SetMediaTrackInfo_Value(self, tr: Track, parm: str, value: float) -> bool:
        attr = self._TRACK_VALUES.get(parm)
        if attr is None:
            raise NotSimulated(f"track parameter {parm!r} is not simulated yet")
        setattr(tr, attr, bool(value) if attr == "mute" else int(value))
        return True

    def _ValidatePtr(self, pointer: Any, ctypename: str) -> bool:
        if ctypename == "MediaTrack*":
            return isinstance(pointer, Track) and pointer in self.project.tracks
        raise NotSimulated(f"ValidatePtr for {ctypename!r} is not simulated yet")

    def _Undo_BeginBlock(self) -> None:
        self.undo_depth += 1

    def _Undo_EndBlock(self, desc: str, flags: int) -> None:
        if self.undo_depth <= 0:
            raise RuntimeError("Undo_EndBlock without Undo_BeginBlock")
        self.undo_depth -= 1
        if self.undo_depth == 0:
            self.undo_points.append(desc)

    def _PreventUIRefresh(self, prevent_count: int) -> None:
        self.refresh_lock += int(prevent_count)

    def _UpdateArrange(self) -> None:
        pass
