"""The REAPER action scripts, run in real Lua 5.4 (lupa) against the REAPER simulation,
talking to a real `stembridge serve` (tiny random-weight demucs models and the real
Spleeter weights) through `stembridge submit --request` and the job manifests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lupa")
sf = pytest.importorskip("soundfile")

from protocol.errors import ErrorCode, hint  # noqa: E402
from tests.clients.reaper_helpers import scripted_reaper  # noqa: E402
from tests.clients.reaper_helpers import song as _song  # noqa: E402
from tests.conftest import music_like  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
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
    yield from scripted_reaper(tmp_path, wait_s=30)


def _idle(sim: ReaperSim) -> bool:
    """Nothing left to follow: no unfinished job saved in a project, and the monitor has
    no job or peaks left (it may go on watching for undo), or its loop ended."""
    jobs = [k for p in sim.projects for k in p.ext.get("STEMBRIDGE", {}) if k.startswith("JOB:")]
    return not jobs and (not sim.deferred or sim.ext_state.get(("stembridge", "busy")) == "0")


def _saved_jobs(sim: ReaperSim) -> dict[str, dict]:
    """The unfinished jobs saved in the active project."""
    return {k: json.loads(v) for k, v in sim.project.ext.get("STEMBRIDGE", {}).items()
            if k.startswith("JOB:")}


def _outside(sim: ReaperSim, tracks, pos: float, end: float) -> list[tuple[float, float]]:
    """Spans of the items on `tracks` that reach outside [pos, end] (project seconds)."""
    return [(it.values["D_POSITION"], it.values["D_POSITION"] + it.values["D_LENGTH"])
            for t in tracks for it in t.items
            if it.values["D_POSITION"] < pos - 1e-9
            or it.values["D_POSITION"] + it.values["D_LENGTH"] > end + 1e-9
            or it.values["D_LENGTH"] <= 0]


def _manifests(engine) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(engine["jobs"].glob("*/manifest.json"))]


def test_split_places_aligned_stems_that_fill_in_before_the_job_is_done(reaper, engine,
                                                                         tmp_path):
    song = _song(tmp_path / "song.wav", 24.0)
    before = song.read_bytes()
    src_track = reaper.new_track("Band", depth=0)
    reaper.new_track("After")
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
    # Nothing a split adds lies outside the source item (regions past its end included).
    assert not _outside(reaper, tracks[2:6], 10.0, 25.5)
    # The "separating..." items say how far the job is (no undo point for that).
    notes = [it.strings.get("P_NOTES", "") for t in tracks[2:6] for it in t.items
             if not it.takes]
    assert notes and all(re.fullmatch(r"stembridge: separating\.\.\. \d+ %( - \d+:\d\d left)?",
                                      n) for n in notes), notes
    manifest = _manifests(engine)[-1]
    first = manifest["regions"][0]
    start_s = first["start"] / SR
    # The first region is the one under the edit cursor (start_at = 15.25 s of the file).
    assert first["start"] / SR <= 15.25 < first["end"] / SR
    region_item = next(it for it in tracks[2].items if it.takes)
    reaper.step(3)
    assert region_item.takes[0].source.peaks_state == 2, "peaks are built as regions arrive"
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
    assert reaper.undo_points == ["stembridge: split 1 item(s) to stems",
                                  "stembridge: stems of My Song ready"]
    assert _saved_jobs(reaper) == {}, "finished jobs are forgotten"
    assert not list(out.glob(".stembridge-*")), "the output folder's reservation stays"

    def finals_in_place() -> bool:
        return all(len(t.items) == 1 and t.items[0].active is not None
                   and t.items[0].active.source.filename == str(out / f"{t.name}.wav")
                   for t in reaper.tracks()[2:6])

    # Undoing a later, unrelated edit never touches the stems (no monitor tick needed:
    # the state saved with the stems holds them).
    reaper.user_edit("Add track", lambda: reaper.new_track("Later"))
    assert reaper.undo() == "Add track"
    assert "Later" not in [t.name for t in reaper.tracks()] and finals_in_place()
    # Undo of the final swap: the state before it comes back, and its placeholders are
    # filled with the final stems again at once; the next undo removes it all.
    assert reaper.undo() == "stembridge: stems of My Song ready"
    reaper.step(2)
    assert finals_in_place()
    assert reaper.undo() == "stembridge: split 1 item(s) to stems"
    assert [t.name for t in reaper.tracks()] == ["Band", "After"]
    assert reaper.tracks()[0].items[0].values["B_MUTE"] == 0.0
    # Redo: the split's state (placeholders) is filled again; then the stems' own state.
    assert reaper.redo() == "stembridge: split 1 item(s) to stems"
    reaper.step(2)
    assert finals_in_place()
    assert reaper.redo() == "stembridge: stems of My Song ready" and finals_in_place()
    assert not reaper.messages, reaper.messages


def test_section_playrate_folders_and_two_items_at_once(reaper, engine, tmp_path):
    """A section source (the item plays part of its parent file) at playrate 1.5, and a
    second item on a track that closes a folder: stems align with what each item plays;
    the closing track keeps closing its folder; results do not mix."""
    a = _song(tmp_path / "a.wav", 12.0, seed=1)
    b = _song(tmp_path / "b.wav", 8.0, seed=2)
    reaper.new_track("Folder", depth=1)
    t_a = reaper.new_track("A", depth=0)
    t_b = reaper.new_track("B (closes the folder)", depth=-1)
    sec = reaper.new_item(t_a, a, position=2.0, length=4.0, startoffs=0.5, playrate=1.5,
                          section=(3.0, 8.0, False), name="Sec")
    sec.values.update(D_FADEINLEN=0.25, D_FADEOUTLEN=0.5, D_VOL=0.5, C_FADEINSHAPE=2.0)
    sec.takes[0].values.update(D_PITCH=-2.0, B_PPITCH=1.0, D_PAN=0.25, I_CHANMODE=3.0)
    reaper.new_item(t_b, b, position=0.0, length=8.0, name="Bee")
    reaper.ext_state[("stembridge", "mute_original")] = "0"

    reaper.run_script(SPLIT2)
    names = [t.name for t in reaper.tracks()]
    assert names == ["Folder", "A", "Sec (stems)", "vocals", "instrumental",
                     "B (closes the folder)", "Bee (stems)", "vocals", "instrumental"]
    assert [t.folder_depth for t in reaper.tracks()] == [1, 0, 1, 0, -1, -1, 1, 0, -1]
    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    assert not reaper.messages, reaper.messages
    tracks = reaper.tracks()
    assert all(it.values["B_MUTE"] == 0.0 for t in (t_a, t_b) for it in t.items)
    # Section: the stems play the parent file's stems from 3.0 + 0.5 s, at 1.5x.
    for t in tracks[3:5]:
        (item,) = t.items
        take = item.active
        assert take.values["D_STARTOFFS"] == pytest.approx(3.5)
        assert take.values["D_PLAYRATE"] == 1.5
        # fades, volume, pitch, pan and channel mode as on the source item
        assert {k: item.values[k] for k in ("D_FADEINLEN", "D_FADEOUTLEN", "D_VOL",
                                            "C_FADEINSHAPE")} == \
            {"D_FADEINLEN": 0.25, "D_FADEOUTLEN": 0.5, "D_VOL": 0.5, "C_FADEINSHAPE": 2.0}
        assert {k: take.values[k] for k in ("D_PITCH", "B_PPITCH", "D_PAN", "I_CHANMODE")} == \
            {"D_PITCH": -2.0, "B_PPITCH": 1.0, "D_PAN": 0.25, "I_CHANMODE": 3.0}
        assert take.source.filename.endswith(f"Sec stems/{t.name}.wav")
    # vocals + instrumental of the Spleeter model add up to what the item plays.
    mix = reaper.render(tracks[3], 2.0, 6.0) + reaper.render(tracks[4], 2.0, 6.0)
    np.testing.assert_allclose(mix, reaper.render(t_a, 2.0, 6.0), atol=1e-4)
    mix_b = reaper.render(tracks[7], 0.0, 8.0) + reaper.render(tracks[8], 0.0, 8.0)
    np.testing.assert_allclose(mix_b, reaper.render(t_b, 0.0, 8.0), atol=1e-4)
    assert not np.allclose(mix[:, :1000], mix_b[:, :1000])


def test_same_item_twice_and_resplit_from_the_cache(reaper, engine, tmp_path):
    song = _song(tmp_path / "twice.wav", 6.0, seed=3)
    track = reaper.new_track("T")
    reaper.new_item(track, song, position=1.0, length=6.0, name="Twice")
    reaper.run_script(SPLIT2)
    assert reaper.action_options == 3
    reaper.run_script(SPLIT2)  # a relaunch while it runs: REAPER restarts the script,
    reaper.run_script(SPLIT4)  # which follows the saved job; another stem set is a job
    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    assert not reaper.messages, reaper.messages
    assert len([t for t in reaper.tracks() if t.name == "Twice (stems)"]) == 2
    assert any("being split into 2 stems already" in c for c in reaper.console)
    files = sorted(it.active.source.filename for t in reaper.tracks()
                   if t.name == "vocals" for it in t.items)
    assert len(files) == 2 and files[0] != files[1], "each split has its own files"
    # Again, once the first finished: the engine's cache answers, into a new folder.
    reaper.run_script(SPLIT2)
    assert reaper.run_until(lambda: _idle(reaper), timeout=60)
    last = _manifests(engine)
    hits = [m for m in last if m["source"] == str(song) and m["metadata"]["cache_hit"]]
    assert hits, "re-splitting the same item did not come from the cache"
    assert len([t for t in reaper.tracks() if t.name == "Twice (stems)"]) == 3
    two = sorted(it.active.source.filename for t in reaper.tracks()
                 if t.name == "instrumental" for it in t.items)
    assert len(set(two)) == 2
    np.testing.assert_array_equal(sf.read(two[0])[0], sf.read(two[1])[0])


def test_two_projects_do_not_mix(reaper, engine, tmp_path):
    from tests.reaper_sim.sim import Project

    one = _song(tmp_path / "one.wav", 5.0, seed=4)
    two = _song(tmp_path / "two.wav", 7.0, seed=5)
    reaper.new_item(reaper.new_track("P1"), one, position=0.0, length=5.0, name="One")
    reaper.run_script(SPLIT2)
    second = Project()
    reaper.projects.append(second)
    reaper.active = 1
    reaper.new_item(reaper.new_track("P2"), two, position=3.0, length=7.0, name="Two")
    reaper.run_script(SPLIT2)
    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    assert not reaper.messages, reaper.messages
    p1, p2 = reaper.projects
    assert [t.name for t in p1.tracks] == ["P1", "One (stems)", "vocals", "instrumental"]
    assert [t.name for t in p2.tracks] == ["P2", "Two (stems)", "vocals", "instrumental"]
    assert "One stems" in p1.tracks[2].items[0].active.source.filename
    assert "Two stems" in p2.tracks[2].items[0].active.source.filename
    assert p2.tracks[2].items[0].values["D_POSITION"] == 3.0
    assert [d for d, _ in p1.undo_points] == ["stembridge: split 1 item(s) to stems",
                                              "stembridge: stems of One ready"]
    assert [d for d, _ in p2.undo_points] == ["stembridge: split 1 item(s) to stems",
                                              "stembridge: stems of Two ready"]


def test_cancel_stops_the_job_and_removes_unfinished_stems(reaper, engine, tmp_path):
    song = _song(tmp_path / "long.wav", 90.0, seed=6)
    reaper.new_item(reaper.new_track("T"), song, position=0.0, length=90.0, name="Long")
    reaper.run_script(SPLIT4)

    def some_region() -> bool:
        return any(it.takes for t in reaper.tracks() for it in t.items if t.name == "vocals")

    assert reaper.run_until(some_region, timeout=60)
    reaper.run_script(CANCEL)  # the running monitor (another script) acts on it
    assert reaper.run_until(lambda: _idle(reaper), timeout=30)
    assert [t.name for t in reaper.tracks()] == ["T"]
    assert reaper.tracks()[0].items[0].values["B_MUTE"] == 0.0
    assert reaper.undo_points[-1] == "stembridge: cancel split"

    def cancelled() -> bool:
        return any(m["state"] == "cancelled" for m in _manifests(engine)
                   if m["source"] == str(song))

    deadline = time.monotonic() + 30
    while not cancelled() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled()
    (job,) = [m.parent for m in engine["jobs"].glob("*/manifest.json")  # job folders only
              if json.loads(m.read_text())["source"] == str(song)]
    leftovers = [p.name for p in job.iterdir() if p.is_file() and p.name != "manifest.json"]
    assert leftovers == [], "a cancelled job left final or temporary stems"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_errors_surface_with_what_to_do(reaper, engine, tmp_path):
    track = reaper.new_track("T")
    # Nothing usable selected: MIDI, empty and reversed items are skipped with a message.
    reaper.new_item(track, None, position=0.0, length=2.0, kind="MIDI")
    reaper.new_item(track, None, position=3.0, length=2.0, kind="EMPTY")
    rev = _song(tmp_path / "rev.wav", 3.0)
    reaper.new_item(track, rev, position=6.0, length=2.0, section=(0.0, 3.0, True))
    reaper.run_script(SPLIT4)
    (msg, title, _kind), = reaper.messages
    assert "Select one or more audio items" in msg
    assert "MIDI" in msg and "empty item" in msg and "reversed" in msg
    assert [t.name for t in reaper.tracks()] == ["T"] and not reaper.undo_points
    reaper.messages.clear()

    # The engine cannot be found.
    for it in track.items:
        it.selected = False
    reaper.new_item(track, rev, position=9.0, length=3.0, name="Rev")
    reaper.ext_state[("stembridge", "engine")] = str(tmp_path / "no" / "stembridge")
    reaper.run_script(SPLIT4)
    assert reaper.run_until(lambda: _idle(reaper), timeout=10)
    (msg, _, _), = reaper.messages
    assert "engine did not start" in msg and "Settings" in msg
    assert [t.name for t in reaper.tracks()] == ["T"], "the failed split's tracks stay"
    reaper.messages.clear()

    # A launched engine that never answers (wrong program): a timeout, not a hang.
    reaper.ext_state[("stembridge", "engine")] = "/bin/true"
    reaper.ext_state[("stembridge", "launch_timeout")] = "1.5"
    reaper.run_script(SPLIT4)
    assert reaper.run_until(lambda: _idle(reaper), timeout=20)
    (msg, _, _), = reaper.messages
    assert "engine did not start" in msg
    reaper.messages.clear()

    # The engine answers with an error: unknown model, and a file it cannot decode.
    reaper.ext_state[("stembridge", "engine")] = sys.executable
    reaper.ext_state[("stembridge", "model")] = "no_such_model"
    reaper.run_script(SPLIT4)
    assert reaper.run_until(lambda: _idle(reaper), timeout=60)
    (msg, _, _), = reaper.messages
    assert "no_such_model" in msg and "stembridge models" in msg
    reaper.messages.clear()
    reaper.ext_state[("stembridge", "model")] = ""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    track.items[-1].selected = False
    reaper.new_item(track, bad, position=20.0, length=3.0, name="Bad")
    reaper.run_script(SPLIT4)
    assert reaper.run_until(lambda: _idle(reaper), timeout=60)
    (msg, _, _), = reaper.messages
    assert "Bad" in msg and "bad.wav" in msg
    assert [t.name for t in reaper.tracks()] == ["T"]


def test_a_stopped_monitor_resumes_its_jobs(reaper, engine, tmp_path):
    """REAPER stops the script mid-job (or restarts): the jobs are saved in the project and
    the next stembridge action follows them to the end, with no duplicate items."""
    song = _song(tmp_path / "resume.wav", 30.0, seed=7)
    item = reaper.new_item(reaper.new_track("T"), song, position=0.0, length=30.0,
                           name="Resume")
    reaper.run_script(SPLIT4)
    assert reaper.run_until(lambda: any(it.takes for it in reaper.tracks()[2].items), 60)
    reaper.terminate()
    assert ("stembridge", "monitor") not in reaper.ext_state
    saved = reaper.project.ext["STEMBRIDGE"]
    assert len(saved) == 1 and json.loads(next(iter(saved.values())))["state"] == "running"
    time.sleep(1.0)
    # REAPER keeps the selection when a project is reopened: the item is still selected,
    # and the saved job for it and its stem set is resumed, not started again.
    assert item.selected
    reaper.run_script(SPLIT4)
    assert not reaper.messages and "being split into 4 stems already" in reaper.console[-1]
    assert len(reaper.tracks()) == 6 and len(_saved_jobs(reaper)) == 1
    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    for t in reaper.tracks()[2:6]:
        (final,) = t.items
        assert final.active.source.filename.endswith(f"Resume stems/{t.name}.wav")
    assert _saved_jobs(reaper) == {}
    assert len([m for m in _manifests(engine) if m["source"] == str(song)]) == 1


def test_the_engine_is_started_when_it_is_not_running(tmp_path, monkeypatch):
    """First try on a fresh machine: no server runs and no model is installed. A 4-stem
    split starts the engine (detached) and says how to install the model; a 2-stem split
    works offline with the embedded default model."""
    import signal

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("STEMBRIDGE_MODELS_DIR", str(tmp_path / "models"))
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = sys.executable
    sim.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    song = _song(tmp_path / "fresh.wav", 4.0, seed=8)
    sim.new_item(sim.new_track("T"), song, position=0.0, length=4.0, name="Fresh")
    try:
        sim.run_script(SPLIT4)
        assert sim.run_until(lambda: _idle(sim), timeout=120), sim.console
        (msg, _, _), = sim.messages
        assert "htdemucs" in msg and "stembridge models fetch" in msg, msg
        # the engine's code (model_not_installed) brings its DAW hint from protocol/
        assert hint(ErrorCode.MODEL_NOT_INSTALLED, "daw") in msg, msg
        assert [t.name for t in sim.tracks()] == ["T"]
        sim.messages.clear()
        sim.run_script(SPLIT2)
        assert sim.run_until(lambda: _idle(sim), timeout=120), sim.console
        assert not sim.messages, sim.messages
        assert sim.tracks()[2].items[0].active.source.filename.endswith("Fresh stems/vocals.wav")
    finally:
        sim.terminate()
        info = tmp_path / "run" / "server.json"
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)


def test_a_monitor_stopped_after_the_swap_does_not_place_regions_again(reaper, engine,
                                                                        tmp_path):
    song = _song(tmp_path / "swap.wav", 6.0, seed=9)
    item = reaper.new_item(reaper.new_track("T"), song, position=0.0, length=6.0,
                           name="Swap")
    reaper.run_script(SPLIT2)

    def swapped() -> bool:
        saved = reaper.project.ext.get("STEMBRIDGE", {})
        return any(json.loads(v)["state"] == "swapped" for v in saved.values())

    assert reaper.run_until(swapped, timeout=60, tick=0.0)
    reaper.terminate()  # stopped between the swap and the clean-up
    time.sleep(1.0)
    item.selected = False
    reaper.run_script(SPLIT2)
    assert reaper.run_until(lambda: _idle(reaper), timeout=30)
    for t in reaper.tracks()[2:4]:
        (final,) = t.items
        assert final.active.source.filename.endswith(f"Swap stems/{t.name}.wav")
    assert _saved_jobs(reaper) == {}


def test_a_failed_call_or_a_bad_record_ends_only_its_own_job(reaper, engine, tmp_path):
    """REAPER cannot open one job's stem files, and the project holds a saved record that
    makes no sense: each of those jobs ends with a message saying what to do; the other
    job completes; nothing of them is left to crash a resume."""
    t = reaper.new_track("T")
    reaper.new_item(t, _song(tmp_path / "alpha.wav", 3.0, seed=10), position=0.0,
                    length=3.0, name="Alpha")
    reaper.new_item(t, _song(tmp_path / "beta.wav", 3.0, seed=11), position=5.0,
                    length=3.0, name="Beta")
    reaper.unopenable.add("Alpha stems")  # the final files (a full disk, a bad folder...)
    reaper.project.ext.setdefault("STEMBRIDGE", {})["JOB:00000000000000FF"] = json.dumps(
        {"id": "00000000000000ff", "state": "running", "names": 5, "tracks": {},
         "name": "Broken", "manifest": str(tmp_path / "nothing.json")})
    reaper.run_script(SPLIT2)
    assert reaper.run_until(lambda: _idle(reaper), timeout=120), reaper.console
    text = "\n".join(m for m, _, _ in reaper.messages)
    assert "Broken: stembridge stopped following this split" in text, text
    assert "Alpha: Cannot write the stem items: REAPER cannot open" in text, text
    assert "Choose another output folder in stembridge: Settings" in text, text
    names = [tr.name for tr in reaper.tracks()]
    assert names == ["T", "Beta (stems)", "vocals", "instrumental"], names
    for tr in reaper.tracks()[2:4]:
        (final,) = tr.items
        assert final.active.source.filename.endswith(f"Beta stems/{tr.name}.wav")
    assert _saved_jobs(reaper) == {}
    reaper.messages.clear()
    for it in t.items:
        it.selected = False
    reaper.run_script(SPLIT2)  # a resume finds nothing left to follow, and nothing fails
    reaper.step(3)
    assert [m for m, _, _ in reaper.messages] == [
        "Select one or more audio items to split into stems."]


def test_a_shell_and_a_resource_path_with_dollars_and_progress_to_the_end(reaper, engine,
                                                                           tmp_path):
    """ExecProcess through /bin/sh, REAPER's resource folder named with $, a backquote
    and a backslash: the split still reaches the engine. The item shows part of the file
    (the regions past its end add nothing outside it). A clipped input's warning is shown
    once, in a message, when the stems are ready."""
    reaper.exec_shell = True
    reaper.resource_path = str(tmp_path / "res $HOME `echo x` \\ dir")
    reaper.ext_state[("stembridge", "launch_timeout")] = "10"
    audio = music_like(4.0, SR, seed=12)
    audio[:, :200] = 1.0  # clipped
    song = tmp_path / "clipped.wav"
    sf.write(song, audio.T, SR, subtype="FLOAT")
    reaper.new_item(reaper.new_track("T"), song, position=2.0, length=1.5, startoffs=0.5,
                    name="Clip")
    reaper.run_script(SPLIT2)
    outside = []

    def done() -> bool:
        outside.extend(_outside(reaper, reaper.tracks()[2:4], 2.0, 3.5))
        return _idle(reaper)

    assert reaper.run_until(done, timeout=120), reaper.console
    assert not outside, outside
    (argv, _proc), *_ = reaper.processes
    assert argv[:2] == ["/bin/sh", "-c"]
    (msg, _, _), = reaper.messages
    assert "Clip: the stems are in" in msg and "clipped" in msg, msg
    for tr in reaper.tracks()[2:4]:
        (final,) = tr.items
        assert final.active.source.filename.endswith(f"Clip stems/{tr.name}.wav")


STATUS = STEMS_DIR / "stembridge_Show split status.lua"


def test_the_status_window_lists_running_splits_and_cancels_one(reaper, engine, tmp_path):
    """Two running splits in the status window, with progress, model and device; the
    Cancel button of one cancels that job only (the engine stops it); closing the window
    leaves the other running."""
    songs = {name: _song(tmp_path / f"{name}.wav", 90.0, seed=seed)
             for name, seed in (("Alpha", 7), ("Beta", 8))}
    reaper.ext_state[("stembridge", "device")] = "cpu"
    for name, song in songs.items():
        reaper.new_item(reaper.new_track("T" + name), song, position=0.0, length=90.0,
                        name=name)
    reaper.run_script(SPLIT4)
    reaper.run_script(STATUS)
    window = reaper.windows[str(STATUS)]

    def row(name: str) -> str | None:
        return next((t for t in window.strings() if t.startswith(name + ": ")), None)

    def progressing(name: str) -> bool:
        return bool(re.fullmatch(rf"{name}: \d+ %( - \d+:\d\d left)?", row(name) or ""))

    def both_listed() -> bool:
        return (progressing("Alpha") or progressing("Beta")) and bool(row("Alpha")) \
            and bool(row("Beta"))

    assert reaper.run_until(both_listed, timeout=90), window.strings()
    first = "Alpha" if progressing("Alpha") else "Beta"
    other = "Beta" if first == "Alpha" else "Alpha"
    manifest = {m["source"]: m for m in _manifests(engine)}[str(songs[first])]
    model = manifest["request"].get("model") or "default"
    assert window.strings().count(f"4 stems - model {model} - device cpu") == 2

    window.click(*_button(window, first))

    def first_cancelled() -> bool:
        return row(first) is None and any(
            m["state"] == "cancelled" for m in _manifests(engine)
            if m["source"] == str(songs[first]))

    assert reaper.run_until(first_cancelled, timeout=30), (window.strings(), reaper.console)
    names = [t.name for t in reaper.tracks()]
    assert f"{first} (stems)" not in names and f"{other} (stems)" in names
    assert [m["state"] for m in _manifests(engine) if m["source"] == str(songs[other])] \
        != ["cancelled"]
    assert reaper.run_until(lambda: progressing(other), timeout=60), window.strings()

    window.close()  # the user closes the window: the other split goes on
    reaper.step(3)
    assert not window.is_open and all(owner != str(STATUS) for owner, _ in reaper.deferred)
    assert [r["name"] for r in _saved_jobs(reaper).values()] == [other]
    assert f"{other} (stems)" in [t.name for t in reaper.tracks()]
    regions = len(next(m for m in _manifests(engine) if m["source"] == str(songs[other]))
                  ["regions"])
    assert reaper.run_until(lambda: len(next(
        m for m in _manifests(engine) if m["source"] == str(songs[other]))["regions"])
        > regions or _idle(reaper), timeout=60)
    reaper.run_script(CANCEL)  # (the rest of the test would only cost time)
    assert reaper.run_until(lambda: _idle(reaper), timeout=30)


def _button(window, name: str) -> tuple[float, float]:
    """The middle of the Cancel button on the row of job `name` in the status window."""
    (line,) = [d for d in window.canvas if d.kind == "str" and d.text.startswith(name + ":")]
    (rect,) = [d for d in window.canvas if d.kind == "rect" and not d.filled
               and d.y == line.y]
    return rect.x + rect.w / 2, rect.y + rect.h / 2
