"""`stembridge preview` (bridge/preview.py): the pyo player stepped block by block in pyo's
manual mode, its OSC control over real UDP on loopback, stems filled into real shared
memory while playing, and one render through a real `stembridge serve` with a tiny model.
Headless and CPU only; JACK is tried only where `jackd` is installed.

Synthetic stems are sines of distinct frequencies (a whole number of periods in a 0.1 s
window), so each stem's amplitude in the output is its projection on its frequency; the
mixture is a sine at yet another frequency, so fallback is visible too.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("PYO_GUI_WX", "0")  # pyo prints a banner when wxPython is missing
pytest.importorskip("pyo")

from bridge import preview  # noqa: E402
from engine.errors import DeviceError, InvalidArgumentError  # noqa: E402
from protocol.messages import Address, Message, decode, encode, unpack  # noqa: E402
from protocol.messages import PreviewAddress as P  # noqa: E402
from protocol.shm import ShmReader, ShmWriter  # noqa: E402
from tests.conftest import music_like  # noqa: E402

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


class _Peer:
    """A control surface: one UDP socket on loopback talking to the preview."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode(address, *args), self.target)

    def receive(self) -> Message:
        return decode(self.sock.recvfrom(70000)[0])

    def status(self) -> dict:
        """Ask for the status; its answer also proves that everything sent before was
        handled (one socket, handled in order)."""
        self.send(P.STATUS)
        msg = self.receive()
        assert msg.address == P.STATUS_REPLY
        return unpack(msg.args[0])

    def error(self, address: str, *args) -> dict:
        self.send(address, *args)
        msg = self.receive()
        assert msg.address == Address.ERROR, msg
        return unpack(msg.args[0])


def test_osc_over_udp_mutes_solos_and_gains_stems(make_player, job):
    job.writer.publish(0, job.frames)
    player = make_player(job.mixture, job.reader)
    osc = preview.PreviewOscServer(0).start(player.handle)
    assert osc.address[0] == "127.0.0.1"
    peer = _Peer(osc.address)
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


def test_osc_refuses_what_it_does_not_know_and_changes_nothing(make_player, job):
    job.writer.publish(0, job.frames)
    player = make_player(job.mixture, job.reader)
    osc = preview.PreviewOscServer(0).start(player.handle)
    peer = _Peer(osc.address)
    try:
        before = peer.status()
        assert peer.error("/stembridge/preview/mutee", "vocals")["code"] == "unknown_address"
        assert peer.error(Address.SPLIT, b"\x80")["code"] == "unknown_address"
        err = peer.error(P.GAIN, "vocals", 20.0)
        assert err["code"] == "invalid_argument" and "[-96 dB, +12 dB]" in err["message"]
        err = peer.error(P.MUTE, "voice", 1)
        assert err["code"] == "invalid_argument"
        assert "vocals, drums, bass, other" in err["message"]
        assert peer.error(P.MUTE, "vocals", "yes")["code"] == "invalid_argument"
        assert peer.error(P.GAIN, "vocals")["code"] == "bad_message"
        assert peer.error(P.SEEK, 3.5)["code"] == "invalid_argument"  # past the end
        assert peer.error(P.SEEK, float("nan"))["code"] == "invalid_argument"
        peer.sock.sendto(b"not OSC at all!!", osc.address)
        assert unpack(peer.receive().args[0])["code"] == "bad_message"
        after = peer.status()
        assert {k: after[k] for k in ("gain", "mute", "solo", "playing")} == \
            {k: before[k] for k in ("gain", "mute", "solo", "playing")}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.settimeout(5.0)
            peer.send(P.STATUS, listener.getsockname()[1])  # reply_port
            assert decode(listener.recvfrom(70000)[0]).address == P.STATUS_REPLY
        assert osc.errors == 9
    finally:
        osc.stop()
        peer.sock.close()


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
    player.handle(Message(P.SEEK, ((job.frames - 3000) / SR,)))
    tail = player.process(30)
    assert player.ended and not player.playing
    assert not tail[:, -10 * BLOCK:].any()
    assert _max_step(tail) < 1.05 * _max_step(stems)  # faded out into the end
    player.handle(Message(P.PLAY, ()))  # at the end: nothing to play, no error
    assert not player.process(2).any() and player.fault is None


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


def test_terminal_keys_become_controls(make_player, job):
    pty = pytest.importorskip("pty")
    job.writer.publish(0, job.frames)
    player = make_player(job.mixture, job.reader)
    player.process(2)
    master, slave = pty.openpty()
    quit_event = threading.Event()
    with os.fdopen(slave, "rb", buffering=0) as tty:
        keys = preview.KeyControl(player, quit_event, tty).start()
        try:
            os.write(master, b"2 \x1b[C")  # mute drums, stop, seek +5 s (past the end: clamped)
            deadline = time.monotonic() + 5
            while len(player.events) < 3 and time.monotonic() < deadline:
                player.process(1)
                time.sleep(0.01)
            assert player.status()["mute"] == [False, True, False, False]
            assert not player.playing
            os.write(master, b"q")
            assert quit_event.wait(5)
        finally:
            keys.stop()
        os.close(master)
    whats = [e["what"] for e in player.events]
    assert "mute drums on" in whats and "stop" in whats
    assert "seek 3.000 s" in whats  # +5 s from 0.01 s, clamped to the last frame


# --------------------------------------------------------------------------- automation


def test_automation_file_is_read_with_wire_types_and_checked(tmp_path):
    good = tmp_path / "cues.jsonl"
    good.write_text("# karaoke from 1.5 s\n\n"
                    '{"t": 2.0, "address": "/stembridge/preview/gain", "args": ["drums", -6]}\n'
                    '{"t": 1.5, "address": "/stembridge/preview/karaoke", "args": [true]}\n'
                    '{"t": 3, "address": "/stembridge/preview/seek", "args": [10.25]}\n',
                    encoding="utf-8")
    cues = preview.read_automation(good)
    assert [(c.t, c.line) for c in cues] == [(1.5, 4), (2.0, 3), (3.0, 5)]
    assert cues[1].message == Message(P.GAIN, ("drums", -6))  # JSON integer -> OSC i
    assert cues[2].message.args == (10.25,)
    for line, words in (('{"t": 1, "address": "/stembridge/preview/mutee", "args": []}',
                         "unknown address"),
                        ('{"t": -1, "address": "/stembridge/preview/play"}', "seconds >= 0"),
                        ('{"t": 1, "address": "/stembridge/preview/mute", "args": ["bass", '
                         '10000000000]}', "int32"),
                        ("{t: 1}", "not JSON"),
                        ('{"t": 1, "address": "/stembridge/preview/status"}', "unknown")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text("# header\n" + line + "\n", encoding="utf-8")
        with pytest.raises(InvalidArgumentError, match=words) as info:
            preview.read_automation(bad)
        assert f"{bad}:2" in str(info.value)


# --------------------------------------------------------------------------- devices


def test_no_sound_card_is_a_clear_error_before_any_job(tmp_path, monkeypatch, capsys):
    if preview.output_device_count() > 0:
        pytest.skip("this machine has an audio output device")
    with pytest.raises(DeviceError) as info:
        preview.check_audio_device("portaudio")
    assert info.value.exit_code == 9
    assert "--audio jack" in str(info.value) and "--render" in str(info.value)
    preview.check_audio_device("manual")  # rendering needs no device
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    src = tmp_path / "song.wav"
    sf.write(src, music_like(1.0, 44100, 2).T, 44100)
    assert preview.run(_args(src)) == 9
    assert "--render" in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "no server was started or asked"


def _args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stembridge")
    preview.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["preview", *map(str, argv)])


def test_arguments_are_checked(tmp_path):
    src = tmp_path / "song.wav"
    sf.write(src, music_like(1.0, 44100, 2).T, 44100)
    for argv in ((src, "--render", tmp_path / "o.wav"),  # no --dur
                 (src, "--dur", "3"),  # no --render
                 (src, "--render", src, "--dur", "1"),  # would overwrite the input
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--buffer-size", "300"),
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--start-at", "5")):
        assert preview.run(_args(*argv)) == 2, argv
    assert preview.run(_args(tmp_path / "missing.wav", "--render", tmp_path / "o.wav",
                             "--dur", "1")) == 3


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
        assert player.fault is None and player.status()["mode"] == "stems"
        assert any(e["what"] == "mute vocals on" for e in player.events)
    finally:
        if player is not None:
            player.close()
        if server is not None:
            server.shutdown()
        jackd.terminate()
        jackd.wait(10)


# --------------------------------------------------------------------------- end to end


def test_render_through_a_real_server_plays_the_stems_mix_where_final(test_models_dir,
                                                                       tmp_path,
                                                                       monkeypatch):
    from multiprocessing import shared_memory

    run_dir = tmp_path / "run"
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(run_dir))
    with open(tmp_path / "server.log", "wb") as log:  # not a pipe: unread, it would block
        server = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", "0", "--precision", "fp32",
             "--models-dir", str(test_models_dir), "--output-root", str(tmp_path / "jobs")],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "server.json").exists():  # written once it listens
            assert server.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        sr = 44100
        src = tmp_path / "song.wav"
        mixture = music_like(5.0, sr, 2, seed=3)
        sf.write(src, mixture.T, sr, subtype="FLOAT")
        cues = tmp_path / "cues.jsonl"
        cues.write_text('{"t": 1.5, "address": "/stembridge/preview/mute", '
                        '"args": ["vocals", 1]}\n', encoding="utf-8")
        # On 2 CPU cores the tiny model separates at about real time, so a cold job would
        # leave a short render all mixture (the fallback is tested above): a first job
        # warms the model and the server's result cache, the preview's job then streams
        # the cached regions through the shared memory like any other job.
        from bridge.client import Client, read_discovery

        info = read_discovery()
        assert info is not None
        with Client(info["host"], int(info["port"]), timeout=30) as c:
            warm = c.split(src, stems=4, model="htdemucs")
            assert [kind for kind, _ in c.events(warm, timeout=120)][-1] == "done"
        out = tmp_path / "preview.wav"
        before = src.read_bytes()
        t0 = time.perf_counter()
        assert preview.run(_args(src, "--stems", "4", "--model", "htdemucs", "--start-at",
                                 "1.0", "--render", out, "--dur", "2.5", "--automation", cues,
                                 "--buffer-size", "256")) == 0
        assert time.perf_counter() - t0 >= 2.5  # rendered at the pace it would play
        assert src.read_bytes() == before
        report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        audio, rate = sf.read(out, dtype="float32", always_2d=True)
        audio = audio.T
        assert rate == sr and audio.shape == (2, round(2.5 * sr))
        folder = Path(report["job_folder"])
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        stems = {s: np.zeros((2, mixture.shape[1]), np.float32) for s in report["stems"]}
        final = np.zeros(mixture.shape[1], bool)
        for region in manifest["regions"]:
            for stem, rel in region["files"].items():
                stems[stem][:, region["start"]:region["end"]] = sf.read(
                    folder / rel, dtype="float32", always_2d=True)[0].T
            final[region["start"]:region["end"]] = True
        mute_at = next(e["out"] for e in report["events"] if e["what"] == "mute vocals on")
        assert abs(mute_at - 1.5 * sr) <= 256
        checked = {"stems": 0, "mixture": 0}
        for run in report["timeline"]:
            a, b, src_at = run["out_start"], min(run["out_end"], audio.shape[1]), run["src_start"]
            for lo, hi, gains in ((a, min(b, mute_at), (1, 1, 1, 1)),
                                  (max(a, mute_at + int(0.02 * sr) + 2), b, (0, 1, 1, 1))):
                if hi <= lo or run["mode"] not in checked:
                    continue
                at = src_at + lo - a
                if run["mode"] == "stems":
                    assert final[at:at + hi - lo].all()
                    want = sum(np.float32(g) * stems[s][:, at:at + hi - lo]
                               for g, s in zip(gains, report["stems"], strict=True))
                else:
                    want = mixture[:, at:at + hi - lo]
                np.testing.assert_allclose(audio[:, lo:hi], want, atol=2e-6)
                checked[run["mode"]] += hi - lo
        assert checked["stems"] > 1.0 * sr, report["timeline"]
        assert report["fallback"]["seconds"] * sr == pytest.approx(
            sum(r["out_end"] - r["out_start"] for r in report["timeline"]
                if r["mode"] == "mixture"), abs=8 * 256)
        with pytest.raises(FileNotFoundError):  # released (or dropped) on exit
            shared_memory.SharedMemory(name=f"sb{report['job'][-8:]}_ix")
    finally:
        server.terminate()
        server.wait(20)
