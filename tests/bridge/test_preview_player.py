"""The preview's pyo player (`bridge.preview.player`), stepped block by block in pyo's
manual mode: its OSC control over real UDP on loopback, stems filled into real shared
memory while playing, crossfades, seeks and the end of the song. Headless and CPU only;
JACK is tried only where `jackd` is installed.

Synthetic stems are sines of distinct frequencies (a whole number of periods in a 0.1 s
window), so each stem's amplitude in the output is its projection on its frequency; the
mixture is a sine at yet another frequency, so fallback is visible too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("PYO_GUI_WX", "0")  # pyo prints a banner when wxPython is missing
pytest.importorskip("pyo")

from bridge import preview  # noqa: E402
from engine.errors import DeviceError  # noqa: E402
from protocol.messages import Message  # noqa: E402
from protocol.messages import PreviewAddress as P  # noqa: E402
from protocol.shm import ShmReader, ShmWriter  # noqa: E402
from tests.bridge.test_preview_controls import Peer  # noqa: E402

SR, BLOCK, RAMP = 48000, 256, 0.02
RAMP_FRAMES = int(RAMP * SR) + 2  # pyo's SigTo reaches its target within this many frames
STEMS = ("vocals", "drums", "bass", "other")
FREQS = (220.0, 330.0, 550.0, 770.0)  # 22, 33, 55, 77 periods in WIN
MIX_FREQ = 1000.0
WIN = SR // 10
AMP = 0.1


def _sine(freq: float, frames: int, amp: float, phase: float) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(frames) / SR + phase)).astype(np.float32)


def amplitude(x: np.ndarray, freq: float) -> float:
    """Amplitude of the `freq` component of `x` (a whole number of periods long)."""
    k = np.exp(-2j * np.pi * freq * np.arange(x.size) / SR)
    return float(2 * abs(np.dot(x, k)) / x.size)


def _reader(writer: ShmWriter) -> ShmReader:
    """Attach as the preview does. A reader unregisters the blocks from this process's
    resource tracker (right in another process); here the writer is in the same process
    and unregisters them again when it unlinks them, so register them back."""
    from multiprocessing import resource_tracker

    reader = ShmReader(writer.index_name, writer.names)
    for name in [writer.index_name, *(n for per_stem in writer.names for n in per_stem)]:
        resource_tracker.register(f"/{name}", "shared_memory")
    return reader


@pytest.fixture
def job():
    """A job's shared memory as the server makes it: 4 stems of 3 s at 48 kHz, stereo;
    `stems` (4, 2, frames) is what the engine wrote, `mixture` (2, frames) the song."""
    frames = 3 * SR
    rng = np.random.default_rng(0)
    stems = np.stack([np.stack([_sine(f, frames, AMP, rng.uniform(0, 6)) for _ in range(2)])
                      for f in FREQS])
    mixture = np.stack([_sine(MIX_FREQ, frames, 0.3, p) for p in (0.0, 1.0)])
    writer = ShmWriter(secrets.token_hex(4), len(STEMS), 2, frames, SR)
    for i in range(len(STEMS)):
        writer.write(i, 0, stems[i])
    reader = _reader(writer)
    yield SimpleNamespace(frames=frames, stems=stems, mixture=mixture, writer=writer,
                          reader=reader)
    reader.close()
    writer.unlink()


@pytest.fixture
def make_player():
    """Builds players on a fresh manual pyo server; closes them before its shutdown."""
    made = []
    server = preview.boot_server("manual", SR, BLOCK)

    def make(mixture, reader=None, stems=STEMS, **kw):
        player = preview.PreviewPlayer(server, mixture, SR, stems, reader=reader, ramp=RAMP,
                                       capture=True, **kw)
        made.append(player)
        server.start()
        return player

    yield make
    for player in made:
        player.close()
    server.stop()
    server.shutdown()


def _mix(stems: np.ndarray, gains, start: int, n: int) -> np.ndarray:
    """The stems' mix (2, n) from frame `start` with constant linear gains (float32 as
    pyo computes it)."""
    out = np.zeros((stems.shape[1], n), np.float32)
    for s, g in enumerate(gains):
        out += np.float32(g) * stems[s][:, start:start + n]
    return out


def _max_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, axis=-1)).max())


# --------------------------------------------------------------------------- OSC control


def test_osc_over_udp_mutes_solos_and_gains_stems(make_player, job):
    job.writer.publish(0, job.frames)
    player = make_player(job.mixture, job.reader)
    osc = preview.PreviewOscServer(0).start(player.handle)
    assert osc.address[0] == "127.0.0.1"
    peer = Peer(osc.address)
    segment = 40 * BLOCK  # each control change starts a segment of 40 blocks
    expected = [(1, 1, 1, 1)]
    try:
        out = [player.process(40)]
        peer.send(P.MUTE, "vocals", 1)
        assert peer.status()["mute"] == [True, False, False, False]
        expected.append((0, 1, 1, 1))
        out.append(player.process(40))
        peer.send(P.SOLO, "bass", True)
        assert peer.status()["solo"] == [False, False, True, False]
        expected.append((0, 0, 1, 0))
        out.append(player.process(40))
        peer.send(P.SOLO, 3, 0)  # by number, 1-based
        peer.send(P.MUTE, "vocals")  # no flag: toggle
        peer.send(P.GAIN, "drums", -6.0)
        peer.send(P.GAIN_LINEAR, "other", 0.5)
        status = peer.status()
        assert status["gain_db"][1] == pytest.approx(-6.0) and status["solo"] == [False] * 4
        expected.append((1, 10 ** (-6 / 20), 1, 0.5))
        out.append(player.process(40))
        peer.send(P.KARAOKE)
        assert peer.status()["mute"] == [True, False, False, False]
        expected.append((0, 10 ** (-6 / 20), 1, 0.5))
        out.append(player.process(40))
    finally:
        osc.stop()
        peer.sock.close()
    out = np.concatenate(out, axis=1)
    for k, gains in enumerate(expected):
        start = k * segment
        for c in range(2):  # each stem's amplitude, once the ramp is over
            window = out[c, start + 2000:start + 2000 + WIN]
            got = [amplitude(window, f) for f in FREQS]
            assert got == pytest.approx([AMP * g for g in gains], abs=2e-4), (k, c)
        settled = start + RAMP_FRAMES  # after the ramp: exactly the stems' mix
        np.testing.assert_allclose(out[:, settled:start + segment],
                                   _mix(job.stems, gains, settled, start + segment - settled),
                                   atol=2e-6)
        if k:  # during the ramp: a smooth fade, not a jump (no zipper, no click)
            before = _mix(job.stems, expected[k - 1], start, RAMP_FRAMES)
            after = _mix(job.stems, gains, start, RAMP_FRAMES)
            mid = RAMP_FRAMES // 2
            moving = np.abs(after - before)[:, mid - 50:mid + 50]
            halfway = np.abs(out[:, start:start + RAMP_FRAMES] - before)[:, mid - 50:mid + 50]
            big = moving > 0.02
            assert big.any()
            assert np.all((halfway[big] / moving[big] > 0.35) & (halfway[big] / moving[big]
                                                                  < 0.65))
    assert _max_step(out[:, RAMP_FRAMES:]) < 1.05 * _max_step(job.stems.sum(0))


# --------------------------------------------------------------------------- fill and fallback


def test_progressive_fill_mixture_before_exact_stems_after(make_player, job):
    """Stems written but not published are not played; a range published mid-playback is
    crossfaded in and played sample-exactly; before the playhead leaves it, the player
    crossfades back to the mixture, which plays exactly from the first frame not final.
    Never silence, never a click."""
    player = make_player(job.mixture, job.reader)
    first = player.process(40)  # nothing is final yet: the mixture
    np.testing.assert_array_equal(first[:, RAMP_FRAMES:],
                                  job.mixture[:, RAMP_FRAMES:40 * BLOCK])
    frontier = 100 * BLOCK + 128
    job.writer.publish(0, frontier)  # as the server does, after writing every stem
    second = player.process(80)
    out = np.concatenate([first, second], axis=1)
    stems = job.stems.sum(0)
    fade_in = 40 * BLOCK
    np.testing.assert_allclose(out[:, fade_in + RAMP_FRAMES:frontier - RAMP_FRAMES - 2 * BLOCK],
                               stems[:, fade_in + RAMP_FRAMES:frontier - RAMP_FRAMES - 2 * BLOCK],
                               atol=2e-6)
    np.testing.assert_array_equal(out[:, frontier:], job.mixture[:, frontier:120 * BLOCK])
    rms = np.sqrt((out[:, :120 * BLOCK].reshape(2, -1, BLOCK) ** 2).mean(axis=-1))
    assert rms[:, 4:].min() > 0.1  # never silent (after the start's fade-in)
    natural = max(_max_step(job.mixture), _max_step(stems))
    assert _max_step(out) < 1.1 * natural  # no click at either crossfade
    modes = [run["mode"] for run in player.report()["timeline"]]
    assert modes == ["fade", "mixture", "fade", "stems", "fade", "mixture"]
    rep = player.report()
    assert rep["fallback"]["count"] == 2
    assert rep["fallback"]["seconds"] == pytest.approx((40 + 120 - 95) * BLOCK / SR)
    assert rep["first_stems_s"] == pytest.approx(40 * BLOCK / SR)
    job.writer.publish(frontier, job.frames)  # the rest becomes final: stems again
    third = player.process(20)
    np.testing.assert_allclose(third[:, RAMP_FRAMES:],
                               stems[:, 120 * BLOCK + RAMP_FRAMES:140 * BLOCK], atol=2e-6)


def test_without_shared_memory_the_mixture_plays(make_player, job):
    player = make_player(job.mixture, None, start_at=1.0)
    out = player.process(30)
    start = SR
    np.testing.assert_array_equal(out[:, RAMP_FRAMES:],
                                  job.mixture[:, start + RAMP_FRAMES:start + 30 * BLOCK])
    assert player.status()["mode"] == "mixture"


def test_seek_stop_play_and_the_end_of_the_song(make_player, job):
    job.writer.publish(0, job.frames)
    player = make_player(job.mixture, job.reader)
    stems = job.stems.sum(0)
    out = [player.process(20)]
    player.handle(Message(P.SEEK, (2.0,)))
    out.append(player.process(20))
    player.handle(Message(P.STOP, ()))
    out.append(player.process(20))
    frozen = player.position
    player.handle(Message(P.PLAY, (1,)))
    out.append(player.process(20))
    out = np.concatenate(out, axis=1)
    assert _max_step(out) < 1.05 * _max_step(stems)  # fades around every jump: no clicks
    runs = [r for r in player.report()["timeline"] if r["mode"] == "stems"]
    assert [r["src_start"] for r in runs][:2] == [RAMP_FRAMES // BLOCK * BLOCK + BLOCK,
                                                  2 * SR + 4 * BLOCK]
    for r in runs:  # every settled run is the stems, exactly, from where it says
        n = r["out_end"] - r["out_start"]
        np.testing.assert_allclose(out[:, r["out_start"]:r["out_end"]],
                                   stems[:, r["src_start"]:r["src_start"] + n], atol=2e-6)
    stopped = out[:, 40 * BLOCK + RAMP_FRAMES + BLOCK:60 * BLOCK]
    assert not stopped.any()  # silence after the stop's fade-out
    assert runs[-1]["src_start"] >= frozen * SR and player.position > frozen  # resumed there
    logged = {e["what"]: e["out"] for e in player.stats.events}  # each at the next block
    assert (logged["seek 2.000 s"], logged["stop"], logged["play"]) == (
        20 * BLOCK, 40 * BLOCK, 60 * BLOCK)
    player.handle(Message(P.SEEK, ((job.frames - 3000) / SR,)))
    tail = player.process(30)
    assert player.ended and not player.playing
    assert not tail[:, -10 * BLOCK:].any()
    assert _max_step(tail) < 1.05 * _max_step(stems)  # faded out into the end
    player.handle(Message(P.PLAY, ()))  # at the end: nothing to play, no error
    assert not player.process(2).any() and player.stats.fault is None


def test_mono_song_plays_on_both_outputs(make_player):
    frames = SR
    tone = _sine(440.0, frames, 0.2, 0.3)[None]
    writer = ShmWriter(secrets.token_hex(4), 2, 1, frames, SR)
    reader = None
    try:
        writer.write(0, 0, tone * 0.25)
        writer.write(1, 0, tone * 0.75)
        writer.publish(0, frames)
        reader = _reader(writer)
        player = make_player(tone, reader, stems=("vocals", "instrumental"))
        player.handle(Message(P.KARAOKE, (True,)))
        out = player.process(20)
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_allclose(out[0, RAMP_FRAMES:], (tone[0] * 0.75)[RAMP_FRAMES:20 * BLOCK],
                                   atol=1e-6)
        player.close()
    finally:
        if reader is not None:
            reader.close()
        writer.unlink()


@pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd is not installed")
def test_jack_dummy_driver_plays_in_real_time(job, monkeypatch):
    name = f"stembridge-test-{os.getpid()}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_AUDIO_RESERVATION", "1")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    jackd = subprocess.Popen(["jackd", "--no-realtime", "--name", name, "-d", "dummy",
                              "--rate", str(SR), "--period", str(BLOCK)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = player = None
    try:
        deadline = time.monotonic() + 10
        while server is None:
            try:
                server = preview.boot_server("jack", SR, BLOCK)
            except DeviceError:
                if time.monotonic() > deadline or jackd.poll() is not None:
                    pytest.skip("jackd (dummy driver) did not start here")
                time.sleep(0.3)
        job.writer.publish(0, job.frames)
        player = preview.PreviewPlayer(server, job.mixture, SR, STEMS, reader=job.reader,
                                       live=True)
        server.start()
        time.sleep(1.0)
        player.handle(Message(P.MUTE, ("vocals", 1)))
        time.sleep(0.5)
        server.stop()
        played = player.output_frames / SR
        assert 1.0 < played < 2.5, played  # the callback ran at the audio rate
        assert player.stats.fault is None and player.status()["mode"] == "stems"
        assert any(e["what"] == "mute vocals on" for e in player.stats.events)
    finally:
        if player is not None:
            player.close()
        if server is not None:
            server.shutdown()
        jackd.terminate()
        jackd.wait(10)


