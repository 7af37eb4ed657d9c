"""The look-ahead true-peak limiter, the chain's last stage.

Detection is oversampled (`oversample`x, polyphase windowed-sinc): the peak envelope of a
frame is the largest magnitude of its own sample and of the interpolated points on both
sides of it, across channels (linked stereo). The gain needed at each frame,
``min(1, ceiling / peak)``, is held over the look-ahead window, released exponentially
(in dB), and then averaged over the look-ahead window: every gain that is averaged at
frame n is at most the gain that frame n needs, so the smooth gain never lets a peak pass
the ceiling. A final check re-measures the output and tightens the margin if an
interpolated peak still came out above it.

Signals ``(channels, frames)`` float64 at `samplerate` Hz; the output has the same length
and no delay (the whole signal is known, so the look-ahead needs no latency).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.mastering import envelope, oversampling
from engine.mastering.settings import Limiter

#: Taps per branch of the fast detector, and of the exact check of the output; the
#: check's oversampling factor (the detector's is `Limiter.oversample`).
DETECT_TAPS = 16
CHECK_TAPS = 48
CHECK_OVERSAMPLE = 8
#: How far (linear) an interpolated peak may rise above its neighbouring samples for the
#: detector to look at it: 6 dB. Only contrived signals go further (fs/4 at 45 degrees
#: reaches 3 dB); the exact check of the output catches what the detector misses.
PRACTICAL_BOUND = 2.0


def peak_envelope(x: np.ndarray, oversample: int = 4, floor: float = 0.0,
                  taps: int = DETECT_TAPS) -> np.ndarray:
    """Per-frame peak of ``x (channels, frames)`` with its interpolated neighbours
    (computed wherever it can reach `floor`, see `oversampling.between_peaks`)."""
    return oversampling.peak_envelope(x, oversample, taps, floor=floor, bound=PRACTICAL_BOUND)


def _hold(g: np.ndarray, n: int) -> np.ndarray:
    """Minimum of g over the window [i, i + n) ahead of each frame."""
    from scipy.ndimage import minimum_filter1d

    if n <= 1:
        return g
    return np.asarray(minimum_filter1d(g, n, origin=-(n // 2) if n % 2 else -(n // 2) + 0,
                                       mode="nearest"))


def _average(g: np.ndarray, n: int) -> np.ndarray:
    """Mean of g over the window (i - n, i] behind each frame (``g[0]`` before the start:
    it is the held minimum of the first window, so the bound holds there too)."""
    if n <= 1 or g.size == 0:
        return g
    c = np.concatenate([np.zeros(1), np.cumsum(np.concatenate([np.full(n - 1, g[0]), g]))])
    return np.asarray((c[n:] - c[:-n]) / n)


def gain(peaks: np.ndarray, cfg: Limiter, samplerate: int, margin_db: float) -> np.ndarray:
    """Linear gain per frame for a (driven) peak envelope."""
    ceiling = 10 ** ((cfg.ceiling_dbtp - margin_db) / 20)
    need = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    n = max(1, int(round(cfg.lookahead_ms * samplerate / 1000)))
    held = _hold(need, n)
    # the release in nepers (-ln of the gain): the same curve as in dB, scaled
    depth = envelope.release_hold(-np.log(held), cfg.release_ms, samplerate)
    released = np.minimum(held, np.exp(-depth))
    return _average(released, n)


def limit(x: np.ndarray, samplerate: int, cfg: Limiter, peaks: np.ndarray | None = None
          ) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply `cfg.drive_db`, then limit to `cfg.ceiling_dbtp`. `peaks` is
    ``peak_envelope(x)`` before the drive (the loop passes it in once for all passes).

    After each gain computation the output is checked with a longer interpolator; where
    an interpolated peak still exceeds the ceiling, the envelope is raised there by the
    excess and the gain recomputed (up to `CHECKS` times, then the margin is widened)."""
    drive = 10 ** (cfg.drive_db / 20)
    env = (peak_envelope(x, cfg.oversample) if peaks is None else peaks) * drive
    y = x * drive
    ceiling = 10 ** (cfg.ceiling_dbtp / 20)
    margin = cfg.margin_db
    for attempt in range(CHECKS + 2):
        g = gain(env, cfg, samplerate, margin)
        out = y * g
        check = _check(out, env * g, ceiling, CHECK_OVERSAMPLE)
        over = check > ceiling
        if not over.any():
            break
        if attempt < CHECKS:
            env = env.copy()
            env[over] *= check[over] / ceiling * 10 ** (0.02 / 20)
        else:
            margin += 20 * math.log10(float(check.max()) / ceiling) + 0.05
    reduction = float(-20 * np.log10(max(float(g.min()), 1e-12))) if g.size else 0.0
    return out, {"max_reduction_db": round(reduction, 2), "margin_db": round(margin, 3)}


#: Local corrections after the exact check before the margin is widened instead.
CHECKS = 3
#: The exact check looks at frames whose detected peak is within this many dB of the
#: ceiling (the fast detector under-reads by well under this).
CHECK_RANGE_DB = 1.5


def _check(out: np.ndarray, approx: np.ndarray, ceiling: float, oversample: int
           ) -> np.ndarray:
    """Per-frame peak of `out` with the long interpolator, computed where the fast
    estimate `approx` comes near the ceiling (elsewhere: the sample peak)."""
    peaks = np.abs(out).max(axis=0) if out.size else np.zeros(0)
    near = np.nonzero(approx >= ceiling * 10 ** (-CHECK_RANGE_DB / 20))[0]
    if near.size == 0:
        return np.asarray(peaks)
    rows = np.union1d(near, np.maximum(near - 1, 0))
    b = oversampling.between_peaks(out, oversample, CHECK_TAPS, rows=rows)
    return np.maximum(peaks, np.maximum(b, np.concatenate([[0.0], b[:-1]])))
