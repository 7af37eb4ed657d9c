"""Band-limited interpolation between samples, for true-peak detection.

A windowed-sinc interpolator split into its polyphase branches: branch p gives the
signal at ``n + p / factor`` from the `taps` samples around n. The branches are applied
as one matrix product per block (BLAS), which is far faster than `factor` separate
convolutions. Signals ``(channels, frames)`` float; results per frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Frames per block of the matrix product.
BLOCK = 1 << 15


@lru_cache(maxsize=16)
def branches(factor: int, taps: int = 16, beta: float = 8.0) -> np.ndarray:
    """``(taps, factor - 1)`` float32 matrix: column p - 1 interpolates at ``n + p/factor``
    from the samples ``n - taps/2 + 1 .. n + taps/2``."""
    from scipy.signal import firwin

    half = taps // 2
    h = firwin(factor * taps + 1, 1.0 / factor, window=("kaiser", beta)) * factor
    centre = (h.size - 1) // 2
    k = np.arange(-half + 1, half + 1)  # sample offsets relative to n
    cols = []
    for p in range(1, factor):
        idx = centre + p - factor * k  # h at time (n + p/factor) - (n + k)
        ok = (idx >= 0) & (idx < h.size)
        cols.append(np.where(ok, h[np.clip(idx, 0, h.size - 1)], 0.0))
    return np.stack(cols, axis=1).astype(np.float32)


def gain_bound(factor: int, taps: int = 16) -> float:
    """The largest ``sum |h|`` of a branch: no interpolated point exceeds the largest
    sample magnitude of its `taps` neighbours by more than this factor."""
    return float(np.abs(branches(factor, taps)).sum(axis=0).max())


def between_peaks(x: np.ndarray, factor: int, taps: int = 16, floor: float = 0.0,
                  flush: bool = True, bound: float | None = None,
                  rows: np.ndarray | None = None) -> np.ndarray:
    """``(frames,)``: for each frame n, the largest magnitude over channels of the
    interpolated points strictly between n and n + 1 (0 for the last frame).

    Frames whose `taps` neighbours are too small for any interpolated point to reach
    `floor` (by `bound`, default the rigorous `gain_bound`) need not be interpolated: they
    may get 0 (exact for ``floor=0``; where most frames are needed, all are computed).
    Without `flush`, the last ``taps // 2`` frames (whose interpolation would reach past
    the end into zeros) get 0 too, as in a real-time meter that is never flushed. `rows`
    (sorted frame indices) restricts the work to those frames instead of `floor`."""
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.ndimage import maximum_filter1d

    x = np.asarray(x, dtype=np.float32)
    channels, frames = x.shape
    out = np.zeros(frames, dtype=np.float32)
    if factor <= 1 or frames < 2:
        return out.astype(np.float64)
    m = branches(factor, taps)
    half = taps // 2
    padded = np.pad(x, ((0, 0), (half - 1, half)))
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
    elif floor > 0:
        local = maximum_filter1d(np.abs(padded).max(axis=0), taps, origin=-(taps // 2))
        factor_bound = gain_bound(factor, taps) if bound is None else bound
        rows = np.nonzero(local[:frames] * factor_bound >= floor)[0]
    else:
        rows = np.arange(frames)
    if rows.size > frames // 3:  # dense: one FIR per branch over the whole signal
        for ch in range(channels):
            for p in range(m.shape[1]):
                y = np.abs(np.correlate(padded[ch], m[:, p], mode="valid"))
                np.maximum(out, y[:frames], out=out)
        channels = 0  # done
    for ch in range(channels):
        windows = sliding_window_view(padded[ch], taps)  # row n: samples n-half+1..n+half
        for start in range(0, frames, BLOCK):
            stop = min(frames, start + BLOCK)
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi - lo > (stop - start) // 3:  # dense: one contiguous block
                y = np.abs(np.ascontiguousarray(windows[start:stop]) @ m).max(axis=1)
                np.maximum(out[start:stop], y, out=out[start:stop])
            elif hi > lo:
                sel = rows[lo:hi]
                out[sel] = np.maximum(out[sel], np.abs(windows[sel] @ m).max(axis=1))
    out[-1] = 0.0
    if not flush:
        out[max(0, frames - half) :] = 0.0
    return out.astype(np.float64)


def peak_envelope(x: np.ndarray, factor: int, taps: int = 16, floor: float = 0.0,
                  bound: float | None = None) -> np.ndarray:
    """``(frames,)``: per frame, the largest magnitude over channels of its own sample and
    of the interpolated points on both sides of it (see `between_peaks` for `floor`)."""
    a = np.abs(np.asarray(x, dtype=np.float64)).max(axis=0)
    b = between_peaks(x, factor, taps, floor, bound=bound)
    return np.maximum(a, np.maximum(b, np.concatenate([[0.0], b[:-1]])))
