"""Compression: the wideband glue compressor and the multiband compressor.

RMS detector at a control rate of one value per `BLOCK` frames, soft-knee static curve,
instant-attack/exponential-release hold followed by attack smoothing; the gain is linked
across channels and interpolated back to the sample rate. Signals ``(channels, frames)``
float64 at `samplerate` Hz.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.mastering import envelope, filters
from engine.mastering.settings import Compressor, Multiband

#: Control-rate block in frames.
BLOCK = 32


def gain_db(key: np.ndarray, cfg: Compressor, samplerate: int, frames: int) -> np.ndarray:
    """Gain (dB, <= 0, before make-up) per sample for the detector signal `key`."""
    rate = samplerate / BLOCK
    ms = envelope.one_pole(envelope.block_mean_square(key, BLOCK), 10.0, rate)
    level = 10 * np.log10(ms + 1e-12) + 3.01  # a full-scale sine reads 0 dB
    depth = envelope.knee_curve(level, cfg.threshold_db, cfg.ratio, cfg.knee_db)
    depth = envelope.release_hold(depth, cfg.release_ms, rate)
    depth = envelope.one_pole(depth, cfg.attack_ms, rate, initial=0.0)
    return -envelope.to_samples(depth, BLOCK, frames)


def compress(x: np.ndarray, samplerate: int, cfg: Compressor,
             keys: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Wideband compression of `x`, detector on ``keys[cfg.key]`` (default `x`)."""
    if not cfg.enabled or cfg.ratio <= 1.0:
        return x, {}
    key = (keys or {}).get(cfg.key, x)
    g = gain_db(key, cfg, samplerate, x.shape[1])
    info = {"max_reduction_db": round(float(-g.min()), 2),
            "mean_reduction_db": round(float(-g.mean()), 2)}
    g += cfg.makeup_db  # then 10 ** (dB / 20) in place, as exp (faster)
    g *= np.log(10) / 20
    np.exp(g, out=g)
    return x * g, info


def multiband(x: np.ndarray, samplerate: int, cfg: Multiband,
              keys: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Split on `cfg.crossovers`, compress each band with its own settings (detector on
    the same band of its key), sum back."""
    active = [b for b in cfg.bands if b.enabled and b.ratio > 1.0]
    if not cfg.enabled or not active:
        return x, {}
    bands = filters.split_bands(x, cfg.crossovers, samplerate)
    split_keys: dict[str, list[np.ndarray]] = {}
    for name in {b.key for b in cfg.bands if b.key != "mix" and keys and b.key in keys}:
        split_keys[name] = filters.split_bands(keys[name], cfg.crossovers, samplerate)  # type: ignore[index]
    out = np.zeros_like(x)
    info: dict[str, Any] = {}
    for i, (band, comp) in enumerate(zip(bands, cfg.bands, strict=True)):
        band_keys = {"mix": band, **{k: v[i] for k, v in split_keys.items()}}
        y, band_info = compress(band, samplerate, comp, band_keys)
        out += y
        info[f"band{i}"] = band_info
    return out, info
