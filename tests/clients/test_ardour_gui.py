"""The Ardour scripts in Ardour's real GUI (Ardour 7 under Xvfb, Dummy audio engine):
the installed follow hook and a test hook are registered as Ardour keeps its action
hooks; the test hook splits two regions (a stereo song with an offset, a trim and a gain,
to vocals and instrumental, and a mono song to 4 stems, at once) with a real
`stembridge serve` (the embedded Spleeter model, a random-weight htdemucs); the follow hook places the stems with
Ardour's own import (Editor:do_embed) while the engine works, then one region per stem;
one undo and redo are checked, and the stems' audio where the regions play it adds up to
the source (Spleeter 2 stems reconstruct the mixture). Skipped without Ardour or Xvfb
(CI installs both: .ci/run)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.cli import main as cli_main
from tests.clients.ardour import gui as ardour_gui
from tests.clients.ardour import session as ardour
from tests.clients.test_ardour import _songs, engine  # noqa: F401 (the shared server)

sf = pytest.importorskip("soundfile")
GUI = ardour_gui.ardour_gui()
BINARY = ardour.ardour_lua()
pytestmark = pytest.mark.skipif(GUI is None or BINARY is None,
                                reason="needs Ardour 7 (apt-get install ardour) and Xvfb "
                                "(apt-get install xvfb) for the GUI test")
HERE = Path(__file__).resolve().parent
RATE = 44100
BAND = dict(position=2.0, start=1.0, length=4.0)
VOICE = dict(position=1.0, start=0.5, length=3.0)


def _session(tmp: Path, env: dict[str, str]) -> Path:
    """A new session: the excerpt on "Band" (offset, trim, gain 0.5), its left channel on
    "Voice" (mono)."""
    assert BINARY is not None
    folder = tmp / "songs"
    ardour.create(BINARY, folder, "songs", RATE, [("Band", 2), ("Voice", 1)], env)
    song, _mono48 = _songs(tmp)
    mono = tmp / "voice.wav"
    sf.write(mono, sf.read(song, dtype="float32")[0][:, 0], RATE, subtype="FLOAT")
    ardour.add_regions(folder, "songs", [
        ardour.Placed("Band", song, 2, RATE, **BAND, gain=0.5),
        ardour.Placed("Voice", mono, 1, RATE, **VOICE)])
    return folder


@pytest.fixture(scope="module")
def gui_run(engine, tmp_path_factory):  # noqa: F811
    assert GUI is not None and BINARY is not None
    tmp = tmp_path_factory.mktemp("ardour-gui")
    home = tmp / "home"
    scripts = home / ".config" / "ardour7" / "scripts"
    assert cli_main(["install-daw", "ardour", "--dir", str(scripts)]) == 0
    ardour_gui.prepare_home(home, [
        ("stembridge: follow splits", scripts / "stembridge_follow.lua"),
        ("stembridge test driver", HERE / "ardour" / "gui_driver.lua")], RATE)
    env = ardour.lua_env(engine["env"], scripts / "stembridge", sys.executable)
    env.pop("STEMBRIDGE_ARDOUR_LIB")  # the GUI finds the library where install-daw put it
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    folder = _session(tmp, env)
    song, mono = tmp / "excerpt.wav", tmp / "voice.wav"
    result = tmp / "result.json"
    env.update(SB_RESULT=str(result), SB_SPLITS="Band:2,Voice:4")
    t0 = time.monotonic()
    log = tmp / "ardour.log"
    status = ardour_gui.run(*GUI, folder, env, result, timeout=240, log=log)
    if not result.exists() and status is not None and status < 0:
        # Ardour 7.3 itself crashed (SIGSEGV in 3 of about 14 runs here, never under gdb;
        # see the Ardour section of the README): one more try from a fresh copy, and the
        # crash is reported in the test output.
        print(f"Ardour died by signal {-status}; trying once more", file=sys.stderr)
        (tmp / "songs").rename(tmp / "songs-crashed")
        folder = _session(tmp, env)
        status = ardour_gui.run(*GUI, folder, env, result, timeout=240, log=log)
    assert result.exists(), log.read_text()[-3000:]
    out = json.loads(result.read_text())
    out["wall_s"], out["song"], out["mono"] = time.monotonic() - t0, song, mono
    return out


def test_the_gui_split_makes_stem_regions_while_the_engine_works(gui_run, capsys):
    assert "error" not in gui_run, gui_run["error"]
    assert gui_run["started"] == 2 and not gui_run["messages"]
    assert gui_run["running_with_regions"], "no stem region appeared before the job ended"
    for job in gui_run["jobs"]:
        assert job["state"] == "done", job
        placed = [p for e in job["placed"] for p in e["pieces"].values()]
        assert placed and all(p.get("region") for p in placed)
        ev = job["events"]
        with capsys.disabled():
            print(f"\nardour GUI {job['name']}: action {gui_run['action_s']:.2f} s, tracks "
                  f"{ev['tracks']:.2f} s, first region {ev['first_region']:.2f} s, done "
                  f"{ev['done']:.2f} s; Ardour run {gui_run['wall_s']:.1f} s")


def _final(gui_run: dict, state: str, track: str) -> list[dict]:
    return gui_run[state][track]


@pytest.mark.parametrize("name,track,src,gain", [
    ("excerpt", "Band", BAND, 0.5), ("voice", "Voice", VOICE, 1.0)])
def test_one_region_per_stem_where_the_source_plays(gui_run, name, track, src, gain):
    """Both splits; the Spleeter one (2 stems) also adds up to the source there (the
    random-weight htdemucs of the 4-stem one does not reconstruct anything)."""
    (job,) = [j for j in gui_run["jobs"] if j["name"] == name]
    source = gui_run["song"] if track == "Band" else gui_run["mono"]
    audio = sf.read(source, dtype="float32", always_2d=True)[0]
    s, n, p = (round(src[k] * RATE) for k in ("start", "length", "position"))
    total = 0
    for stem in job["names"]:
        (region,) = _final(gui_run, "after_done", f"{name} {stem}")
        assert (region["position"], region["start"], region["length"]) == (p, s, n)
        assert region["gain"] == pytest.approx(gain)
        assert region["file"] == job["final"][stem]["file"]
        assert region["channels"] == audio.shape[1]
        total = total + sf.read(region["file"], dtype="float32", always_2d=True)[0]
    if len(job["names"]) == 2:
        np.testing.assert_allclose(total[s:s + n], audio[s:s + n], atol=1e-3)


def test_one_undo_per_split_removes_it_and_redo_brings_it_back(gui_run):
    # Each region's split is one undo step (the last finished first); undo empties its
    # stem tracks (Ardour cannot undo adding tracks) and leaves everything else alone.
    jobs = sorted(gui_run["jobs"], key=lambda j: j["events"]["done"], reverse=True)
    tracks = {j["name"]: [f"{j['name']} {stem}" for stem in j["names"]] for j in jobs}
    done = gui_run["after_done"]
    for step, after in enumerate(gui_run["after_undo"]):
        undone = {j["name"] for j in jobs[:step + 1]}
        for name, names in tracks.items():
            for t in names:
                # (an empty Lua table comes back as {} in JSON)
                assert (not after[t]) if name in undone else after[t] == done[t], (step, t)
        assert after["Band"] == done["Band"] and after["Voice"] == done["Voice"]
    assert gui_run["after_redo"] == done
