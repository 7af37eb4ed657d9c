"""Optional soft-clip saturation, oversampled to keep its harmonics from aliasing.

Linear below `knee` (so material that never reaches it passes bit-exactly), a smooth
tanh curve above it that approaches full scale. Signals ``(channels, frames)`` float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.mastering.settings import Saturation

#: Frames per processing block (blocks that stay below the knee are skipped).
BLOCK = 1 << 15
_PAD = 256


def soft_clip(x: np.ndarray, knee: float) -> np.ndarray:
    """The static curve: identity up to `knee`, then tanh towards 1.0."""
    a = np.abs(x)
    room = 1.0 - knee
    over = knee + room * np.tanh((a - knee) / room)
    return np.where(a > knee, np.sign(x) * over, x)


def saturate(x: np.ndarray, samplerate: int, cfg: Saturation) -> tuple[np.ndarray, dict[str, Any]]:
    """Drive `x` by `cfg.drive_db` into `soft_clip`, oversampled `cfg.oversample` times,
    then back by the same gain."""
    from scipy.signal import resample_poly

    if not cfg.enabled:
        return x, {}
    drive = 10 ** (cfg.drive_db / 20)
    y = x * drive
    frames = x.shape[1]
    touched = 0
    for start in range(0, frames, BLOCK):
        stop = min(frames, start + BLOCK)
        if np.max(np.abs(y[:, start:stop])) <= cfg.knee * 0.9:
            continue
        touched += stop - start
        lo, hi = max(0, start - _PAD), min(frames, stop + _PAD)
        up = resample_poly(y[:, lo:hi], cfg.oversample, 1, axis=-1)
        down = resample_poly(soft_clip(up, cfg.knee), 1, cfg.oversample, axis=-1)
        y[:, start:stop] = down[:, start - lo : start - lo + stop - start]
    return y / drive, {"processed_fraction": round(touched / max(frames, 1), 3)}
