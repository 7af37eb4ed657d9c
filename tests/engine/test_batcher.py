"""The cross-job batcher (engine.batcher): several jobs' windows in one forward pass of a
real tiny model; priorities, round-robin fairness, errors, cancellation and shutdown.
Scheduling is made deterministic by pausing the batcher while requests are queued."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path

import pytest
import torch

from engine.batcher import WindowBatcher
from engine.chunking import CancelToken, separate
from engine.errors import BatcherClosedError, CancelledError
from engine.models import demucs as dm

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def htdemucs(test_models_dir):
    return dm.load("htdemucs", CPU, test_models_dir)


@pytest.fixture(scope="module")
def voc(tiny_mdx_dir: Path):
    """The tiny MDX-Net model: 0.35 s windows of a few ms each, for scheduling tests."""
    from engine.models import mdx

    return mdx.load("mdx-voc-ft", CPU, tiny_mdx_dir)


def _window(model, seed: int, channels: int = 2) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(1, channels, model.valid_length(model.segment_length)) * 0.3


def _wait_queued(batcher: WindowBatcher, n: int) -> None:
    deadline = time.monotonic() + 60  # a liveness bound, not a speed goal
    while batcher.queued < n:
        assert time.monotonic() < deadline, f"only {batcher.queued} windows queued"
        time.sleep(0.005)


def _through_batcher(batcher: WindowBatcher, model, mixes: list[torch.Tensor],
                     precision: str) -> dict[int, torch.Tensor]:
    """Each mix separated by a job on a thread of its own, every pass through `batcher`;
    the batcher is paused until each job has its first window queued (so they share
    the first pass), and closed at the end."""
    outs: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def job(i: int) -> None:
        try:
            fwd = functools.partial(batcher.forward, model, precision=precision,
                                    job=f"job{i}")
            outs[i] = separate(model, mixes[i], forward=fwd)
        except BaseException as exc:  # reported below
            errors.append(exc)

    batcher.pause()
    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(mixes))]
    for t in threads:
        t.start()
    _wait_queued(batcher, len(mixes))
    batcher.resume()
    for t in threads:
        t.join(120)
    batcher.close()
    assert not errors, errors
    return outs


def _jobs_of_passes(batcher: WindowBatcher) -> list[tuple[str, ...]]:
    return list(batcher.stats.jobs)


def test_concurrent_jobs_equal_their_solo_outputs_and_share_passes(htdemucs):
    """4 jobs on one model at once, each its own thread: each job's output equals its
    solo `separate`, and the batcher ran their windows in fewer, multi-window passes."""
    length = htdemucs.segment_length // 2  # one window per job
    mixes = [torch.randn(2, length, generator=torch.Generator().manual_seed(i)) * 0.3
             for i in range(4)]
    solo = [separate(htdemucs, mix) for mix in mixes]
    batcher = WindowBatcher(max_windows=4)
    outs = _through_batcher(batcher, htdemucs, mixes, "fp32")
    for i in range(4):
        assert outs[i].shape == solo[i].shape
        torch.testing.assert_close(outs[i], solo[i], atol=1e-5, rtol=0)
    stats = batcher.stats
    assert stats.windows == 4 and stats.passes < stats.windows
    assert max(stats.sizes) > 1 and stats.windows_per_pass > 1
    assert stats.per_job == {f"job{i}": 1 for i in range(4)}
    assert sorted(stats.jobs[0]) == [f"job{i}" for i in range(4)]


def test_an_urgent_jobs_window_goes_in_the_very_next_pass(voc):
    batcher = WindowBatcher(max_windows=1)
    batcher.pause()
    low = [batcher.submit(voc, _window(voc, i), voc.segment_length, precision="fp32",
                          priority=1, job="batch") for i in range(5)]
    urgent = batcher.submit(voc, _window(voc, 9), voc.segment_length, precision="fp32",
                            priority=0, job="interactive")
    batcher.resume()
    urgent.result(60)
    for fut in low:
        fut.result(60)
    batcher.close()
    assert _jobs_of_passes(batcher) == [("interactive",)] + [("batch",)] * 5


def test_an_urgent_window_leads_a_merged_pass_and_the_backlog_fills_it(voc):
    batcher = WindowBatcher(max_windows=3)
    batcher.pause()
    low = [batcher.submit(voc, _window(voc, i), voc.segment_length, precision="fp32",
                          priority=1, job=f"batch{i % 2}") for i in range(4)]
    urgent = batcher.submit(voc, _window(voc, 9), voc.segment_length, precision="fp32",
                            priority=0, job="interactive")
    batcher.resume()
    for fut in [urgent, *low]:
        fut.result(60)
    batcher.close()
    passes = _jobs_of_passes(batcher)
    assert passes[0] == ("interactive", "batch0", "batch1")  # then one per job in turn
    assert passes[1] == ("batch0", "batch1")


def test_jobs_of_one_priority_take_turns(voc):
    """Round-robin: job a queued 4 windows before job b queued 4; with one window per
    pass they alternate, with two they share every pass; nobody starves."""
    for limit, expected in ((1, [("a",), ("b",)] * 4), (2, [("a", "b")] * 4)):
        batcher = WindowBatcher(max_windows=limit)
        batcher.pause()
        futs = [batcher.submit(voc, _window(voc, i), voc.segment_length, precision="fp32",
                               job=job) for job in "ab" for i in range(4)]
        batcher.resume()
        for fut in futs:
            fut.result(60)
        batcher.close()
        assert _jobs_of_passes(batcher) == expected
        assert batcher.stats.per_job == {"a": 4, "b": 4}


def test_only_compatible_windows_share_a_pass(voc, htdemucs):
    """Another model, or another real length, never joins a pass."""
    batcher = WindowBatcher(max_windows=8)
    batcher.pause()
    seg = voc.segment_length
    futs = [batcher.submit(voc, _window(voc, 0), seg, precision="fp32", job="a"),
            batcher.submit(voc, _window(voc, 1), seg - 1, precision="fp32", job="b"),
            batcher.submit(voc, _window(voc, 2), seg, precision="fp32", job="c")]
    batcher.resume()
    outs = [f.result(60) for f in futs]
    batcher.close()
    assert _jobs_of_passes(batcher) == [("a", "c"), ("b",)]
    with torch.inference_mode():
        alone = voc.forward(_window(voc, 2), length=seg).float()
    torch.testing.assert_close(outs[2], alone, atol=1e-6, rtol=0)


def test_an_exception_in_a_pass_reaches_every_request_of_it(htdemucs):
    """Three-channel windows make the real model fail: both jobs of the pass hear it; the
    batcher goes on with the next pass."""
    batcher = WindowBatcher(max_windows=4)
    batcher.pause()
    seg = htdemucs.segment_length
    bad = [batcher.submit(htdemucs, _window(htdemucs, i, channels=3), seg,
                          precision="fp32", job=job) for i, job in enumerate("xy")]
    batcher.resume()
    for fut in bad:
        with pytest.raises(RuntimeError):
            fut.result(60)
    assert batcher.stats.sizes[0] == 2
    assert not batcher.closed and batcher.queued == 0
    batcher.close()


def test_close_fails_pending_requests_and_later_ones(voc):
    batcher = WindowBatcher(max_windows=4)
    batcher.pause()
    futs = [batcher.submit(voc, _window(voc, i), voc.segment_length, precision="fp32",
                           job=f"j{i}") for i in range(3)]
    batcher.close()
    for fut in futs:
        with pytest.raises(BatcherClosedError, match="shutting down"):
            fut.result(5)
    with pytest.raises(BatcherClosedError):
        batcher.forward(voc, _window(voc, 0), voc.segment_length, precision="fp32")
    assert batcher.stats.passes == 0


def test_cancelling_one_job_leaves_the_others_result_correct(voc):
    """Two jobs through the chunk loop at once; one is cancelled after its second
    batch (and while a window of it is queued): it stops with CancelledError, the other
    equals its solo output."""
    mixes = [torch.randn(2, 20 * voc.segment_length,
                         generator=torch.Generator().manual_seed(i)) * 0.3 for i in range(2)]
    solo = separate(voc, mixes[1])
    batcher = WindowBatcher(max_windows=2)
    token = CancelToken()
    results: dict[str, object] = {}

    def cancel_soon(p) -> None:
        if p.windows_done >= 2:
            token.cancel()

    def run(name: str, mix: torch.Tensor, **kw) -> None:
        fwd = functools.partial(batcher.forward, voc, precision="fp32", job=name,
                                cancel=kw.get("cancel"))
        try:
            results[name] = separate(voc, mix, forward=fwd, **kw)
        except CancelledError as exc:
            results[name] = exc

    threads = [threading.Thread(target=run, args=("cancelled", mixes[0]),
                                kwargs={"cancel": token, "progress": cancel_soon}),
               threading.Thread(target=run, args=("kept", mixes[1]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    batcher.close()
    assert isinstance(results["cancelled"], CancelledError)
    kept = results["kept"]
    assert isinstance(kept, torch.Tensor)
    torch.testing.assert_close(kept, solo, atol=1e-5, rtol=0)
    assert batcher.stats.per_job["cancelled"] < batcher.stats.per_job["kept"]


def test_a_queued_window_of_a_cancelled_job_is_dropped(voc):
    batcher = WindowBatcher(max_windows=4)
    batcher.pause()
    token = CancelToken()
    box: dict[str, BaseException] = {}

    def waiting() -> None:
        try:
            batcher.forward(voc, _window(voc, 0), voc.segment_length, precision="fp32",
                            job="gone", cancel=token)
        except CancelledError as exc:
            box["err"] = exc

    t = threading.Thread(target=waiting)
    t.start()
    _wait_queued(batcher, 1)
    other = batcher.submit(voc, _window(voc, 1), voc.segment_length, precision="fp32",
                           job="stays")
    token.cancel()
    t.join(30)
    assert isinstance(box.get("err"), CancelledError)
    batcher.resume()
    other.result(60)
    batcher.close()
    assert _jobs_of_passes(batcher) == [("stays",)]


@pytest.mark.gpu
def test_on_cuda_the_batcher_merges_jobs_in_the_precision_asked(test_models_dir):
    """On a GPU: the pass runs on the model's device under the precision's autocast
    (entered on the batcher thread); bf16 jobs through the batcher stay close to their
    solo outputs (same precision), and fp32 ones equal them."""
    from engine.device import autocast_factory

    cuda = torch.device("cuda")
    model = dm.load("htdemucs", cuda, test_models_dir)
    length = model.segment_length + model.segment_length // 3  # two windows per job
    mixes = [torch.randn(2, length, generator=torch.Generator().manual_seed(i)) * 0.3
             for i in range(4)]
    for precision, tol in (("fp32", 1e-4), ("bf16", 5e-2)):
        solo = [separate(model, mix, autocast=autocast_factory(cuda, precision))
                for mix in mixes]
        batcher = WindowBatcher(max_windows=8)
        outs = _through_batcher(batcher, model, mixes, precision)
        assert batcher.stats.sizes[0] == 4
        for i in range(4):
            assert outs[i].device.type == "cpu"
            torch.testing.assert_close(outs[i], solo[i], atol=tol, rtol=0)
