"""Filter building blocks of the mastering chain, as second-order sections (scipy's
``sos`` layout, one row ``[b0, b1, b2, 1, a1, a2]`` per biquad).

Biquads follow the well-known bilinear-transform designs (RBJ's "Audio EQ Cookbook"
formulas); the crossovers are Linkwitz-Riley 4th order (two cascaded 2nd-order
Butterworth sections per side), whose low and high outputs sum to a 2nd-order allpass,
so the bands of `split_bands` add back to the input with a flat magnitude.

Frequencies are Hz, gains dB; signals ``(channels, frames)`` float64, filtered along the
last axis.
"""

from __future__ import annotations

import math

import numpy as np


def _norm(b: list[float], a: list[float]) -> np.ndarray:
    a0 = a[0]
    return np.array([[b[0] / a0, b[1] / a0, b[2] / a0, 1.0, a[1] / a0, a[2] / a0]])


def _w(freq: float, samplerate: int) -> tuple[float, float]:
    w0 = 2 * math.pi * min(freq, 0.49 * samplerate) / samplerate
    return math.cos(w0), math.sin(w0)


def peaking(freq: float, gain_db: float, q: float, samplerate: int) -> np.ndarray:
    """Bell filter: `gain_db` at `freq`, bandwidth set by `q`."""
    cos, sin = _w(freq, samplerate)
    big_a = 10 ** (gain_db / 40)
    alpha = sin / (2 * q)
    return _norm([1 + alpha * big_a, -2 * cos, 1 - alpha * big_a],
                 [1 + alpha / big_a, -2 * cos, 1 - alpha / big_a])


def shelf(freq: float, gain_db: float, samplerate: int, *, high: bool, slope: float = 1.0
          ) -> np.ndarray:
    """Low or high shelf of `gain_db` with its mid-point at `freq` (`slope` 1: steepest
    without overshoot)."""
    cos, sin = _w(freq, samplerate)
    big_a = 10 ** (gain_db / 40)
    alpha = sin / 2 * math.sqrt((big_a + 1 / big_a) * (1 / slope - 1) + 2)
    root = 2 * math.sqrt(big_a) * alpha
    s = -1.0 if high else 1.0  # the high shelf is the low shelf with cos's sign flipped
    b = [big_a * ((big_a + 1) - s * (big_a - 1) * cos + root),
         s * 2 * big_a * ((big_a - 1) - s * (big_a + 1) * cos),
         big_a * ((big_a + 1) - s * (big_a - 1) * cos - root)]
    a = [(big_a + 1) + s * (big_a - 1) * cos + root,
         -s * 2 * ((big_a - 1) + s * (big_a + 1) * cos),
         (big_a + 1) + s * (big_a - 1) * cos - root]
    return _norm(b, a)


def bandpass(freq: float, q: float, samplerate: int) -> np.ndarray:
    """Band-pass with 0 dB peak gain at `freq` (x + (g - 1) * bandpass(x) is a bell of
    gain g there)."""
    cos, sin = _w(freq, samplerate)
    alpha = sin / (2 * q)
    return _norm([alpha, 0.0, -alpha], [1 + alpha, -2 * cos, 1 - alpha])


def allpass(freq: float, q: float, samplerate: int) -> np.ndarray:
    """2nd-order allpass centred on `freq`."""
    cos, sin = _w(freq, samplerate)
    alpha = sin / (2 * q)
    return _norm([1 - alpha, -2 * cos, 1 + alpha], [1 + alpha, -2 * cos, 1 - alpha])


def butter(order: int, freq: float, samplerate: int, kind: str) -> np.ndarray:
    """Butterworth ``kind`` (``"lowpass"``/``"highpass"``) as sos."""
    from scipy.signal import butter as _butter

    return np.asarray(_butter(order, min(freq, 0.49 * samplerate), kind, fs=samplerate,
                              output="sos"))


def linkwitz_riley(freq: float, samplerate: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) 4th-order Linkwitz-Riley sections at `freq`."""
    lo = butter(2, freq, samplerate, "lowpass")
    hi = butter(2, freq, samplerate, "highpass")
    return np.vstack([lo, lo]), np.vstack([hi, hi])


def apply(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Filter ``(channels, frames)`` along time (causal, from rest)."""
    from scipy.signal import sosfilt

    return np.asarray(sosfilt(sos, x, axis=-1))


def split_bands(x: np.ndarray, crossovers: list[float], samplerate: int) -> list[np.ndarray]:
    """Split ``x (channels, frames)`` into ``len(crossovers) + 1`` bands, lowest first,
    with Linkwitz-Riley crossovers at ascending `crossovers` Hz. Every band is passed
    through the allpasses of the crossovers above its own, so all bands share one phase
    response and their sum is the input through a chain of allpasses (flat magnitude)."""
    bands: list[np.ndarray] = []
    rest = x
    for i, freq in enumerate(crossovers):
        lo, hi = linkwitz_riley(freq, samplerate)
        # the allpasses of the crossovers above stacked onto the low-pass: one call
        # (sosfilt runs its sections in order per sample: the same result, and its cost
        # is mostly per call, not per section)
        low = apply(np.vstack([lo, *(allpass(above, 1 / math.sqrt(2), samplerate)
                                     for above in crossovers[i + 1 :])]), rest)
        bands.append(low)
        rest = apply(hi, rest)
    bands.append(rest)
    return bands


def response_db(sos: np.ndarray, freqs: np.ndarray, samplerate: int) -> np.ndarray:
    """Magnitude response of `sos` at `freqs` Hz, in dB."""
    from scipy.signal import sosfreqz

    _, h = sosfreqz(sos, worN=np.asarray(freqs, dtype=float), fs=samplerate)
    return np.asarray(20 * np.log10(np.maximum(np.abs(h), 1e-12)))
