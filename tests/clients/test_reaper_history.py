"""Undo and redo around a split, in the REAPER simulation's undo (saved project states, as
REAPER keeps them): an undo never brings back stem tracks that nothing will fill. These
need no engine: the split fails at once (no engine at the path given), or waits on a
program that never answers (/bin/true) until it is cancelled."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lupa")
sf = pytest.importorskip("soundfile")

from tests.conftest import music_like  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

STEMS_DIR = Path(__file__).resolve().parents[2] / "clients" / "reaper" / "Stems"
SPLIT2 = STEMS_DIR / "stembridge_Split selected items to vocals and instrumental.lua"
CANCEL = STEMS_DIR / "stembridge_Cancel running splits.lua"


@pytest.fixture
def sim(tmp_path):
    s = ReaperSim(resource_path=tmp_path / "res")
    s.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    song = tmp_path / "song.wav"
    sf.write(song, music_like(2.0, 44100).T, 44100, subtype="FLOAT")
    s.item = s.new_item(s.new_track("T"), song, position=1.0, length=2.0, name="Song")
    yield s
    s.terminate()
    for _argv, proc in s.processes:
        proc.wait(10)


def _names(sim: ReaperSim) -> list[str]:
    return [t.name for t in sim.tracks()]


def _notes(sim: ReaperSim) -> list[str]:
    return [it.strings.get("P_NOTES", "") for t in sim.tracks()[1:] for it in t.items]


def test_undo_after_a_failure_brings_back_only_tracks_marked_dead(sim, tmp_path):
    sim.ext_state[("stembridge", "engine")] = str(tmp_path / "no" / "stembridge")
    sim.run_script(SPLIT2)
    (msg, _, _), = sim.messages
    assert "engine did not start" in msg
    assert _names(sim) == ["T"] and sim.item.values["B_MUTE"] == 0.0
    assert sim.undo_points[-1] == "stembridge: remove unfinished stems"
    # Ctrl+Z: REAPER loads the state saved with the split, placeholders and all.
    assert sim.undo() == "stembridge: remove unfinished stems"
    assert _names(sim) == ["T", "Song (stems)", "vocals", "instrumental"]
    sim.step(2)
    assert _names(sim) == ["T", "Song (stems) (failed split)", "vocals (failed split)",
                           "instrumental (failed split)"]
    notes = _notes(sim)
    assert notes and all("failed; nothing will fill these tracks" in n for n in notes), notes
    assert sim.tracks()[0].items[0].values["B_MUTE"] == 0.0, "the original plays again"
    assert len(sim.messages) == 1, "the failure is shown once"
    # Redo removes them again; a second undo goes back to before the split.
    assert sim.redo() == "stembridge: remove unfinished stems" and _names(sim) == ["T"]
    sim.undo()
    assert sim.undo() == "stembridge: split 1 item(s) to stems" and _names(sim) == ["T"]


def test_undo_after_a_cancel_and_right_after_a_split(sim):
    sim.ext_state[("stembridge", "engine")] = "/bin/true"  # runs, never answers
    sim.run_script(SPLIT2)
    assert _names(sim) == ["T", "Song (stems)", "vocals", "instrumental"]
    sim.step(2)
    sim.run_script(CANCEL)  # the monitor (the split's script) acts on it
    sim.step(2)
    assert _names(sim) == ["T"] and sim.undo_points[-1] == "stembridge: cancel split"
    assert sim.undo() == "stembridge: cancel split"
    sim.step(2)
    assert _names(sim)[1:] == ["Song (stems) (cancelled split)", "vocals (cancelled split)",
                               "instrumental (cancelled split)"]
    assert all("cancelled; nothing will fill" in n for n in _notes(sim))
    sim.undo()  # before the split
    assert _names(sim) == ["T"]

    # One undo right after a split takes it away; its job is cancelled; a redo brings
    # back tracks marked as cancelled, never live-looking placeholders.
    sim.run_script(SPLIT2)
    sim.step(2)
    assert len(sim.tracks()) == 4
    assert sim.undo() == "stembridge: split 1 item(s) to stems" and _names(sim) == ["T"]
    assert sim.run_until(lambda: any("are gone: cancelling its split" in c
                                     for c in sim.console), timeout=5)
    assert sim.redo() == "stembridge: split 1 item(s) to stems"
    sim.step(2)
    assert all(n.endswith("(cancelled split)") for n in _names(sim)[1:]), _names(sim)
    assert not any("separating" in n for n in _notes(sim))
    assert not sim.messages, sim.messages
