"""MDX-Net ONNX models (engine.models.mdx): a random-weight TFC-TDF U-Net exported to
ONNX at test time, run by onnxruntime through our chunk loop, compared with
python-audio-separator's MDX separator (MIT, a test-only oracle that we did not write)
on the same file, at odd lengths and in every processing order."""

from __future__ import annotations

import hashlib
import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from engine.chunking import CancelToken, iter_separate, separate  # noqa: E402
from engine.errors import CancelledError, ModelError  # noqa: E402
from engine.models import catalog, mdx, registry, testmodels  # noqa: E402
from protocol.errors import ErrorCode  # noqa: E402

CPU = torch.device("cpu")
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mdx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mdx-models")
    testmodels.make_test_mdx("mdx-voc-ft", root, seed=1)
    testmodels.make_test_mdx("mdx-inst-hq3", root, seed=2, settings={"denoise": True})
    return root


@pytest.fixture(scope="module")
def voc(mdx_root: Path) -> mdx.MDXNet:
    return mdx.load("mdx-voc-ft", CPU, mdx_root)


def _oracle(model: mdx.MDXNet, overlap: float) -> Any:
    """python-audio-separator's MDXSeparator on `model`'s ONNX session, set up as its
    constructor would for this file (segment size = dim_t: the onnxruntime path)."""
    # its module imports onnx2torch (which needs torchvision) for another path (a segment
    # size other than dim_t); that path is never taken here.
    sys.modules.setdefault("onnx2torch", types.ModuleType("onnx2torch"))
    sep_mod = pytest.importorskip("audio_separator.separator.architectures.mdx_separator")
    ref = object.__new__(sep_mod.MDXSeparator)
    s = model.settings
    ref.logger = logging.getLogger("audio-separator-oracle")
    ref.hop_length, ref.segment_size, ref.overlap, ref.batch_size = s.hop, s.dim_t, overlap, 1
    ref.enable_denoise, ref.n_fft, ref.dim_f, ref.dim_t = s.denoise, s.n_fft, s.dim_f, s.dim_t
    ref.torch_device = CPU
    session = model.session
    ref.model_run = lambda spek: session.run(None, {"input": spek.cpu().numpy()})[0]
    return ref


def _mix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
    return (tone + 0.2 * rng.standard_normal((2, n))).astype(np.float32)


def _primary(model: mdx.MDXNet, mix: np.ndarray, **kw: Any) -> np.ndarray:
    out = separate(model, torch.from_numpy(mix), **kw)
    return out[model.spec.sources.index(model.settings.primary)].numpy()


# one window is 15360 samples (tiny test settings: n_fft 2048, dim_t 16)
@pytest.mark.parametrize("n", [1, 1000, 15359, 15360, 15361, 100003])
def test_equals_audio_separator_at_odd_lengths(voc: mdx.MDXNet, n: int) -> None:
    mix = _mix(n, seed=n)
    want = _oracle(voc, 0.25).demix(mix)
    got = _primary(voc, mix, overlap=0.25)
    assert got.shape == want.shape == (2, n)
    assert np.abs(want).max() > 1e-3  # the network's output is not negligible
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("start_at,batch", [(0, 1), (50_000, 1), (99_000, 3), (0, 4)])
def test_every_processing_order_gives_the_same(voc: mdx.MDXNet, start_at: int,
                                               batch: int) -> None:
    mix = _mix(100003, seed=7)
    want = _oracle(voc, 0.5).demix(mix)
    got = _primary(voc, mix, overlap=0.5, start_at=start_at, batch_size=batch)
    assert np.abs(got - want).max() < TOL


@pytest.mark.slow
def test_several_minutes_equal_the_oracle(voc: mdx.MDXNet) -> None:
    mix = _mix(3 * 60 * 44100 + 17, seed=3)
    want = _oracle(voc, 0.25).demix(mix)
    got = _primary(voc, mix, overlap=0.25, batch_size=8)
    assert np.abs(got - want).max() < TOL


def test_denoise_and_an_instrumental_primary(mdx_root: Path) -> None:
    inst = mdx.load("mdx-inst-hq3", CPU, mdx_root)
    assert inst.settings.denoise and inst.settings.primary == "instrumental"
    mix = _mix(40000, seed=4)
    want = _oracle(inst, 0.25).demix(mix)
    out = separate(inst, torch.from_numpy(mix), overlap=0.25).numpy()
    idx = inst.spec.sources.index("instrumental")
    assert np.abs(out[idx] - want).max() < TOL
    # the other stem: mix - compensate * primary (UVR's convention)
    other = out[1 - idx]
    assert np.abs(other - (mix - inst.settings.compensate * out[idx])).max() < 1e-5


def test_regions_stream_resume_and_cancel(voc: mdx.MDXNet) -> None:
    mix = torch.from_numpy(_mix(80000, seed=5))
    whole = separate(voc, mix)
    regions = list(iter_separate(voc, mix, start_at=40000))
    assert regions[0].start <= 40000 < regions[0].end  # the cursor's region comes first
    done = [(r.start, r.end) for r in regions[:3]]
    rest = list(iter_separate(voc, mix, already_final=done))
    assert sum(r.end - r.start for r in rest) + sum(b - a for a, b in done) == 80000
    for r in rest:
        assert torch.equal(r.audio, whole[..., r.start:r.end]) or torch.allclose(
            r.audio, whole[..., r.start:r.end], atol=1e-6)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        next(iter_separate(voc, mix, cancel=token))


def test_settings_from_sidecar_hash_or_catalogue(tmp_path: Path, mdx_root: Path) -> None:
    folder = mdx_root / "mdx-voc-ft"
    onnx_file = folder / "UVR-MDX-NET-Voc_FT.onnx"
    data = onnx_file.read_bytes()
    assert mdx.uvr_hash(onnx_file) == hashlib.md5(data[-10000 * 1024:]).hexdigest()
    # without a sidecar, an unknown file gets the catalogue entry's settings
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(data)
    spec = catalog.get_spec("mdx-voc-ft")
    assert mdx.resolve_settings(bare, spec) == mdx.MDXSettings(7680, 3072, 256, 1.021, "vocals")
    with pytest.raises(ModelError, match="Write them into") as err:
        mdx.resolve_settings(bare)
    assert err.value.code == ErrorCode.MODEL_CORRUPT
    # a file with the catalogue's settings but another shape is refused, saying why
    with pytest.raises(ModelError, match="do not belong to this file"):
        mdx.load_file(bare, CPU, spec)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data)
    bad.with_suffix(".yaml").write_text("n_fft: 2048\ndim_f: 5000\ndim_t: 16\n"
                                        "compensate: 1.0\nprimary_stem: vocals\n")
    with pytest.raises(ModelError, match="dim_f 5000"):
        mdx.resolve_settings(bad)


def test_registry_loads_it_and_a_damaged_file_is_refused(tmp_path: Path) -> None:
    testmodels.make_test_mdx("mdx-voc-ft", tmp_path, seed=3)
    model = registry.load("mdx-voc-ft", CPU, tmp_path)
    assert isinstance(model, mdx.MDXNet)
    assert registry.installed_location("mdx-voc-ft", tmp_path) == str(tmp_path / "mdx-voc-ft")
    path = tmp_path / "mdx-voc-ft" / "UVR-MDX-NET-Voc_FT.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match="checksum") as err:
        registry.load("mdx-voc-ft", CPU, tmp_path)
    assert err.value.code == ErrorCode.MODEL_CORRUPT
    with pytest.raises(ModelError) as missing:
        registry.load("kim-vocal-2", CPU, tmp_path)
    assert missing.value.code == ErrorCode.MODEL_NOT_INSTALLED
    assert "Kim_Vocal_2.onnx" in str(missing.value)


def test_cuda_without_the_gpu_runtime_falls_back_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with caplog.at_level(logging.WARNING):
        assert mdx.providers(torch.device("cuda")) == ["CPUExecutionProvider"]
    assert "onnxruntime-gpu" in caplog.text


def test_device_binding_only_on_a_cuda_session(voc: mdx.MDXNet, monkeypatch) -> None:
    import onnxruntime as ort

    class Session:
        def __init__(self, providers: list[str]) -> None:
            self.providers = providers

        def get_providers(self) -> list[str]:
            return self.providers

    cuda = torch.device("cuda")
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert mdx.binds_device(Session(both), cuda)
    assert not mdx.binds_device(Session(both), CPU)
    assert not mdx.binds_device(Session(["CPUExecutionProvider"]), cuda)  # fell back
    monkeypatch.setattr(ort, "get_available_providers", lambda: both)
    assert mdx.providers(cuda) == both  # CUDA first when onnxruntime-gpu offers it
    assert mdx.providers(CPU) == ["CPUExecutionProvider"]
    assert not voc.device_binding
    mix = torch.randn(2, voc.segment_length + 5) * 0.3
    before = separate(voc, mix)
    # a CPU-provider session for a CUDA device: numpy round trips, as before
    assert not mdx.binds_device(voc.session, cuda)
    assert torch.equal(separate(voc, mix), before)


def test_engine_splits_with_an_mdx_model(tmp_path: Path, mdx_root: Path) -> None:
    import soundfile as sf

    from engine.config import EngineConfig
    from engine.separator import Engine
    from protocol.messages import SplitRequest

    src = tmp_path / "song.wav"
    mix = _mix(30000, seed=9)
    sf.write(src, mix.T, 44100, subtype="FLOAT")
    engine = Engine(EngineConfig(device="cpu", models_dir=mdx_root, use_cache=False))
    job, regions = engine.split(SplitRequest(str(src), model="mdx-voc-ft", stems=2))
    assert job.plan.names == ("vocals", "instrumental")
    vocals = np.concatenate([r.stems["vocals"] for r in sorted(regions, key=lambda r: r.start)],
                            axis=-1)
    want = _oracle(engine.model("mdx-voc-ft"), job.overlap).demix(mix)  # type: ignore[arg-type]
    assert np.abs(vocals - want).max() < TOL
