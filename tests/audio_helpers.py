"""Shared helpers of the engine.audio tests (tests/engine/test_audio_*.py): real audio files
built with soundfile and the ffmpeg CLI, and the error-code check."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.errors import StembridgeError
from protocol.errors import ErrorCode

HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


needs_ffmpeg = pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg/ffprobe not installed")


REPO = Path(__file__).resolve().parents[1]


def tone(
    seconds: float, sr: int = 44100, channels: int = 2, amp: float = 0.5, seed: int = 0
) -> np.ndarray:
    """(channels, frames) float32: a different partial-rich tone per channel plus a little
    noise, so lossy codecs have something music-like to chew on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    rows = []
    for c in range(channels):
        f0 = 220.0 * (1 + 0.25 * c)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
        rows.append(x / 1.9 + 0.01 * rng.standard_normal(t.size))
    return (amp * np.stack(rows)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, **kwargs: object) -> Path:
    sf.write(str(path), x.T, sr, **kwargs)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True
    )


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(ref.shape[-1], est.shape[-1])
    err = ref[..., :n] - est[..., :n]
    return float(10 * np.log10(np.sum(ref[..., :n] ** 2) / max(np.sum(err**2), 1e-20)))


def aligned_snr_db(ref: np.ndarray, est: np.ndarray, max_lag: int = 4096) -> float:
    """`snr_db` after removing a codec delay of up to `max_lag` frames."""
    a, b = ref[0, : 4 * max_lag], est[0, : 5 * max_lag]
    scores = [np.dot(a, b[lag : lag + a.size]) for lag in range(max_lag)]
    lag = int(np.argmax(scores))
    return snr_db(ref, est[..., lag:])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raises_code(code: ErrorCode, fn, *args, **kwargs) -> StembridgeError:
    with pytest.raises(StembridgeError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, str(info.value)
    return info.value


def can_write_mp3(tmp_path: Path) -> bool:
    try:
        write(tmp_path / "probe.mp3", np.zeros((1, 4410), np.float32), 44100, format="MP3")
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return False
    return True


def no_ffmpeg_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def random_regions(rng: np.random.Generator, total: int) -> list[tuple[int, int]]:
    """A random tiling of [0, total) with sizes 1, tiny odd ones, ~down and big ones."""
    regions, start = [], 0
    while start < total:
        size = int(rng.choice([1, 2, 3, 7, 146, 147, 148, 441, int(rng.integers(1, 900))]))
        regions.append((start, min(total, start + size)))
        start += size
    return regions
