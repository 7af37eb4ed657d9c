"""Shared fixtures: isolated cache/model folders, random-weight test models, audio files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the user's cache or the network, and stay on 2 threads.
os.environ.setdefault("STEMBRIDGE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path_factory.getbasetemp() / "stembridge-cache"
    monkeypatch.setenv("STEMBRIDGE_CACHE_DIR", str(root))
    # The spleeter conversion is shared across tests (one conversion per session).
    monkeypatch.setenv("STEMBRIDGE_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    yield


@pytest.fixture(scope="session")
def test_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny random-weight demucs models in the real formats."""
    from engine.models.demucs import make_test_model

    root = tmp_path_factory.mktemp("test-models")
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx_extra"):
        make_test_model(name, root, size="tiny", fmt="safetensors")
    return root


@pytest.fixture(scope="session")
def th_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """htdemucs in demucs' LocalRepo (.th) format."""
    from engine.models.demucs import make_test_model

    root = tmp_path_factory.mktemp("test-models-th")
    make_test_model("htdemucs", root, size="tiny", fmt="th")
    return root


def music_like(seconds: float, sr: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic music-like signal (channels, frames): chords + noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.zeros((channels, t.size), dtype=np.float64)
    for f in (110.0, 220.0, 277.18, 329.63, 440.0):
        for c in range(channels):
            x[c] += 0.08 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
    beats = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(float)
    x += 0.1 * beats * rng.standard_normal((channels, t.size))
    return x.astype(np.float32)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` when no CUDA device is visible."""
    if not any("gpu" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
