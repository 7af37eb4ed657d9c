"""The simulated REAPER: project state plus the `reaper` table a Lua 5.4 script sees.

Exactly the functions of api.txt exist. Simulated ones check their arguments against
the documented signature, as REAPER does. The others raise `NotSimulated`, so a script
that needs one fails its test until the simulation grows it. Indices are 0-based where
REAPER's are (tracks, items). Undo keeps saved project states as REAPER does
(`undo.UndoHistory`): Undo_EndBlock and Undo_OnStateChange save the state after a change;
undo and redo (Main_OnCommand 40029/40030, Undo_DoUndo2/Undo_DoRedo2, `undo()`, `redo()`)
load a saved state, with new track/item objects (old pointers become invalid).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.reaper_sim.api import Signature, load
from tests.reaper_sim.gfx import GfxWindow
from tests.reaper_sim.model import (
    _HANDLES,
    ITEM_DEFAULTS,
    ITEM_KNOWN,
    TAKE_DEFAULTS,
    TAKE_KNOWN,
    DeadPointer,
    Item,
    NotSimulated,
    Project,
    ReaperArgError,
    Source,
    Take,
    Track,
    _alive,
)
from tests.reaper_sim.process import ProcessMixin, split_command_line
from tests.reaper_sim.projects import ProjectsMixin
from tests.reaper_sim.sources import SourcesMixin
from tests.reaper_sim.state import StateMixin
from tests.reaper_sim.tracks import TracksMixin

__all__ = ["ITEM_DEFAULTS", "ITEM_KNOWN", "TAKE_DEFAULTS", "TAKE_KNOWN", "DeadPointer",
           "GfxWindow", "Item", "NotSimulated", "Project", "ReaperArgError", "ReaperSim",
           "Source", "Take", "Track", "split_command_line"]


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


#: Functions that change a project (GetProjectStateChangeCount counts their calls;
#: SetExtState is REAPER's, not a project's; SetProjExtState counts).
_MUTATING = ("Set", "Insert", "Delete", "Add", "Undo_OnStateChange", "Undo_EndBlock",
             "Main_OnCommand", "Undo_Do", "PCM_Source_Destroy")



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


class ReaperSim(ProjectsMixin, TracksMixin, SourcesMixin, StateMixin, ProcessMixin):
    """One REAPER instance with open projects; `lua` runs scripts against it.

    Test controls: `projects` (the first is active), `mb_answer`, `user_inputs` (answers to
    GetUserInputs, or None to cancel), `menu_answers` (picks in gfx.showmenu menus, which
    `menus` records), `resource_path`, `processes` (what ExecProcess
    launched), `step()` for the defer loop, `undo()`, `render()` for what a track plays.
    `strict_globals` (default True): every Lua state refuses undeclared globals.
    `windows`: each script's gfx window (`gfx.GfxWindow`, by script path).
    The functions are grouped by concern in the mixins: projects and undo (`projects`),
    tracks/items/takes (`tracks`), media sources (`sources`), console and ext state
    (`state`), defer/atexit/ExecProcess (`process`); gfx in `gfx`.
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
        self.deferred: list[tuple[str, Any]] = []  # (script path, function)
        self._current = ""                         # the script whose Lua code runs
        self._options: dict[str, int] = {}         # script -> its set_action_options flags
        self.tick_times: list[float] = []  # seconds each deferred callback ran (wall)
        self.tick_cpu: list[float] = []    # and the CPU seconds of this thread it used
        self.tick_owners: list[str] = []   # and the script it belongs to
        self.atexit: list[tuple[str, Any]] = []
        self.action_options = 0
        self.script_path = ""
        self.processes: list[tuple[list[str], Any]] = []
        self.resource_path = str(resource_path or tempfile.mkdtemp(prefix="reaper-res-"))
        self.os_name = "Linux-x86_64"
        self.exec_shell = False  # True: ExecProcess runs its command line through /bin/sh
        self.unopenable: set[str] = set()
        self._guids = itertools.count(1)
        self._lua54 = lua54
        self.strict_globals = strict_globals
        self.windows: dict[str, GfxWindow] = {}
        self.menus: list[str] = []              # every gfx.showmenu's menu string, in order
        self.menu_answers: deque[int] = deque()  # the picks the user makes in them
        self.lua = self._new_runtime()

    def _new_runtime(self) -> Any:
        lua = self._lua54.LuaRuntime(unpack_returned_tuples=True)
        self._install(lua)
        return lua

    # ------------------------------------------------------------------ plumbing

    def _install(self, lua: Any) -> None:
        impl: dict[str, Callable[..., Any]] = {
            name[1:]: getattr(self, name) for name in dir(self)
            if name.startswith("_") and name[1:] in self.api
        }
        table = lua.table()
        gfx = lua.table()
        window = GfxWindow(self._current, menus=self.menus, menu_answers=self.menu_answers)
        window.bind(gfx)
        self.windows[self._current] = window
        drawing = window.functions()
        for name, sig in self.api.items():
            fn = drawing.get(name[4:]) if name.startswith("gfx.") else impl.get(name)
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
                raise NotSimulated(f"{sig.text.split('(')[0].split()[-1]} exists in REAPER "
                                   "but is not simulated yet: add it to tests/reaper_sim")
            _check(sig, args)
            if (sig.name.startswith(_MUTATING) and "ExtState" not in sig.name) or (
                    sig.name.startswith("GetSet") and len(args) > 3 and args[3] is True):
                for p in self.projects:
                    p.changes += 1
            return fn(*args)

        return call

    def run(self, code: str) -> Any:
        return self.lua.execute(code)

    def run_script(self, path: str | Path) -> Any:
        """Run an action script file as REAPER does: in a Lua state of its own, where
        get_action_context knows its path. Its deferred functions keep the state alive.
        Launched again while an instance of it still runs: if that instance asked for it
        (set_action_options 1), REAPER terminates it (its atexit handlers run) and, with
        2, runs the new one; otherwise both run (REAPER would ask the user). A script
        that deferred nothing ends at once (its atexit handlers run, its window closes)."""
        path = str(path)
        running = any(owner == path for owner, _ in self.deferred + self.atexit)
        options = self._options.get(path, 0)
        if running and options & 1:
            self.terminate(path)
            if not options & 2:
                return None
        self.script_path = path
        self._options.pop(path, None)
        code = Path(path).read_text(encoding="utf-8")
        previous, self._current = self._current, path
        try:
            return self._new_runtime().execute(code)
        finally:
            self._current = previous
            self._end_if_done([path])

    def step(self, ticks: int = 1) -> int:
        """Run `ticks` rounds of the defer queue; returns how many callbacks ran."""
        ran = 0
        for _ in range(ticks):
            queue, self.deferred = self.deferred, []
            for owner, fn in queue:
                self._current = owner
                t0, c0 = time.perf_counter(), time.thread_time()
                fn()
                self.tick_times.append(time.perf_counter() - t0)
                self.tick_cpu.append(time.thread_time() - c0)
                self.tick_owners.append(owner)
                ran += 1
            self._current = ""
            self._end_if_done({owner for owner, _ in queue})
        return ran

    def _end_if_done(self, scripts: Any) -> None:
        """REAPER ends a script once it has no deferred function left: its atexit
        handlers run and its gfx window closes."""
        for script in scripts:
            if not any(owner == script for owner, _ in self.deferred):
                self.terminate(script)

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

    def terminate(self, script: str | None = None) -> None:
        """The user stops the running scripts (or only `script`'s instance, as REAPER does
        when it re-launches it): their deferred functions go, their atexit handlers run."""
        def ours(owner: str) -> bool:
            return script is None or owner == str(script)

        self.deferred = [(o, f) for o, f in self.deferred if not ours(o)]
        for owner, window in self.windows.items():
            if ours(owner):
                window.is_open = False  # REAPER closes a stopped script's gfx window
        handlers = [(o, f) for o, f in self.atexit if ours(o)]
        self.atexit = [(o, f) for o, f in self.atexit if not ours(o)]
        for _owner, fn in handlers:
            fn()

