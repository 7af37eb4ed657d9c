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


def test_undo_loads_saved_states_as_reaper_does(sim):
    """An undo point saves the state after its change; undo loads the point before, redo
    the next; a change made without an undo point is only in the next point's state."""
    sim.run("""
        reaper.Undo_BeginBlock2(0)
        reaper.InsertTrackAtIndex(0, true)
        reaper.GetSetMediaTrackInfo_String(reaper.GetTrack(0, 0), "P_NAME", "split", true)
        reaper.Undo_EndBlock2(0, "A", -1)
        reaper.InsertTrackAtIndex(1, true)  -- no undo point (as a monitor's placements)
    """)
    n0 = sim.run("return reaper.GetProjectStateChangeCount(0)")
    sim.user_edit("B", lambda: sim.new_track("user"))
    assert sim.undo_points == ["A", "B"]
    assert sim.run("return reaper.Undo_CanUndo2(0)") == "B"
    old = sim.run("return reaper.GetTrack(0, 0)")
    sim.run("reaper.Main_OnCommand(40029, 0)")  # Edit: Undo
    assert [t.name for t in sim.tracks()] == ["split"], "the un-recorded track went too"
    assert sim.run("return reaper.GetProjectStateChangeCount(0)") > n0
    assert sim.run("return reaper.Undo_CanRedo2(0)") == "B"
    assert not sim.lua.eval("function(t) return reaper.ValidatePtr(t, 'MediaTrack*') end")(old)
    sim.run("reaper.Main_OnCommand(40030, 0)")  # Edit: Redo
    assert [t.name for t in sim.tracks()] == ["split", "", "user"]
    assert sim.run("return reaper.Undo_DoUndo2(0)") == 1
    assert sim.undo() == "A" and sim.tracks() == [] and sim.undo() is None
    assert sim.redo() == "A"
    sim.user_edit("C", lambda: sim.new_track("c"))  # a new point drops the redo states
    assert sim.undo_points == ["A", "C"] and sim.redo() is None
    sim.run("reaper.Undo_OnStateChange2(0, 'D')")
    assert sim.undo_points[-1] == "D"


def test_a_relaunched_script_replaces_its_running_instance(sim, tmp_path):
    """set_action_options(1 | 2): REAPER terminates the running instance (its atexit
    runs) and starts the new one; without it, both run."""
    script = tmp_path / "loop.lua"
    script.write_text("""
        local opts = reaper.GetExtState("t", "opts")
        if opts ~= "" then reaper.set_action_options(tonumber(opts)) end
        local n = tonumber(reaper.GetExtState("t", "started")) or 0
        reaper.SetExtState("t", "started", tostring(n + 1), false)
        reaper.atexit(function()
          local e = tonumber(reaper.GetExtState("t", "exited")) or 0
          reaper.SetExtState("t", "exited", tostring(e + 1), false)
        end)
        local function loop() reaper.defer(loop) end
        loop()
    """)
    sim.ext_state[("t", "opts")] = "3"
    sim.run_script(script)
    sim.run_script(script)
    assert sim.ext_state[("t", "started")] == "2" and sim.ext_state[("t", "exited")] == "1"
    assert len(sim.deferred) == 1
    sim.ext_state[("t", "opts")] = ""
    sim.terminate()
    sim.run_script(script)
    sim.run_script(script)
    assert len(sim.deferred) == 2 and sim.ext_state[("t", "exited")] == "2"


def test_failed_calls_give_nil_and_nil_is_refused(sim, tmp_path):
    """PCM_Source_CreateFromFile gives nil for a file REAPER cannot open; passing that nil
    on to a parameter that is not optional fails, as it does in REAPER."""
    (tmp_path / "not audio.wav").write_bytes(b"RIFF....")
    for path in (tmp_path / "missing.wav", tmp_path / "not audio.wav"):
        assert sim.run(f"return reaper.PCM_Source_CreateFromFile({str(path)!r})") is None
    sim.new_track("t")
    with pytest.raises((LuaError, ReaperArgError), match="bad argument #2"):
        sim.run("""
            local item = reaper.AddMediaItemToTrack(reaper.GetTrack(0, 0))
            local take = reaper.AddTakeToMediaItem(item)
            reaper.SetMediaItemTake_Source(take, reaper.PCM_Source_CreateFromFile("/nope.wav"))
        """)


def test_gfx_window_as_reaper_documents(sim):
    """gfx.getchar is -1 without an open window; init opens it with its size; drawstr
    draws at gfx.x/gfx.y and moves gfx.x; update shows the frame; a click is a press then
    a release; a window the user closed, or gfx.quit, gives -1 again."""
    window = sim.windows[""]
    assert sim.run("return gfx.getchar()") == -1
    assert sim.run("return gfx.init('T', 200, 100)") == 1
    assert sim.run("return gfx.w, gfx.h, gfx.getchar()") == (200, 100, 0)
    assert sim.run("gfx.setfont(1, 'Arial', 16) return gfx.texth, gfx.measurestr('abc')") \
        == (16, 24, 16)
    sim.run("gfx.x, gfx.y = 5, 7 gfx.drawstr('hi')")
    assert window.strings() == []  # not shown before gfx.update
    assert sim.run("gfx.update() return gfx.x") == 5 + 16
    assert window.strings() == ["hi"]
    sim.run("gfx.x, gfx.y = 0, 30 gfx.drawstr('more') gfx.update()")
    assert window.strings() == ["more"]  # gfx.clear 0 (the default): each frame anew
    sim.run("gfx.clear = -1 gfx.x, gfx.y = 0, 60 gfx.drawstr('kept') gfx.update()")
    assert window.strings() == ["more", "kept"]
    sim.run("gfx.rect(0, 0, gfx.w, gfx.h, 1) gfx.drawstr('alone') gfx.update()")
    assert window.strings() == ["alone"]  # a full-window fill paints over the rest
    window.click(10, 20)
    assert sim.run("return gfx.getchar(), gfx.mouse_x, gfx.mouse_y, gfx.mouse_cap") \
        == (0, 10, 20, 1)
    assert sim.run("gfx.getchar() return gfx.mouse_cap") == 0
    window.close()
    assert sim.run("return gfx.getchar()") == -1
    assert sim.run("gfx.init('T') return gfx.getchar()") == 0
    assert sim.run("gfx.quit() return gfx.getchar()") == -1
    with pytest.raises((LuaError, ReaperArgError), match="bad argument #1"):
        sim.run("gfx.drawstr(nil)")
