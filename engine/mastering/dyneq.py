"""Dynamic EQ: band cuts (mud, harshness) that act only while their band flares.

The detector follows the band's level *relative to the whole signal* (dB), so a loud
passage is not a flare; the cut is ``y = x + (g - 1) * bandpass(x)``, a bell of gain g at
the band's centre. A band can be keyed on another signal (e.g. the instrumental stem, so a
voice never triggers a cut of its own presence). Signals ``(channels, frames)`` float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.mastering import envelope, filters
from engine.mastering.settings import DynamicBand, DynamicEQ

#: Control-rate block in frames.
BLOCK = 64


def relative_level(key: np.ndarray, band: DynamicBand, samplerate: int,
                   filtered: np.ndarray | None = None, key_ms: np.ndarray | None = None
                   ) -> np.ndarray:
    """The band's level minus the whole key's level, dB, one value per `BLOCK` frames
    (`filtered`: the key through the band's bandpass, `key_ms`: the key's
    `block_mean_square`, when already at hand)."""
    if filtered is None:
        filtered = filters.apply(filters.bandpass(band.freq, band.q, samplerate), key)
    rate = samplerate / BLOCK
    eps = 1e-12
    if key_ms is None:
        key_ms = envelope.block_mean_square(key, BLOCK)
    whole = envelope.one_pole(key_ms, band.attack_ms, rate)
    part = envelope.one_pole(envelope.block_mean_square(filtered, BLOCK), band.attack_ms,
                             rate)
    return np.asarray(10 * np.log10((part + eps) / (whole + eps)))


def band_gain_db(key: np.ndarray, band: DynamicBand, samplerate: int, frames: int,
                 filtered: np.ndarray | None = None, key_ms: np.ndarray | None = None
                 ) -> np.ndarray:
    """The cut in dB (<= 0) per sample; silence (below -70 dBFS) never triggers it."""
    rate = samplerate / BLOCK
    if key_ms is None:
        key_ms = envelope.block_mean_square(key, BLOCK)
    rel = relative_level(key, band, samplerate, filtered, key_ms)
    loud = key_ms > 1e-7
    depth = envelope.knee_curve(rel, band.baseline_db + band.threshold_db, band.ratio, 2.0)
    depth = np.minimum(np.where(loud, depth, 0.0), band.max_cut_db)
    depth = envelope.release_hold(depth, band.release_ms, rate)
    depth = envelope.one_pole(depth, band.attack_ms / 2, rate, initial=0.0)
    return -envelope.to_samples(depth, BLOCK, frames)


def dynamic_eq(x: np.ndarray, samplerate: int, cfg: DynamicEQ,
               keys: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply every band of `cfg`; returns the output and each band's deepest cut (dB) and
    the fraction of time it acted."""
    if not cfg.enabled or not cfg.bands:
        return x, {}
    y = x.copy()
    info: dict[str, Any] = {}
    levels: dict[int, np.ndarray] = {}  # each key's block mean squares, once
    for band in cfg.bands:
        key = (keys or {}).get(band.key, x)
        if id(key) not in levels:
            levels[id(key)] = envelope.block_mean_square(key, BLOCK)
        part = filters.apply(filters.bandpass(band.freq, band.q, samplerate), x)
        gain_db = band_gain_db(key, band, samplerate, x.shape[1],
                               part if key is x else None, levels[id(key)])
        g = np.exp(gain_db * (np.log(10) / 20))  # 10 ** (dB / 20), faster
        g -= 1.0
        part *= g
        y += part
        info[band.name] = {"max_cut_db": round(float(-gain_db.min()), 2),
                           "active": round(float(np.mean(gain_db < -0.5)), 3)}
    return y, info
