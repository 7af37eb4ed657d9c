"""The simulated REAPER: project state plus the `reaper` table a Lua 5.4 script sees.

Exactly the functions of api.txt exist. Simulated ones check their arguments against
the documented signature, as REAPER does. The others raise `NotSimulated`, so a script
that needs one fails its test until the simulation grows it. Indices are 0-based where
REAPER's are (tracks, items); undo points are recorded per Undo_BeginBlock/EndBlock.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.reaper_sim.api import Signature, load


class NotSimulated(RuntimeError):
    """A real REAPER function the simulation does not implement (yet)."""


class ReaperArgError(TypeError):
    """Bad arguments, as REAPER reports them ("bad argument #n to 'X'")."""


# Every item/take parameter REAPER documents for Get/SetMedia*Info_Value that the
# simulation models, with REAPER's defaults. Others REAPER knows raise NotSimulated; names
# REAPER does not know read 0 and fail to set, as in REAPER.
ITEM_DEFAULTS = {
    "B_MUTE": 0.0, "B_MUTE_ACTUAL": 0.0, "B_LOOPSRC": 1.0, "B_UISEL": 0.0, "D_VOL": 1.0,
    "D_POSITION": 0.0, "D_LENGTH": 0.0, "D_SNAPOFFSET": 0.0, "D_FADEINLEN": 0.0,
    "D_FADEOUTLEN": 0.0, "D_FADEINDIR": 0.0, "D_FADEOUTDIR": 0.0, "D_FADEINLEN_AUTO": -1.0,
    "D_FADEOUTLEN_AUTO": -1.0, "C_FADEINSHAPE": 0.0, "C_FADEOUTSHAPE": 0.0,
    "I_CUSTOMCOLOR": 0.0, "I_CURTAKE": 0.0, "C_LOCK": 0.0,
}
ITEM_KNOWN = set(ITEM_DEFAULTS) | {
    "B_ALLTAKESPLAY", "C_BEATATTACHMODE", "C_AUTOSTRETCH", "I_GROUPID", "I_LASTY",
    "I_LASTH", "F_FREEMODE_Y", "F_FREEMODE_H", "I_FIXEDLANE", "B_FIXEDLANE_HIDDEN",
    "P_TRACK", "D_POSITION_QN"}
TAKE_DEFAULTS = {
    "D_STARTOFFS": 0.0, "D_VOL": 1.0, "D_PAN": 0.0, "D_PANLAW": -1.0, "D_PLAYRATE": 1.0,
    "D_PITCH": 0.0, "B_PPITCH": 0.0, "I_PITCHMODE": -1.0, "I_CHANMODE": 0.0,
    "I_CUSTOMCOLOR": 0.0,
}
TAKE_KNOWN = set(TAKE_DEFAULTS) | {
    "I_LASTY", "I_LASTH", "I_STRETCHFLAGS", "F_STRETCHFADESIZE", "I_RECPASSID",
    "I_TAKEFX_NCH", "I_CHANNELS", "P_TRACK", "P_ITEM", "P_SOURCE", "IP_TAKENUMBER"}


@dataclass(eq=False)
class Source:
    """A PCM_source: a media file, a section of a parent source, or a MIDI/empty source."""

    kind: str = "WAVE"
    filename: str = ""
    parent: Source | None = None
    section: tuple[float, float, bool] = (0.0, 0.0, False)  # offset s, length s, reversed
    samplerate: int = 44100
    channels: int = 2
    length: float = 0.0
    peaks_state: int = 0  # 0 none, 1 building, 2 built
    alive: bool = True


@dataclass(eq=False)
class Take:
    source: Source | None
    name: str = ""
    values: dict[str, float] = field(default_factory=lambda: dict(TAKE_DEFAULTS))
    item: Item | None = None


@dataclass(eq=False)
class Item:
    track: Track
    values: dict[str, float] = field(default_factory=lambda: dict(ITEM_DEFAULTS))
    takes: list[Take] = field(default_factory=list)
    selected: bool = False
    guid: str = ""
    strings: dict[str, str] = field(default_factory=dict)  # P_NOTES, P_EXT:*

    @property
    def active(self) -> Take | None:
        i = int(self.values["I_CURTAKE"])
        return self.takes[i] if 0 <= i < len(self.takes) else None


@dataclass(eq=False)
class Track:
    name: str = ""
    folder_depth: int = 0
    color: int = 0
    mute: bool = False
    guid: str = ""
    items: list[Item] = field(default_factory=list)
    strings: dict[str, str] = field(default_factory=dict)  # P_EXT:*
    alive: bool = True


@dataclass(eq=False)
class Project:
    tracks: list[Track] = field(default_factory=list)
    ext: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str = ""          # the project's media (recording) folder
    cursor: float = 0.0
    play_position: float = 0.0
    play_state: int = 0     # &1 playing, &2 paused, &4 recording
    undo_points: list[tuple[str, list[Track]]] = field(default_factory=list)
    undo_depth: int = 0
    undo_before: list[Track] | None = None


_HANDLES = {"MediaTrack": Track, "MediaItem": Item, "MediaItem_Take": Take,
            "PCM_source": Source, "ReaProject": Project}


class DeadPointer(RuntimeError):
    """A script used a deleted track/item/take/source: REAPER would crash."""


def _alive(obj: Any) -> bool:
    if isinstance(obj, Track):
        return obj.alive
    if isinstance(obj, Item):
        return obj.track.alive and obj in obj.track.items
    if isinstance(obj, Take):
        return obj.item is not None and _alive(obj.item) and obj in obj.item.takes
    if isinstance(obj, Source):
        return obj.alive
    return True


def _check(sig: Signature, args: tuple[Any, ...]) -> None:
    from lupa.lua54 import lua_type

    if len(args) > len(sig.params) and not any(p.type == "any" for p in sig.params):
        raise ReaperArgError(f"reaper.{sig.name} takes {len(sig.params)} arguments, "
                             f"got {len(args)}")
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
        elif p.type in _HANDLES:
            good = isinstance(value, _HANDLES[p.type]) or (p.type == "ReaProject"
                                                           and value == 0)
            if good and not _alive(value):
                raise DeadPointer(f"{where}: the {p.type} was deleted (REAPER would crash; "
                                  "check it with ValidatePtr2 first)")
        else:  # identifier, any: any value
            good = True
        if not good:
            raise ReaperArgError(f"{where}: {p.type} expected")


def split_command_line(cmd: str) -> list[str]:
    """REAPER's ExecProcess splits its command line itself (no shell): arguments are
    separated by spaces; double quotes group; there are no other escapes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = started = False
    for ch in cmd:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                out.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out


#: Lua run in every state of a strict simulation (the default): a script that assigns or
#: reads a global no one defined (a missing `local`, a typo, a local used above its
#: declaration) fails at once with its name, instead of leaking into REAPER's other
#: scripts or calling nil. REAPER itself allows globals; our scripts never need one.
STRICT_GLOBALS = """
setmetatable(_G, {
  __newindex = function(_, name)
    error("assignment to undeclared global '" .. tostring(name) .. "'", 2)
  end,
  __index = function(_, name)
    error("read of undeclared global '" .. tostring(name) .. "'", 2)
  end,
})
"""


class ReaperSim:
    """One REAPER instance with open projects; `lua` runs scripts against it.

    Test controls: `projects` (the first is active), `mb_answer`, `user_inputs` (answers to
    GetUserInputs, or None to cancel), `resource_path`, `processes` (what ExecProcess
    launched), `step()` for the defer loop, `undo()`, `render()` for what a track plays.
    `strict_globals` (default True): every Lua state refuses undeclared globals.
    """

    def __init__(self, resource_path: str | Path | None = None,
                 strict_globals: bool = True) -> None:
        import tempfile

        from lupa import lua54

        self.api = load()
        self.projects: list[Project] = [Project()]
        self.active = 0
        self.console: list[str] = []
        self.messages: list[tuple[str, str, int]] = []
        self.mb_answer = 1
        self.user_inputs: str | None = None
        self.inputs_asked: list[tuple[str, int, str, str]] = []
        self.ext_state: dict[tuple[str, str], str] = {}
        self.ext_persist: set[tuple[str, str]] = set()
        self.refresh_lock = 0
        self.deferred: list[Any] = []
        self.tick_times: list[float] = []  # seconds each deferred callback ran (wall)
        self.tick_cpu: list[float] = []    # and the CPU seconds of this thread it used
        self.atexit: list[Any] = []
        self.action_options = 0
        self.script_path = ""
        self.processes: list[tuple[list[str], Any]] = []
        self.resource_path = str(resource_path or tempfile.mkdtemp(prefix="reaper-res-"))
        self.os_name = "Linux-x86_64"
        self._guids = itertools.count(1)
        self._lua54 = lua54
        self.strict_globals = strict_globals
        self.lua = self._new_runtime()

    def _new_runtime(self) -> Any:
        lua = self._lua54.LuaRuntime(unpack_returned_tuples=True)
        self._install(lua)
        return lua

    @property
    def project(self) -> Project:
        return self.projects[self.active]

    # ------------------------------------------------------------------ plumbing

    def _install(self, lua: Any) -> None:
        impl: dict[str, Callable[..., Any]] = {
            name[1:]: getattr(self, name) for name in dir(self)
            if name.startswith("_") and name[1:] in self.api
        }
        table = lua.table()
        gfx = lua.table()
        for name, sig in self.api.items():
            fn = impl.get(name)
            wrapped = self._wrap(sig, fn)
            if name.startswith("gfx."):
                gfx[name[4:]] = wrapped
            else:
                table[name] = wrapped
        lua.globals().reaper = table
        lua.globals().gfx = gfx
        if self.strict_globals:
            lua.execute(STRICT_GLOBALS)

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

    def run_script(self, path: str | Path) -> Any:
        """Run an action script file as REAPER does: in a Lua state of its own, where
        get_action_context knows its path. Its deferred functions keep the state alive."""
        self.script_path = str(path)
        code = Path(path).read_text(encoding="utf-8")
        return self._new_runtime().execute(code)

    def step(self, ticks: int = 1) -> int:
        """Run `ticks` rounds of the defer queue; returns how many callbacks ran."""
        ran = 0
        for _ in range(ticks):
            queue, self.deferred = self.deferred, []
            for fn in queue:
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                self.tick_times.append(time.perf_counter() - t0)
                self.tick_cpu.append(time.thread_time() - c0)
                ran += 1
        return ran

    def run_until(self, predicate: Callable[[], bool], timeout: float = 60.0,
                  tick: float = 0.03) -> bool:
        """Step the defer loop at REAPER's ~30 Hz until `predicate()` or `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.step()
            time.sleep(tick)
        return predicate()

    def terminate(self) -> None:
        """The user stops the script (or REAPER relaunches it): atexit handlers run."""
        self.deferred.clear()
        handlers, self.atexit = self.atexit, []
        for fn in handlers:
            fn()

    def _proj(self, proj: Any) -> Project:
        if isinstance(proj, Project):
            return proj
        return self.project  # nil or 0: the active project

    def _guid(self) -> str:
        n = next(self._guids)
        return f"{{{n:08X}-0000-4000-8000-{n:012X}}}"

    def new_track(self, name: str = "", index: int | None = None, depth: int = 0,
                  project: Project | None = None) -> Track:
        """A track made by the user (test setup)."""
        proj = project or self.project
        tr = Track(name=name, folder_depth=depth, guid=self._guid())
        proj.tracks.insert(len(proj.tracks) if index is None else index, tr)
        return tr

    def new_item(self, track: Track, file: str | Path | None, position: float,
                 length: float, startoffs: float = 0.0, playrate: float = 1.0,
                 section: tuple[float, float, bool] | None = None, kind: str = "WAVE",
                 selected: bool = True, name: str = "") -> Item:
        """An item made by the user (test setup): a take of `file` (or a MIDI/empty item)."""
        item = Item(track=track, guid=self._guid(), selected=selected)
        item.values.update(D_POSITION=float(position), D_LENGTH=float(length))
        if kind != "EMPTY":
            src = self._source_for(str(file) if file else "", kind)
            if section is not None:
                src = Source(kind="SECTION", parent=src, section=section,
                             samplerate=src.samplerate, channels=src.channels,
                             length=section[1])
            take = Take(source=src, name=name or (Path(file).name if file else ""), item=item)
            take.values.update(D_STARTOFFS=float(startoffs), D_PLAYRATE=float(playrate))
            item.takes.append(take)
        track.items.append(item)
        return item

    def _source_for(self, filename: str, kind: str = "") -> Source:
        src = Source(kind=kind or "WAVE", filename=filename)
        if kind in ("MIDI", "EMPTY"):
            return src
        try:
            import soundfile as sf

            info = sf.info(filename)
            src.samplerate, src.channels = int(info.samplerate), int(info.channels)
            src.length = info.frames / info.samplerate
            src.kind = {"WAV": "WAVE", "FLAC": "FLAC", "OGG": "VORBIS"}.get(info.format,
                                                                           info.format)
        except Exception:  # a missing file: REAPER makes an offline source
            src.length = 0.0
        return src

    def tracks(self, project: Project | None = None) -> list[Track]:
        return (project or self.project).tracks

    def undo(self, project: Project | None = None) -> str:
        """Edit > Undo: the project returns to its state before the last undo point."""
        proj = project or self.project
        desc, before = proj.undo_points.pop()
        for tr in proj.tracks:
            tr.alive = False
        proj.tracks = before
        return desc

    def render(self, track: Track, t0: float, t1: float, sr: int = 44100) -> np.ndarray:
        """What `track` plays from project time t0 to t1: (channels, frames) float64 at
        `sr` (= the sources' rate). Takes play their source from D_STARTOFFS at
        D_PLAYRATE (nearest sample); muted items, empty items and offline sources are
        silent. Fades, volume and pan are not rendered."""
        import soundfile as sf

        n = int(round((t1 - t0) * sr))
        out = np.zeros((2, n))
        for item in track.items:
            take = item.active
            if item.values["B_MUTE"] or take is None or take.source is None:
                continue
            src, offs = take.source, 0.0
            while src.parent is not None:
                offs += src.section[0]
                src = src.parent
            if not Path(src.filename).is_file():
                continue
            data, fsr = sf.read(src.filename, dtype="float64", always_2d=True)
            pos, length = item.values["D_POSITION"], item.values["D_LENGTH"]
            rate = take.values["D_PLAYRATE"]
            a = max(t0, pos)
            b = min(t1, pos + length)
            if b <= a:
                continue
            i0, i1 = int(round((a - t0) * sr)), int(round((b - t0) * sr))
            t = t0 + np.arange(i0, i1) / sr
            s = offs + take.values["D_STARTOFFS"] + (t - pos) * rate
            idx = np.round(s * fsr).astype(np.int64)
            ok = (idx >= 0) & (idx < len(data))
            chans = data.T if data.shape[1] == 2 else np.repeat(data.T, 2, axis=0)
            seg = np.zeros((2, i1 - i0))
            seg[:, ok] = chans[:, idx[ok]]
            out[:, i0:i1] += seg
        return out

    # ------------------------------------------------------------------ console, state

    def _ShowConsoleMsg(self, msg: str) -> None:
        self.console.append(msg)

    def _MB(self, msg: str, title: str, kind: int) -> int:
        self.messages.append((msg, title, int(kind)))
        return self.mb_answer

    def _GetUserInputs(self, title: str, num: int, captions: str, values: str
                       ) -> tuple[bool, str]:
        self.inputs_asked.append((title, int(num), captions, values))
        if self.user_inputs is None:
            return False, values
        return True, self.user_inputs

    def _GetExtState(self, section: str, key: str) -> str:
        return self.ext_state.get((section, key), "")

    def _SetExtState(self, section: str, key: str, value: str, persist: bool) -> None:
        self.ext_state[(section, key)] = value
        if persist:
            self.ext_persist.add((section, key))

    def _HasExtState(self, section: str, key: str) -> bool:
        return (section, key) in self.ext_state

    def _DeleteExtState(self, section: str, key: str, persist: bool) -> None:
        self.ext_state.pop((section, key), None)
        self.ext_persist.discard((section, key))

    def _GetProjExtState(self, proj: Any, extname: str, key: str) -> tuple[int, str]:
        val = self._proj(proj).ext.get(extname.upper(), {}).get(key.upper(), "")
        return (1 if val else 0), val

    def _SetProjExtState(self, proj: Any, extname: str, key: str, value: str) -> int:
        section = self._proj(proj).ext.setdefault(extname.upper(), {})
        if not key:
            section.clear()
        elif value:
            section[key.upper()] = value
        else:  # an empty value removes the key
            section.pop(key.upper(), None)
        return 1

    def _EnumProjExtState(self, proj: Any, extname: str, idx: int
                          ) -> tuple[bool, str | None, str | None]:
        items = list(self._proj(proj).ext.get(extname.upper(), {}).items())
        if 0 <= int(idx) < len(items):
            return True, items[int(idx)][0], items[int(idx)][1]
        return False, None, None

    def _defer(self, func: Any) -> bool:
        self.deferred.append(func)
        return True

    def _atexit(self, func: Any) -> bool:
        self.atexit.append(func)
        return True

    def _set_action_options(self, flag: int) -> None:
        self.action_options = int(flag)

    def _get_action_context(self) -> tuple[Any, ...]:
        return False, self.script_path, 0, 55000, -1, -1, -1.0, ""

    def _time_precise(self) -> float:
        return time.perf_counter()

    def _GetOS(self) -> str:
        return self.os_name

    def _GetAppVersion(self) -> str:
        return "7.27/linux-x86_64"

    def _GetResourcePath(self) -> str:
        return self.resource_path

    def _RecursiveCreateDirectory(self, path: str, ignored: int) -> int:
        Path(path).mkdir(parents=True, exist_ok=True)
        return 1

    def _EnumerateFiles(self, path: str, fileindex: int) -> str | None:
        """The `fileindex`-th file (not folder) of `path`, in name order; nil past the end."""
        try:
            names = sorted(p.name for p in Path(path).iterdir() if p.is_file())
        except OSError:
            return None
        i = int(fileindex)
        return names[i] if 0 <= i < len(names) else None

    def _file_exists(self, path: str) -> bool:
        return Path(path).is_file()

    def _genGuid(self, guid: str) -> str:
        import uuid

        return "{" + str(uuid.uuid4()).upper() + "}"

    def _ExecProcess(self, cmdline: str, timeoutmsec: int) -> str | None:
        """REAPER runs the command line without a shell; -1/-2 do not wait."""
        import subprocess

        argv = split_command_line(cmdline)
        if not argv:
            return None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except OSError:
            return None
        self.processes.append((argv, proc))
        if int(timeoutmsec) < 0:
            return ""
        try:
            out, _ = proc.communicate(timeout=None if int(timeoutmsec) == 0
                                      else int(timeoutmsec) / 1000)
        except subprocess.TimeoutExpired:
            proc.kill()
            return None
        return f"{proc.returncode}\n{out.decode(errors='replace')}"

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
            p.undo_before = copy.deepcopy(p.tracks)
        p.undo_depth += 1

    def _Undo_EndBlock2(self, proj: Any, desc: str, flags: int) -> None:
        p = self._proj(proj)
        if p.undo_depth <= 0:
            raise RuntimeError("Undo_EndBlock without Undo_BeginBlock")
        p.undo_depth -= 1
        if p.undo_depth == 0:
            p.undo_points.append((desc, p.undo_before or []))
            p.undo_before = None

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
        track = {Track: lambda: pointer, Item: lambda: pointer.track,
                 Take: lambda: pointer.item.track}[kind]()
        return track in p.tracks

    # ------------------------------------------------------------------ tracks

    def _track(self, proj: Any, idx: Any) -> Track | None:
        tracks = self._proj(proj).tracks
        i = int(idx)
        return tracks[i] if 0 <= i < len(tracks) else None

    def _project_of(self, tr: Track) -> Project:
        for p in self.projects:
            if tr in p.tracks:
                return p
        raise DeadPointer("track of no open project")

    def _CountTracks(self, proj: Any) -> int:
        return len(self._proj(proj).tracks)

    def _GetTrack(self, proj: Any, idx: int) -> Track | None:
        return self._track(proj, idx)

    def _InsertTrackAtIndex(self, idx: int, want_defaults: bool) -> None:
        tracks = self.project.tracks
        i = max(0, min(int(idx), len(tracks)))
        tracks.insert(i, Track(guid=self._guid()))

    def _DeleteTrack(self, tr: Track) -> None:
        self._project_of(tr).tracks.remove(tr)
        tr.alive = False

    def _GetTrackGUID(self, tr: Track) -> str:
        return tr.guid

    def _GetSetMediaTrackInfo_String(self, tr: Track, parm: str, value: str, set_new: bool
                                     ) -> tuple[bool, str]:
        if parm == "P_NAME":
            if set_new:
                tr.name = value
            return True, tr.name
        if parm == "GUID":
            if set_new:
                tr.guid = value
            return True, tr.guid
        if parm.startswith("P_EXT:"):
            if set_new:
                tr.strings[parm] = value
            return parm in tr.strings, tr.strings.get(parm, "")
        raise NotSimulated(f"GetSetMediaTrackInfo_String {parm!r} is not simulated yet")

    _TRACK_VALUES = {"I_FOLDERDEPTH": "folder_depth", "I_CUSTOMCOLOR": "color", "B_MUTE": "mute"}

    def _GetMediaTrackInfo_Value(self, tr: Track, parm: str) -> float:
        if parm == "IP_TRACKNUMBER":  # 1-based, read-only
            return float(self._project_of(tr).tracks.index(tr) + 1)
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

    # ------------------------------------------------------------------ items and takes

    def _selected(self, proj: Any) -> list[Item]:
        return [it for tr in self._proj(proj).tracks for it in tr.items if it.selected]

    def _CountSelectedMediaItems(self, proj: Any) -> int:
        return len(self._selected(proj))

    def _GetSelectedMediaItem(self, proj: Any, selitem: int) -> Item | None:
        sel = self._selected(proj)
        i = int(selitem)
        return sel[i] if 0 <= i < len(sel) else None

    def _SetMediaItemSelected(self, item: Item, selected: bool) -> None:
        item.selected = bool(selected)

    def _CountTrackMediaItems(self, tr: Track) -> int:
        return len(tr.items)

    def _GetTrackMediaItem(self, tr: Track, idx: int) -> Item | None:
        i = int(idx)
        items = sorted(tr.items, key=lambda it: it.values["D_POSITION"])
        return items[i] if 0 <= i < len(items) else None

    def _GetMediaItem_Track(self, item: Item) -> Track:
        return item.track

    def _AddMediaItemToTrack(self, tr: Track) -> Item:
        item = Item(track=tr, guid=self._guid())
        tr.items.append(item)
        return item

    def _AddTakeToMediaItem(self, item: Item) -> Take:
        take = Take(source=None, item=item)
        item.takes.append(take)
        if len(item.takes) == 1:
            item.values["I_CURTAKE"] = 0.0
        return take

    def _CountTakes(self, item: Item) -> int:
        return len(item.takes)

    def _DeleteTrackMediaItem(self, tr: Track, item: Item) -> bool:
        if item not in tr.items:
            return False
        tr.items.remove(item)
        for take in item.takes:
            if take.source is not None:
                take.source.alive = False  # the item owned its sources
        return True

    def _GetActiveTake(self, item: Item) -> Take | None:
        return item.active

    def _TakeIsMIDI(self, take: Take) -> bool:
        return take.source is not None and take.source.kind == "MIDI"

    def _GetTakeName(self, take: Take) -> str:
        return take.name

    def _GetSetMediaItemTakeInfo_String(self, take: Take, parm: str, value: str,
                                        set_new: bool) -> tuple[bool, str]:
        if parm != "P_NAME":
            raise NotSimulated(f"GetSetMediaItemTakeInfo_String {parm!r} is not simulated yet")
        if set_new:
            take.name = value
        return True, take.name

    def _GetSetMediaItemInfo_String(self, item: Item, parm: str, value: str, set_new: bool
                                    ) -> tuple[bool, str]:
        if parm == "GUID":
            if set_new:
                item.guid = value
            return True, item.guid
        if parm == "P_NOTES" or parm.startswith("P_EXT:"):
            if set_new:
                item.strings[parm] = value
            return parm in item.strings, item.strings.get(parm, "")
        raise NotSimulated(f"GetSetMediaItemInfo_String {parm!r} is not simulated yet")

    def _GetMediaItemInfo_Value(self, item: Item, parm: str) -> float:
        if parm in item.values:
            return float(item.values[parm])
        if parm in ITEM_KNOWN:
            raise NotSimulated(f"item parameter {parm!r} is not simulated yet")
        return 0.0

    def _SetMediaItemInfo_Value(self, item: Item, parm: str, value: float) -> bool:
        if parm in item.values:
            if parm == "D_LENGTH" and value < 0:
                value = 0.0
            item.values[parm] = float(value)
            return True
        if parm in ITEM_KNOWN:
            raise NotSimulated(f"item parameter {parm!r} is not simulated yet")
        return False

    def _GetMediaItemTakeInfo_Value(self, take: Take, parm: str) -> float:
        if parm in take.values:
            return float(take.values[parm])
        if parm in TAKE_KNOWN:
            raise NotSimulated(f"take parameter {parm!r} is not simulated yet")
        return 0.0

    def _SetMediaItemTakeInfo_Value(self, take: Take, parm: str, value: float) -> bool:
        if parm in take.values:
            take.values[parm] = float(value)
            return True
        if parm in TAKE_KNOWN:
            raise NotSimulated(f"take parameter {parm!r} is not simulated yet")
        return False

    # ------------------------------------------------------------------ sources

    def _GetMediaItemTake_Source(self, take: Take) -> Source | None:
        return take.source

    def _SetMediaItemTake_Source(self, take: Take, source: Source) -> bool:
        # REAPER: "If source already exists in any project, it will be duplicated before
        # being set"; the old source is the caller's to destroy.
        take.source = source
        return True

    def _PCM_Source_CreateFromFile(self, filename: str) -> Source:
        return self._source_for(filename)

    def _PCM_Source_Destroy(self, src: Source) -> None:
        src.alive = False

    def _GetMediaSourceParent(self, src: Source) -> Source | None:
        return src.parent

    def _PCM_Source_GetSectionInfo(self, src: Source) -> tuple[bool, float, float, bool]:
        if src.parent is None:
            return False, 0.0, 0.0, False
        offs, length, rev = src.section
        return True, offs, length, rev

    def _GetMediaSourceType(self, src: Source) -> str:
        return src.kind

    def _GetMediaSourceFileName(self, src: Source) -> str:
        return "" if src.kind == "SECTION" else src.filename

    def _GetMediaSourceSampleRate(self, src: Source) -> int:
        return src.samplerate

    def _GetMediaSourceNumChannels(self, src: Source) -> int:
        return src.channels

    def _GetMediaSourceLength(self, src: Source) -> tuple[float, bool]:
        return src.length, False

    def _PCM_Source_BuildPeaks(self, src: Source, mode: int) -> int:
        """mode 0 starts (nonzero: keep calling 1), 1 builds (0 when done), 2 finishes."""
        m = int(mode)
        if m == 0:
            if src.peaks_state == 2:
                return 0
            src.peaks_state = 1
            return 1
        if m == 1:
            return 0 if src.peaks_state >= 1 else 1
        src.peaks_state = 2
        return 0
