"""engine.audio.writer: write_audio and StemFileWriter publish complete files atomically
(protocol.files) and leave nothing behind on error or kill -9.

Real files in tmp_path; the kill test kills a real writer process with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine import audio
from engine.errors import InvalidArgumentError
from protocol import files
from protocol.errors import ErrorCode
from tests.audio_helpers import REPO, raises_code, random_regions, tone


def _temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(audio.TEMP_PREFIX + "*"))


def _umask_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def test_write_audio_float_wav_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.wav"
    target.write_bytes(b"old contents")
    x = tone(1.0) * 1.5  # float keeps values beyond full scale
    assert audio.write_audio(target, x, 44100) == target
    data, sr = sf.read(str(target), dtype="float32", always_2d=True)
    assert sr == 44100 and sf.info(str(target)).subtype == "FLOAT"
    np.testing.assert_array_equal(data.T, x)
    assert _temp_files(tmp_path) == []
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == _umask_mode()


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("wav", "PCM_24"), ("flac", None), ("flac", "PCM_24")]
)
def test_write_audio_pcm24(tmp_path: Path, fmt: str, subtype: str | None) -> None:
    x = tone(1.0, amp=0.9)
    x[0, :4] = [1.5, -1.5, np.nan, 1.0]  # clipped to [-1, 1 - 2**-23], NaN -> 0
    path = audio.write_audio(tmp_path / f"out.{fmt}", x, 48000, fmt=fmt, subtype=subtype)
    assert sf.info(str(path)).subtype == "PCM_24"
    got = audio.decode(path).samples
    np.testing.assert_allclose(got[:, 4:], x[:, 4:], rtol=0, atol=2.0**-23)
    np.testing.assert_allclose(got[0, :4], [audio.PCM_MAX, -1.0, 0.0, audio.PCM_MAX], atol=2.0**-23)
    assert _temp_files(tmp_path) == []


def test_write_audio_errors(tmp_path: Path) -> None:
    x = tone(0.1)
    raises_code(
        ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.mp3", x, 44100, fmt="mp3"
    )
    raises_code(
        ErrorCode.INVALID_ARGUMENT,
        audio.write_audio,
        tmp_path / "a.flac",
        x,
        44100,
        fmt="flac",
        subtype="FLOAT",
    )
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.wav", x[0], 44100)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.write_audio, tmp_path / "a.flac", x[:, :0], 44100)
    err = raises_code(
        ErrorCode.OUTPUT_FAILED, audio.write_audio, tmp_path / "missing" / "a.wav", x, 44100
    )
    assert "Create it" in str(err)


def _shuffled_regions(total: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    regions = random_regions(rng, total)
    rng.shuffle(regions)
    return regions


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [("wav", None, 0.0), ("wav", "PCM_24", 2.0**-23), ("flac", None, 2.0**-23)],
)
def test_stem_writer_out_of_order(
    tmp_path: Path, fmt: str, subtype: str | None, atol: float
) -> None:
    total = 30011
    x = tone(total / 44100, amp=0.9)
    assert x.shape == (2, total)
    target = tmp_path / f"vocals.{fmt}"
    target.write_bytes(b"previous run")
    with audio.StemFileWriter(tmp_path, total, 2, 44100) as writer:
        assert writer.temp_path.name.startswith(audio.TEMP_PREFIX)
        for start, stop in _shuffled_regions(total, seed=len(fmt) + (subtype is None)):
            writer.write(start, x[:, start:stop])
        assert target.read_bytes() == b"previous run"  # nothing published before commit
        writer.commit(target, fmt=fmt, subtype=subtype)
    got, sr = sf.read(str(target), dtype="float32", always_2d=True)
    assert sr == 44100 and got.shape == (total, 2)
    np.testing.assert_allclose(got.T, x, rtol=0, atol=atol)
    assert _temp_files(tmp_path) == []


def test_stem_writer_unwritten_frames_are_zero_and_other_folder(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with audio.StemFileWriter(tmp_path, 1000, 1, 22050) as writer:
        writer.write(500, np.ones((1, 100), np.float32))
        writer.commit(out_dir / "bass.wav")
    got = audio.decode(out_dir / "bass.wav").samples
    expected = np.zeros((1, 1000), np.float32)
    expected[:, 500:600] = 1
    np.testing.assert_array_equal(got, expected)
    assert _temp_files(tmp_path) == [] and _temp_files(out_dir) == []


def test_stem_writer_abort_and_context_manager(tmp_path: Path) -> None:
    writer = audio.StemFileWriter(tmp_path, 44100, 2, 44100)
    writer.write(0, np.ones((2, 10), np.float32))
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []
    raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 0, np.ones((2, 10), np.float32))

    with (
        pytest.raises(RuntimeError, match="boom"),
        audio.StemFileWriter(tmp_path, 44100, 2, 44100) as writer,
    ):
        writer.write(0, np.ones((2, 10), np.float32))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    with audio.StemFileWriter(tmp_path, 100, 2, 44100):
        pass  # left without commit: nothing is published, nothing is left behind
    assert list(tmp_path.iterdir()) == []


def test_stem_writer_refuses_bad_regions(tmp_path: Path) -> None:
    with audio.StemFileWriter(tmp_path, 100, 2, 44100) as writer:
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 90, np.ones((2, 20), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, -1, np.ones((2, 5), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.write, 0, np.ones((1, 5), np.float32))
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.commit, tmp_path / "x.ogg", fmt="ogg")
        writer.commit(tmp_path / "x.wav")
        raises_code(ErrorCode.INVALID_ARGUMENT, writer.commit, tmp_path / "x.wav")
    raises_code(ErrorCode.OUTPUT_FAILED, audio.StemFileWriter, tmp_path / "nope", 10, 2, 44100)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.StemFileWriter, tmp_path, 0, 2, 44100)


def test_concurrent_writers_use_distinct_temp_files(tmp_path: Path) -> None:
    writers = [audio.StemFileWriter(tmp_path, 100, 2, 44100) for _ in range(4)]
    assert len({w.temp_path for w in writers}) == 4
    for i, writer in enumerate(writers):
        writer.write(0, np.full((2, 100), i / 10, np.float32))
    for i, writer in enumerate(writers):
        writer.commit(tmp_path / f"s{i}.flac", fmt="flac")
    for i in range(4):
        assert abs(audio.decode(tmp_path / f"s{i}.flac").samples.mean() - i / 10) < 1e-6
    assert _temp_files(tmp_path) == []


_KILLED_WRITER = """
import os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from engine.audio import StemFileWriter
w = StemFileWriter(sys.argv[2], 441000, 2, 44100)
w.write(0, np.ones((2, 44100), np.float32))
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")
def test_killed_process_leaves_no_partial_output(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(REPO), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = _temp_files(tmp_path)
    assert [p.suffix for p in leftovers] == [".wav"]  # a temp file, never a final one
    assert audio.remove_stale_temp_files(tmp_path, min_age_seconds=3600) == 0
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    assert audio.remove_stale_temp_files(tmp_path, min_age_seconds=3600) == 1
    assert list(tmp_path.iterdir()) == []


def test_temp_files_are_protocol_temp_files(tmp_path: Path) -> None:
    """One atomic-write helper: the writers' temporary files carry protocol.files' prefix,
    and with no minimum age the clean-up is protocol.files.remove_stale_temps."""
    assert audio.TEMP_PREFIX == files.TEMP_PREFIX
    keep = tmp_path / "keep.wav"
    keep.write_bytes(b"a finished file")
    writer = audio.StemFileWriter(tmp_path, 100, 2, 44100)
    audio.write_audio(tmp_path / "done.wav", tone(0.01), 44100)
    assert [p.name for p in _temp_files(tmp_path)] == [writer.temp_path.name]
    assert audio.remove_stale_temp_files(tmp_path) == 0  # a day's grace by default
    assert audio.remove_stale_temp_files(tmp_path, min_age_seconds=0) == 1
    assert _temp_files(tmp_path) == [] and keep.read_bytes() == b"a finished file"
    writer.abort()  # its temporary file is gone already: nothing to do, no error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.wav", "keep.wav"]


def test_16_bit_output_is_dithered_not_truncated(tmp_path: Path) -> None:
    """A tone 0.4 LSB high vanishes when rounded to 16 bits; with TPDF dither it survives
    in the average, the error is unbiased, and its noise is about 0.4-0.6 LSB RMS."""
    n = 44100
    t = np.arange(n) / 44100
    quiet = np.tile(0.4 * 2.0**-15 * np.sin(2 * np.pi * 100 * t), (2, 1)).astype(np.float32)
    assert np.all(np.round(quiet * 32768) == 0)  # plain rounding: silence
    for fmt in ("wav", "flac"):
        target = tmp_path / f"q.{fmt}"
        with audio.StemFileWriter(tmp_path, n, 2, 44100) as writer:
            writer.write(0, quiet)
            writer.commit(target, fmt=fmt, subtype="PCM_16")
        got, _ = sf.read(str(target), dtype="float64", always_2d=True)
        err = (got.T - quiet) * 32768
        assert abs(err.mean()) < 0.02 and 0.3 < err.std() < 0.7
        corr = float(np.dot(got[:, 0], quiet[0]) / np.dot(quiet[0], quiet[0]))
        assert 0.8 < corr < 1.2  # the tone is in the file
        again = tmp_path / f"again.{fmt}"
        audio.write_audio(again, quiet, 44100, fmt=fmt, subtype="PCM_16")
        assert np.array_equal(sf.read(str(again), dtype="int16")[0],
                              sf.read(str(target), dtype="int16")[0])  # same dither, same file


@pytest.mark.parametrize("subtype", ["CBR320", "V0"])
def test_stem_writer_mp3(tmp_path: Path, subtype: str) -> None:
    from engine.audio.ffmpeg import find_ffmpeg

    if find_ffmpeg() is None:
        pytest.skip("needs ffmpeg")
    total = 44100
    x = tone(total / 44100, amp=0.5)
    target = tmp_path / "vocals.mp3"
    with audio.StemFileWriter(tmp_path, total, 2, 44100) as writer:
        writer.write(0, x)
        writer.commit(target, fmt="mp3", subtype=subtype)
    head = target.read_bytes()[:3]
    assert head == b"ID3" or head[0] == 0xFF
    assert _temp_files(tmp_path) == []
    decoded = audio.decode(target)
    assert abs(decoded.samples.shape[-1] - total) < 3000  # LAME's delay and padding
    assert decoded.samples.shape[0] == 2
    with pytest.raises(InvalidArgumentError, match="stem writer"):
        audio.write_audio(tmp_path / "x.mp3", x, 44100, fmt="mp3")
