"""The REAPER simulation itself: it offers exactly REAPER's functions, checks arguments as
REAPER does, and behaves as documented for what it simulates."""

from __future__ import annotations

import pytest

pytest.importorskip("lupa")

from lupa.lua54 import LuaError  # noqa: E402

from tests.reaper_sim.api import load  # noqa: E402
from tests.reaper_sim.sim import NotSimulated, ReaperArgError, ReaperSim  # noqa: E402


@pytest.fixture
def sim():
    return ReaperSim()


def test_vendored_api_list_is_the_shared_one():
    from tests.reaper_sim.api import SHARED_API_TXT, VENDORED_API_TXT

    if not SHARED_API_TXT.is_file():
        pytest.skip("no ../shared/reaper/api.txt beside this checkout")
    assert VENDORED_API_TXT.read_bytes() == SHARED_API_TXT.read_bytes(), \
        "copy ../shared/reaper/api.txt to tests/reaper_sim/reaper_api.txt"


def test_api_table_is_reapers(sim):
    api = load()
    assert len([n for n in api if not n.startswith("gfx.")]) == 713 + 9 + 10
    names = set(sim.run("local t = {} for k in pairs(reaper) do t[#t+1] = k end return t")
                .values())
    assert names == {n for n in api if not n.startswith("gfx.")}
    # extension functions (SWS, js_ReaScriptAPI) are not REAPER's: nil, as in REAPER
    assert sim.run("return reaper.SNM_GetIntConfigVar == nil and reaper.JS_Window_Find == nil")


def test_unsimulated_and_missing_functions_fail_loudly(sim):
    with pytest.raises((LuaError, NotSimulated), match="not simulated yet"):
        sim.run("reaper.GetProjectName(0)")
    with pytest.raises(LuaError):
        sim.run("reaper.NoSuchFunction()")


def test_arguments_are_checked(sim):
    with pytest.raises((LuaError, ReaperArgError), match="bad argument #2"):
        sim.run("reaper.GetTrack(0, 'one')")
    with pytest.raises((LuaError, ReaperArgError), match="bad argument #1"):
        sim.run("reaper.ShowConsoleMsg(nil)")
    sim.run("reaper.GetTrack(0, 0.0)")  # an integral float is accepted, as in REAPER


def test_tracks_folders_undo_and_defer(sim):
    sim.run("""
        reaper.Undo_BeginBlock()
        reaper.PreventUIRefresh(1)
        for i = 0, 2 do reaper.InsertTrackAtIndex(i, true) end
        local folder = reaper.GetTrack(0, 0)
        reaper.GetSetMediaTrackInfo_String(folder, "P_NAME", "song (stems)", true)
        reaper.SetMediaTrackInfo_Value(folder, "I_FOLDERDEPTH", 1)
        reaper.SetMediaTrackInfo_Value(reaper.GetTrack(0, 2), "I_FOLDERDEPTH", -1)
        reaper.SetMediaTrackInfo_Value(reaper.GetTrack(0, 1), "I_CUSTOMCOLOR", 0x1000000 | 0xff)
        reaper.PreventUIRefresh(-1)
        reaper.Undo_EndBlock("Split to stems", -1)
        local n = 0
        local function tick() n = n + 1; if n < 3 then reaper.defer(tick) end end
        reaper.defer(tick)
        reaper.SetExtState("stembridge", "n", "x", false)
    """)
    tracks = sim.project.tracks
    assert [t.name for t in tracks] == ["song (stems)", "", ""]
    assert [t.folder_depth for t in tracks] == [1, 0, -1]
    assert tracks[1].color == 0x10000FF
    assert sim.undo_points == ["Split to stems"] and sim.refresh_lock == 0
    assert sim.run("return reaper.GetTrack(0, 3)") is None  # out of range: nil
    assert sim.step(5) == 3
    assert sim.run("return reaper.GetExtState('stembridge', 'n')") == "x"
    assert sim.run("return reaper.ValidatePtr(reaper.GetTrack(0, 0), 'MediaTrack*')")


def test_undeclared_globals_fail_loudly(sim):
    """A missing `local` (or a local used above its declaration) fails at once in the
    simulation, in every Lua state, instead of leaking a global."""
    with pytest.raises(LuaError, match="assignment to undeclared global 'leak'"):
        sim.run("local function f() leak = 1 end f()")
    with pytest.raises(LuaError, match="read of undeclared global 'later'"):
        sim.run("local function f() return later() end local function later() end f()")
    assert sim.run("local ok = 1 return ok + #reaper.GetOS()") > 1
    lax = ReaperSim(strict_globals=False)
    assert lax.run("leak = 2 return leak") == 2
