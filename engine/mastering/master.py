"""The mastering loop: analyse -> settings -> process -> re-measure -> adjust -> repeat.

    result = master(samples, 44100, resolve("streaming"))
    result.samples            # (channels, frames) float32, same rate and channels
    result.passes             # every pass: drive, loudness, distance to the target

The stages before the limiter run once (`chain.pre_limiter`); each pass re-runs only the
final stage (drive into the true-peak limiter) with a drive chosen from the previous
passes, until the integrated loudness is within the intent's tolerance or the passes run
out. The first drive comes from a model of the limiter's loudness loss (energy of the
signal under the gain it would need), so most masters land in one or two passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.mastering import analysis as an
from engine.mastering import chain, limiter, meter, oversampling, recipe
from engine.mastering.presets import Intent
from engine.mastering.settings import ChainSettings

#: Bounds of the limiter's drive in dB.
MAX_DRIVE_DB = 48.0
MIN_DRIVE_DB = -60.0
#: Headroom in dB above the predicted drive for which the peak envelope is exact.
ENVELOPE_HEADROOM_DB = 9.0

Progress = Callable[[float, str], None]


@dataclass
class MasterResult:
    """A finished master (in memory; `engine.mastering.job` writes it out).

    Attributes:
        samples: float32 ``(channels, frames)`` at `samplerate` Hz.
        input_analysis, output_analysis: `analysis.analyze` dicts.
        settings: every stage's settings (the limiter's drive as in the chosen pass).
        passes: one dict per pass: ``pass``, ``drive_db``, ``lufs``, ``error_lu``,
            ``max_reduction_db``.
        stages: each stage's report (gain reductions, activity).
        timings: seconds per stage, the analyses and the passes.
        warnings: what a user should know (silence, very short, already limited...).
    """

    samples: np.ndarray
    samplerate: int
    intent: Intent
    input_analysis: dict[str, Any]
    output_analysis: dict[str, Any]
    settings: ChainSettings
    passes: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _warnings(source: dict[str, Any], intent: Intent) -> list[str]:
    out = []
    if recipe.meets_target(source, intent):
        out.append("The input already meets the target loudness and true peak: only its "
                   "level and peaks were adjusted.")
    loud = source["loudness"]
    if "silent" in source["flags"]:
        out.append("The input is silent: it was not amplified, the master is silent too.")
    elif not loud["integrated_defined"]:
        out.append(
            f"The input is only {source['duration_s']:.2f} s long, shorter than one 400 ms "
            "gating block, so its integrated loudness is undefined; it was aligned on its "
            "ungated loudness instead.")
    if "already_limited" in source["flags"]:
        out.append("The input is already limited (little headroom between its peaks and "
                   "its loudness): compression was switched off so that it does not pump.")
    if source["clipped_runs"]:
        out.append(f"The input has {source['clipped_runs']} runs of clipped samples; "
                   "mastering cannot restore them. Use an unclipped mix if you have one.")
    if max(abs(v) for v in source["dc_offset"]) > 1e-3:
        out.append("The input has a DC offset; the rumble filter removes it.")
    return out


def _pool(v: np.ndarray, step: int, how: str) -> np.ndarray:
    n = -(-v.size // step) * step
    padded = np.zeros(n)
    padded[: v.size] = v
    blocks = padded.reshape(-1, step)
    return np.asarray(blocks.max(axis=1) if how == "max" else blocks.sum(axis=1))


class LossModel:
    """The limiter's loudness change (dB, <= 0) at a given drive, modelled from the
    energy of the signal under the limiter's own gain curve (hold, release, look-ahead
    averaging), computed at a reduced rate of one value per `step` frames."""

    def __init__(self, env: np.ndarray, pre: np.ndarray, samplerate: int,
                 settings: ChainSettings, step: int = 8) -> None:
        self.env = _pool(env, step, "max")
        self.energy = _pool((pre**2).sum(axis=0), step, "sum")
        self.rate = samplerate / step
        self.cfg = settings.limiter
        self.total = float(self.energy.sum())

    def loss(self, drive_db: float) -> float:
        if self.total <= 0:
            return 0.0
        g = limiter.gain(self.env * 10 ** (drive_db / 20), self.cfg, int(self.rate),
                         self.cfg.margin_db)
        return 10 * math.log10(max(float((g**2 * self.energy).sum()), 1e-30) / self.total)

    def drive_for(self, gap_db: float) -> float:
        """The drive whose gain plus modelled loss equals `gap_db` (bisection: ``d +
        loss(d)`` never decreases with d)."""
        lo, hi = max(MIN_DRIVE_DB, gap_db - 1.0), min(MAX_DRIVE_DB, gap_db + 24.0)
        if lo >= hi:
            return hi
        for _ in range(14):
            mid = (lo + hi) / 2
            if mid + self.loss(mid) < gap_db:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def slope(self, drive_db: float) -> float:
        """d(loudness)/d(drive) of the model at `drive_db`."""
        return 1.0 + (self.loss(drive_db + 0.5) - self.loss(drive_db - 0.5))


def _envelope(pre: np.ndarray, ceiling: float, drive_db: float, oversample: int) -> np.ndarray:
    floor = ceiling / 10 ** ((drive_db + ENVELOPE_HEADROOM_DB) / 20)
    return oversampling.peak_envelope(pre, oversample, floor=floor)


class _Loop:
    """The passes of one master: state shared between them."""

    def __init__(self, pre: np.ndarray, samplerate: int, settings: ChainSettings,
                 intent: Intent) -> None:
        self.pre, self.sr, self.settings, self.intent = pre, samplerate, settings, intent
        self.ceiling = 10 ** (settings.limiter.ceiling_dbtp / 20)
        self.pre_lufs = meter.integrated(pre, samplerate)
        self.passes: list[dict[str, Any]] = []
        self.env_drive = -math.inf
        self.env = np.zeros(pre.shape[1])

    def envelope(self, drive_db: float) -> np.ndarray:
        if drive_db > self.env_drive:  # exact wherever a peak can reach the ceiling
            self.env_drive = drive_db + ENVELOPE_HEADROOM_DB / 2
            self.env = _envelope(self.pre, self.ceiling, self.env_drive,
                                 self.settings.limiter.oversample)
        return self.env

    def first_drive(self) -> float:
        gap = self.intent.target_lufs - (self.pre_lufs if self.pre_lufs is not None else 0.0)
        self.model = LossModel(self.envelope(gap + 6.0), self.pre, self.sr, self.settings)
        return self.model.drive_for(gap)

    def run(self, drive_db: float) -> tuple[np.ndarray, float | None]:
        out, info = chain.finish(self.pre, self.sr, self.settings, drive_db,
                                 self.envelope(drive_db))
        lufs = meter.integrated(out, self.sr)
        err = None if lufs is None else round(lufs - self.intent.target_lufs, 3)
        self.passes.append({"pass": len(self.passes) + 1, "drive_db": round(drive_db, 3),
                            "lufs": None if lufs is None else round(lufs, 3),
                            "error_lu": err, **info})
        return out, lufs

    def next_drive(self, drive_db: float, lufs: float) -> float:
        error = self.intent.target_lufs - lufs
        if len(self.passes) >= 2:
            a, b = self.passes[-2], self.passes[-1]
            slope = (b["lufs"] - a["lufs"]) / (b["drive_db"] - a["drive_db"] or 1e-9)
        else:
            slope = self.model.slope(drive_db)
        slope = min(1.0, max(0.1, slope))
        return min(MAX_DRIVE_DB, max(MIN_DRIVE_DB, drive_db + error / slope))


def _finish_loop(loop: _Loop, check: Callable[[], None] | None, progress: Progress
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    drive = loop.first_drive()
    best: tuple[float, np.ndarray, dict[str, Any]] | None = None
    for i in range(loop.intent.max_passes):
        if check is not None:
            check()
        progress(0.55 + 0.3 * i / loop.intent.max_passes, f"pass {i + 1}")
        out, lufs = loop.run(drive)
        err = abs(lufs - loop.intent.target_lufs) if lufs is not None else 0.0
        if best is None or err < best[0]:
            best = (err, out, loop.passes[-1])
        if lufs is None or err <= loop.intent.tolerance_lu:
            break
        drive = loop.next_drive(drive, lufs)
    assert best is not None
    return best[1], best[2]


def master(samples: np.ndarray, samplerate: int, intent: Intent, *,
           reference: dict[str, Any] | None = None,
           keys: dict[str, np.ndarray] | None = None,
           check: Callable[[], None] | None = None,
           on_progress: Progress | None = None) -> MasterResult:
    """Master ``samples (channels, frames)`` (float, any rate) for `intent`.

    `reference` is a reference track's analysis (reference intent); `keys` are detector
    signals by stem name (stem-aware); `check` is called between stages and passes and may
    raise to cancel; `on_progress(fraction, what)` reports progress."""
    progress: Progress = on_progress or (lambda f, what: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    x = np.asarray(samples, dtype=np.float64)
    progress(0.0, "analysis")
    source = an.analyze(x, samplerate)
    timings["analysis_in"] = round(time.perf_counter() - t0, 4)
    warnings = _warnings(source, intent)
    settings = recipe.build(x, samplerate, source, intent, reference=reference,
                            stems=tuple(keys or ()))
    if "silent" in source["flags"]:
        out = x.copy()
        return MasterResult(out.astype(np.float32), samplerate, intent, source,
                            an.analyze(out, samplerate), settings, warnings=warnings,
                            timings=timings)
    progress(0.2, "processing")
    pre, stages, stage_times = chain.pre_limiter(x, samplerate, settings, keys, check)
    timings.update(stage_times)
    t1 = time.perf_counter()
    loop = _Loop(pre, samplerate, settings, intent)
    out, chosen = _finish_loop(loop, check, progress)
    settings.limiter.drive_db = chosen["drive_db"]
    stages["limiter"] = {k: chosen[k] for k in ("max_reduction_db", "margin_db")}
    timings["passes"] = round(time.perf_counter() - t1, 4)
    if chosen["error_lu"] is not None and abs(chosen["error_lu"]) > 0.3:
        warnings.append(
            f"The target of {intent.target_lufs:g} LUFS could not be reached within "
            f"{intent.max_passes} passes; the master is at {chosen['lufs']:.1f} LUFS.")
    progress(0.9, "analysis")
    t2 = time.perf_counter()
    result = an.analyze(out, samplerate)
    timings["analysis_out"] = round(time.perf_counter() - t2, 4)
    timings["total"] = round(time.perf_counter() - t0, 4)
    progress(1.0, "done")
    return MasterResult(out.astype(np.float32), samplerate, intent, source, result, settings,
                        passes=loop.passes, stages=stages, timings=timings, warnings=warnings)
