"""GPU paths (skipped without CUDA; `bash bench/device_check.sh` runs them): the chunk
loop on the GPU matches apply_model in fp32 with TF32 off at batch 1, 4 and 16, the
pinned/stream path equals the plain copies, bf16 stays within 40 dB of fp32, batch sizes
from the real free memory, CUDA graphs equal eager, MDX-Net through onnxruntime's CUDA
provider with I/O binding equals the CPU."""

from __future__ import annotations

import pytest
import torch

from engine import graphs, transfer
from engine.chunking import separate
from engine.device import (
    auto_batch_size,
    autocast_factory,
    peak_memory,
    select_device,
    select_precision,
)
from engine.models import demucs as dm

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def cuda_model(test_models_dir):
    return dm.load("htdemucs", CUDA, test_models_dir)


@pytest.fixture(scope="module")
def no_tf32():
    """fp32 means fp32: TF32 matrix products and convolutions off for the module."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _sdr(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10((ref**2).sum() / ((ref - est) ** 2).sum().clamp_min(1e-20)))


def test_auto_device_and_precision_pick_cuda():
    device = select_device("auto")
    assert device.type == "cuda"
    assert select_precision(device, "auto") in ("bf16", "fp16")
    assert auto_batch_size(device, 1 << 30) >= 1


@pytest.mark.usefixtures("no_tf32")
def test_gpu_matches_apply_model_fp32_at_batch_1_4_16(cuda_model):
    from demucs.apply import apply_model

    # 19 windows: a full batch of 16 after the first window
    mix = torch.randn(2, int(cuda_model.segment_length * 0.75 * 18) + 11) * 0.3
    ref = apply_model(cuda_model.raw, mix[None], shifts=0, split=True, overlap=0.25,
                      device="cuda")[0].cpu()
    for batch in (1, 4, 16):
        out = separate(cuda_model, mix, batch_size=batch, start_at=mix.shape[-1] // 2)
        assert float((out - ref).abs().max()) <= 1e-4, batch


@pytest.mark.usefixtures("no_tf32")
def test_stream_pipeline_equals_plain_copies(cuda_model, monkeypatch):
    mix = torch.randn(2, int(cuda_model.segment_length * 4.3)) * 0.3
    piped = separate(cuda_model, mix, batch_size=3)
    monkeypatch.setattr(transfer, "pipeline", lambda device: None)
    plain = separate(cuda_model, mix, batch_size=3)
    assert float((piped - plain).abs().max()) <= 1e-6


def test_bf16_within_40_db_of_fp32(cuda_model, no_tf32):
    mix = torch.randn(2, cuda_model.segment_length * 2) * 0.3
    fp32 = separate(cuda_model, mix, batch_size=2)
    bf16 = separate(cuda_model, mix, batch_size=2, autocast=autocast_factory(CUDA, "bf16"))
    assert _sdr(fp32, bf16) >= 40.0


def test_batch_size_from_the_real_free_memory(cuda_model):
    window = torch.randn(1, 2, cuda_model.valid_length(cuda_model.segment_length),
                         device=CUDA)

    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode():
            cuda_model.forward(x)

    one = peak_memory(lambda: forward(window), CUDA)
    two = peak_memory(lambda: forward(window.repeat(2, 1, 1)), CUDA)
    assert 0 < one < two
    seen: list[tuple[int, int]] = []

    def memory(device: torch.device) -> tuple[int, int]:
        seen.append(torch.cuda.mem_get_info(device))
        return seen[-1]

    batch = auto_batch_size(CUDA, one, memory=memory)
    free, total = seen[0]
    assert 0 < free <= total
    assert batch == max(1, min(16, (free // 2) // one))
    assert 1 <= auto_batch_size(CUDA, one) <= 16  # torch's own figure
    assert auto_batch_size(CUDA, total) == 1  # a window as large as the device


@pytest.mark.usefixtures("no_tf32")
def test_cuda_graph_equals_eager_fp32(cuda_model, monkeypatch, tmp_path):
    from engine.acceleration import FastForward
    from engine.artifacts import ArtifactCache

    assert graphs.unavailable_reason() is None
    member = cuda_model.models[0]
    x = torch.randn(2, 2, cuda_model.valid_length(cuda_model.segment_length), device=CUDA)
    run = graphs.capture(member, x, "fp32")
    with torch.inference_mode():
        want = member(x)
        for _ in range(2):  # replays are repeatable
            assert float((run(x) - want).abs().max()) <= 1e-4
    monkeypatch.setenv("STEMBRIDGE_COMPILE", "graphs")
    fast = FastForward(member, {"model": "htdemucs"}, ArtifactCache(tmp_path))
    fast.start(tuple(x.shape), "fp32", "cuda")
    fast.join()
    assert fast.ready(tuple(x.shape), "fp32"), fast.status


def test_mdx_through_onnxruntime_cuda_io_binding_equals_cpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    from engine.models import mdx, testmodels

    testmodels.make_test_mdx("mdx-voc-ft", tmp_path, seed=1)
    cpu = mdx.load("mdx-voc-ft", torch.device("cpu"), tmp_path)
    gpu = mdx.load("mdx-voc-ft", CUDA, tmp_path)
    assert gpu.device_binding and not cpu.device_binding
    mix = torch.randn(2, gpu.segment_length * 3 + 7) * 0.3
    want = separate(cpu, mix, batch_size=2)
    got = separate(gpu, mix, batch_size=2)
    assert float((got - want).abs().max()) <= 1e-3 * float(want.abs().max())
