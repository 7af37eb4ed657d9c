"""Channel layout between a source and a model: ``(channels, frames)`` in, the model's
channel count out, and the model's stems ``(..., model_channels, frames)`` back to the
source's channels. Sample rates are not touched (see `engine.audio.resampler`).
"""

from __future__ import annotations

import numpy as np

from engine.errors import InvalidArgumentError


def to_model_channels(samples: np.ndarray, model_channels: int = 2) -> np.ndarray:
    """Map ``(channels, frames)`` to the model's channel count, float32 C-contiguous.

    Mono -> dual-mono ``(2, frames)`` (both rows equal); stereo -> mono is the mean of
    the channels (for a mono model). Equal counts return the input (float32, no copy
    when it already is one).
    """
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgumentError(f"expected audio shaped (channels, frames), got {x.shape}.")
    channels = x.shape[0]
    if channels == model_channels:
        return x
    if channels == 1:
        return np.repeat(x, model_channels, axis=0)
    if model_channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32)
    raise InvalidArgumentError(
        f"cannot map {channels} channels to a {model_channels}-channel model; only mono and "
        "stereo audio can be mapped."
    )


def from_model_channels(stems: np.ndarray, original_channels: int) -> np.ndarray:
    """Map model output ``(..., model_channels, frames)`` back to the source's channels.

    A mono source gets the mean of the model's channels, ``(..., 1, frames)``; a source
    with the model's own channel count gets `stems` back unchanged.
    """
    if stems.ndim < 2:
        raise InvalidArgumentError(f"expected (..., channels, frames), got {stems.shape}.")
    model_channels = stems.shape[-2]
    if original_channels == model_channels:
        return stems
    if original_channels == 1:
        return stems.mean(axis=-2, keepdims=True, dtype=np.float32)
    raise InvalidArgumentError(
        f"cannot map {model_channels} model channels back to {original_channels} channels."
    )
