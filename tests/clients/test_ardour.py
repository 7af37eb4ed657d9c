"""The Ardour scripts in real Ardour, headless: `ardour7-lua` loads a real session (a
real song on a track, a 48 kHz mono file on another, regions with an offset and a trim),
runs the library's split with a real `stembridge serve` (the embedded Spleeter model and
a random-weight htdemucs test model), steps the follow hook's tick until the jobs end
and saves the session; the saved session file and the jobs' records are checked here.

Skipped where Ardour is not installed (CI installs it: .ci/run)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from bridge.cli import main as cli_main
from tests.clients.ardour import session as ardour
from tests.conftest import music_like

sf = pytest.importorskip("soundfile")
BINARY = ardour.ardour_lua()
pytestmark = pytest.mark.skipif(BINARY is None, reason="Ardour is not installed "
                                "(apt-get install ardour): no ardour*-lua interpreter")

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "ardour" / "driver.lua"
RATE = 44100
BAND = dict(position=2.0, start=1.0, length=4.0)   # seconds: a region with offset and trim
VOICE = dict(position=1.0, start=0.5, length=3.0)


@pytest.fixture(scope="module")
def engine(test_models_dir, tmp_path_factory):
    """A real server; `submit` finds it through the discovery file."""
    base = tmp_path_factory.mktemp("ardour-engine")
    env = dict(os.environ, STEMBRIDGE_RUNTIME_DIR=str(base / "run"),
               STEMBRIDGE_MODELS_DIR=str(test_models_dir))
    log = open(base / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                             "--precision", "fp32", "--output-root", str(base / "jobs"),
                             "--models-dir", str(test_models_dir)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while not (base / "run" / "server.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (base / "server.log").read_text()
        time.sleep(0.05)
    yield {"env": {k: env[k] for k in ("STEMBRIDGE_RUNTIME_DIR", "STEMBRIDGE_MODELS_DIR")},
           "jobs": base / "jobs", "log": base / "server.log"}
    proc.terminate()
    proc.wait(10)
    log.close()
    # A `submit` that found this server too busy to answer (a loaded machine) starts its
    # own (`serve --detach`, same runtime folder): stop those too, by their records.
    for record in (base / "run").glob("servers/*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
            pid = int(json.loads(record.read_text())["pid"])
            if pid > 1 and pid not in (os.getpid(), proc.pid):
                os.kill(pid, signal.SIGTERM)


def _songs(folder: Path) -> tuple[Path, Path]:
    """The stempeg excerpt's mixture (44.1 kHz stereo) and a 48 kHz mono song."""
    stempeg = pytest.importorskip("stempeg")
    stems, rate = stempeg.read_stems(stempeg.example_stem_path())
    mix = stems[1:].astype(np.float32).sum(0)  # the mixture is the sum of its stems
    song = folder / "excerpt.wav"
    sf.write(song, mix, rate, subtype="FLOAT")
    mono = folder / "voice48.wav"
    sf.write(mono, music_like(5.0, 48000, channels=1, seed=3)[0], 48000, subtype="FLOAT")
    return song, mono


def _run(tmp: Path, scenario: str, engine_cmd: str, engine_env: dict[str, str]) -> dict:
    binary = BINARY
    assert binary is not None
    folder = tmp / "songs"
    installed = tmp / "ardour-scripts"
    assert cli_main(["install-daw", "ardour", "--dir", str(installed)]) == 0
    # The scripts run from where `stembridge install-daw` put them.
    env = ardour.lua_env(engine_env, installed / "stembridge", engine_cmd)
    env["SB_INSTALLED"] = str(installed)
    ardour.create(binary, folder, "songs", RATE, [("Band", 2), ("Voice", 1)], env)
    song, mono = _songs(tmp)
    ardour.add_regions(folder, "songs", [
        ardour.Placed("Band", song, 2, 44100, **BAND, gain=0.5),
        ardour.Placed("Voice", mono, 1, 48000, **VOICE)])
    result = tmp / f"result-{scenario}.json"
    env.update(SB_SESSION_DIR=str(folder), SB_SESSION_NAME="songs", SB_SCENARIO=scenario,
               SB_RESULT=str(result))
    t0 = time.monotonic()
    ardour.run_lua(binary, DRIVER, env)
    out = json.loads(result.read_text())
    out["wall_s"] = time.monotonic() - t0
    out["session"] = folder / "songs.ardour"
    out["song"], out["mono"] = song, mono
    return out


@pytest.fixture(scope="module")
def main_run(engine, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ardour-main"), "main", sys.executable, engine["env"])


@pytest.fixture(scope="module")
def errors_run(engine, tmp_path_factory):
    return _run(tmp_path_factory.mktemp("ardour-errors"), "errors",
                "/nonexistent/stembridge", engine["env"])


def _jobs(run: dict, names: list[str], track: str) -> list[dict]:
    """The run's job records of the source track `track` with these stems."""
    routes = {r["name"]: r for r in run["routes"]}
    return [j for j in run["jobs"] if j["names"] == names and j["name"] in
            ("excerpt" if track == "Band" else "voice48",) and routes[track]]


def test_stem_tracks_are_made_named_coloured_and_grouped_under_the_source(main_run):
    routes = sorted(main_run["routes"], key=lambda r: r["order"])
    visible = [r for r in routes if r["active"]]
    names = [r["name"] for r in visible]
    band = names.index("Band")
    # The stem tracks sit directly under the source track, in one route group.
    assert names[band + 1:band + 3] == ["excerpt vocals", "excerpt instrumental"]
    groups = {r.get("group") for r in visible[band + 1:band + 3]}
    assert groups == {"excerpt stems"}
    assert len({r["color"] for r in visible[band + 1:band + 3]}) == 2
    # The mono region got mono stem tracks; its cancelled second split got a group of
    # its own ("voice48 stems 2"), so retiring those tracks left these alone.
    voice_stems = [r for r in routes if r.get("group") == "voice48 stems" and r["active"]]
    assert len(voice_stems) == 2 and all(r["inputs"] == 1 for r in voice_stems)
    # The saved session file holds them: Ardour wrote what the script made.
    tree = ET.parse(main_run["session"])
    saved = {r.get("name") for r in tree.getroot().iter("Route")}
    assert {"excerpt vocals", "excerpt instrumental", "voice48 vocals"} <= saved
    assert any(g.get("name") == "excerpt stems" for g in tree.getroot().iter("RouteGroup"))


def _check_pieces_sum_to_source(job: dict, source: Path, src: dict, file_rate: int) -> None:
    """Every placed piece sits where the source plays that audio, and its stems add up."""
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    assert rate == file_rate
    ratio = RATE / file_rate
    checked = 0
    for entry in job["placed"]:
        pieces = entry["pieces"]
        if not pieces:
            assert entry["end"] * ratio <= src["start"] or entry["start"] * ratio >= \
                src["start"] + src["length"]
            continue
        geoms = {(p["position"], p["start"], p["length"]) for p in pieces.values()}
        assert len(geoms) == 1
        position, start, length = geoms.pop()
        lo = round(entry["start"] * ratio) + start  # session samples into the source file
        assert position == src["position"] + lo - src["start"]
        assert src["start"] <= lo and lo + length <= src["start"] + src["length"]
        total = sum(sf.read(p["file"], dtype="float32", always_2d=True)[0] for p in pieces.values())
        assert total.shape[0] == entry["end"] - entry["start"]
        if file_rate == RATE:  # frames are session samples: compare them one by one
            ref = audio[entry["start"] + start:entry["start"] + start + length]
            np.testing.assert_allclose(total[start:start + length], ref, atol=1e-3)
        checked += 1
    assert checked > 0


def test_spleeter_pieces_line_up_with_the_region_and_add_up_to_the_song(main_run):
    (job,) = [j for j in main_run["jobs"] if j["name"] == "excerpt" and j["stems"] == 2]
    assert job["state"] == "done", job
    src = job["src"]
    assert src == {"position": 2 * RATE, "start": 1 * RATE, "length": 4 * RATE}
    assert job["gain"] == pytest.approx(0.5)
    # The playhead (4.0 s) was 2.0 s into the region: 3.0 s into the file.
    assert job["start_at"] == pytest.approx(3.0)
    _check_pieces_sum_to_source(job, main_run["song"], src, 44100)
    # At the end one region per stem over the whole span, from the final stem files,
    # which add up to the song where the region plays it.
    audio, _ = sf.read(main_run["song"], dtype="float32", always_2d=True)
    total = 0
    for stem in job["names"]:
        final = job["final"][stem]
        assert (final["position"], final["start"], final["length"]) == \
            (src["position"], src["start"], src["length"])
        total = total + sf.read(final["file"], dtype="float32", always_2d=True)[0]
    s, n = src["start"], src["length"]
    np.testing.assert_allclose(total[s:s + n], audio[s:s + n], atol=1e-3)


def test_regions_appear_while_the_engine_works_and_timings(main_run, capsys):
    for job in main_run["jobs"]:
        if job["state"] != "done":
            continue
        ev = job["events"]
        assert ev["tracks"] <= ev["first_region"] < ev["done"]
        assert min(e["at"] for e in job["placed"] if e["pieces"]) < ev["done"]
        with capsys.disabled():
            print(f"\nardour {job['name']} {len(job['names'])} stems: tracks "
                  f"{ev['tracks']:.2f} s, first region {ev['first_region']:.2f} s, done "
                  f"{ev['done']:.2f} s ({len(job['placed'])} regions); session run "
                  f"{main_run['wall_s']:.1f} s")


def test_the_48k_mono_region(main_run):
    (mono,) = [j for j in main_run["jobs"] if j["name"] == "voice48" and j["stems"] == 2]
    assert mono["state"] == "done" and mono["channels"] == 1
    assert mono["src"] == {"position": 1 * RATE, "start": RATE // 2, "length": 3 * RATE}
    _check_pieces_sum_to_source(mono, main_run["mono"], mono["src"], 48000)


def test_cancel_mid_job_stops_the_engine_and_retires_the_tracks(main_run, engine):
    (run,) = [r for r in main_run["runs"] if r["what"] == "cancel"]
    assert run["cancelled"] == 1
    (job,) = [j for j in main_run["jobs"] if j["id"] == run["job_id"]]
    assert job["state"] == "cancelled"
    ids = set(job["tracks"].values())
    assert len(ids) == 4
    cancelled = [r for r in main_run["routes"] if r.get("group") == "voice48 stems 2"]
    assert len(cancelled) == 4 and not any(r["active"] for r in cancelled)
    manifest = json.loads((Path(job["folder"]) / "manifest.json").read_text())
    deadline = time.monotonic() + 30
    while manifest["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        manifest = json.loads((Path(job["folder"]) / "manifest.json").read_text())
    assert manifest["state"] in ("cancelled", "done")
    tree = ET.parse(main_run["session"])
    for route in tree.getroot().iter("Route"):
        if route.get("id") in ids:
            assert route.get("active") == "0"


def test_errors_say_what_to_do_and_make_no_tracks(errors_run):
    runs = {r["what"]: r for r in errors_run["runs"]}
    msgs = errors_run["messages"]
    assert runs["nothing"]["started"] == 0 and "Select one or more audio regions" in msgs[0]
    assert runs["engine_missing"]["started"] == 0
    assert any("did not start" in m and "STEMBRIDGE_ENGINE" in m for m in msgs)
    assert runs["file_missing"]["started"] == 0
    assert any("cannot be read" in m for m in msgs)
    assert sorted(r["name"] for r in errors_run["routes"]) == ["Band", "Master", "Voice"]


def test_installed_scripts_are_what_ardour_expects(errors_run):
    scripts = errors_run["scripts"]
    assert set(scripts) == {"stembridge_split_4.lua", "stembridge_split_2.lua",
                            "stembridge_cancel.lua", "stembridge_follow.lua"}
    assert scripts["stembridge_split_4.lua"]["name"] == \
        "stembridge: Split selected regions to stems (vocals, drums, bass, other)"
    assert scripts["stembridge_split_2.lua"]["name"] == \
        "stembridge: Split selected regions to vocals and instrumental"
    assert scripts["stembridge_cancel.lua"]["name"] == "stembridge: Cancel running splits"
    for name, s in scripts.items():
        assert s["factory"] == "function"
        assert s["type"] == ("EditorHook" if name == "stembridge_follow.lua" else "EditorAction")
    assert scripts["stembridge_follow.lua"]["signals"] == "function"

