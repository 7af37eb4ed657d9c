"""Static filtering: the rumble high-pass and the corrective EQ.

Signals ``(channels, frames)`` float64 at `samplerate` Hz.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.mastering import filters
from engine.mastering.settings import BANDS, CorrectiveEQ, HighPass


def highpass(x: np.ndarray, samplerate: int, cfg: HighPass) -> tuple[np.ndarray, dict[str, Any]]:
    """Remove rumble below `cfg.freq` (Butterworth of `cfg.order`)."""
    if not cfg.enabled:
        return x, {}
    return filters.apply(filters.butter(cfg.order, cfg.freq, samplerate, "highpass"), x), {}


def eq_sections(cfg: CorrectiveEQ, samplerate: int) -> np.ndarray:
    """The EQ as sos: a low shelf at the sub/bass edge, bells on the middle bands (Q from
    each band's width in octaves), a high shelf at the presence/air edge."""
    rows = []
    for name, lo, hi in BANDS:
        gain = max(-cfg.max_cut_db, min(cfg.max_boost_db, cfg.gains_db.get(name, 0.0)))
        if abs(gain) < 0.05:
            continue
        if name == "sub":
            rows.append(filters.shelf(hi, gain, samplerate, high=False, slope=0.6))
        elif name == "air":
            rows.append(filters.shelf(lo, gain, samplerate, high=True, slope=0.6))
        else:
            octaves = math.log2(hi / lo)
            q = math.sqrt(2**octaves) / (2**octaves - 1)
            rows.append(filters.peaking(math.sqrt(lo * hi), gain, q, samplerate))
    return np.vstack(rows) if rows else np.zeros((0, 6))


def corrective_eq(x: np.ndarray, samplerate: int, cfg: CorrectiveEQ
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply `eq_sections` (nothing when every gain is ~0)."""
    sos = eq_sections(cfg, samplerate)
    if not len(sos):
        return x, {}
    return filters.apply(sos, x), {}
