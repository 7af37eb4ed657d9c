"""The REAPER action scripts, run in real Lua 5.4 (lupa) against the REAPER simulation,
talking to a real `stembridge serve` (tiny random-weight demucs models and the real
Spleeter weights) through `stembridge submit --request` and the job manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lupa")
sf = pytest.importorskip("soundfile")

from tests.conftest import music_like  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEMS_DIR = ROOT / "clients" / "reaper" / "Stems"
SPLIT4 = STEMS_DIR / "stembridge_Split selected items to stems (vocals, drums, bass, other).lua"
SPLIT2 = STEMS_DIR / "stembridge_Split selected items to vocals and instrumental.lua"
SPLIT6 = STEMS_DIR / "stembridge_Split selected items to 6 stems.lua"
CANCEL = STEMS_DIR / "stembridge_Cancel running splits.lua"
SETTINGS = STEMS_DIR / "stembridge_Settings.lua"
SR = 44100


@pytest.fixture(scope="module")
def engine(test_models_dir, tmp_path_factory):
    """A real server on a free port; the scripts' `submit` processes find it through the
    discovery file in STEMBRIDGE_RUNTIME_DIR."""
    base = tmp_path_factory.mktemp("reaper-engine")
    old = {k: os.environ.get(k) for k in ("STEMBRIDGE_RUNTIME_DIR", "STEMBRIDGE_MODELS_DIR")}
    os.environ["STEMBRIDGE_RUNTIME_DIR"] = str(base / "run")
    os.environ["STEMBRIDGE_MODELS_DIR"] = str(test_models_dir)
    log = open(base / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                             "--precision", "fp32", "--output-root", str(base / "jobs"),
                             "--models-dir", str(test_models_dir)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    discovery = base / "run" / "server.json"
    while not discovery.exists():
        assert proc.poll() is None and time.monotonic() < deadline, \
            (base / "server.log").read_text()
        time.sleep(0.05)
    yield {"proc": proc, "jobs": base / "jobs", "log": base / "server.log"}
    proc.terminate()
    proc.wait(10)
    log.close()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def reaper(engine, tmp_path):
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = sys.executable
    sim.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    yield sim
    sim.terminate()
    for _argv, proc in sim.processes:
        proc.wait(30)


def _song(path: Path, seconds: float, seed: int = 0) -> Path:
    sf.write(path, music_like(seconds, SR, seed=seed).T, SR, subtype="FLOAT")
    return path


def _idle(sim: ReaperSim) -> bool:
    """Nothing left to follow: the monitor loop ended."""
    return not sim.deferred


def _manifests(engine) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(engine["jobs"].glob("*/manifest.json"))]


def test_split_places_aligned_stems_that_fill_in_before_the_job_is_done(reaper, engine,
                                                                         tmp_path):
    song = _song(tmp_path / "song.wav", 24.0)
    before = song.read_bytes()
    src_track = reaper.new_track("Band", depth=0)
    after_track = reaper.new_track("After")
    item = reaper.new_item(src_track, song, position=10.0, length=15.5, startoffs=3.25,
                           name="My Song")
    reaper.project.cursor = 22.0  # the edit cursor is on the item: 15.25 s into the file

    reaper.run_script(SPLIT4)
    tracks = reaper.tracks()
    # At once: the folder and its stems, directly under the source track, in order.
    assert [t.name for t in tracks] == ["Band", "My Song (stems)", "vocals", "drums", "bass",
                                        "other", "After"]
    assert [t.folder_depth for t in tracks] == [0, 1, 0, 0, 0, -1, 0]
    assert len({t.color for t in tracks[2:6]}) == 4 and all(t.color & 0x1000000
                                                           for t in tracks[2:6])
    assert reaper.undo_points == ["stembridge: split 1 item(s) to stems"]
    assert item.values["B_MUTE"] == 1.0
    for t in tracks[2:6]:  # a "separating..." item covers the whole source item
        (gap,) = t.items
        assert gap.takes == [] and gap.values["D_POSITION"] == 10.0
        assert gap.values["D_LENGTH"] == 15.5

    # Regions become audible while the job still runs.
    def audible_part() -> bool:
        ms = _manifests(engine)
        return bool(ms) and ms[-1]["state"] == "running" and any(
            it.takes for it in tracks[2].items)

    assert reaper.run_until(audible_part, timeout=60), "no region was placed while running"
    manifest = _manifests(engine)[-1]
    first = manifest["regions"][0]
    start_s = first["start"] / SR
    # The first region is the one under the edit cursor (start_at = 15.25 s of the file).
    assert first["start"] / SR <= 15.25 < first["end"] / SR
    region_item = next(it for it in tracks[2].items if it.takes)
    t0 = region_item.values["D_POSITION"]
    t1 = t0 + region_item.values["D_LENGTH"]
    assert t0 == pytest.approx(max(10.0, 10.0 + start_s - 3.25))
    played = reaper.render(tracks[2], t0, t1)
    region_audio, _ = sf.read(engine["jobs"] / manifest["job"] / first["files"]["vocals"],
                              always_2d=True)
    a = int(round((3.25 + (t0 - 10.0)) * SR)) - first["start"]
    np.testing.assert_allclose(played, region_audio[a:a + played.shape[1]].T, atol=1e-6)

    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    assert not reaper.messages, reaper.messages
    # At the end: one item per stem with the source item's geometry, on one file per stem.
    out = tmp_path / "out" / "My Song stems"
    for t in tracks[2:6]:
        (final,) = t.items
        take = final.active
        assert (final.values["D_POSITION"], final.values["D_LENGTH"]) == (10.0, 15.5)
        assert take.values["D_STARTOFFS"] == 3.25 and take.values["D_PLAYRATE"] == 1.0
        assert take.source.filename == str(out / f"{t.name}.wav")
        assert take.source.peaks_state == 2
        stem, _ = sf.read(out / f"{t.name}.wav", always_2d=True)
        assert stem.shape[0] == 24 * SR
        played = reaper.render(t, 10.0, 25.5)
        np.testing.assert_allclose(played, stem[int(3.25 * SR):int(3.25 * SR) + played.shape[1]].T,
                                   atol=1e-6)
    assert song.read_bytes() == before, "the user's file was modified"
    assert reaper.undo_points == ["stembridge: split 1 item(s) to stems"]
    assert reaper.project.ext.get("STEMBRIDGE", {}) == {}, "finished jobs are forgotten"
    # One undo removes it all.
    reaper.undo()
    assert [t.name for t in reaper.tracks()] == ["Band", "After"]
    assert reaper.tracks()[0].items[0].values["B_MUTE"] == 0.0
