"""The REAPER mastering actions in the REAPER simulation, with the real engine CLI: a new
take per item (the original stays), one undo point, the analysis shown, cancel, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lupa")

from tests.clients.reaper_helpers import scripted_reaper  # noqa: E402
from tests.clients.reaper_helpers import song as _song  # noqa: E402
from tests.reaper_sim.sim import ReaperSim  # noqa: E402

STEMS_DIR = Path(__file__).resolve().parents[2] / "clients" / "reaper" / "Stems"
STREAMING = STEMS_DIR / "stembridge_Master selected items (streaming).lua"
LOUD = STEMS_DIR / "stembridge_Master selected items (loud).lua"
REFERENCE = STEMS_DIR / ("stembridge_Master selected items to match the first selected "
                         "item (reference).lua")
ANALYZE = STEMS_DIR / "stembridge_Analyze loudness of selected items.lua"
CANCEL = STEMS_DIR / "stembridge_Cancel running masters.lua"
SR = 44100


@pytest.fixture
def reaper(tmp_path):
    yield from scripted_reaper(tmp_path, wait_s=60)


def _idle(sim: ReaperSim) -> bool:
    return not sim.deferred


def test_master_adds_a_new_take_with_one_undo_point(reaper, tmp_path):
    song = _song(tmp_path / "song.wav", 4.0)
    before = song.read_bytes()
    track = reaper.new_track("Mix")
    item = reaper.new_item(track, song, position=0.0, length=4.0, name="My Mix")
    reaper.run_script(LOUD)
    assert reaper.deferred, "the script returns at once and follows the job in defer"
    assert reaper.run_until(lambda: _idle(reaper), timeout=120)
    assert [t.name for t in item.takes][0] == "My Mix" and len(item.takes) == 2
    new = item.active
    assert new is item.takes[1] and new.name.startswith("master loud -")
    assert new.name.endswith("LUFS")
    master = Path(new.source.filename)
    assert master.is_file() and master.parent == tmp_path / "out" / "stembridge masters"
    assert song.read_bytes() == before  # the input is only read
    assert [desc for desc, _ in reaper.project.undo_points] == [
        "stembridge: master selected items (loud)"]
    (msg, _title, _kind), = reaper.messages
    assert "LUFS-I" in msg and "->" in msg and "dBTP" in msg and "LRA" in msg
    reaper.undo()
    (item_after_undo,) = reaper.tracks()[0].items
    assert len(item_after_undo.takes) == 1


def test_reference_analyze_and_errors(reaper, tmp_path):
    track = reaper.new_track("Mix")
    ref = reaper.new_item(track, _song(tmp_path / "ref.wav", 4.0, seed=1), 0.0, 4.0,
                          name="Ref")
    mix = reaper.new_item(track, _song(tmp_path / "mix.wav", 4.0, seed=2), 5.0, 4.0,
                          name="Mix")
    reaper.run_script(REFERENCE)
    assert reaper.run_until(lambda: _idle(reaper), timeout=120)
    assert len(ref.takes) == 1 and len(mix.takes) == 2
    assert mix.active.name.startswith("master reference")
    reaper.messages.clear()
    reaper.run_script(ANALYZE)
    assert reaper.run_until(lambda: _idle(reaper), timeout=120)
    (msg, _t, _k), = reaper.messages
    assert msg.count("LUFS-I") == 2 and "->" not in msg
    # an unreadable file: the box says what is wrong and what to do; no take is added
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    reaper.messages.clear()
    for it in (ref, mix):
        it.selected = False
    broken = reaper.new_item(track, bad, 10.0, 1.0, name="Broken")
    reaper.run_script(STREAMING)
    assert reaper.run_until(lambda: _idle(reaper), timeout=60)
    (msg, _t, _k), = reaper.messages
    assert "Broken" in msg and len(broken.takes) == 1
    # nothing selected
    broken.selected = False
    reaper.messages.clear()
    reaper.run_script(STREAMING)
    assert "Select one or more audio items" in reaper.messages[0][0]


def test_cancel_stops_running_masters(reaper, tmp_path):
    track = reaper.new_track("Mix")
    item = reaper.new_item(track, _song(tmp_path / "long.wav", 40.0), 0.0, 40.0, name="Long")
    reaper.run_script(STREAMING)
    reaper.run_script(CANCEL)
    assert reaper.run_until(lambda: _idle(reaper), timeout=120)
    assert len(item.takes) == 1  # cancelled: no new take, and no message for it
    assert not any("Long:" in m[0] for m in reaper.messages)
    assert not list((tmp_path / "out").rglob("*.master.wav"))
