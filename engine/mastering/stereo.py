"""Stereo shaping on the side signal only: mono-safe lows, width in the highs.

``mid = (L + R) / 2`` is never changed in level (the centre never hollows); the side
``(L - R) / 2`` is split on phase-coherent crossovers and re-weighted per band. The mid
goes through the same allpasses, so mid and side keep their phase relation. Signals
``(channels, frames)`` float64; mono passes unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.mastering import filters
from engine.mastering.settings import Stereo


def _allpasses(x: np.ndarray, cfg: Stereo, samplerate: int) -> np.ndarray:
    """`x` through the allpass that `split_bands` puts on the sum of its bands: a
    Linkwitz-Riley pair sums to the 2nd-order allpass at its crossover, so the sum of the
    bands is `x` through one allpass per crossover (2 sections instead of 17)."""
    q = 1 / np.sqrt(2)
    sos = np.vstack([filters.allpass(cfg.low_hz, q, samplerate),
                     filters.allpass(cfg.high_hz, q, samplerate)])
    return filters.apply(sos, x)


def shape(x: np.ndarray, samplerate: int, cfg: Stereo) -> tuple[np.ndarray, dict[str, Any]]:
    """Re-weight the side's bands: low ``(1 - low_side_cut)``, mid ``mid_width_db``
    (cuts only), high ``high_width_db``."""
    if not cfg.enabled or x.shape[0] != 2:
        return x, {}
    mid_gain = 10 ** (min(cfg.mid_width_db, 0.0) / 20)
    high_gain = 10 ** (cfg.high_width_db / 20)
    low_gain = 1.0 - min(max(cfg.low_side_cut, 0.0), 1.0)
    if low_gain == 1.0 and mid_gain == 1.0 and high_gain == 1.0:
        return x, {}
    mid = (x[0] + x[1])[None] / 2
    side = (x[0] - x[1])[None] / 2
    lo, mi, hi = filters.split_bands(side, [cfg.low_hz, cfg.high_hz], samplerate)
    side = low_gain * lo + mid_gain * mi + high_gain * hi
    mid = _allpasses(mid, cfg, samplerate)
    return np.vstack([mid + side, mid - side]), {}
