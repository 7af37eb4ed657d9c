"""Chain settings from an analysis and an intent: the part of mastering that decides.

`build` reads the input's analysis (and a reference's, and which stems there are) and
fills a `ChainSettings`; the limiter's drive is left for the loop (`master`). The rules:
correct at most part of the tonal distance to the target curve, compress gently and not
at all what is already limited, keep the lows mono-safe, widen only where the reference
is wider. `amount` (0..1) scales every correction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.mastering import analysis as an
from engine.mastering import dyneq
from engine.mastering.presets import Intent
from engine.mastering.settings import (
    BANDS,
    ChainSettings,
    Compressor,
    CorrectiveEQ,
    DynamicBand,
    DynamicEQ,
    HighPass,
    Limiter,
    Multiband,
    Saturation,
    Stereo,
)

#: Share of the tonal distance the corrective EQ closes at amount 1 (static EQ is a broad
#: brush; closing all of it would over-correct arrangements that differ on purpose).
EQ_SHARE = 0.6


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def eq_gains(tone: dict[str, Any], curve: dict[str, float], amount: float) -> dict[str, float]:
    """Per-band EQ gains (dB) towards `curve` from a measured balance `tone`."""
    gains = {}
    for name, _, _ in BANDS:
        if tone.get(name) is None or curve.get(name) is None:
            continue
        gains[name] = round(_clamp(EQ_SHARE * amount * (curve[name] - tone[name]), -4.0, 2.5), 2)
    return gains


def meets_target(source: dict[str, Any], intent: Intent) -> bool:
    """True when the input already is a master for `intent` (within 0.5 LU of its target,
    true peak within 0.5 dB under its ceiling): then only the final stage acts, so that
    re-mastering a master leaves it as it is."""
    loud, peak = an.loudness_of(source), source["peaks"]["true_peak_dbtp"]
    if loud is None or peak is None:
        return False
    return (abs(loud - intent.target_lufs) <= 0.5
            and intent.true_peak_db - 0.5 <= peak <= intent.true_peak_db + 0.05)


def _dynamic_bands(x: np.ndarray, samplerate: int, flags: list[str], amount: float,
                   keyed: bool) -> list[DynamicBand]:
    bands = [DynamicBand("mud", 300.0, 1.0), DynamicBand("harshness", 3500.0, 1.2,
                                                         key="instrumental" if keyed else "mix")]
    out = []
    for band in bands:
        rel = dyneq.relative_level(x, band, samplerate)
        loud = rel[np.isfinite(rel)]
        band.baseline_db = round(float(np.median(loud)), 2) if loud.size else 0.0
        flagged = (band.name == "mud" and "muddy_low_mids" in flags) or (
            band.name == "harshness" and "harsh_presence" in flags)
        band.threshold_db = 1.5 if flagged else 2.5
        band.max_cut_db = round(4.0 * amount, 2)
        if band.max_cut_db > 0.1:
            out.append(band)
    return out


def _rms_db(x: np.ndarray) -> float:
    ms = float(np.mean(x**2)) if x.size else 0.0
    return 10 * math.log10(ms) + 3.01 if ms > 1e-12 else -100.0


def _width(source: dict[str, Any], reference: dict[str, Any] | None, amount: float
           ) -> tuple[float, float]:
    """(mid_width_db, high_width_db) that move the side-to-mid ratio towards the
    reference's: narrowing acts above the lows, widening only in the highs."""
    if reference is None:
        return 0.0, 0.0
    a, b = source["stereo"]["side_to_mid_db"], reference["stereo"]["side_to_mid_db"]
    if a is None or b is None:
        return 0.0, 0.0
    diff = _clamp(b - a, -3.0, 3.0) * amount
    return (round(diff, 2), round(diff, 2)) if diff < 0 else (0.0, round(diff, 2))


def build(x: np.ndarray, samplerate: int, source: dict[str, Any], intent: Intent, *,
          reference: dict[str, Any] | None = None, stems: tuple[str, ...] = ()
          ) -> ChainSettings:
    """Settings for mastering ``x (channels, frames)`` whose analysis is `source`."""
    amount = 0.0 if meets_target(source, intent) else intent.amount
    flags = source["flags"]
    limited = "already_limited" in flags
    keyed = "instrumental" in stems
    curve = an.TARGET_CURVE
    if reference is not None:
        curve = {k: v for k, v in reference["tonal_balance_db"].items() if v is not None}
    loud = an.loudness_of(source)
    rms = _rms_db(x)
    glue_ratio = 1.0 if limited else 1.0 + (intent.glue_ratio - 1.0) * amount
    mb_ratio = 1.0 if limited else 1.0 + (intent.multiband_ratio - 1.0) * amount
    threshold = (loud if loud is not None else rms) + 3.0
    band_rel = {0: ("sub", "bass"), 1: ("low_mids", "mids"), 2: ("presence", "air")}
    tone = source["tonal_balance_db"]
    mb_bands = []
    for i, (attack, release) in enumerate(((40.0, 250.0), (20.0, 150.0), (10.0, 100.0))):
        energy = sum(10 ** (tone[b] / 10) for b in band_rel[i] if tone.get(b) is not None)
        rel = 10 * math.log10(energy) if energy > 0 else -30.0
        mb_bands.append(Compressor(threshold_db=round(rms + rel + 4.0, 2), ratio=round(mb_ratio, 3),
                                   knee_db=6.0, attack_ms=attack, release_ms=release,
                                   key="instrumental" if keyed and i == 1 else "mix"))
    peak = source["peaks"]["sample_peak_dbfs"]
    sat_drive = 0.0
    if intent.saturation and not limited and peak is not None and loud is not None:
        sat_drive = round(_clamp(-peak + 0.3 * (intent.target_lufs - loud), 0.0, 6.0), 2)
    mid_w, high_w = _width(source, reference, amount)
    corr_low = source["stereo"]["correlation_low"]
    low_cut = 0.25 * amount + (_clamp((0.9 - corr_low) * 2, 0.0, 0.75) * amount
                               if corr_low is not None else 0.0)
    return ChainSettings(
        target_lufs=intent.target_lufs,
        highpass=HighPass(freq=30.0 if "sub_buildup" in flags else 25.0),
        eq=CorrectiveEQ(gains_db=eq_gains(tone, curve, amount)),
        dynamic_eq=DynamicEQ(bands=_dynamic_bands(x, samplerate, flags, amount, keyed)),
        glue=Compressor(threshold_db=round(threshold, 2), ratio=round(glue_ratio, 3),
                        key="mix"),
        multiband=Multiband(bands=mb_bands),
        saturation=Saturation(enabled=sat_drive > 0, drive_db=sat_drive),
        stereo=Stereo(enabled=x.shape[0] == 2, low_side_cut=round(low_cut, 3),
                      mid_width_db=mid_w, high_width_db=high_w),
        limiter=Limiter(ceiling_dbtp=intent.true_peak_db),
    )
