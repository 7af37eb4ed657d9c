"""The loudness meter: EBU R128 / ITU-R BS.1770-4 through libebur128 (`pyebur128`, MIT).

One function per measurement, all on float samples shaped ``(channels, frames)`` at
`samplerate` Hz (mono or stereo; a mono file is measured as one channel, as BS.1770
does for a single front channel):

==================  ===================================================================
`measure`           integrated loudness (LUFS), LRA (LU), momentary/short-term curves
                    and maxima, sample peak (dBFS) and true peak (dBTP), in one pass
`true_peak_db`      true peak in dBTP at any oversampling factor (own polyphase
                    interpolator: 16x checks the limiter beyond libebur128's 4x)
==================  ===================================================================

libebur128 oversamples 4x below 96 kHz and 2x at 96 kHz (a 192 kHz interpolation grid
either way, BS.1770-4 Annex 2). Levels that do not exist (silence, or integrated loudness
of less than one 400 ms gating block) are ``None`` rather than -inf, so that the results
serialise to JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Spacing of the momentary and short-term curves, in seconds (EBU Tech 3341: at least 10 Hz).
CURVE_HOP_S = 0.1
#: Levels below this many LUFS/dB are treated as silence (libebur128's floor is -70 LUFS
#: absolute gating; -inf comes out for digital silence).
FLOOR_DB = -200.0


def level(value: float) -> float | None:
    """A finite level in dB, or None for -inf/NaN/below `FLOOR_DB`."""
    if value is None or not math.isfinite(value) or value <= FLOOR_DB:
        return None
    return float(value)


def amp_db(amplitude: float) -> float | None:
    """Linear amplitude -> dB (None for 0)."""
    return level(20.0 * math.log10(amplitude)) if amplitude > 0 else None


@dataclass
class Loudness:
    """What the meter measured.

    Attributes:
        integrated: LUFS-I, None when undefined (silence, or less than 400 ms of audio).
        ungated: K-weighted mean loudness of the whole signal without gating (LUFS), for
            signals shorter than 3 s only (else None): the documented fallback where
            `integrated` is undefined.
        lra: loudness range in LU (EBU Tech 3342); 0.0 when shorter than 3 s.
        momentary_max, short_term_max: LUFS maxima (None: silence or too short).
        momentary, short_term: curves every `CURVE_HOP_S` s (LUFS or None per point).
        sample_peak: dBFS over all channels; true_peak: dBTP (libebur128, 4x/2x).
    """

    integrated: float | None
    ungated: float | None
    lra: float
    momentary_max: float | None
    short_term_max: float | None
    sample_peak: float | None
    true_peak: float | None
    momentary: list[float | None] = field(default_factory=list)
    short_term: list[float | None] = field(default_factory=list)


def _state(channels: int, samplerate: int, true_peak: bool) -> Any:
    import pyebur128 as eb

    mode = (eb.MeasurementMode.MODE_I | eb.MeasurementMode.MODE_LRA
            | eb.MeasurementMode.MODE_SAMPLE_PEAK | eb.MeasurementMode.MODE_S)
    if true_peak:
        mode |= eb.MeasurementMode.MODE_TRUE_PEAK
    st = eb.R128State(channels, samplerate, mode)
    return st


def measure(samples: np.ndarray, samplerate: int, *, curves: bool = True,
            true_peak: bool = True) -> Loudness:
    """Measure ``samples (channels, frames)`` (float, nominal full scale ±1) at
    `samplerate` Hz. Curves are sampled every `CURVE_HOP_S` s (momentary: last 400 ms,
    short-term: last 3 s, as the meter stands at that time). Without `curves` neither
    curves nor maxima are measured (None); without `true_peak` the (costly) oversampled
    peak is skipped and reads None."""
    import pyebur128 as eb

    x = np.asarray(samples, dtype=np.float64)
    channels, frames = x.shape
    st = _state(channels, samplerate, true_peak)
    inter = np.ascontiguousarray(x.T).reshape(-1)
    hop = max(1, int(round(CURVE_HOP_S * samplerate)))
    mom: list[float | None] = []
    short: list[float | None] = []
    m_max = s_max = -math.inf
    if not curves:  # one block: no curves, no maxima
        st.add_frames(inter, frames)
        hop = frames + 1
    blocks = hop * 10 == samplerate  # the curves from 100 ms window loudness (below)
    powers: list[float] = []
    for start in range(0, frames if curves else 0, hop):
        stop = min(frames, start + hop)
        st.add_frames(inter[start * channels : stop * channels], stop - start)
        if stop - start < hop:
            break
        if blocks:
            powers.append(eb.get_loudness_window(st, 100))
            continue
        if stop >= int(0.4 * samplerate):
            m = eb.get_loudness_momentary(st)
            m_max = max(m_max, m)
            if curves:
                mom.append(_rounded(m))
        elif curves:
            mom.append(None)
        if stop >= 3 * samplerate:
            s = eb.get_loudness_shortterm(st)
            s_max = max(s_max, s)
            if curves:
                short.append(_rounded(s))
        elif curves:
            short.append(None)
    if powers:
        mom, m_max = _window_curve(powers, 4)
        short, s_max = _window_curve(powers, 30)
    return Loudness(
        integrated=level(eb.get_loudness_global(st)) if frames >= 0.4 * samplerate else None,
        ungated=level(eb.get_loudness_window(st, max(1, int(1000 * frames / samplerate))))
        if 0 < frames < 3 * samplerate else None,
        lra=float(eb.get_loudness_range(st)) if frames >= 3 * samplerate else 0.0,
        momentary_max=level(m_max),
        short_term_max=level(s_max),
        sample_peak=amp_db(max(eb.get_sample_peak(st, c) for c in range(channels))),
        true_peak=amp_db(max(eb.get_true_peak(st, c) for c in range(channels)))
        if true_peak else None,
        momentary=mom,
        short_term=short,
    )


def _window_curve(block_lufs: list[float], n: int) -> tuple[list[float | None], float]:
    """The loudness of the last `n` blocks at each block, from each 100 ms block's own
    loudness (libebur128's, LUFS): the mean of their powers, i.e. exactly the loudness of
    the n x 100 ms window (momentary: 4, short-term: 30); None before n blocks. Returns
    the curve and its maximum (-inf when none)."""
    power = np.power(10.0, (np.asarray(block_lufs, dtype=np.float64) + 0.691) / 10)
    sums = np.concatenate([[0.0], np.cumsum(power)])
    curve: list[float | None] = [None] * min(n - 1, power.size)
    top = -math.inf
    if power.size >= n:
        with np.errstate(divide="ignore"):
            lufs = -0.691 + 10 * np.log10(np.maximum((sums[n:] - sums[:-n]) / n, 0.0))
        top = float(lufs.max())
        curve += [_rounded(float(v)) for v in lufs]
    return curve, top


def _rounded(value: float) -> float | None:
    v = level(value)
    return None if v is None else round(v, 2)


def integrated(samples: np.ndarray, samplerate: int) -> float | None:
    """LUFS-I only (the loop's cheap re-measure), falling back to the ungated loudness for
    less than 400 ms; None for silence."""
    import pyebur128 as eb

    x = np.asarray(samples, dtype=np.float64)
    channels, frames = x.shape
    if frames < 0.4 * samplerate:
        return measure(x, samplerate, curves=False).ungated
    st = eb.R128State(channels, samplerate, eb.MeasurementMode.MODE_I)
    st.add_frames(np.ascontiguousarray(x.T).reshape(-1), frames)
    return level(eb.get_loudness_global(st))


def true_peak_db(samples: np.ndarray, samplerate: int = 48000, oversample: int = 16
                 ) -> float | None:
    """True peak in dBTP of ``(channels, frames)``, interpolated `oversample` times with a
    48-tap-per-branch windowed sinc (`engine.mastering.oversampling`); `samplerate` only
    documents the call (the interpolation is relative to the sample rate). Like
    libebur128, the meter starts from silence and is not flushed at the end."""
    from engine.mastering import oversampling

    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.size == 0:
        return None
    sample_peak = float(np.abs(x).max())
    env = oversampling.between_peaks(x, oversample, taps=48, floor=sample_peak, flush=False)
    return amp_db(max(sample_peak, float(env.max())))
