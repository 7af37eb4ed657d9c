"""GPU paths (skipped without CUDA): the chunk loop on the GPU matches apply_model in fp32,
autocast stays close to fp32, batching several windows per pass changes nothing."""

from __future__ import annotations

import pytest
import torch

from engine.chunking import separate
from engine.device import auto_batch_size, autocast_factory, select_device, select_precision
from engine.models import demucs as dm

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_model(test_models_dir):
    return dm.load("htdemucs", torch.device("cuda"), test_models_dir)


def test_auto_device_and_precision_pick_cuda():
    device = select_device("auto")
    assert device.type == "cuda"
    assert select_precision(device, "auto") in ("bf16", "fp16")
    assert auto_batch_size(device, 1 << 30) >= 1


def test_gpu_matches_apply_model_fp32(cuda_model):
    from demucs.apply import apply_model

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    mix = torch.randn(2, int(cuda_model.segment_length * 2.5) + 11) * 0.3
    ref = apply_model(cuda_model.raw, mix[None], shifts=0, split=True, overlap=0.25,
                      device="cuda")[0].cpu()
    for batch in (1, 4):
        out = separate(cuda_model, mix, batch_size=batch, start_at=mix.shape[-1] // 2)
        assert float((out - ref).abs().max()) <= 1e-4


def test_gpu_autocast_close_to_fp32(cuda_model):
    mix = torch.randn(2, cuda_model.segment_length * 2) * 0.3
    fp32 = separate(cuda_model, mix, batch_size=2)
    dev = torch.device("cuda")
    low = separate(cuda_model, mix, batch_size=2,
                   autocast=autocast_factory(dev, select_precision(dev, "auto")))
    sdr = 10 * torch.log10((fp32**2).sum() / ((fp32 - low) ** 2).sum())
    assert float(sdr) >= 30.0
