"""The A/B preview of a master (`bridge.preview.compare`, ``stembridge preview FILE
--master MASTER``): loudness matched (the rendered levels of both sides within 0.1 LU),
switched by OSC over real UDP and by the ``a`` key with the preview's crossfade (sample
continuous, no jump), and the command's render with an automation cue. pyo's manual
server, headless and CPU only.

The original is a 500 Hz sine, the master a louder 1 kHz sine at another rate (as
``--sample-rate 48000`` makes it), so which side plays is the projection on its
frequency.
"""

from __future__ import annotations

import argparse
import json
import os
import threading

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("PYO_GUI_WX", "0")
pytest.importorskip("pyo")

from bridge import preview  # noqa: E402
from bridge.preview.command import add_parser  # noqa: E402
from bridge.preview.compare import ABPlayer, load_pair, match  # noqa: E402
from bridge.preview.controls import Controls  # noqa: E402
from engine.mastering.meter import integrated  # noqa: E402
from protocol.messages import Message, ProtocolError  # noqa: E402
from protocol.messages import PreviewAddress as P  # noqa: E402
from tests.bridge.test_preview_controls import Peer  # noqa: E402
from tests.bridge.test_preview_player import amplitude  # noqa: E402

SR, BLOCK, RAMP = 48000, 256, 0.02
RAMP_FRAMES = int(RAMP * SR) + 2
SEG = 100 * BLOCK  # 0.53 s per switch: long enough for a gated integrated loudness


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """original.wav (44.1 kHz, 500 Hz at 0.1) and master.wav (48 kHz, 1 kHz at 0.4):
    the files and `load_pair`'s answer."""
    d = tmp_path_factory.mktemp("ab")
    t44, t48 = np.arange(4 * 44100) / 44100, np.arange(4 * SR) / SR
    orig = 0.1 * np.sin(2 * np.pi * 500 * t44)
    mast = 0.4 * np.sin(2 * np.pi * 1000 * t48)
    sf.write(d / "original.wav", np.stack([orig, orig]).T, 44100, subtype="FLOAT")
    sf.write(d / "master.wav", np.stack([mast, mast]).T, SR, subtype="FLOAT")
    return d, load_pair(d / "original.wav", d / "master.wav")


def test_match_turns_the_louder_side_down():
    m = match(-20.0, -8.0)
    assert (m.original_gain, m.master_gain) == (1.0, pytest.approx(10 ** (-12 / 20)))
    assert m.gain_db == pytest.approx(-12.0)
    m = match(-8.0, -14.0)
    assert m.master_gain == 1.0 and m.original_gain == pytest.approx(10 ** (-6 / 20))
    assert match(None, -14.0).gain_db == 0.0  # a silent side: no match


def test_ab_is_refused_outside_an_ab_session():
    controls = Controls(["vocals"], 48000, 48000)
    with pytest.raises(ProtocolError, match="master"):
        controls.handle(Message(P.AB, ()))
    controls.enable_ab()
    controls.handle(Message(P.AB, (1,)))
    assert controls.ab_master
    with pytest.raises(ProtocolError):
        controls.handle(Message(P.AB, ("yes",)))


def test_osc_and_key_switch_loudness_matched_and_continuous(pair):
    _, (original, master, sr, gains) = pair
    assert sr == SR and original.shape == master.shape == (2, 4 * SR)
    assert gains.master_lufs - gains.original_lufs > 10  # the master is much louder
    server = preview.boot_server("manual", SR, BLOCK)
    player = ABPlayer(server, original, master, SR, gains, ramp=RAMP, capture=True)
    server.start()
    osc = preview.PreviewOscServer(0).start(player.handle)
    peer = Peer(osc.address)
    keys = preview.KeyControl(player.controls, threading.Event())
    try:
        out = [player.process(SEG // BLOCK)]  # original
        peer.send(P.AB, 1)  # OSC: the master
        status = peer.status()
        assert status["ab"] == "master" and status["match_gain_db"] == gains.gain_db
        out.append(player.process(SEG // BLOCK))
        keys.press(b"a")  # the key: back to the original
        out.append(player.process(SEG // BLOCK))
        peer.send(P.AB)  # OSC without a flag: toggle, the master again
        assert peer.status()["ab"] == "master"
        out.append(player.process(SEG // BLOCK))
        peer.send(P.AB, False)
        assert peer.status()["ab"] == "original"
    finally:
        osc.stop()
        peer.sock.close()
        player.close()
        server.stop()
        server.shutdown()
    y = np.concatenate(out, axis=1)
    sides = ("original", "master", "original", "master")
    levels = []
    for k, side in enumerate(sides):
        a, b = k * SEG + RAMP_FRAMES, (k + 1) * SEG
        want = (original * np.float32(gains.original_gain) if side == "original"
                else master * np.float32(gains.master_gain))
        if k:  # settled after one ramp: exactly that side, matched
            np.testing.assert_allclose(y[:, a:b], want[:, a:b], atol=2e-6)
        levels.append(integrated(y[:, a:b].astype(np.float64), SR))
        freq, other = (500.0, 1000.0) if side == "original" else (1000.0, 500.0)
        window = y[0, a:a + 4800]
        assert amplitude(window, freq) > 0.05 and amplitude(window, other) < 1e-3
    # the rendered levels of both sides within 0.1 LU
    assert max(levels) - min(levels) < 0.1, levels
    # the switches are crossfades: no sample step larger than the signals' own
    steady = max(float(np.abs(np.diff(w, axis=-1)).max()) for w in (
        original * np.float32(gains.original_gain), master * np.float32(gains.master_gain)))
    assert float(np.abs(np.diff(y[:, RAMP_FRAMES:], axis=-1)).max()) < 1.05 * steady
    for k in (1, 2, 3):  # halfway through a switch both sides are heard
        mid = k * SEG + RAMP_FRAMES // 2
        window = y[0, mid - 480:mid + 480]
        assert amplitude(window, 500.0) > 0.01 and amplitude(window, 1000.0) > 0.01


def test_command_renders_the_ab_with_an_automation_cue(pair, tmp_path, capsys):
    d, (original, master, _, gains) = pair
    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"t": 0.5, "address": P.AB}) + "\n")
    out = tmp_path / "ab.wav"
    parser = argparse.ArgumentParser(prog="stembridge")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["preview", str(d / "original.wav"), "--master",
                              str(d / "master.wav"), "--render", str(out), "--dur", "1.2",
                              "--automation", str(cues), "--buffer-size", "256"])
    assert preview.run(args) == 0
    assert "master played -12." in capsys.readouterr().out
    y, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == SR
    y = y.T
    cut = 24064  # the first block at or after 0.5 s, plus one ramp
    np.testing.assert_allclose(y[:, RAMP_FRAMES:24000],
                               original[:, RAMP_FRAMES:24000] * gains.original_gain, atol=1e-4)
    np.testing.assert_allclose(y[:, cut + RAMP_FRAMES:50000],
                               master[:, cut + RAMP_FRAMES:50000] * gains.master_gain,
                               atol=1e-4)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["automation"][0]["address"] == P.AB
    # the master is an input too: never overwritten
    args = parser.parse_args(["preview", str(d / "original.wav"), "--master",
                              str(d / "master.wav"), "--render", str(d / "master.wav"),
                              "--dur", "1"])
    assert preview.run(args) == 2 and "overwrite" in capsys.readouterr().err
