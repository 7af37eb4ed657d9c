"""The GPU paths' logic on the CPU: batch sizes from a (fake) free-memory figure, which
batches the host must wait for (`engine.transfer`), buffer reuse, the guards that keep the
CPU path as it was, the CUDA-graphs and onnxruntime-CUDA choices without a GPU. What needs
the GPU itself is in test_gpu.py."""

from __future__ import annotations

import pytest
import torch

from engine import acceleration, graphs, transfer
from engine.artifacts import ArtifactCache
from engine.chunking import ChunkPlan, iter_separate, separate
from engine.device import MAX_BATCH, auto_batch_size, batch_size_for
from engine.models import demucs as dm
from protocol import settings

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only named: nothing here runs on it
GB = 10**9


@pytest.fixture(scope="module")
def htdemucs(test_models_dir):
    return dm.load("htdemucs", CPU, test_models_dir)


def test_batch_size_from_a_fake_memory_figure():
    per_window = 2 * GB

    def free(nbytes):
        return lambda device: (nbytes, 141 * GB)

    assert auto_batch_size(CUDA, per_window, memory=free(80 * GB)) == MAX_BATCH
    assert auto_batch_size(CUDA, per_window, memory=free(80 * GB), cap=64) == 20
    assert auto_batch_size(CUDA, per_window, memory=free(2 * GB)) == 1  # half is 1 GB
    assert auto_batch_size(CUDA, per_window, memory=free(12 * GB)) == 3
    assert auto_batch_size(CUDA, per_window, memory=free(GB // 10)) == 1  # < one window
    assert auto_batch_size(CUDA, per_window, memory=free(0)) == 1
    sizes = [batch_size_for(n * GB, per_window, cap=1000) for n in (8, 16, 32, 64)]
    assert sizes == [2, 4, 8, 16]  # proportional to the free memory
    assert batch_size_for(10 * GB, 0) == MAX_BATCH  # a nonsense figure stays bounded


def test_the_cpu_never_asks_for_device_memory():
    def memory(device):
        raise AssertionError("asked the CPU for CUDA memory")

    assert auto_batch_size(CPU, 1, memory=memory) == 1


def _final_batches(plan: ChunkPlan, batches: list[list[int]], skip: set[int]) -> list[bool]:
    """Which batches make a region final, counted as the chunk loop counts outputs."""
    left = {r.index: len(r.windows) for r in plan.regions if r.index not in skip}
    finals = []
    for batch in batches:
        made = False
        for w in batch:
            for r in plan.regions_of(w):
                if r in left:
                    left[r] -= 1
                    made = made or left[r] == 0
        finals.append(made)
    return finals


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.75])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_region_counter_says_which_batch_finishes_a_region(overlap, batch):
    plan = ChunkPlan(10_000 + 37, 1000, overlap)
    skip = {r.index for r in plan.regions if r.end <= 2500}  # a resumed job's first part
    remaining = {r.index: len(r.windows) for r in plan.regions if r.index not in skip}
    needed = sorted({w for r in plan.regions if r.index not in skip for w in r.windows})
    order = [w for w in plan.order(6000) if w in needed]
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    counter = transfer.RegionCounter(remaining, plan.regions_of)
    got = [counter.submit(b) for b in batches]
    assert got == _final_batches(plan, batches, skip)
    assert got[-1]  # the last batch always finishes a region: nothing is left in flight
    if overlap == 0.0:
        assert all(got)  # no overlap: every window finishes its own region


class FakeEvent:
    """A CPU stand-in for a CUDA event: done when told, counts its waits."""

    def __init__(self, done: bool = False) -> None:
        self.done = done
        self.waits = 0

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waits += 1
        self.done = True


def test_inflight_hands_back_in_order_and_waits_once_for_a_final_batch():
    queue: transfer.Inflight[str, int] = transfer.Inflight()
    events = [FakeEvent() for _ in range(4)]
    for i, event in enumerate(events[:3]):
        queue.push(f"b{i}", i, event)
    assert queue.pop(wait=False) == []  # nothing back yet, and no waiting
    events[1].done = True
    assert queue.pop(wait=False) == []  # b1 is back but b0 is not: order is kept
    events[0].done = True
    assert queue.pop(wait=False) == [("b0", 0), ("b1", 1)]
    queue.push("b3", 3, events[3])
    assert queue.pop(wait=True) == [("b2", 2), ("b3", 3)]
    assert [e.waits for e in events] == [0, 0, 0, 1]  # one wait: the newest copy's
    assert len(queue) == 0 and queue.pop(wait=True) == []


def test_host_buffers_are_reused_by_shape_and_dtype():
    buffers = transfer.HostBuffers(pin=False)
    a = buffers.take((2, 3), torch.float32)
    buffers.give(a)
    assert buffers.take((2, 3), torch.float32) is a
    assert buffers.take((2, 3), torch.float32) is not a
    assert buffers.take((3, 2), torch.float32).shape == (3, 2)
    assert buffers.allocated == 3


def _plain_loop(model, mix: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The chunk loop's arithmetic without its bookkeeping: every batch stacked, run,
    brought to the CPU with ``.float().cpu()``, weighted, summed per region in window
    order (`chunking._finish`)."""
    from engine.chunking import RegionSpan, _batches, _center_trim, _finish, window_input

    plan = ChunkPlan(mix.shape[-1], model.segment_length, 0.25)
    parts: dict[int, dict[int, torch.Tensor]] = {}
    for batch in _batches(plan.order(), plan.windows, model, batch_size, 1):
        n = plan.windows[batch[0]].length
        inp = torch.stack([window_input(mix, plan.windows[i], model.valid_length(n))
                           for i in batch])
        with torch.inference_mode():
            out = model.forward(inp, length=n).float().cpu()
        for j, idx in enumerate(batch):
            win = plan.windows[idx]
            chunk = _center_trim(out[j], win.length)
            for r in plan.regions_of(idx):
                a, b = plan.regions[r].start - win.offset, plan.regions[r].end - win.offset
                parts.setdefault(r, {})[idx] = plan.window_weight(idx)[a:b] * chunk[..., a:b]
    regions: list[RegionSpan] = plan.regions
    return torch.cat([_finish(r, parts[r.index], plan).audio for r in regions], dim=-1)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("batch", "windows"), [(1, 1.3), (3, 2.55)])  # batches 1, 1; 1, 2, 1
def test_the_cpu_path_takes_no_stream_pipeline_and_is_unchanged(htdemucs, monkeypatch, batch,
                                                                 windows):
    def refuse(device):
        raise AssertionError("a stream pipeline on the CPU")

    monkeypatch.setattr(transfer, "StreamPipeline", refuse)
    assert transfer.pipeline(CPU) is None
    torch.manual_seed(5)
    mix = torch.randn(2, int(htdemucs.segment_length * windows) + 3) * 0.3
    want = _plain_loop(htdemucs, mix, batch)
    assert torch.equal(separate(htdemucs, mix, batch_size=batch), want)  # bit for bit


class Toy:
    """A tiny deterministic `SeparationModel` on the CPU: two sources, x/2 and x*x/4."""

    segment_length = 1000
    align = "center"
    normalize_input = False
    device = CPU

    def valid_length(self, length: int) -> int:
        return self.segment_length

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        return torch.stack([mix * 0.5, mix * mix * 0.25], dim=1)


class StandInStream:
    def wait_event(self, event: object) -> None:
        pass

    def wait_stream(self, stream: object) -> None:
        pass


class StandInEvent(FakeEvent):
    """Recorded copies complete only when waited for (the slowest GPU), or at once."""

    at_once = False

    def record(self, stream: object = None) -> None:
        self.done = self.at_once


@pytest.mark.parametrize("at_once", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_stream_pipeline_on_stand_in_streams_yields_what_the_plain_path_does(
        monkeypatch, batch, at_once):
    """The loop through `StreamPipeline` with CPU stand-ins for CUDA's streams and events:
    the same regions, in the same order, bit for bit, as the plain path."""
    import contextlib

    model = Toy()
    torch.manual_seed(2)
    mix = torch.randn(2, 7_654)
    plain = [(r.start, r.end, r.audio) for r in
             iter_separate(model, mix, batch_size=batch, start_at=3000)]
    monkeypatch.setattr(StandInEvent, "at_once", at_once)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: StandInStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: StandInStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Event", StandInEvent)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: None)
    made: list[transfer.StreamPipeline] = []

    def stand_in(device):
        made.append(transfer.StreamPipeline(device, pin=False))
        return made[-1]

    monkeypatch.setattr(transfer, "pipeline", stand_in)
    piped = [(r.start, r.end, r.audio) for r in
             iter_separate(model, mix, batch_size=batch, start_at=3000)]
    assert made and len(made[0]._inflight) == 0  # nothing left in flight
    assert [r[:2] for r in piped] == [r[:2] for r in plain]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(piped, plain, strict=True))
    assert made[0]._buffers.allocated <= 3  # download buffers are reused


def test_cuda_graphs_are_never_built_for_the_cpu(htdemucs, monkeypatch, tmp_path):
    monkeypatch.setenv("STEMBRIDGE_COMPILE", "graphs")
    assert settings.compile_backend() == "graphs"
    fast = acceleration.FastForward(htdemucs.models[0], {"model": "htdemucs"},
                                    ArtifactCache(tmp_path))
    shape = (1, 2, htdemucs.segment_length)
    assert fast.start(shape, "fp32", "cpu") is None
    assert fast.status[(shape, "fp32")].startswith("eager: ")
    with pytest.raises(ValueError, match="CUDA input"):
        graphs.capture(htdemucs.models[0], torch.zeros(shape), "fp32")
    if not torch.cuda.is_available():
        assert graphs.unavailable_reason() == "CUDA graphs need a CUDA GPU"
        assert fast.start(shape, "fp32", "cuda") is None
        assert "CUDA GPU" in fast.status[(shape, "fp32")]
