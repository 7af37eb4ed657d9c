"""Host-device transfers of the chunk loop on a CUDA GPU, overlapped with the compute.

    pipe = transfer.pipeline(device)        # None on the CPU (and on MPS): nothing changes
    counter = RegionCounter(remaining, plan.regions_of)
    x = pipe.upload(inp)                    # pinned staging, H2D on the upload stream
    out = model.forward(x)                  # the current (compute) stream waits for x only
    for batch, host in pipe.download(batch, out, final=counter.submit(batch)):
        ...                                 # host: float32 on the CPU, that batch's output

A window batch's input is copied into a pinned host buffer and sent to the device on an
upload stream; the compute stream waits for that copy (an event), not for the host. Its
output goes back on a download stream into another pinned buffer, after the compute
(another event). Two copy streams, so that the next batch's upload need not wait for
this batch's compute and download. The host waits for a batch only when the batch makes a
region final (`RegionCounter`): then, since every download runs in order on the one
download stream, the batch's event covers every batch before it, and all of them are
handed back. Batches
that finish no region are handed back when their copies have completed anyway (checked
without waiting) or with the next final one.

Buffers are reused: a staging buffer once its upload has completed, a download buffer
once the batch it was handed back with has been consumed (at the next `download` or
`drain`; the caller consumes what it is handed before calling again). Shapes: a batch's
input (batch, channels, samples), its output (batch, sources, channels, samples).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import torch

K = TypeVar("K")
H = TypeVar("H")


class Event(Protocol):
    """What `Inflight` needs of a CUDA event (a CPU stand-in in tests)."""

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class RegionCounter:
    """Counts, as batches are submitted (before their outputs are back), how many of each
    region's windows are still to come, and says which batch makes a region final.

    Args:
        remaining: region index -> windows that cover it (regions not to be yielded,
            e.g. a resumed job's, left out).
        regions_of: window index -> the regions it contributes to.
    """

    def __init__(self, remaining: Mapping[int, int],
                 regions_of: Callable[[int], Sequence[int]]) -> None:
        self._left = dict(remaining)
        self._regions_of = regions_of

    def submit(self, batch: Sequence[int]) -> bool:
        """Count `batch`'s windows as computed; True when a region then has all of its
        windows (the host must wait for this batch to yield it)."""
        final = False
        for window in batch:
            for region in self._regions_of(window):
                if region in self._left:
                    self._left[region] -= 1
                    final = final or self._left[region] == 0
        return final


class Inflight(Generic[K, H]):
    """Downloads in submission order, each with the event recorded after its copy was
    enqueued on the one download stream (so a later event's completion implies an earlier
    one's)."""

    def __init__(self) -> None:
        self._queue: deque[tuple[K, H, Event]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, key: K, host: H, event: Event) -> None:
        self._queue.append((key, host, event))

    def pop(self, wait: bool) -> list[tuple[K, H]]:
        """With `wait`: wait for the newest download (one synchronisation) and hand back
        all of them, oldest first. Without: the oldest ones whose copies have completed,
        without waiting."""
        if wait and self._queue:
            self._queue[-1][2].synchronize()
            done = [(k, h) for k, h, _ in self._queue]
            self._queue.clear()
            return done
        done = []
        while self._queue and self._queue[0][2].query():
            key, host, _ = self._queue.popleft()
            done.append((key, host))
        return done


class HostBuffers:
    """Pinned host buffers by (shape, dtype), handed out and taken back.

    Args:
        pin: whether to allocate page-locked memory (False: ordinary memory, for tests).
    """

    def __init__(self, pin: bool = True) -> None:
        self.pin = pin
        self._free: dict[Hashable, list[torch.Tensor]] = {}
        self.allocated = 0

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        import torch

        free = self._free.get((tuple(shape), dtype))
        if free:
            return free.pop()
        self.allocated += 1
        with torch.inference_mode(False):  # a normal tensor: writable in and out of it
            return torch.empty(tuple(shape), dtype=dtype, pin_memory=self.pin)

    def give(self, buffer: torch.Tensor) -> None:
        self._free.setdefault((tuple(buffer.shape), buffer.dtype), []).append(buffer)


class StreamPipeline:
    """The transfers of one `iter_separate` run on CUDA device `device` (see the module
    docstring). Not thread-safe: one loop uses it. `pin`: page-locked host buffers (False
    only where there is no GPU, for tests with stand-in streams)."""

    def __init__(self, device: torch.device, pin: bool = True) -> None:
        import torch

        self.device = device
        self.upload_stream = torch.cuda.Stream(device)
        self.download_stream = torch.cuda.Stream(device)
        self._staging_buffers = HostBuffers(pin=pin)
        self._buffers = HostBuffers(pin=pin)
        self._uploads: list[tuple[torch.Tensor, Any]] = []
        self._inflight: Inflight[Any, torch.Tensor] = Inflight()
        self._lent: list[torch.Tensor] = []

    def upload(self, inp: torch.Tensor) -> torch.Tensor:
        """`inp` (batch, channels, samples) on the CPU -> the same on the device, sent on
        the upload stream; the current stream waits for the copy before using it."""
        import torch

        staging = self._staging(inp)
        staging.copy_(inp)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.upload_stream):
            x = staging.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.upload_stream)
        compute.wait_event(done)
        x.record_stream(compute)
        self._uploads.append((staging, done))
        return x

    def _staging(self, inp: torch.Tensor) -> torch.Tensor:
        """A pinned buffer shaped like `inp` whose previous upload has completed."""
        for i, (buf, done) in enumerate(self._uploads):
            if buf.shape == inp.shape and buf.dtype == inp.dtype and done.query():
                del self._uploads[i]
                return buf
        keep = []
        for buf, done in self._uploads:  # completed uploads of other shapes: reusable
            if done.query():
                self._staging_buffers.give(buf)
            else:
                keep.append((buf, done))
        self._uploads = keep
        return self._staging_buffers.take(inp.shape, inp.dtype)

    def download(self, key: Any, out: torch.Tensor, final: bool) -> list[tuple[Any, torch.Tensor]]:
        """Send `out` (on the device, any float dtype) back as float32 into a pinned
        buffer after the current stream's work on it; hand back (key, host output) of
        the batches that are back: all of them, after one wait, when `final`."""
        import torch

        self._recycle()
        compute = torch.cuda.current_stream(self.device)
        computed = torch.cuda.Event()
        computed.record(compute)
        host = self._buffers.take(out.shape, torch.float32)
        with torch.cuda.stream(self.download_stream):
            self.download_stream.wait_event(computed)
            host.copy_(out, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.download_stream)
        if out.is_cuda:  # a model may hand back a host tensor: nothing to keep alive
            out.record_stream(self.download_stream)
        self._inflight.push(key, host, copied)
        return self._lend(self._inflight.pop(wait=final))

    def drain(self) -> list[tuple[Any, torch.Tensor]]:
        """Every batch still on its way back (waits for them)."""
        self._recycle()
        return self._lend(self._inflight.pop(wait=True))

    def _lend(self, done: list[tuple[Any, torch.Tensor]]) -> list[tuple[Any, torch.Tensor]]:
        self._lent.extend(host for _, host in done)
        return done

    def _recycle(self) -> None:
        """The buffers handed back last time have been consumed: reuse them."""
        for buf in self._lent:
            self._buffers.give(buf)
        self._lent = []


def pipeline(device: torch.device) -> StreamPipeline | None:
    """The overlapped transfers for `device`: a `StreamPipeline` on a CUDA device, None
    elsewhere (the loop then copies as before: ``.to(device)`` and ``.cpu()``)."""
    if device.type != "cuda":
        return None
    return StreamPipeline(device)
