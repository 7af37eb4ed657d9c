"""Reading a user's source file as a hostile local user would arrange it: a file replaced
mid-job (the cache must not be poisoned), a source swapped for /dev/zero or a FIFO, a
playlist whose segment is a FIFO, a sample-rate bomb, and the cache's size budget. Real
files, FIFOs, ffmpeg and tiny random-weight models."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine import audio
from engine.config import EngineConfig, Limits
from engine.errors import StembridgeError
from engine.separator import Engine, SplitRequest


def _engine(models: Path, cache: Path) -> Engine:
    return Engine(EngineConfig(device="cpu", precision="fp32", models_dir=models,
                               cache_dir=cache))


def _tone(path: Path, freq: float, seconds: float = 1.0, sr: int = 44100) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([x, x], 1), sr, subtype="FLOAT")
    return path


def _in_thread(fn, timeout: float):
    """Run `fn` on a thread; (finished in time, its result or exception)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # the caller inspects it
            box["value"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("value")


def test_source_replaced_mid_job_never_poisons_the_cache(test_models_dir, tmp_path):
    """Split A (440 Hz); B (1000 Hz, same size) is renamed over it after the decode: the
    job fails `source_changed`, and splitting B afterwards is computed from B, not
    served A's stems from the cache."""
    engine = _engine(test_models_dir, tmp_path / "cache")
    a = _tone(tmp_path / "a.wav", 440.0)
    b = _tone(tmp_path / "b.wav", 1000.0)
    assert a.stat().st_size == b.stat().st_size
    job = engine.prepare(SplitRequest(a, stems=4, model="htdemucs"))
    os.replace(_tone(tmp_path / "b_copy.wav", 1000.0), a)  # mid-job, after the decode
    with pytest.raises(StembridgeError) as err:
        list(job.run())
    assert err.value.code.value == "source_changed"
    from engine.cache import ResultCache

    assert not list((tmp_path / "cache").glob("??/*/meta.json")), "nothing was cached"
    key_b = engine.prepare(SplitRequest(b, stems=4, model="htdemucs")).cache_key()
    assert ResultCache(tmp_path / "cache").get(key_b) is None, \
        "splitting B would be served a result of bytes never decoded from B"


def test_cache_key_is_of_the_decoded_bytes(test_models_dir, tmp_path):
    """A file replaced between the decode and the job is refused before any cache use."""
    engine = _engine(test_models_dir, tmp_path / "cache")
    a = _tone(tmp_path / "a.wav", 440.0)
    job = engine.prepare(SplitRequest(a, stems=4, model="htdemucs"))
    _tone(tmp_path / "a.wav", 1000.0)  # written in place: same inode, new bytes
    with pytest.raises(StembridgeError) as err:
        job.cache_key()
    assert err.value.code.value == "source_changed"


@pytest.mark.parametrize("swap", ["dev_zero", "fifo"])
def test_source_swapped_for_device_or_fifo_never_hangs(test_models_dir, tmp_path, swap):
    """After the decode, the source becomes a symlink to /dev/zero or a FIFO: the job
    ends at once with `source_changed` instead of reading forever or blocking."""
    engine = _engine(test_models_dir, tmp_path / "cache")
    src = _tone(tmp_path / "s.wav", 440.0)
    job = engine.prepare(SplitRequest(src, stems=4, model="htdemucs"))
    src.unlink()
    if swap == "dev_zero":
        src.symlink_to("/dev/zero")
    else:
        os.mkfifo(src)
    finished, value = _in_thread(lambda: list(job.run()), 60)
    if not finished and swap == "fifo":  # unblock the reader the old code got stuck in
        with open(src, "wb"):
            pass
    assert finished, "the job hung on the swapped source"
    assert isinstance(value, StembridgeError) and value.code.value == "source_changed"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg missing")
def test_playlist_cannot_make_ffmpeg_read_a_fifo(tmp_path):
    """An HLS playlist whose segment is a FIFO is refused at once (ffmpeg reads audio
    containers from local files only), instead of blocking the reader."""
    fifo = tmp_path / "seg.ts"
    os.mkfifo(fifo)
    playlist = tmp_path / "song.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nseg.ts\n"
                        "#EXT-X-ENDLIST\n")
    t0 = time.monotonic()
    finished, value = _in_thread(lambda: audio.load(playlist), 30)
    if not finished:
        with open(fifo, "wb"):
            pass
    assert finished and time.monotonic() - t0 < 30, "the playlist blocked the decoder"
    assert isinstance(value, StembridgeError)
    assert value.code.value in ("input_unreadable", "decoder_missing")


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A 16-bit PCM WAV header declaring `data_bytes` of samples at `rate` Hz."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes))


def test_sample_rate_bomb_is_refused_from_the_header(tmp_path):
    """A sparse 4 KB WAV declaring 8 MHz and 64 MB of samples is refused before any
    sample is decoded, naming the highest rate accepted."""
    bomb = tmp_path / "bomb.wav"
    with open(bomb, "wb") as fh:
        fh.write(_wav_header(8_000_000, 2, 64 << 20))
        fh.truncate(44 + (64 << 20))  # sparse: nothing written to disk
    with pytest.raises(StembridgeError) as err:
        audio.load(bomb)
    assert err.value.code.value == "input_samplerate"
    assert "384000 Hz" in str(err.value)


def test_decoded_size_is_estimated_before_decoding(tmp_path):
    src = _tone(tmp_path / "ten.wav", 440.0, seconds=10.0)  # 3.5 MB once decoded
    with pytest.raises(StembridgeError) as err:
        audio.load(src, Limits(max_decoded_bytes=1 << 20))
    assert err.value.code.value == "input_too_long" and "GiB of memory" in str(err.value)
    decoded, _ = audio.load(src, Limits(max_decoded_bytes=8 << 20))
    assert decoded.samples.shape == (2, 441000)


def test_sources_are_checked_on_the_opened_descriptor(tmp_path):
    """A FIFO is refused without blocking the open; a file over the size limit too."""
    from engine.audio.source import SourceFile

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    finished, value = _in_thread(lambda: SourceFile(fifo, 1 << 30), 10)
    assert finished and isinstance(value, StembridgeError)
    assert value.code.value == "input_unreadable" and "regular file" in str(value)
    big = _tone(tmp_path / "big.wav", 440.0)
    with pytest.raises(StembridgeError) as err:
        SourceFile(big, 1000)
    assert err.value.code.value == "input_too_long"


def test_cache_budget_evicts_least_recently_used(tmp_path):
    from engine.cache import ResultCache

    cache = ResultCache(tmp_path / "cache", max_bytes=0)

    def entry(key: str) -> None:
        staging = cache.staging()
        (staging / "vocals.wav").write_bytes(b"x" * 1000)
        cache.commit(key, staging, {"vocals": "vocals.wav"}, {})

    for key in ("a" * 64, "b" * 64, "c" * 64):
        entry(key)
        time.sleep(0.01)
    os.utime(cache._folder("a" * 64) / "meta.json")  # used most recently
    cache.max_bytes = 2500
    entry("d" * 64)
    left = {e.key[0] for e in cache.usage()}
    assert left == {"a", "d"}, left
    assert sum(e.bytes for e in cache.usage()) <= 2500
    removed = cache.prune(0)
    assert {e.key[0] for e in removed} == {"a", "d"} and cache.usage() == []
