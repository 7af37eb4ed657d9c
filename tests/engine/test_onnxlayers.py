"""The ONNX Runtime path (`STEMBRIDGE_COMPILE=onnx`, `engine.onnxlayers`): the tiny
htdemucs' layers exported and served through onnxruntime agree with eager at fp32,
come back from the artifact cache (and a payload onnxruntime cannot use is rebuilt),
are never built for bf16, and without onnxruntime everything stays eager."""

from __future__ import annotations

import sys

import pytest
import torch

from engine import acceleration
from engine.artifacts import ArtifactCache
from engine.models import demucs as dm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def htdemucs(test_models_dir, one_torch_thread):
    return dm.load("htdemucs", CPU, test_models_dir)


def _window(model, seed: int = 3) -> torch.Tensor:
    n = model.valid_length(model.segment_length)
    return torch.randn(1, 2, n, generator=torch.Generator().manual_seed(seed))


def _build(model, cache, precision="fp32"):
    fasts = model.accelerate(cache, precision)
    for fast in fasts:
        fast.join()
    return fasts


def test_onnx_layers_match_eager_and_are_cached(htdemucs, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    cache = ArtifactCache(tmp_path)
    x = _window(htdemucs)  # not the probe window the build is checked on
    try:
        monkeypatch.setenv("STEMBRIDGE_COMPILE", "off")
        (fast,) = htdemucs.accelerate(cache, "fp32")  # the FastForward, nothing built
        # a cached payload onnxruntime cannot use is deleted and exported again
        key = fast.key(tuple(x.shape), "fp32", "cpu", "onnx")
        cache.write(key, b"not a zip of ONNX layers")
        monkeypatch.setenv("STEMBRIDGE_COMPILE", "onnx")
        (fast,) = _build(htdemucs, cache)
        status = fast.status[(tuple(x.shape), "fp32")]
        assert status.startswith("ready (ONNX, exported"), status
        payload = cache.read(key)
        assert payload is not None and payload.startswith(b"PK")  # a zip of the layers
        with torch.inference_mode():
            eager = htdemucs.models[0](x)
            served = htdemucs.forward(x)
        assert not torch.equal(eager, served)  # onnxruntime ran, not the eager forward
        assert (served - eager).abs().max().item() <= 1e-4

        htdemucs.fast.clear()  # a new process's FastForward: the layers from the cache
        (again,) = _build(htdemucs, cache)
        assert again.status[(tuple(x.shape), "fp32")].startswith("ready (ONNX, from the cache")
        with torch.inference_mode():
            assert torch.equal(htdemucs.forward(x), served)
        assert len(list(tmp_path.iterdir())) == 1
    finally:
        htdemucs.fast.clear()


def test_onnx_is_not_built_for_bf16(htdemucs, tmp_path, monkeypatch):
    monkeypatch.setenv("STEMBRIDGE_COMPILE", "onnx")
    try:
        (fast,) = htdemucs.accelerate(ArtifactCache(tmp_path), "bf16")
        assert not fast._threads
        (status,) = fast.status.values()
        assert status.startswith("eager:") and ("fp32 only" in status
                                                or "onnxruntime" in status)
        assert not list(tmp_path.iterdir())
    finally:
        htdemucs.fast.clear()


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_without_onnxruntime_stays_eager(htdemucs, tmp_path, monkeypatch, missing):
    monkeypatch.setenv("STEMBRIDGE_COMPILE", "onnx")
    monkeypatch.setitem(sys.modules, missing, None)  # its import fails: not installed
    reason = acceleration.unavailable_reason("onnx")
    assert reason is not None and f"{missing} is not installed" in reason
    try:
        (fast,) = htdemucs.accelerate(ArtifactCache(tmp_path), "fp32")
        assert not fast._threads
        assert f"{missing} is not installed" in next(iter(fast.status.values()))
        x = _window(htdemucs)
        with torch.inference_mode():
            assert torch.equal(htdemucs.models[0](x), htdemucs.forward(x))
        assert not list(tmp_path.iterdir())
    finally:
        htdemucs.fast.clear()
