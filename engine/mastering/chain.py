"""The processing chain: every stage in order, timed.

`pre_limiter` runs rumble high-pass, corrective EQ, dynamic EQ, glue compression,
multiband compression, saturation and stereo shaping once; `finish` applies the final
stage (drive and the true-peak limiter), which the loop repeats with a new drive.
Signals ``(channels, frames)`` float64 at `samplerate` Hz; `keys` holds optional
detector signals by name (the stems, when stem-aware), same shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from engine.mastering import compressor, dyneq, eq, limiter, saturation, stereo
from engine.mastering.settings import ChainSettings

Stage = Callable[[np.ndarray], tuple[np.ndarray, dict[str, Any]]]


def _stages(settings: ChainSettings, samplerate: int, keys: dict[str, np.ndarray]
            ) -> list[tuple[str, Stage]]:
    s, sr = settings, samplerate
    return [
        ("highpass", lambda x: eq.highpass(x, sr, s.highpass)),
        ("eq", lambda x: eq.corrective_eq(x, sr, s.eq)),
        ("dynamic_eq", lambda x: dyneq.dynamic_eq(x, sr, s.dynamic_eq, keys)),
        ("glue", lambda x: compressor.compress(x, sr, s.glue, keys)),
        ("multiband", lambda x: compressor.multiband(x, sr, s.multiband, keys)),
        ("saturation", lambda x: saturation.saturate(x, sr, s.saturation)),
        ("stereo", lambda x: stereo.shape(x, sr, s.stereo)),
    ]


def pre_limiter(x: np.ndarray, samplerate: int, settings: ChainSettings,
                keys: dict[str, np.ndarray] | None = None,
                check: Callable[[], None] | None = None
                ) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Run every stage before the limiter. Returns the signal, each stage's report and
    each stage's time in seconds; `check` is called between stages (cancellation)."""
    y = np.asarray(x, dtype=np.float64)
    reports: dict[str, Any] = {}
    times: dict[str, float] = {}
    for name, stage in _stages(settings, samplerate, keys or {}):
        if check is not None:
            check()
        t0 = time.perf_counter()
        y, reports[name] = stage(y)
        times[name] = round(time.perf_counter() - t0, 4)
    return y, reports, times


def finish(y: np.ndarray, samplerate: int, settings: ChainSettings, drive_db: float,
           peaks: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The final stage: `drive_db` of gain into the true-peak limiter."""
    cfg = replace(settings.limiter, drive_db=drive_db)
    return limiter.limit(y, samplerate, cfg, peaks)
