"""The streaming chunk loop against demucs' own `apply_model` (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from demucs.apply import apply_model

from engine.chunking import CancelToken, ChunkPlan, iter_separate, separate
from engine.device import autocast_factory
from engine.errors import CancelledError
from engine.models import demucs as dm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def htdemucs(test_models_dir):
    return dm.load("htdemucs", CPU, test_models_dir)


def _ref(model, mix, overlap=0.25):
    return apply_model(model.raw, mix[None], shifts=0, split=True, overlap=overlap)[0]


@pytest.mark.parametrize("length_kind", ["1", "65", "8193", "seg-1", "seg", "seg+1", "2seg+7"])
def test_equivalence_with_apply_model_odd_lengths(htdemucs, length_kind):
    seg = htdemucs.segment_length
    length = {"1": 1, "65": 65, "8193": 8193, "seg-1": seg - 1, "seg": seg,
              "seg+1": seg + 1, "2seg+7": 2 * seg + 7}[length_kind]
    torch.manual_seed(length)
    mix = torch.randn(2, length) * 0.3
    ref = _ref(htdemucs, mix)
    for start_at in (None, length // 2, length - 1):
        out = separate(htdemucs, mix, overlap=0.25, start_at=start_at)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) <= 1e-4


def test_equivalence_several_minutes_every_order(htdemucs):
    torch.manual_seed(0)
    length = 44100 * 120 + 12345  # 2 minutes and an odd tail
    mix = torch.randn(2, length) * 0.2
    ref = _ref(htdemucs, mix)
    # from a cursor a third in, in batches of 3 (the front-to-back order with batch 1 is
    # what the odd-length cases cover)
    out = separate(htdemucs, mix, overlap=0.25, start_at=length // 3, batch_size=3)
    assert float((out - ref).abs().max()) <= 1e-4


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.5, 0.75])
def test_equivalence_other_overlaps(htdemucs, overlap):
    torch.manual_seed(3)
    mix = torch.randn(2, int(htdemucs.segment_length * 2.3)) * 0.3
    out = separate(htdemucs, mix, overlap=overlap, batch_size=2)
    assert float((out - _ref(htdemucs, mix, overlap)).abs().max()) <= 1e-4


@pytest.mark.parametrize("name", ["htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx_extra"])
def test_equivalence_bags_and_other_architectures(test_models_dir, name):
    model = dm.load(name, CPU, test_models_dir)
    torch.manual_seed(1)
    length = int(model.segment_length * 1.4) + 3
    mix = torch.randn(2, length) * 0.3
    ref = _ref(model, mix)
    out = separate(model, mix, overlap=0.25, start_at=length // 2, batch_size=2)
    assert out.shape == (len(model.sources), 2, length)
    assert float((out - ref).abs().max()) <= 1e-4


def test_th_format_loads_and_matches(th_models_dir, test_models_dir):
    a = dm.load("htdemucs", CPU, th_models_dir)
    mix = torch.randn(2, 50000) * 0.3
    assert float((separate(a, mix) - _ref(a, mix)).abs().max()) <= 1e-4


def test_regions_are_final_once_and_cover_everything(htdemucs):
    length = htdemucs.segment_length * 3 + 999
    mix = torch.randn(2, length) * 0.3
    seen = np.zeros(length, dtype=int)
    plan = ChunkPlan(length, htdemucs.segment_length, 0.25)
    regions = list(iter_separate(htdemucs, mix, start_at=length // 2))
    for r in regions:
        seen[r.start:r.end] += 1
    assert (seen == 1).all()
    assert len(regions) == len(plan.regions)
    # Processing starts at the cursor: the region under it is among the first ones
    # final (it may need two windows), and the audio before the first window comes last.
    cursor = next(i for i, r in enumerate(regions) if r.start <= length // 2 < r.end)
    assert cursor <= 2
    first_window = next(w for w in plan.windows if w.end > length // 2)
    before = [i for i, r in enumerate(regions) if r.end <= first_window.offset]
    assert before and min(before) > cursor
    assert regions[-1].end <= length // 2


def test_first_region_after_first_window(htdemucs):
    """Streaming: the first region is yielded before the rest is computed."""
    length = htdemucs.segment_length * 4
    mix = torch.randn(2, length) * 0.3
    calls = []
    orig = htdemucs.forward

    def counting(x, length=None):
        calls.append(x.shape[0])
        return orig(x, length=length)

    htdemucs.forward = counting
    try:
        it = iter_separate(htdemucs, mix, batch_size=2, first_batch=1)
        next(it)
        assert calls == [1]
        list(it)
    finally:
        del htdemucs.forward
    assert sum(calls) == len(ChunkPlan(length, htdemucs.segment_length, 0.25).windows)


def test_cancel_between_batches(htdemucs):
    mix = torch.randn(2, htdemucs.segment_length * 3) * 0.3
    token = CancelToken()
    it = iter_separate(htdemucs, mix, cancel=token)
    next(it)
    token.cancel()
    with pytest.raises(CancelledError):
        list(it)


def test_does_not_modify_input(htdemucs):
    mix = torch.randn(2, 40000) * 0.3
    before = mix.clone()
    separate(htdemucs, mix)
    assert torch.equal(mix, before)


def _sdr(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10((ref**2).sum() / ((ref - est) ** 2).sum().clamp_min(1e-20)))


def test_bf16_autocast_close_to_fp32(htdemucs):
    from tests.conftest import music_like

    mix = torch.from_numpy(music_like(20.0))
    mix = (mix - mix.mean()) / mix.std()
    fp32 = separate(htdemucs, mix)
    bf16 = separate(htdemucs, mix, autocast=autocast_factory(CPU, "bf16"))
    assert _sdr(fp32, bf16) >= 40.0
