"""Compiled forwards: the eager fallback when the compiler cannot run (switched off, no
C++ compiler: inductor's own compiler search), and that a model with a compiled path
still gives the eager output while nothing is ready."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import acceleration
from engine.artifacts import ArtifactCache
from engine.models import demucs as dm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def htdemucs(test_models_dir, one_torch_thread):
    return dm.load("htdemucs", CPU, test_models_dir)


def _window(model) -> torch.Tensor:
    n = model.valid_length(model.segment_length)
    return torch.randn(1, 2, n, generator=torch.Generator().manual_seed(3))


def _eager_and_via_separator(model, x):
    with torch.inference_mode():
        return model.models[0](x), model.forward(x)


def test_switched_off_stays_eager(htdemucs, tmp_path, monkeypatch):
    monkeypatch.setenv("STEMBRIDGE_COMPILE", "off")
    assert "STEMBRIDGE_COMPILE is not on" in (acceleration.unavailable_reason() or "")
    fasts = htdemucs.accelerate(ArtifactCache(tmp_path), "fp32")
    try:
        assert len(fasts) == 1 and not fasts[0]._threads  # no build was started
        (status,) = fasts[0].status.values()
        assert status.startswith("eager: switched off")
        x = _window(htdemucs)
        assert not fasts[0].ready(tuple(x.shape), "fp32")
        eager, served = _eager_and_via_separator(htdemucs, x)
        assert torch.allclose(eager, served, atol=1e-5)  # eager_layers: fused attention
        assert not list(tmp_path.iterdir())  # nothing was written to the cache
    finally:
        htdemucs.fast.clear()


def test_no_cpp_compiler_stays_eager(htdemucs, tmp_path, monkeypatch):
    """The real failure: inductor finds no C++ compiler (its search, a missing binary)."""
    import torch._inductor.config as inductor_config

    monkeypatch.setenv("STEMBRIDGE_COMPILE", "on")
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    reason = acceleration.unavailable_reason()
    assert reason is not None and "C++ compiler" in reason
    fasts = htdemucs.accelerate(ArtifactCache(tmp_path / "c"), "bf16")
    try:
        assert fasts[0].start((1, 2, 8), "bf16") is None  # nothing is ever started
        statuses = list(fasts[0].status.values())
        assert len(statuses) == 2 and all("C++ compiler" in s for s in statuses)
        x = _window(htdemucs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert acceleration.current_precision("cpu") == "bf16"
            eager, served = _eager_and_via_separator(htdemucs, x)
        assert torch.allclose(eager, served, atol=1e-5)  # eager_layers: fused attention
        assert not (tmp_path / "c").exists()
    finally:
        htdemucs.fast.clear()


def test_the_engine_starts_no_build_without_a_compiled_path(tmp_path):
    """Models without a compiled path (spleeter, mdx, roformer) get none: []"""
    from engine.config import EngineConfig
    from engine.separator import Engine

    class Plain:
        pass

    engine = Engine(EngineConfig(models_dir=Path(tmp_path)))
    engine._models["plain"] = Plain()
    assert engine.accelerate("plain") == []


def test_thread_settings_are_set_before_torch_and_respect_the_user(tmp_path):
    """`configure_threads` sets libgomp's spin count in a process that has not imported
    torch yet, never over the user's own wait policy, and reports when it is too late."""
    import os
    import subprocess
    import sys

    from engine.device import GOMP_SPINCOUNT, configure_threads

    code = ("import os, sys; from engine.device import configure_threads; "
            "print(configure_threads(), 'torch' in sys.modules, "
            "os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    base = {k: v for k, v in os.environ.items()
            if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    root = str(Path(__file__).resolve().parents[2])
    for extra, want in (({}, f"True False {GOMP_SPINCOUNT} None"),
                        ({"OMP_WAIT_POLICY": "ACTIVE"}, "True False None ACTIVE"),
                        ({"GOMP_SPINCOUNT": "7"}, "True False 7 None")):
        env = {**base, **extra, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        assert " ".join(out) == want
    assert "torch" in sys.modules and configure_threads() is False  # too late here
    child: dict[str, str] = {}
    assert configure_threads(child) is True and child == {"GOMP_SPINCOUNT": GOMP_SPINCOUNT}


def test_eager_layers_fuse_self_attention_and_leave_the_model_alone(htdemucs, monkeypatch):
    """The engine's eager forward (`eager_layers`) runs each transformer self-attention
    as one scaled-dot-product attention, in fp32 only; the demucs model itself (what
    `apply_model` would run) keeps torch's own attention modules."""
    raw, eager = htdemucs.models[0], htdemucs.eager[0]
    assert eager is not raw
    pairs = [(r.self_attn, e.self_attn)
             for stack in ("layers", "layers_t")
             for r, e in zip(getattr(raw.crosstransformer, stack),
                             getattr(eager.crosstransformer, stack), strict=True)
             if hasattr(r, "self_attn")]
    assert pairs
    assert all(isinstance(r, torch.nn.MultiheadAttention) for r, _ in pairs)
    assert all(isinstance(e, dm.SelfAttention) and e.attention is r for r, e in pairs)

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    mha, fused = pairs[0]
    x = torch.randn(2, 37, mha.embed_dim, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = mha(x, x, x, need_weights=False)[0]
        got, weights = fused(x, x, x, attn_mask=None, key_padding_mask=None,
                             need_weights=False, is_causal=False)
        assert weights is None and calls == [1]
        assert torch.allclose(got, want, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # native under autocast
            assert torch.equal(fused(x, x, x, need_weights=False)[0],
                               mha(x, x, x, need_weights=False)[0])
        assert calls == [1]
        w = _window(htdemucs)
        assert torch.allclose(htdemucs.forward(w), raw(w), atol=1e-5)
    assert len(calls) == 1 + len(pairs)
