"""Envelope followers shared by the dynamics stages, vectorised (no per-sample Python loop).

Signals are 1-D float64 arrays along time; `rate` is their rate in Hz (a control rate for
the compressors, the sample rate for the limiter). Gains are dB (<= 0) or linear (<= 1).
"""

from __future__ import annotations

import math

import numpy as np


def coefficient(time_ms: float, rate: float) -> float:
    """One-pole coefficient for a time constant of `time_ms` at `rate` Hz."""
    if time_ms <= 0:
        return 0.0
    return math.exp(-1000.0 / (time_ms * rate))


def one_pole(x: np.ndarray, time_ms: float, rate: float, initial: float | None = None
             ) -> np.ndarray:
    """Exponential smoothing ``y[n] = a*y[n-1] + (1-a)*x[n]`` (starting from `initial`,
    default ``x[0]``)."""
    from scipy.signal import lfilter

    a = coefficient(time_ms, rate)
    if a == 0.0 or x.size == 0:
        return np.asarray(x, dtype=np.float64)
    start = x[0] if initial is None else initial
    y, _ = lfilter([1 - a], [1, -a], x, zi=[a * start])
    return np.asarray(y)


def release_hold(depth: np.ndarray, release_ms: float, rate: float) -> np.ndarray:
    """Instant attack, exponential release of a non-negative `depth` (e.g. dB of gain
    reduction): ``u[n] = max(depth[n], a * u[n-1])``, solved in closed form as
    ``u[n] = max_k a^(n-k) depth[k]`` with a running maximum in the log domain."""
    a = coefficient(release_ms, rate)
    v = np.maximum(np.asarray(depth, dtype=np.float64), 0.0)
    if a == 0.0 or v.size == 0:
        return v
    log_a = math.log(a)
    n = np.arange(v.size, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = np.log(v) - n * log_a
    run = np.maximum.accumulate(logs) + n * log_a
    return np.exp(run)


def block_mean_square(x: np.ndarray, block: int) -> np.ndarray:
    """Mean square of ``x (channels, frames)`` over channels and blocks of `block` frames
    (the last, partial block included): the control-rate level of a linked detector."""
    channels, frames = x.shape
    blocks = -(-frames // block)
    power = np.einsum("cf,cf->f", x, x) if channels > 1 else x[0] * x[0]
    full = frames // block * block
    sq = np.empty(blocks)
    sq[: full // block] = power[:full].reshape(-1, block).sum(axis=1)
    if full < frames:
        sq[-1] = power[full:].sum()
    counts = np.full(blocks, block * channels, dtype=np.float64)
    counts[-1] = (frames - (blocks - 1) * block) * channels
    return np.asarray(sq / counts)


def to_samples(control: np.ndarray, block: int, frames: int) -> np.ndarray:
    """Linear interpolation of a control-rate signal (one value per block, at the block
    centre) back to `frames` samples."""
    c = np.asarray(control, dtype=np.float64)
    if c.size == 0 or c.size * block < frames:
        centres = np.arange(c.size) * block + (block - 1) / 2
        return np.interp(np.arange(frames), centres, c)
    # np.interp's result, block by block: frame j of block k lies between the centres of
    # blocks k - 1 and k (j below the centre) or k and k + 1 (clamped at both ends)
    t = (np.arange(block) - (block - 1) / 2) / block
    h = int(np.count_nonzero(t < 0))
    padded = np.concatenate([c[:1], c, c[-1:]])
    out = np.empty((c.size, block))
    np.multiply((c - padded[:-2])[:, None], t[:h], out=out[:, :h])
    np.multiply((padded[2:] - c)[:, None], t[h:], out=out[:, h:])
    out += c[:, None]
    return out.reshape(-1)[:frames]


def knee_curve(level_db: np.ndarray, threshold_db: float, ratio: float, knee_db: float
               ) -> np.ndarray:
    """Gain reduction (dB, >= 0) of a compressor's static curve with a soft knee."""
    over = level_db - threshold_db
    slope = 1.0 - 1.0 / max(ratio, 1.0)
    out = np.where(over > 0, slope * over, 0.0)
    if knee_db > 0:
        inside = np.abs(over) <= knee_db / 2
        out = np.where(inside, slope * (over + knee_db / 2) ** 2 / (2 * knee_db), out)
    return np.maximum(out, 0.0)
