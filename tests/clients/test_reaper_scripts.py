"""The REAPER scripts as a package: ReaPack headers and index, only REAPER's own API, no
globals and no shell, settings, JSON, and constants that agree with the engine."""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest

pytest.importorskip("lupa")

from tests.reaper_sim.api import load  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "reaper"
STEMS_DIR = CLIENT / "Stems"
LIB = STEMS_DIR / "lib"
ACTIONS = sorted(STEMS_DIR.glob("stembridge_*.lua"))
LUA_FILES = ACTIONS + sorted(LIB.glob("*.lua"))


def _make_index():
    spec = importlib.util.spec_from_file_location("make_index", CLIENT / "make_index.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _core(sim: ReaperSim):
    return sim.lua.execute(f"return dofile({json.dumps(str(LIB / 'stembridge_core.lua'))})"
                           f".init({json.dumps(str(LIB))})")


def test_one_script_per_action_with_reapack_headers():
    titles = {p.name for p in ACTIONS}
    assert titles == {
        "stembridge_Split selected items to stems (vocals, drums, bass, other).lua",
        "stembridge_Split selected items to vocals and instrumental.lua",
        "stembridge_Split selected items to 5 stems.lua",
        "stembridge_Split selected items to 6 stems.lua",
        "stembridge_Cancel running splits.lua",
        "stembridge_Settings.lua",
        "stembridge_Show split status.lua",
        # mastering (tests/clients/test_reaper_master.py)
        "stembridge_Master selected items (streaming).lua",
        "stembridge_Master selected items (loud).lua",
        "stembridge_Master selected items to match the first selected item (reference).lua",
        "stembridge_Analyze loudness of selected items.lua",
        "stembridge_Cancel running masters.lua",
    }
    mk = _make_index()
    versions = set()
    for script in ACTIONS:
        tags = mk.parse_header(script)
        for tag in ("description", "author", "version", "changelog", "provides", "about"):
            assert tags.get(tag), f"{script.name} lacks @{tag}"
        assert script.name == f"stembridge_{tags['description']}.lua"
        versions.add(tags["version"])
    for lib in LIB.glob("*.lua"):
        assert lib.read_text().startswith("-- @noindex"), lib
    assert len(versions) == 1, "every script carries the same version"


def test_reapack_index_is_current_and_installs_every_file():
    mk = _make_index()
    assert mk.main(["--check"]) == 0, "run: python clients/reaper/make_index.py"
    root = ET.parse(CLIENT / "index.xml").getroot()
    assert root.tag == "index" and root.get("version") == "1" and root.get("name")
    installed = set()
    for cat in root.iter("category"):
        for pkg in cat.iter("reapack"):
            assert pkg.get("type") == "script" and pkg.get("desc")
            (ver,) = pkg.iter("version")
            assert re.fullmatch(r"\d+\.\d+\.\d+", ver.get("name")) and ver.get("author")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ver.get("time"))
            for src in ver.iter("source"):
                url = src.text
                prefix = f"{mk.REPO_URL}/raw/v{ver.get('name')}/clients/reaper/"
                assert url.startswith(prefix) and " " not in url
                rel = unquote(url[len(prefix):])
                assert (CLIENT / rel).is_file(), f"index points at a missing file {rel}"
                assert rel.startswith(cat.get("name") + "/")
                assert src.get("file", pkg.get("name")) == rel.split("/", 1)[1]
                installed.add(rel)
    expected = {str(p.relative_to(CLIENT)) for p in LUA_FILES}
    assert installed == expected, "ReaPack would not install every script and library"
    mains = {r for r in installed if "/lib/" not in r}
    assert mains == {str(p.relative_to(CLIENT)) for p in ACTIONS}


def test_scripts_use_only_reapers_api_and_no_shell():
    api = {n for n in load() if not n.startswith("gfx.")}
    for path in LUA_FILES:
        text = path.read_text()
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        used = set(re.findall(r"\breaper\.([A-Za-z_]\w*)", code))
        assert used <= api, f"{path.name} calls functions REAPER lacks: {used - api}"
        for banned in ("os.execute", "io.popen", "loadstring"):
            assert banned not in code, f"{path.name} uses {banned}"


@pytest.mark.parametrize("script", ACTIONS, ids=lambda p: p.stem)
def test_scripts_define_no_globals(script, tmp_path):
    sim = ReaperSim(resource_path=tmp_path)
    sim.user_inputs = None  # the settings dialog is cancelled
    lua = sim._new_runtime()
    before = set(lua.execute("local t = {} for k in pairs(_G) do t[#t+1] = k end return t")
                 .values())
    sim.script_path = str(script)
    lua.execute(script.read_text())
    sim.step(3)
    after = set(lua.execute("local t = {} for k in pairs(_G) do t[#t+1] = k end return t")
                .values())
    assert after == before, f"globals: {after - before}"


#: The facade's API, as the action scripts, the tests and the bench use it (0.2.0's).
CORE_API = {
    "function": {"split_action", "cancel_action", "settings_dialog", "tick", "run_monitor",
                 "init", "get_setting", "set_setting", "stem_colors", "describe_item",
                 "split_selected", "cancel_record", "monitor_alive", "parse_settings"},
    "table": {"_internal", "json", "STEMS", "DEFAULTS", "constants"},
    "number": {"BUDGET", "POLL", "LAUNCH_TIMEOUT", "ACCEPT_TIMEOUT"},
    "string": {"EXT"},
}


def test_the_core_is_a_facade_over_one_library_per_stage():
    core_text = (LIB / "stembridge_core.lua").read_text()
    stages = set(re.findall(r'\bstage\("(stembridge_\w+)"', core_text))
    shipped = {p.stem for p in LIB.glob("*.lua")} - {"stembridge_core"}
    assert stages == shipped, "every library file is a stage the core loads, and only those"
    for path in LIB.glob("*.lua"):
        lines = path.read_text().splitlines()
        assert len(lines) <= 500, f"{path.name}: {len(lines)} lines; split it"
        code = "\n".join(line.split("--", 1)[0] for line in lines)
        # A function that is neither `local`, nor declared local above (for recursion),
        # nor a table's field, is a global.
        for m in re.finditer(r"^\s*function\s+([A-Za-z_]\w*)\s*\(", code, re.M):
            declared = re.search(rf"^local\s+[\w\s,]*\b{m.group(1)}\b", code[:m.start()],
                                 re.M)
            assert declared, f"{path.name} defines a global function {m.group(1)}"
    sim = ReaperSim()  # strict: loading every stage defines no global
    core = sim.lua.execute(f"return dofile({json.dumps(str(LIB / 'stembridge_core.lua'))})")
    lua_type = sim.lua.eval("type")
    for kind, names in CORE_API.items():
        for name in names:
            assert lua_type(core[name]) == kind, f"core.{name} is not a {kind}"
    assert sim.lua.eval("rawequal")(core.init("/anywhere"), core)


def test_the_core_says_how_to_load_it():
    from lupa.lua54 import LuaError

    sim = ReaperSim()
    with pytest.raises(LuaError, match="dofile"):
        sim.lua.execute((LIB / "stembridge_core.lua").read_text())


def test_stem_names_agree_with_the_engine():
    from engine.models.demucs import SPECS
    from engine.stems import FOUR, TWO, plan_stems

    sim = ReaperSim()
    core = _core(sim)
    lua_stems = {n: list(core.STEMS[n].values()) for n in (2, 4, 5, 6)}
    six = SPECS["htdemucs_6s"]
    assert lua_stems == {2: list(TWO), 4: list(FOUR),
                         5: list(plan_stems(six.name, six.sources, 5).names),
                         6: list(plan_stems(six.name, six.sources, 6).names)}


def test_settings_dialog_validates_and_saves(tmp_path):
    sim = ReaperSim(resource_path=tmp_path)
    # no engine to list the models (and none listed before): the model is typed by hand
    sim.ext_state[("stembridge", "engine")] = str(tmp_path / "no" / "stembridge")
    sim.user_inputs = "htdemucs_ft|cuda|/music/stems|n|y|vocals=#112233;bass=#0000FF|/opt/sb/stembridge"
    sim.run_script(STEMS_DIR / "stembridge_Settings.lua")
    (title, n, captions, current), = sim.inputs_asked
    assert n == 7 and captions.count(",") == 8 and "separator=|" in captions
    assert current.split("|")[1] == "auto" and current.split("|")[3] == "y"  # defaults shown
    saved = {k: v for (sec, k), v in sim.ext_state.items() if sec == "stembridge"}
    assert saved == {"model": "htdemucs_ft", "device": "cuda", "output_dir": "/music/stems",
                     "folder_track": "0", "mute_original": "1",
                     "colors": "vocals=#112233;bass=#0000FF", "engine": "/opt/sb/stembridge"}
    assert all(("stembridge", k) in sim.ext_persist for k in saved)
    core = _core(sim)
    colors = core.stem_colors()
    assert colors["bass"] == 0x1000000 | (0xFF << 16) and colors["vocals"] == 0x1332211

    # Bad answers are explained; "No" (7) to "edit again?" keeps the old settings.
    for bad, why in [("x|gpu||y|y||sb", "Device"), ("x|cpu||maybe|y||sb", "Folder track"),
                     ('x|cpu||y|y||"sb"', "quotes"), ("x|cpu||y|y|vocals=red|sb", "colors"),
                     ("a b|cpu||y|y||sb", "Model"), ("x|cpu||y|y||", "Engine"),
                     ("x|cpu||y|y", "Expected 7")]:
        sim.inputs_asked.clear()
        sim.messages.clear()
        sim.user_inputs = bad
        sim.mb_answer = 7
        sim.run_script(STEMS_DIR / "stembridge_Settings.lua")
        assert sim.messages and why.lower() in sim.messages[0][0].lower(), (bad, sim.messages)
        assert sim.ext_state[("stembridge", "device")] == "cuda"


def test_settings_offers_the_engines_models(tmp_path):
    import sys

    from engine.models.registry import list_models

    names = [r["name"] for r in list_models(tmp_path / "models")]
    assert "ensemble-vocals" in names and "mdx-voc-ft" in names
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = sys.executable
    sim.menu_answers.append(2 + names.index("mdx-voc-ft"))  # fields: default, then models
    sim.user_inputs = f"mdx-voc-ft|cpu||y|n||{sys.executable}"
    sim.run_script(STEMS_DIR / "stembridge_Settings.lua")
    assert sim.run_until(lambda: bool(sim.inputs_asked), timeout=60), sim.console
    (menu,) = sim.menus
    fields = menu.split("|")
    assert fields[0] == "!Default for the stem count"  # the saved model: the default
    assert [f.split("  (")[0] for f in fields[1:]] == names  # the engine's, in its order
    assert "mdx-voc-ft  (mdx, 2 stems) - not installed" in fields
    assert "ensemble-4stems  (ensemble, 4 stems) - not installed" in fields
    assert sim.inputs_asked[0][3].split("|")[0] == "mdx-voc-ft"  # the pick fills the field
    assert sim.ext_state[("stembridge", "model")] == "mdx-voc-ft"
    spool = tmp_path / "res" / "Data" / "stembridge"
    assert [p.name for p in spool.glob("models*.json")] == ["models.json"]  # kept for later

    # The engine is gone: the list it gave last time; a model it lacks is explained.
    sim.ext_state[("stembridge", "engine")] = str(tmp_path / "gone" / "stembridge")
    sim.inputs_asked.clear()
    sim.menu_answers.append(1)  # the default
    sim.user_inputs = f"no_such_model|cpu||y|n||{tmp_path / 'gone' / 'stembridge'}"
    sim.mb_answer = 7  # do not edit again
    sim.run_script(STEMS_DIR / "stembridge_Settings.lua")
    assert len(sim.menus) == 2
    assert [f.lstrip("!") for f in sim.menus[1].split("|")] == [f.lstrip("!") for f in fields]
    assert sim.menus[1].startswith("Default") and "|!mdx-voc-ft  (mdx" in sim.menus[1]
    assert sim.inputs_asked[0][3].split("|")[0] == ""  # the default picked
    assert "no model no_such_model" in sim.messages[-1][0]
    assert sim.ext_state[("stembridge", "model")] == "mdx-voc-ft"  # nothing saved
    sim.menu_answers.append(0)  # the menu dismissed: no dialog, nothing changed
    sim.inputs_asked.clear()
    sim.run_script(STEMS_DIR / "stembridge_Settings.lua")
    assert len(sim.menus) == 3 and not sim.inputs_asked
    sim.terminate()
    for _argv, proc in sim.processes:
        proc.wait(30)


def test_five_stem_action_asks_the_engine_for_five_stems(tmp_path):
    import soundfile as sf

    from protocol.stems import FIVE
    from tests.conftest import music_like

    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = "/bin/true"  # launched; never answers
    song = tmp_path / "song.wav"
    sf.write(song, music_like(1.0).T, 44100, subtype="FLOAT")
    track = sim.new_track("T")
    sim.new_item(track, song, position=0.0, length=1.0, name="Song")
    sim.run_script(STEMS_DIR / "stembridge_Split selected items to 5 stems.lua")
    stems = [t.name for t in sim.tracks()][2:]
    assert len(stems) == 5 and all(n in name for n, name in zip(FIVE, stems, strict=True))
    (request,) = (tmp_path / "res" / "Data" / "stembridge").glob("*.json")
    assert json.loads(request.read_text())["stems"] == 5
    sim.terminate()
    for _argv, proc in sim.processes:
        proc.wait(30)


def test_engine_command_lines_never_hold_a_users_file_name():
    sim = ReaperSim()
    core = _core(sim)
    internal = core._internal
    sim.ext_state[("stembridge", "engine")] = "/venv/bin/python3.11"
    argv = list(internal.engine_argv(sim.lua.table("submit", "--request", "/r/x.json")).values())
    assert argv == ["/venv/bin/python3.11", "-m", "bridge", "submit", "--request", "/r/x.json"]
    bad, err = internal.command_line(sim.lua.table('a"; rm -rf ~; "'))
    assert bad is None and "quote" in err
    assert internal.safe_name('My: "Song"/Take 1. ') == "My_ _Song__Take 1"
    win = ReaperSim()
    win.os_name = "Win64"
    wcore = _core(win)
    win.ext_state[("stembridge", "engine")] = "C:\\Program Files\\stembridge\\stembridge.exe"
    argv = wcore._internal.engine_argv(win.lua.table("cancel", "20261121-1"))
    assert list(argv.values())[1] == "cancel"
    cmd = wcore._internal.command_line(argv)
    assert cmd == '"C:\\Program Files\\stembridge\\stembridge.exe" "cancel" "20261121-1"'


def test_command_lines_are_the_same_with_or_without_a_shell(tmp_path):
    """Linux and macOS: ExecProcess may hand its command line to /bin/sh, where double
    quotes do not stop $, backquotes and backslashes. Arguments holding one are refused,
    and the request files move out of a resource folder whose path holds one."""
    import subprocess

    from tests.reaper_sim.sim import split_command_line

    sim = ReaperSim(resource_path=tmp_path / "res $HOME `id` \\x")
    internal = _core(sim)._internal
    for bad in ("/opt/$HOME/stembridge", "/opt/`id`/stembridge", "/opt/a\\b/stembridge"):
        cmd, err = internal.command_line(sim.lua.table(bad, "submit"))
        assert cmd is None and "shell" in err, bad
    spool = internal.spool_dir()
    assert spool.endswith("stembridge-reaper") and "$" not in spool
    argv = ["/opt/my stembridge/bin/stembridge", "submit", "--request",
            spool + "/0123456789abcdef.json", "it's (1) & ; | < > * ? ~ # ! é 音"]
    cmd = internal.command_line(sim.lua.table(*argv))
    rest = cmd[cmd.index('" "') + 2:]  # the arguments after the program
    shell = subprocess.run(["/bin/sh", "-c", 'printf "%s\\n" ' + rest],
                           capture_output=True, text=True, check=True).stdout
    assert shell.splitlines() == argv[1:] == split_command_line(cmd)[1:]
    assert split_command_line(cmd)[0] == argv[0]


def test_folder_names_are_cut_by_characters_not_bytes():
    sim = ReaperSim()
    safe = _core(sim)._internal.safe_name
    names = ["a" + "é" * 120, "音楽" * 60, "🎸🥁" * 50, "e\u0301" * 100,
             "👨\u200d👩\u200d👧" * 30, "x" * 79 + "👍🏽" + "y" * 10, "a\u0308" * 40 + "b" * 10,
             "ok\xff\xfe name"]
    for name in names:
        # lupa hands the result back decoded from UTF-8: invalid UTF-8 raises here
        text = safe(name.encode("utf-8", "surrogatepass") if "\xff" not in name
                    else b"ok\xff\xfe name")
        assert isinstance(text, str) and text, name
        assert len(text.encode()) <= 200 and len(text) <= 3 * 80, name
        assert not unicodedata.combining(text[0]) and text[-1] != "\u200d", name
        if "e\u0301" in name:
            assert text == "e\u0301" * 66, "a combining mark stays with its letter (3 bytes)"
        if "x" * 79 in name:
            assert text == "x" * 79 + "👍🏽", "the skin tone stays with its emoji"
        if "👨" in name:
            assert text.endswith("👧") and len(text.encode()) <= 200
    assert safe("音楽" * 60) == "音楽" * 33, "200 bytes at most (3 bytes each)"
    assert safe("a" + "é" * 120) == "a" + "é" * 79
    assert safe(b"ok\xff\xfe name") == "ok__ name"


def test_placeholders_never_leave_the_item():
    """Regions wholly past the item's end (the engine splits the whole file) add nothing
    outside the item: for an item [10, 17] showing source [0, 7], regions [8, 9.812] and
    [8, 10.998] (project 18..19.998) gave inverted spans and placeholders past 17.0."""
    sim = ReaperSim()
    gaps = _core(sim)._internal.gaps
    g = sim.lua.table_from({"pos": 10.0, "len": 7.0, "offs": 0.0, "rate": 1.0})
    cases = [
        ([(8.0, 9.812), (8.0, 10.998)], [(10.0, 17.0)]),
        ([(0.0, 2.0), (8.0, 9.812), (6.5, 9.0)], [(12.0, 16.5)]),
        ([(-3.0, 0.5), (3.0, 4.0), (20.0, 30.0), (5.0, 4.0)], [(10.5, 13.0), (14.0, 17.0)]),
        ([(0.0, 7.0)], []),
    ]
    for ranges, want in cases:
        lua_ranges = sim.lua.table_from([sim.lua.table_from(list(r)) for r in ranges])
        got = [x for v in gaps(g, lua_ranges).values() for x in v.values()]
        assert got == pytest.approx([x for w in want for x in w]), ranges
    # playrate 2, starting 1 s into the source: source [1, 15] plays as [10, 17]
    g2 = sim.lua.table_from({"pos": 10.0, "len": 7.0, "offs": 1.0, "rate": 2.0})
    r = sim.lua.table_from([sim.lua.table_from([15.0, 40.0]), sim.lua.table_from([3.0, 5.0])])
    assert [x for v in gaps(g2, r).values() for x in v.values()] == pytest.approx(
        [10.0, 11.0, 12.0, 17.0])


def test_two_jobs_never_share_an_output_folder(tmp_path):
    """Two jobs with the same take name finishing in the same tick: each reserves its own
    folder at once (a marker file), before any stem is moved there."""
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    internal = _core(sim)._internal
    recs = [sim.lua.table_from({"id": f"{i:016x}", "name": "Take 1",
                                "names": sim.lua.table_from(["vocals", "instrumental"])})
            for i in (1, 2, 3)]
    dirs = [internal.output_folder(r) for r in recs]
    assert dirs == [str(tmp_path / "out" / n) for n in
                    ("Take 1 stems", "Take 1 stems (2)", "Take 1 stems (3)")]
    for i, d in enumerate(dirs, 1):
        assert (Path(d) / ".stembridge-job").read_text() == f"{i:016x}"
    assert internal.output_folder(recs[1]) == dirs[1], "a job keeps its own reservation"
    # Another REAPER (no in-memory reservation) sees the marker files too.
    other = ReaperSim(resource_path=tmp_path / "res")
    other.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    rec = other.lua.table_from({"id": "f" * 16, "name": "Take 1",
                                "names": other.lua.table_from(["vocals"])})
    assert _core(other)._internal.output_folder(rec) == str(tmp_path / "out" /
                                                           "Take 1 stems (4)")


def test_lua_json_reads_what_python_writes():
    sim = ReaperSim()
    J = sim.lua.execute(f"return dofile({json.dumps(str(LIB / 'stembridge_json.lua'))})")
    docs = [
        {"state": "running", "regions": [{"start": 0, "end": 441000,
                                          "files": {"vocals": "regions/vocals/a.wav"}}],
         "final": None, "samplerate": 44100, "updated": 1763700000.123456},
        {"message": "caf\u00e9 \U0001F3B8 \"quoted\" \\ \n\t\u0001", "n": -1.5e-7, "big": 2**53},
        [], {}, [[], [{}]], "x", 0, True, None,
    ]
    for doc in docs:
        text = json.dumps(doc, ensure_ascii=True)
        value = J.decode(text)
        again = json.loads(J.encode(value))
        assert again == doc or (doc is None and again is None), text
    for bad in ['{"a": 1', '{"a" 1}', "[1,]", '"\\x"', "nul", "{} x", '"\u0001"']:
        value, err = J.decode(bad)
        assert value is None and "invalid JSON" in err


STATUS = STEMS_DIR / "stembridge_Show split status.lua"


def _button(window, name: str) -> tuple[float, float]:
    """The middle of the Cancel button on the row of job `name` in the status window."""
    (line,) = [d for d in window.canvas if d.kind == "str" and d.text.startswith(name + ":")]
    (rect,) = [d for d in window.canvas if d.kind == "rect" and not d.filled
               and d.y == line.y]
    return rect.x + rect.w / 2, rect.y + rect.h / 2


def test_the_status_window_shows_what_the_monitor_publishes_and_closes_cleanly():
    """The window lists the rows the monitor publishes (ExtState "status"), asks for the
    cancel of one job through ExtState, redraws only when something changed, and closes
    on Escape, on its close box and on a second launch of its action (one instance)."""
    import time

    sim = ReaperSim()
    script = str(STATUS)
    sim.run_script(STATUS)
    window = sim.windows[script]
    assert window.is_open and window.title == "stembridge: splits" and sim.deferred
    sim.step()
    assert window.strings() == ["No split is running (run a split action to resume saved "
                                "ones)."]
    rows = [{"id": "a1", "name": "Alpha", "stems": 4, "state": "running", "percent": 42,
             "eta": 95, "model": "htdemucs", "device": "cpu"},
            {"id": "b2", "name": "Beta", "stems": 2, "state": "submitting",
             "model": "default", "device": "auto"}]
    sim.ext_state[("stembridge", "status")] = json.dumps(rows)
    sim.ext_state[("stembridge", "monitor")] = f"{time.perf_counter():.3f}"
    sim.step()
    assert window.strings() == ["Alpha: 42 % - 1:35 left", "Cancel",
                                "4 stems - model htdemucs - device cpu",
                                "Beta: starting...", "Cancel",
                                "2 stems - model default - device auto"]
    drawn = window.drawn
    sim.step(3)
    assert window.drawn == drawn, "an unchanged status was drawn again"
    window.click(*_button(window, "Beta"))
    sim.step(2)
    assert sim.ext_state[("stembridge", "cancel_jobs")] == "b2"
    assert "Beta: cancelling..." in window.strings()
    assert window.strings().count("Cancel") == 1  # Alpha's button is still there
    window.keys.append(27)  # Escape
    sim.step()
    assert not window.is_open and not sim.deferred and not sim.atexit
    sim.run_script(STATUS)  # opens it again
    window = sim.windows[script]
    assert window.is_open and sim.deferred
    sim.run_script(STATUS)  # a second launch closes it
    assert not window.is_open and not sim.deferred and not sim.atexit
    sim.run_script(STATUS)
    window = sim.windows[script]
    window.close()  # the user closes it
    sim.step()
    assert not sim.deferred and not sim.atexit
