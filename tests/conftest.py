"""Shared fixtures: isolated cache/model folders, random-weight test models, audio files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the network.
os.environ.setdefault("STEMBRIDGE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Compiled forwards take minutes of CPU per model: tests run eagerly, here and in every
# process they start, even where the developer's environment switches them on;
# tests/engine/test_acceleration.py switches them on where it tests the compiler's paths.
os.environ["STEMBRIDGE_COMPILE"] = "off"
# One OpenMP/torch thread per test process and per process a test starts: pytest-xdist
# already runs one worker per core, and the tiny test models gain nothing from a second
# thread while two threads per worker on a shared core wait for each other (measured: a
# full suite spent minutes spinning). A test that sets its own count still can.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Every variable that decides where stembridge reads or writes per-user files. Before
#: any fixture or test runs (module- and session-scoped fixtures included, and every
#: process a test starts, which inherits the environment), they point into one temporary
#: folder per test process; HOME too, so nothing can fall back to the user's folders.
USER_DIR_VARS = ("HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME",
                 "XDG_DATA_HOME", "STEMBRIDGE_CACHE_DIR", "STEMBRIDGE_RUNTIME_DIR",
                 "STEMBRIDGE_MODELS_DIR", "STEMBRIDGE_OUTPUT_ROOT")
_SANDBOX: dict[str, object] = {}


def _user_folders() -> list[Path]:
    """The user's real stembridge folders, from the environment the tests started in."""
    from protocol import settings

    return [settings.cache_root(), settings.runtime_dir(), settings.models_dir(),
            settings.output_root()]


def _snapshot(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file under `folders`: path -> (size, mtime in ns). Bounded: a huge real
    cache is sampled to its first 20,000 entries."""
    out: dict[str, tuple[int, int]] = {}
    for folder in folders:
        if not folder.is_dir():
            out[str(folder)] = (-1, -1)
            continue
        for n, path in enumerate(folder.rglob("*")):
            if n > 20000:
                break
            try:
                st = path.lstat()
            except OSError:
                continue
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


def pytest_configure(config: pytest.Config) -> None:
    import sys

    if "torch" in sys.modules:  # imported before this file (a plugin): set it there too
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    real = _user_folders()
    _SANDBOX["real"] = real
    _SANDBOX["before"] = _snapshot(real)
    root = Path(tempfile.mkdtemp(prefix="stembridge-tests-"))
    _SANDBOX["root"] = root
    for var in USER_DIR_VARS:
        folder = root / var.lower()
        folder.mkdir(mode=0o700)
        os.environ[var] = str(folder)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any test wrote into the user's real stembridge folders."""
    real = _SANDBOX.get("real")
    if isinstance(real, list):
        after = _snapshot(real)
        if after != _SANDBOX["before"]:
            changed = sorted(set(after.items()) ^ set(_SANDBOX["before"].items()))[:5]
            session.config.pluginmanager.get_plugin("terminalreporter").write_line(
                "FAILED: the user's stembridge folders changed during the tests (a test "
                f"escaped its sandbox, or another stembridge process used them): {changed}",
                red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    root = _SANDBOX.get("root")
    if isinstance(root, Path):
        shutil.rmtree(root, ignore_errors=True)


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
    from engine.models.testmodels import make_test_model

    root = tmp_path_factory.mktemp("test-models")
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx_extra"):
        make_test_model(name, root, size="tiny", fmt="safetensors")
    return root


@pytest.fixture(scope="session")
def tiny_mdx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny MDX-Net ``mdx-voc-ft`` (ONNX, windows of 0.35 s that
    take milliseconds): cheap real windows for scheduling tests. Needs onnxruntime."""
    pytest.importorskip("onnxruntime")
    from engine.models.testmodels import make_test_mdx

    root = tmp_path_factory.mktemp("tiny-mdx")
    make_test_mdx("mdx-voc-ft", root, seed=1)
    return root


@pytest.fixture(scope="session")
def th_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """htdemucs in demucs' LocalRepo (.th) format."""
    from engine.models.testmodels import make_test_model

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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny test models: their tensors are small, so one
    thread is faster than two (and far faster on a busy machine, where two threads wait
    for each other). The previous count comes back after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
