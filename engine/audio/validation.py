"""Validation of decoded samples ``(channels, frames)``: refuse what cannot be separated
(NaN/Inf samples, and the limits again on the real length) and warn about what can but
may disappoint (silence, clipping, a low sample rate, a very short input).

Levels are in dBFS (0 dBFS = |sample| 1.0), lengths in seconds, rates in Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.audio.info import DecodedAudio, fmt_seconds, input_error
from engine.audio.limits import channels_error, empty_error, too_long_error, too_short_error
from engine.config import Limits
from protocol.errors import ErrorCode

#: Peak level (dBFS) below which an input counts as silent.
SILENCE_DBFS = -60.0
#: |sample| at or above this counts as clipped.
CLIP_LEVEL = 0.999
#: Clipped-sample warning threshold: at least this many samples...
CLIP_MIN_COUNT = 16
#: ...and at least this fraction of all samples.
CLIP_MIN_FRACTION = 1e-5

_SCAN_BLOCK_FRAMES = 1 << 18


@dataclass
class _Stats:
    peak: float = 0.0
    clipped: int = 0
    not_finite: int = 0
    first_not_finite: int = -1


def _scan(samples: np.ndarray) -> _Stats:
    """Peak, clipped and non-finite counts of ``(channels, frames)``, block by block so a
    long file never needs a second full-size temporary."""
    stats = _Stats()
    for start in range(0, samples.shape[1], _SCAN_BLOCK_FRAMES):
        block = samples[:, start : start + _SCAN_BLOCK_FRAMES]
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.flatnonzero(~finite.all(axis=0))
            if stats.first_not_finite < 0:
                stats.first_not_finite = start + int(bad[0])
            stats.not_finite += int(block.size - np.count_nonzero(finite))
            block = np.where(finite, block, 0.0)
        magnitude = np.abs(block)
        stats.peak = max(stats.peak, float(magnitude.max(initial=0.0)))
        stats.clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))
    return stats


def validate(audio: DecodedAudio, limits: Limits) -> list[str]:
    """Check decoded audio against `limits`; raise for what cannot be separated and
    return human warnings for what can but may disappoint.

    Raises:
        InputError: INPUT_EMPTY, INPUT_CHANNELS, INPUT_TOO_SHORT, INPUT_TOO_LONG or
            INPUT_NOT_FINITE (NaN or infinite samples).

    Returns:
        Short warnings: decoder notes, silent input (peak below -60 dBFS), clipped input,
        sample rate below `limits.low_samplerate`, shorter than `limits.short_seconds`.
    """
    path = audio.info.path
    if audio.frames == 0:
        raise empty_error(path)
    if audio.channels > 2:
        raise channels_error(path, audio.channels)
    if audio.duration < limits.min_seconds:
        raise too_short_error(path, audio.duration, limits)
    if audio.duration > limits.max_seconds:
        raise too_long_error(path, audio.duration, limits)
    stats = _scan(audio.samples)
    if stats.not_finite:
        at = fmt_seconds(stats.first_not_finite / audio.samplerate)
        raise input_error(
            ErrorCode.INPUT_NOT_FINITE,
            f"'{path}' contains {stats.not_finite} NaN or infinite sample values (first at "
            f"{at}). Re-render it from its source, or export it as 24-bit PCM WAV, which "
            "cannot hold such values.",
        )
    return list(audio.notes) + _warnings(audio, stats, limits)


def _warnings(audio: DecodedAudio, stats: _Stats, limits: Limits) -> list[str]:
    warnings = []
    peak_db = 20 * math.log10(stats.peak) if stats.peak > 0 else -math.inf
    if peak_db < SILENCE_DBFS:
        level = f"{peak_db:.0f} dBFS" if stats.peak > 0 else "digital silence"
        warnings.append(f"The input is silent (peak {level}); the stems will be silent too.")
    total = audio.samples.size
    if stats.clipped >= max(CLIP_MIN_COUNT, CLIP_MIN_FRACTION * total):
        warnings.append(
            f"{stats.clipped} samples ({100 * stats.clipped / total:.2g} %) are at full scale: "
            "the input looks clipped, which can leak into every stem. Use an unclipped "
            "master if you have one."
        )
    if audio.samplerate < limits.low_samplerate:
        warnings.append(
            f"The sample rate is low ({audio.samplerate} Hz): there is no content above "
            f"{audio.samplerate // 2} Hz, so the stems will sound dull."
        )
    if audio.duration < limits.short_seconds:
        warnings.append(
            f"The input is short ({fmt_seconds(audio.duration)}); separation works best "
            f"on at least {fmt_seconds(limits.short_seconds)} of music."
        )
    return warnings
