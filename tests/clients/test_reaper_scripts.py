"""The REAPER scripts as a package: ReaPack headers and index, only REAPER's own API, no
globals and no shell, settings, JSON, and constants that agree with the engine."""

from __future__ import annotations

import importlib.util
import json
import re
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
        "stembridge_Split selected items to 6 stems.lua",
        "stembridge_Cancel running splits.lua",
        "stembridge_Settings.lua",
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
    lua_stems = {n: list(core.STEMS[n].values()) for n in (2, 4, 6)}
    six = SPECS["htdemucs_6s"]
    assert lua_stems == {2: list(TWO), 4: list(FOUR),
                         6: list(plan_stems(six.name, six.sources, 6).names)}


def test_settings_dialog_validates_and_saves(tmp_path):
    sim = ReaperSim(resource_path=tmp_path)
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


def test_engine_command_lines_never_hold_a_users_file_name():
    sim = ReaperSim()
    core = _core(sim)
    internal = core._internal
    sim.ext_state[("stembridge", "engine")] = "/venv/bin/python3.11"
    argv = list(internal.engine_argv(sim.lua.table("submit", "--request", "/r/x.json")).values())
    assert argv == ["/venv/bin/python3.11", "-m", "bridge", "submit", "--request", "/r/x.json"]
    sim.ext_state[("stembridge", "engine")] = "C:\\Program Files\\stembridge\\stembridge.exe"
    argv = internal.engine_argv(sim.lua.table("cancel", "20261121-1"))
    assert list(argv.values())[1] == "cancel"
    cmd = internal.command_line(argv)
    assert cmd == '"C:\\Program Files\\stembridge\\stembridge.exe" "cancel" "20261121-1"'
    bad, err = internal.command_line(sim.lua.table('a"; rm -rf ~; "'))
    assert bad is None and "quote" in err
    assert internal.safe_name('My: "Song"/Take 1. ') == "My_ _Song__Take 1"


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
