"""Band-limited resampling along the last (frames) axis of ``(..., frames)`` float32
arrays: a whole signal at once (`resample`), or regions arriving in any order
(`RegionResampler`), e.g. a model's 44.1 kHz stems back to a 48 kHz session.

Rates are whole Hz; lengths are frames (samples per channel). scipy is imported on first
use.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from engine.errors import InvalidArgumentError


def _ratio(src_rate: int, dst_rate: int) -> tuple[int, int]:
    """``(up, down)`` reduced by their gcd."""
    if int(src_rate) != src_rate or int(dst_rate) != dst_rate or src_rate <= 0 or dst_rate <= 0:
        raise InvalidArgumentError(
            f"sample rates must be positive whole numbers of Hz, got {src_rate} and {dst_rate}."
        )
    g = math.gcd(int(src_rate), int(dst_rate))
    return int(dst_rate) // g, int(src_rate) // g


def resampled_length(frames: int, src_rate: int, dst_rate: int) -> int:
    """Frames `resample` produces for `frames` input frames: ``ceil(frames * dst / src)``."""
    up, down = _ratio(src_rate, dst_rate)
    return -(-frames * up // down)


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's default anti-aliasing FIR (Kaiser, beta 5, 10 zero
    crossings per side at the lower rate), as float32, unscaled; cached per ratio."""
    from scipy.signal import firwin

    rate = max(up, down)
    taps = firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps = taps.astype(np.float32)
    taps.setflags(write=False)
    return taps


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=-1, window=_lowpass(up, down))


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling of ``(..., frames)`` along the last axis, float32 out.

    Same result as ``scipy.signal.resample_poly(x, dst, src, axis=-1)`` on float32 input
    (polyphase FIR, zero padding at both ends); ``resampled_length(frames, src, dst)``
    output frames. Equal rates return a float32 copy.
    """
    up, down = _ratio(src_rate, dst_rate)
    x = np.asarray(x, dtype=np.float32)
    if up == down:
        return x.copy()
    if x.shape[-1] == 0:
        return np.zeros(x.shape, dtype=np.float32)
    return np.ascontiguousarray(_resample_poly(x, up, down))


@dataclass
class _Known:
    """A run of pushed source frames ``[start, stop)`` and the few samples at its edges
    that future output still needs, as ``(src_start, array)`` pieces."""

    start: int
    stop: int
    pieces: list[tuple[int, np.ndarray]]


class RegionResampler:
    """Resample a signal that arrives as regions in any order, emitting output as soon as
    it is computable, identical (to float32 rounding) to `resample` of the whole signal.

    Output frame k depends on input frames within ``±10 * max(up, down) / up`` of
    ``k * down / up`` (up/down = dst/src reduced). A span of output is computed by
    `resample_poly` on a slice of the input that starts at a multiple of `down`, which
    keeps the polyphase phase of the whole-signal computation; samples outside every
    output frame's support are zero in both. Only the edge samples of each contiguous run
    of pushed input are retained (tens of frames), so memory stays bounded whatever the
    signal length.

    Example (44.1 kHz model output back to a 48 kHz session)::

        rs = RegionResampler(44100, 48000, total_src_frames=n)
        for start, region in regions:            # any order, any sizes
            for dst_start, out in rs.push(start, region):
                writer.write(dst_start, out)     # spans never overlap
        assert rs.done

    Not thread-safe: push from one thread at a time.
    """

    def __init__(self, src_rate: int, dst_rate: int, total_src_frames: int) -> None:
        if total_src_frames < 0:
            raise InvalidArgumentError(f"total_src_frames must be >= 0, not {total_src_frames}.")
        self.src_rate, self.dst_rate = int(src_rate), int(dst_rate)
        self.up, self.down = _ratio(src_rate, dst_rate)
        self.total_src_frames = int(total_src_frames)
        self.total_dst_frames = resampled_length(self.total_src_frames, src_rate, dst_rate)
        self._half = 10 * max(self.up, self.down)
        self._runs: list[_Known] = []
        self._leading_shape: tuple[int, ...] | None = None

    @property
    def done(self) -> bool:
        """True once every source frame has been pushed (and so every output emitted)."""
        return self.total_src_frames == 0 or (
            len(self._runs) == 1
            and self._runs[0].stop - self._runs[0].start == self.total_src_frames
        )

    @property
    def retained_frames(self) -> int:
        """Source frames currently held (edge samples of runs awaiting neighbours)."""
        return sum(a.shape[-1] for run in self._runs for _, a in run.pieces)

    # -- support arithmetic (all frame indices are integers; N = total_src_frames)

    def _lo(self, k: int) -> int:
        """First source frame output frame k depends on."""
        return min(self.total_src_frames, max(0, -(-(k * self.down - self._half) // self.up)))

    def _hi(self, k: int) -> int:
        """One past the last source frame output frame k depends on."""
        return min(self.total_src_frames, max(0, (k * self.down + self._half) // self.up + 1))

    def _first_computable(self, start: int) -> int:
        """Smallest output frame whose support starts at or after source frame `start`."""
        if start <= 0:
            return 0
        k = ((start - 1) * self.up + self._half) // self.down + 1
        return min(self.total_dst_frames, k)

    def _end_computable(self, stop: int) -> int:
        """One past the largest output frame whose support ends at or before `stop`."""
        if stop >= self.total_src_frames:
            return self.total_dst_frames
        k = -(-(stop * self.up - self._half) // self.down)
        return min(self.total_dst_frames, max(0, k))

    # -- public

    def push(self, src_start: int, audio: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add source frames ``[src_start, src_start + n)`` of ``audio (..., n)``.

        Returns:
            ``(dst_start, array (..., m))`` float32 spans of output that became computable;
            possibly none. Over all pushes the spans tile ``[0, total_dst_frames)``
            exactly once. With equal rates the span is `audio` itself (as float32).

        Raises:
            InvalidArgumentError: the region is out of range, overlaps one pushed before,
                or its leading shape differs from earlier regions.
        """
        x = np.asarray(audio, dtype=np.float32)
        self._check_region(src_start, x)
        n = x.shape[-1]
        if n == 0:
            return []
        left, right = self._neighbours(src_start, src_start + n)
        run = _Known(left.start if left else src_start, right.stop if right else src_start + n, [])
        if self.up == self.down:
            self._replace(left, right, run)
            return [(src_start, x)]
        pieces = (left.pieces if left else []) + [(src_start, x)] + (right.pieces if right else [])
        begin = self._first_computable(run.start)
        if left is not None:
            begin = max(begin, self._end_computable(left.stop))
        end = self._end_computable(run.stop)
        if right is not None:
            end = min(end, self._first_computable(right.start))
        spans = [(begin, self._compute(begin, end, pieces))] if begin < end else []
        run.pieces = self._retain(run, pieces)
        self._replace(left, right, run)
        return spans

    # -- internals

    def _check_region(self, src_start: int, x: np.ndarray) -> None:
        if x.ndim < 1:
            raise InvalidArgumentError("a region must be an array shaped (..., frames).")
        if self._leading_shape is None:
            self._leading_shape = x.shape[:-1]
        elif x.shape[:-1] != self._leading_shape:
            raise InvalidArgumentError(
                f"region shaped {x.shape} does not match earlier regions "
                f"{self._leading_shape + ('frames',)}."
            )
        stop = src_start + x.shape[-1]
        if src_start < 0 or stop > self.total_src_frames:
            raise InvalidArgumentError(
                f"region [{src_start}, {stop}) lies outside the signal "
                f"[0, {self.total_src_frames})."
            )

    def _neighbours(self, start: int, stop: int) -> tuple[_Known | None, _Known | None]:
        """Runs that end exactly at `start` and begin exactly at `stop`; refuses overlap."""
        i = bisect.bisect_right([r.start for r in self._runs], start)
        before = self._runs[i - 1] if i > 0 else None
        after = self._runs[i] if i < len(self._runs) else None
        if (before and before.stop > start) or (after and after.start < stop):
            raise InvalidArgumentError(
                f"region [{start}, {stop}) overlaps source frames pushed before; push each "
                "source frame exactly once."
            )
        return (
            before if before and before.stop == start else None,
            after if after and after.start == stop else None,
        )

    def _replace(self, left: _Known | None, right: _Known | None, run: _Known) -> None:
        self._runs = [r for r in self._runs if r is not left and r is not right]
        bisect.insort(self._runs, run, key=lambda r: r.start)

    def _compute(self, begin: int, end: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Output frames ``[begin, end)`` from a slice starting at a multiple of `down`."""
        src0 = (self._lo(begin) // self.down) * self.down
        src1 = self._hi(end - 1)
        y = _resample_poly(self._gather(src0, src1, pieces), self.up, self.down)
        offset = (src0 // self.down) * self.up
        return np.ascontiguousarray(y[..., begin - offset : end - offset])

    def _gather(self, start: int, stop: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Source frames ``[start, stop)``; frames no piece holds are zero (they lie outside
        the support of every output frame being computed)."""
        assert self._leading_shape is not None
        out = np.zeros(self._leading_shape + (stop - start,), dtype=np.float32)
        for p_start, arr in pieces:
            lo, hi = max(start, p_start), min(stop, p_start + arr.shape[-1])
            if lo < hi:
                out[..., lo - start : hi - start] = arr[..., lo - p_start : hi - p_start]
        return out

    def _retain(
        self, run: _Known, pieces: list[tuple[int, np.ndarray]]
    ) -> list[tuple[int, np.ndarray]]:
        """Copies of the samples the run's not-yet-computable neighbours will need."""
        kept = []
        if run.start > 0:
            head_stop = min(run.stop, self._hi(self._first_computable(run.start) - 1))
            if head_stop > run.start:
                kept.append((run.start, self._gather(run.start, head_stop, pieces)))
        if run.stop < self.total_src_frames:
            tail_start = max(run.start, self._lo(self._end_computable(run.stop)))
            if tail_start < run.stop:
                kept.append((tail_start, self._gather(tail_start, run.stop, pieces)))
        return kept
