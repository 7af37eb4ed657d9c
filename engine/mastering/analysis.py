"""The analysis of a mix or a master, in one JSON schema for input and output alike.

`analyze` takes float samples ``(channels, frames)`` at `samplerate` Hz and returns a
plain dict (see `SCHEMA`): loudness from libebur128 (`meter`), peaks, crest factor and
peak-to-loudness ratio, DC offset, clipped runs, the six-band tonal balance, stereo
correlation (overall and below 120 Hz), the side-to-mid energy ratio and risk flags.
Levels that do not exist (silence, mono side, too short for a gate block) are ``None``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.mastering import filters, meter
from engine.mastering.settings import BANDS

SCHEMA = "stembridge.analysis/1"

#: The default tonal curve (dB of each band relative to the six bands' total) that the
#: corrective EQ steers towards and the tonal flags compare with: a broad, gently falling
#: balance typical of commercial pop/rock masters (bass and mids carry most energy).
TARGET_CURVE: dict[str, float] = {
    "sub": -10.0, "bass": -4.5, "low_mids": -7.0, "mids": -7.0, "presence": -11.5,
    "air": -17.5,
}
#: Magnitude at or above which a sample counts as clipped, and the shortest run counted.
CLIP_LEVEL = 0.999
CLIP_RUN = 3
#: Frequency below which stereo correlation is measured for mono compatibility.
LOW_HZ = 120.0


def power_spectrum(x: np.ndarray, samplerate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in Hz, power per bin summed over channels and segments): Welch's
    segments (periodic Hann, half overlap, each segment's mean removed), unscaled, since
    only ratios between bands are used."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.fft import rfft, rfftfreq
    from scipy.signal import get_window

    frames = x.shape[1]
    nper = min(8192, max(256, 1 << int(math.log2(max(frames, 256)))))
    freqs = rfftfreq(nper, 1 / samplerate)
    power = np.zeros(freqs.size)
    if frames < nper:
        return freqs, power
    window = get_window("hann", nper).astype(np.float32)
    window_spec = rfft(window.astype(np.float64))
    step = nper // 2
    for ch in np.asarray(x, dtype=np.float32):
        segments = sliding_window_view(ch, nper)[::step]
        sums = np.concatenate([[0.0], np.cumsum(ch, dtype=np.float64)])
        starts = np.arange(segments.shape[0]) * step
        means = (sums[starts + nper] - sums[starts]) / nper  # detrend: each segment's mean
        for start in range(0, segments.shape[0], 128):
            spec = rfft(segments[start:start + 128] * window, axis=-1).astype(np.complex128)
            spec -= means[start:start + 128, None] * window_spec
            power += (spec.real**2 + spec.imag**2).sum(axis=0)
    return freqs, power


def tonal_balance(x: np.ndarray, samplerate: int) -> dict[str, float | None]:
    """dB of each band of `BANDS` relative to their total (Welch spectrum of the
    channels' power, `power_spectrum`). Bands above the Nyquist frequency read None."""
    freqs, power = power_spectrum(x, samplerate)
    energies = {}
    for name, lo, hi in BANDS:
        sel = (freqs >= lo) & (freqs < min(hi, samplerate / 2))
        energies[name] = float(power[sel].sum()) if sel.any() else 0.0
    total = sum(energies.values())
    if total <= 1e-20:
        return {name: None for name, _, _ in BANDS}
    return {name: (round(10 * math.log10(e / total), 2) if e > 0 else None)
            for name, e in energies.items()}


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return round(float(np.dot(a, b)) / den, 4) if den > 1e-20 else None


def stereo(x: np.ndarray, samplerate: int) -> dict[str, float | None]:
    """Correlation of left and right (overall and below `LOW_HZ`) and the side-to-mid
    energy ratio in dB; mono reads correlation 1 and no side."""
    if x.shape[0] == 1:
        return {"correlation": 1.0, "correlation_low": 1.0, "side_to_mid_db": None}
    low = filters.apply(filters.butter(4, LOW_HZ, samplerate, "lowpass"), x)
    mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2
    em, es = float(np.dot(mid, mid)), float(np.dot(side, side))
    ratio = round(10 * math.log10(es / em), 2) if es > 1e-20 and em > 1e-20 else None
    return {"correlation": _correlation(x[0], x[1]),
            "correlation_low": _correlation(low[0], low[1]), "side_to_mid_db": ratio}


def clipped_runs(x: np.ndarray) -> tuple[int, int]:
    """(runs of at least `CLIP_RUN` consecutive samples at `CLIP_LEVEL` or above, samples
    in them), counted per channel."""
    runs = samples = 0
    for ch in np.abs(x) >= CLIP_LEVEL:
        edges = np.diff(np.concatenate([[0], ch.astype(np.int8), [0]]))
        starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        lengths = stops - starts
        runs += int(np.sum(lengths >= CLIP_RUN))
        samples += int(lengths[lengths >= CLIP_RUN].sum())
    return runs, samples


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def flags(result: dict[str, Any]) -> list[str]:
    """Risk flags from an analysis dict (see `analyze`)."""
    out = []
    pk, loud, st = result["peaks"], result["loudness"], result["stereo"]
    tone = result["tonal_balance_db"]
    if pk["true_peak_dbtp"] is not None and pk["true_peak_dbtp"] > -0.5:
        out.append("too_hot")
    plr = pk["plr_db"]
    if plr is not None and (plr < 9.0 or (result["clipped_runs"] > 10 and plr < 12.0)):
        out.append("already_limited")
    if st["correlation_low"] is not None and st["correlation_low"] < 0.5:
        out.append("mono_incompatible_lows")
    if st["correlation"] is not None and st["correlation"] < 0.0:
        out.append("phase_problems")
    for band, flag, margin in (("presence", "harsh_presence", 3.0),
                               ("low_mids", "muddy_low_mids", 3.0),
                               ("sub", "sub_buildup", 4.0)):
        if tone.get(band) is not None and tone[band] > TARGET_CURVE[band] + margin:
            out.append(flag)
    if loud["integrated_lufs"] is None and loud["ungated_lufs"] is None:
        out.append("silent")
    return out


def analyze(samples: np.ndarray, samplerate: int, *, curves: bool = True) -> dict[str, Any]:
    """The full analysis of ``samples (channels, frames)`` at `samplerate` Hz (JSON-ready).

    Keys: ``schema``, ``samplerate``, ``channels``, ``duration_s``, ``loudness``
    (``integrated_lufs``, ``integrated_defined``, ``ungated_lufs``, ``momentary_max_lufs``,
    ``short_term_max_lufs``, ``lra_lu``), ``curves`` (``hop_s``, ``momentary``,
    ``short_term``), ``peaks`` (``sample_peak_dbfs``, ``true_peak_dbtp``, ``crest_db``,
    ``plr_db``), ``dc_offset`` (per channel, linear), ``clipped_runs``,
    ``clipped_samples``, ``tonal_balance_db``, ``stereo``, ``flags``."""
    x = np.asarray(samples, dtype=np.float64)
    m = meter.measure(x, samplerate, curves=curves)
    rms = math.sqrt(float(np.mean(x**2))) if x.size else 0.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    runs, clipped = clipped_runs(x)
    crest = 20 * math.log10(peak / rms) if rms > 1e-10 else None
    loud = m.integrated if m.integrated is not None else m.ungated
    plr = m.true_peak - loud if (m.true_peak is not None and loud is not None) else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "samplerate": samplerate,
        "channels": int(x.shape[0]),
        "duration_s": round(x.shape[1] / samplerate, 3),
        "loudness": {
            "integrated_lufs": _round(m.integrated),
            "integrated_defined": m.integrated is not None,
            "ungated_lufs": _round(m.ungated),
            "momentary_max_lufs": _round(m.momentary_max),
            "short_term_max_lufs": _round(m.short_term_max),
            "lra_lu": round(m.lra, 2),
        },
        "curves": {"hop_s": meter.CURVE_HOP_S, "momentary": m.momentary,
                   "short_term": m.short_term},
        "peaks": {"sample_peak_dbfs": _round(m.sample_peak), "true_peak_dbtp":
                  _round(m.true_peak), "crest_db": _round(crest), "plr_db": _round(plr)},
        "dc_offset": [round(float(v), 6) for v in x.mean(axis=1)],
        "clipped_runs": runs,
        "clipped_samples": clipped,
        "tonal_balance_db": tonal_balance(x, samplerate),
        "stereo": stereo(x, samplerate),
    }
    result["flags"] = flags(result)
    return result


def loudness_of(result: dict[str, Any]) -> float | None:
    """The loudness an analysis stands for: LUFS-I, or the ungated fallback when the
    signal is shorter than one gating block."""
    loud = result["loudness"]
    return loud["integrated_lufs"] if loud["integrated_defined"] else loud["ungated_lufs"]
