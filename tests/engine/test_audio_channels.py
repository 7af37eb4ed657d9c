"""engine.audio.channels: mono/stereo to the model's channels and back."""

from __future__ import annotations

import numpy as np

from engine import audio
from protocol.errors import ErrorCode
from tests.audio_helpers import raises_code, tone


def test_mono_becomes_dual_mono_and_back() -> None:
    mono = tone(0.1, channels=1)
    dual = audio.to_model_channels(mono)
    assert dual.shape == (2, mono.shape[1]) and dual.flags.c_contiguous
    np.testing.assert_array_equal(dual[0], dual[1])
    stems = np.stack([dual, 0.5 * dual, np.stack([dual[0], -dual[0]])])  # (3, 2, n)
    back = audio.from_model_channels(stems, 1)
    assert back.shape == (3, 1, mono.shape[1]) and back.dtype == np.float32
    np.testing.assert_allclose(back[0], mono)
    np.testing.assert_allclose(back[2], 0 * mono)  # mean of the two channels


def test_stereo_passes_through_and_too_many_channels_are_refused() -> None:
    stereo = tone(0.1)
    assert audio.to_model_channels(stereo) is stereo
    assert audio.from_model_channels(stereo[None], 2) is not None
    err = raises_code(ErrorCode.INVALID_ARGUMENT, audio.to_model_channels, tone(0.1, channels=3))
    assert "3 channels" in str(err) and "ffmpeg" not in str(err)
    np.testing.assert_allclose(audio.to_model_channels(stereo, 1)[0], stereo.mean(0))
