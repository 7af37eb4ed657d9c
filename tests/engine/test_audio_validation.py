"""engine.audio.validation: decoded samples refused (NaN/Inf, too many channels) or
warned about (silence, clipping, low rate, short input).

Every input is a real file built here with soundfile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import audio
from engine.config import Limits
from protocol.errors import ErrorCode
from tests.audio_helpers import raises_code, tone, write


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(tmp_path: Path, bad: float) -> None:
    x = tone(1.0)
    x[1, 22050] = bad
    path = write(tmp_path / "bad.wav", x, 44100, subtype="FLOAT")
    err = raises_code(ErrorCode.INPUT_NOT_FINITE, audio.load, path)
    assert "0.500 s" in str(err) and "Re-render" in str(err)


def test_validate_refuses_channels_after_decode(tmp_path: Path) -> None:
    path = write(tmp_path / "surround.wav", tone(1.0, channels=3), 44100)
    decoded = audio.decode(path)  # decode applies no limits
    assert decoded.samples.shape == (3, 44100)
    raises_code(ErrorCode.INPUT_CHANNELS, audio.validate, decoded, Limits())


def test_clean_input_has_no_warnings(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", tone(4.0), 44100, subtype="PCM_24")
    decoded, warnings = audio.load(path, Limits())
    assert warnings == []
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous


def test_silent_input_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "silence.wav", np.zeros((2, 4 * 44100), np.float32), 44100)
    _, warnings = audio.load(path, Limits())
    assert len(warnings) == 1 and "silent" in warnings[0]
    quiet = write(tmp_path / "quiet.wav", tone(4.0, amp=10 ** (-70 / 20)), 44100, subtype="FLOAT")
    _, warnings = audio.load(quiet, Limits())
    assert len(warnings) == 1 and "silent" in warnings[0] and "dBFS" in warnings[0]


def test_clipped_input_warns(tmp_path: Path) -> None:
    x = np.clip(tone(4.0, amp=1.5), -1.0, 1.0)
    path = write(tmp_path / "loud.wav", x, 44100, subtype="FLOAT")
    _, warnings = audio.load(path, Limits())
    assert len(warnings) == 1 and "clipped" in warnings[0]


def test_a_few_full_scale_samples_do_not_warn(tmp_path: Path) -> None:
    x = tone(4.0)
    x[0, 1000:1003] = 1.0
    path = write(tmp_path / "peaks.wav", x, 44100, subtype="FLOAT")
    assert audio.load(path, Limits())[1] == []


def test_low_samplerate_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "phone.wav", tone(4.0, sr=8000), 8000)
    _, warnings = audio.load(path, Limits(low_samplerate=22050))
    assert len(warnings) == 1 and "8000 Hz" in warnings[0]


def test_short_input_warns(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(1.0), 44100)
    _, warnings = audio.load(path, Limits(short_seconds=3.0))
    assert len(warnings) == 1 and "short" in warnings[0]
