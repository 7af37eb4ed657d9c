"""Chunked, batched, streaming inference with overlap-add.

The track is cut into windows of the model's training segment that overlap by a fraction
of their length; each window's output is weighted by a triangular window and the weighted
outputs are summed and normalised, exactly as `demucs.apply.apply_model` does with
``shifts=0, split=True``. Unlike `apply_model`, windows can be processed in any order and
several at a time, and every *region* of the output is emitted as soon as it is final,
i.e. as soon as every window that covers it has been computed.

All positions and lengths here are in samples at the model's sample rate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import transfer
from engine.errors import CancelledError, InvalidArgumentError

if TYPE_CHECKING:
    import torch

    from engine.models.base import SeparationModel


@dataclass(frozen=True)
class Window:
    """One model input: real samples ``[offset, offset + length)`` of the track."""

    index: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class RegionSpan:
    """An elementary output region ``[start, end)`` and the windows that cover it
    (ascending), i.e. whose outputs must all be known before the region is final."""

    index: int
    start: int
    end: int
    windows: tuple[int, ...]


@dataclass(frozen=True)
class WindowLayout:
    """A model's own windows and weights (e.g. MDX-Net's Hann-weighted windows that begin
    half an FFT before the track), instead of the default demucs layout.

    Attributes:
        windows: ``(offset, length)`` per window, in samples: real samples
            ``[offset, offset + length)`` of the track; `offset` may be negative (the
            window starts before the track, whose outside is zeros), ``offset + length``
            never passes the track's end.
        weights: one float32 tensor per window, indexed from its offset, at least
            `length` long.
    """

    windows: tuple[tuple[int, int], ...]
    weights: tuple[torch.Tensor, ...]


@dataclass
class FinalRegion:
    """A finalized region of the separated output.

    Attributes:
        start, end: sample range ``[start, end)`` at the model's rate.
        audio: float32 tensor (sources, channels, end - start) on the CPU.
    """

    start: int
    end: int
    audio: torch.Tensor


@dataclass
class ChunkProgress:
    """Progress after a batch: counts, seconds, and an ETA in seconds (None until known)."""

    windows_done: int
    windows_total: int
    regions_done: int
    regions_total: int
    elapsed: float
    eta: float | None


@dataclass
class ChunkStats:
    """Where the time went, in seconds (filled in while iterating)."""

    forward_seconds: float = 0.0
    total_seconds: float = 0.0
    first_region_seconds: float | None = None
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class CancelToken:
    """Thread-safe cancellation flag, checked by the chunk loop between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError()


class ChunkPlan:
    """Windows, regions and the overlap-add weight for a track of `total_length` samples.

    Windows start at ``range(0, total_length, stride)`` with
    ``stride = int((1 - overlap) * segment_length)``; the last ones may hold fewer than
    `segment_length` real samples (they are padded with real neighbouring audio by
    `window_input`). Region boundaries are every window's start and end.
    """

    def __init__(
        self,
        total_length: int,
        segment_length: int,
        overlap: float = 0.25,
        transition_power: float = 1.0,
        layout: WindowLayout | None = None,
    ) -> None:
        if total_length <= 0:
            raise InvalidArgumentError("Cannot separate an empty signal: give at least 1 sample.")
        if not 0.0 <= overlap < 1.0:
            raise InvalidArgumentError(
                f"overlap must be in [0, 1), got {overlap}: use e.g. 0.25 for 25 %."
            )
        if transition_power < 1.0:
            raise InvalidArgumentError("transition_power must be >= 1.")
        self.total_length = total_length
        self.segment_length = segment_length
        self.overlap = overlap
        self.transition_power = transition_power
        self.stride = max(1, int((1 - overlap) * segment_length))
        self._weights: list[torch.Tensor] | None = None
        if layout is None:
            self.windows = [
                Window(i, off, min(segment_length, total_length - off))
                for i, off in enumerate(range(0, total_length, self.stride))
            ]
        else:
            self.windows = [Window(i, off, n) for i, (off, n) in enumerate(layout.windows)]
            self._weights = list(layout.weights)
            self._check_layout()
        bounds = sorted({0, total_length} | {max(0, w.offset) for w in self.windows}
                        | {w.end for w in self.windows})
        self.regions: list[RegionSpan] = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            cover = tuple(w.index for w in self.windows if w.offset <= start and w.end >= end)
            self.regions.append(RegionSpan(len(self.regions), start, end, cover))
        self._regions_of_window: list[list[int]] = [[] for _ in self.windows]
        for region in self.regions:
            for w in region.windows:
                self._regions_of_window[w].append(region.index)

    def _check_layout(self) -> None:
        """A model's own layout must cover the track, stay inside it on the right, and
        give each window a weight at least as long as the window."""
        assert self._weights is not None
        if len(self._weights) != len(self.windows):
            raise ValueError("a window layout needs one weight per window")
        covered = 0
        for w, wt in zip(self.windows, self._weights, strict=True):
            if w.length <= 0 or w.end > self.total_length or wt.shape[-1] < w.length:
                raise ValueError(f"bad window {w} in a model's layout")
            if max(0, w.offset) > covered:
                raise ValueError(f"a model's layout leaves samples {covered}..{w.offset} out")
            covered = max(covered, w.end)
        if covered < self.total_length:
            raise ValueError("a model's layout does not reach the end of the track")

    def window_weight(self, window: int) -> torch.Tensor:
        """The overlap-add weight of `window`, indexed from its offset (float32, at least
        the window's length): the triangular `weight()`, or the model's own."""
        if self._weights is not None:
            return self._weights[window]
        if not hasattr(self, "_triangle"):
            self._triangle = self.weight()
        return self._triangle

    def regions_of(self, window: int) -> list[int]:
        """Indices of the regions that window `window` contributes to."""
        return self._regions_of_window[window]

    def weight(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Triangular float32 weight (segment_length,), peak 1 in the middle (as demucs)."""
        import torch

        n = self.segment_length
        w = torch.cat([torch.arange(1, n // 2 + 1, device=device),
                       torch.arange(n - n // 2, 0, -1, device=device)])
        w = w / w.max()
        return w**self.transition_power if self.transition_power != 1.0 else w

    def order(self, start_at: int | None = None) -> list[int]:
        """Window processing order: from `start_at` (a sample position, e.g. the DAW's play
        cursor) to the end, then from the start up to it. None or 0: from the start."""
        if not start_at or start_at <= 0:
            return [w.index for w in self.windows]
        start_at = min(start_at, self.total_length - 1)
        first = [w.index for w in self.windows if w.end > start_at]
        # Begin with the earliest window covering start_at, so the region under the
        # cursor is final after as few windows as possible.
        rest = [w.index for w in self.windows if w.end <= start_at]
        return first + rest


def window_input(mix: torch.Tensor, window: Window, target_length: int,
                 align: str = "center") -> torch.Tensor:
    """The model input for `window`: (channels, target_length) taken from `mix`
    (channels, total), real audio where it exists, zeros outside the track. ``center``
    centres the window (identical to `demucs.apply.TensorChunk(mix, offset,
    length).padded(target)`); ``start`` begins at the window's first sample."""
    import torch.nn.functional as F

    delta = target_length - window.length
    if delta < 0:
        raise ValueError(f"target length {target_length} < window length {window.length}")
    total = mix.shape[-1]
    start = window.offset - (delta // 2 if align == "center" else 0)
    end = start + target_length
    lo, hi = max(0, start), min(total, end)
    chunk = mix[..., lo:hi]
    if lo - start or end - hi:
        chunk = F.pad(chunk, (lo - start, end - hi))
    return chunk


def _center_trim(out: torch.Tensor, length: int, align: str = "center") -> torch.Tensor:
    delta = out.shape[-1] - length
    if delta < 0:
        raise ValueError(f"model output ({out.shape[-1]}) shorter than its window ({length})")
    if delta:
        first = delta // 2 if align == "center" else 0
        out = out[..., first: first + length]
    return out


def _batches(order: Sequence[int], windows: Sequence[Window], model: SeparationModel,
             batch_size: int, first_batch: int) -> Iterator[list[int]]:
    """Group windows in processing order into batches of equal real and padded length."""
    batch: list[int] = []
    batch_len: tuple[int, int] = (-1, -1)
    limit = max(1, first_batch)
    for idx in order:
        vlen = (model.valid_length(windows[idx].length), windows[idx].length)
        if batch and (len(batch) >= limit or vlen != batch_len):
            yield batch
            batch = []
            limit = max(1, batch_size)
        batch.append(idx)
        batch_len = vlen
    if batch:
        yield batch


def iter_separate(
    model: SeparationModel,
    mix: torch.Tensor,
    *,
    overlap: float = 0.25,
    batch_size: int = 1,
    first_batch: int = 1,
    start_at: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[ChunkProgress], None] | None = None,
    stats: ChunkStats | None = None,
    transition_power: float = 1.0,
    already_final: Sequence[tuple[int, int]] = (),
    forward: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Iterator[FinalRegion]:
    """Separate `mix` and yield each region as soon as it is final.

    Args:
        model: a loaded `SeparationModel`.
        mix: float32 tensor (channels, samples) at the model's rate, on the CPU.
        overlap: fraction of a window shared with the next (demucs' `overlap`).
        batch_size: windows per forward pass after the first batch.
        first_batch: windows in the first forward pass (1 gives the first region soonest).
        start_at: sample position to start from (see `ChunkPlan.order`).
        autocast: factory of the mixed-precision context to run the forward pass in.
        cancel: checked between batches; raises `CancelledError` when set.
        progress: called after every batch.
        stats: filled in with timings.
        already_final: sample ranges finished earlier (a resumed job): regions inside them
            are neither computed nor yielded, and windows that only cover them are skipped.
        forward: replaces the model call (e.g. `engine.batcher.WindowBatcher.forward`,
            which merges several jobs' windows): ``forward(inp, length)`` gets `inp`
            float32 (batch, channels, samples) on the CPU and the windows' real length,
            and returns the model's output (batch, sources, channels, samples'); it owns
            the device, the precision and inference mode (`autocast` is then unused).
            Not used by a model with its own loop (an ensemble: its members run
            unbatched across jobs). `stats.forward_seconds` then includes its waiting.

    Yields:
        `FinalRegion`s covering ``[0, samples)`` exactly once, in the order they become
        final. The concatenation equals `apply_model(model, mix[None], shifts=0,
        split=True, overlap=overlap)[0]` up to float rounding (demucs: within 1e-6 in fp32;
        the eager forward fuses self-attention, `engine.models.demucs.eager_layers`).
    """
    import torch

    if mix.dim() != 2:
        raise InvalidArgumentError(f"mix must be (channels, samples), got {tuple(mix.shape)}")
    own_loop = getattr(model, "iter_regions", None)
    if own_loop is not None:  # an ensemble: runs its members through this loop
        yield from own_loop(mix, overlap=overlap, batch_size=batch_size,
                            first_batch=first_batch, start_at=start_at, autocast=autocast,
                            cancel=cancel, progress=progress, stats=stats,
                            transition_power=transition_power, already_final=already_final)
        return
    stats = stats if stats is not None else ChunkStats()
    own_layout = getattr(model, "window_layout", None)
    layout = own_layout(mix.shape[-1], overlap) if own_layout is not None else None
    plan = ChunkPlan(mix.shape[-1], model.segment_length, overlap, transition_power, layout)
    device = model.device
    # Where a short window sits in the model's input: centred (demucs) or at the start
    # (spleeter, whose masks degrade after long leading silence).
    align = model.align
    pending: dict[int, dict[int, torch.Tensor]] = {}
    skip = {r.index for r in plan.regions if _inside(r.start, r.end, already_final)}
    needed = {w for r in plan.regions if r.index not in skip for w in r.windows}
    remaining = {r.index: len(r.windows) for r in plan.regions if r.index not in skip}
    t0 = time.perf_counter()
    windows_done = regions_done = 0
    ctx = autocast or contextlib.nullcontext
    order = [w for w in plan.order(start_at) if w in needed]
    # On CUDA: pinned, stream-overlapped copies, waiting only where a region becomes
    # final (`engine.transfer`); elsewhere None, and the copies below are as they were.
    pipe = transfer.pipeline(device) if forward is None else None
    counter = transfer.RegionCounter(remaining, plan.regions_of) if pipe else None
    for batch in _batches(order, plan.windows, model, batch_size, first_batch):
        if cancel is not None:
            cancel.raise_if_cancelled()
        target = model.valid_length(plan.windows[batch[0]].length)
        inp = torch.stack([window_input(mix, plan.windows[i], target, align) for i in batch])
        tf = time.perf_counter()
        if forward is not None:  # e.g. the cross-job batcher: it owns device and precision
            ready = [(batch, forward(inp, plan.windows[batch[0]].length).float().cpu())]
        else:
            with torch.inference_mode(), ctx():
                out = model.forward(inp.to(device, non_blocking=True) if pipe is None
                                    else pipe.upload(inp), length=plan.windows[batch[0]].length)
            if pipe is None or counter is None:
                ready = [(batch, out.float().cpu())]
            else:  # the last batch always finishes a region: nothing stays in flight
                ready = pipe.download(batch, out.float(), final=counter.submit(batch))
        stats.forward_seconds += time.perf_counter() - tf
        stats.batches += 1
        stats.batch_sizes.append(len(batch))
        for done, host in ready:
            for j, idx in enumerate(done):
                win = plan.windows[idx]
                chunk_out = _center_trim(host[j], win.length, align)
                for r in plan.regions_of(idx):
                    if r in skip:
                        continue
                    region = plan.regions[r]
                    a, b = region.start - win.offset, region.end - win.offset
                    weight = plan.window_weight(idx)
                    pending.setdefault(r, {})[idx] = weight[a:b] * chunk_out[..., a:b]
                    remaining[r] -= 1
                    if remaining[r] == 0:
                        yield _finish(region, pending.pop(r), plan)
                        regions_done += 1
                        if stats.first_region_seconds is None:
                            stats.first_region_seconds = time.perf_counter() - t0
                windows_done += 1
        if progress is not None:
            elapsed = time.perf_counter() - t0
            total = len(order)
            eta = elapsed / windows_done * (total - windows_done) if windows_done else None
            progress(ChunkProgress(windows_done, total, regions_done, len(plan.regions),
                                   elapsed, eta))
    stats.total_seconds = time.perf_counter() - t0


def _inside(start: int, end: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether ``[start, end)`` lies within the union of `ranges`."""
    pos = start
    for a, b in sorted(ranges):
        if a > pos:
            break
        pos = max(pos, b)
        if pos >= end:
            return True
    return pos >= end


def _finish(region: RegionSpan, parts: dict[int, torch.Tensor], plan: ChunkPlan) -> FinalRegion:
    """Sum the weighted window outputs in ascending window order (as apply_model does,
    whatever order they were computed in) and normalise by the summed weights."""

    acc: torch.Tensor | None = None
    wsum: torch.Tensor | None = None
    for w in region.windows:
        a = region.start - plan.windows[w].offset
        b = region.end - plan.windows[w].offset
        weight = plan.window_weight(w)
        acc = parts[w] if acc is None else acc + parts[w]
        wsum = weight[a:b] if wsum is None else wsum + weight[a:b]
    assert acc is not None and wsum is not None
    return FinalRegion(region.start, region.end, acc / wsum)


def separate(model: SeparationModel, mix: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """Whole-track convenience: (channels, samples) -> (sources, channels, samples)."""
    import torch

    out: torch.Tensor | None = None
    for region in iter_separate(model, mix, **kwargs):  # type: ignore[arg-type]
        if out is None:
            out = torch.zeros(*region.audio.shape[:-1], mix.shape[-1])
        out[..., region.start:region.end] = region.audio
    assert out is not None
    return out
