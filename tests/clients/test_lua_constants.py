"""The REAPER scripts' constants (clients/reaper/Stems/lib/stembridge_constants.lua) are
generated from protocol/ and agree with it; the scripts use only real error codes, and
an engine error shows the code's DAW hint in REAPER's message box."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lupa")

from protocol import errors, messages, settings, stems  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "reaper"
LIB = CLIENT / "Stems" / "lib"
CONSTANTS = LIB / "stembridge_constants.lua"
SPLIT2 = CLIENT / "Stems" / "stembridge_Split selected items to vocals and instrumental.lua"


def _make_constants():
    spec = importlib.util.spec_from_file_location("make_constants", CLIENT / "make_constants.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lua_constants(sim: ReaperSim):
    return sim.lua.execute(f"return dofile({json.dumps(str(CONSTANTS))})")


def _dict(table) -> dict:
    return dict(table.items())


def test_committed_constants_are_the_generators_output():
    mk = _make_constants()
    assert CONSTANTS.read_text(encoding="utf-8") == mk.build(), \
        "run: python clients/reaper/make_constants.py"
    assert mk.main(["--check"]) == 0
    text = CONSTANTS.read_text(encoding="utf-8")
    assert text.startswith("-- @noindex\n") and "generated from protocol/, do not edit" in text


def test_the_generator_imports_only_protocol():
    script = str(CLIENT / "make_constants.py")
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--check']\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'engine', 'bridge', 'tests', 'torch', 'numpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_lua_constants_equal_protocol():
    sim = ReaperSim()
    c = _lua_constants(sim)
    assert _dict(c.ERRORS) == {code.name: code.value for code in errors.ErrorCode}
    assert _dict(c.EXIT) == {code.value: errors.exit_status(code) for code in errors.ErrorCode}
    assert _dict(c.HINTS) == {code.value: errors.hint(code, "daw") for code in errors.ErrorCode
                              if errors.hint(code, "daw")}
    assert {n: list(_dict(c.STEMS[n]).values()) for n in _dict(c.STEMS)} == \
        {n: list(names) for n, names in stems.STEM_SETS.items()}
    addresses = {k: v for k, v in vars(messages.Address).items() if k.isupper()}
    assert _dict(c.ADDRESS) == addresses and "SPLIT" in addresses
    assert c.MAX_DATAGRAM == messages.MAX_DATAGRAM
    assert (c.DEFAULT_HOST, c.DEFAULT_PORT, c.DEFAULT_PREVIEW_PORT) == \
        (settings.DEFAULT_HOST, settings.DEFAULT_PORT, settings.DEFAULT_PREVIEW_PORT)
    # A name that is no code is a mistake in the scripts: it fails loudly, never nil.
    ok, err = sim.lua.execute(
        f"return pcall(function() return dofile({json.dumps(str(CONSTANTS))})"
        ".ERRORS.MODEL_MISSING end)")
    assert not ok and "no error code named MODEL_MISSING" in err


def test_lua_strings_survive_any_text():
    mk = _make_constants()
    sim = ReaperSim()
    text = 'a "quoted" \\ back\nslash\ttab \x01 caf\u00e9 \U0001F3B8 ]]'
    assert sim.lua.execute("return " + mk.lua_string(text)) == text
    assert mk.lua_key("end") == '["end"]' and mk.lua_key("model_unknown") == "model_unknown"


def _lua_code(path: Path) -> str:
    """A Lua file without its comments."""
    return "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())


def test_the_scripts_use_only_real_error_codes():
    names = {code.name for code in errors.ErrorCode}
    used = set()
    for path in sorted(LIB.glob("*.lua")):
        if path == CONSTANTS:
            continue
        code = _lua_code(path)
        used |= set(re.findall(r"\bERRORS\.(\w+)", code))
        # every failure names its code through the table, never as a bare string
        literal = re.findall(r"\bfail\(\s*\w+\s*,\s*(\"[^\"]*\"|'[^']*')", code)
        assert not literal, f"{path.name} fails with a literal code {literal}: use C.ERRORS"
        assert not re.search(r"\bHINTS\[\s*[\"']", code), path.name
    assert used and used <= names, f"not ErrorCode members: {used - names}"
    assert {"NOT_RUNNING", "TIMEOUT", "INTERNAL", "OUTPUT_FAILED"} <= used


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.parametrize("code", [errors.ErrorCode.MODEL_NOT_INSTALLED,
                                  errors.ErrorCode.INPUT_UNREADABLE,
                                  errors.ErrorCode.TOO_MANY_JOBS])
def test_an_error_reply_shows_the_codes_daw_hint(code, tmp_path):
    """The engine's error reply (written here in the reply file `stembridge submit`
    writes) reaches the user's message box with the hint for its code."""
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = "/bin/true"  # a program that answers nothing
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    sim.new_item(sim.new_track("T"), song, position=0.0, length=4.0, name="Song")
    sim.run_script(SPLIT2)
    spool = tmp_path / "res" / "Data" / "stembridge"
    assert _wait(lambda: len(list(spool.glob("*.json"))) == 1)
    (request,) = spool.glob("*.json")
    assert json.loads(request.read_text())["stems"] == 2
    reply = request.with_name(request.stem + ".reply.json")
    tmp = reply.with_name(reply.name + ".tmp")
    tmp.write_text(json.dumps({"state": "error", "code": code.value,
                               "message": "what the engine says"}))
    tmp.replace(reply)
    # (the monitor goes on watching for undo after the job ended: wait for its message)
    assert sim.run_until(lambda: bool(sim.messages), timeout=10), sim.console
    (msg, title, _kind), = sim.messages
    assert title == "stembridge"
    assert "Song: what the engine says\n" + errors.hint(code, "daw") in msg
    assert [t.name for t in sim.tracks()] == ["T"]
    assert not reply.exists() and not request.exists()
    sim.terminate()
