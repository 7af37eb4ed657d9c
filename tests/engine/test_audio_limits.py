"""engine.audio.limits: files refused from their header (empty, too short, too long, too
many channels) before any audio is decoded.

Every input is a real file built here with soundfile.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np

from engine import audio
from engine.config import Limits
from protocol.errors import ErrorCode, hint
from tests.audio_helpers import raises_code, tone, write


def test_zero_length_wav_is_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.wav", np.zeros((2, 0), np.float32), 44100)
    err = raises_code(ErrorCode.INPUT_EMPTY, audio.load, path)
    assert "no audio" in str(err) and "Export" in str(err)


def test_too_short(tmp_path: Path) -> None:
    path = write(tmp_path / "blip.wav", tone(0.01), 44100)
    err = raises_code(ErrorCode.INPUT_TOO_SHORT, audio.load, path, Limits(min_seconds=0.05))
    assert "longer excerpt" in str(err)


def test_too_long_from_header(tmp_path: Path) -> None:
    path = write(tmp_path / "long.wav", tone(2.0, sr=8000), 8000)
    err = raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=1.0))
    # The engine states the figures; how to fix it is each front end's hint.
    assert "is 2.0 s long; the limit is 1.0 s." in str(err)
    assert "STEMBRIDGE_MAX_SECONDS" not in str(err) and "Split" not in str(err)
    for front_end in ("cli", "daw"):
        assert "STEMBRIDGE_MAX_SECONDS" in hint(ErrorCode.INPUT_TOO_LONG, front_end)
    assert "Split it" in hint(ErrorCode.INPUT_TOO_LONG, "cli")


def _sparse_wav(path: Path, frames: int, sr: int) -> Path:
    """A mono 16-bit WAV of `frames` zero frames that takes no disk space."""
    data = frames * 2
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
    header += b"data" + struct.pack("<I", data)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data)
    return path


def test_ten_hour_file_is_refused_without_decoding(tmp_path: Path) -> None:
    # Decoding 10 h would take seconds and >1 GB; the header check answers at once.
    path = _sparse_wav(tmp_path / "ten-hours.wav", 10 * 3600 * 8000, 8000)
    t0 = time.perf_counter()
    err = raises_code(ErrorCode.INPUT_TOO_LONG, audio.load, path, Limits(max_seconds=3600))
    assert time.perf_counter() - t0 < 1.0
    assert "10:00:00" in str(err)


def test_three_channels_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "surround.wav", tone(1.0, channels=3), 44100)
    err = raises_code(ErrorCode.INPUT_CHANNELS, audio.load, path)
    assert "3 channels" in str(err) and "mono or stereo" in str(err)
    # Downmixing is the front end's hint (ffmpeg's flags mean nothing inside a DAW).
    assert "ffmpeg" not in str(err) and "-ac 2" in hint(ErrorCode.INPUT_CHANNELS, "cli")
