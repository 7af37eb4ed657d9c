"""BS-RoFormer and Mel-Band RoFormer (engine.models.roformer): random-weight checkpoints
of the real architectures in the community format (.ckpt + YAML with !!python/tuple),
loaded with strict key matching, compared with python-audio-separator's own networks and
its MDXC separator's chunking (MIT; a test-only oracle we did not write)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.chunking import iter_separate, separate  # noqa: E402
from engine.errors import ModelError  # noqa: E402
from engine.models import registry, roformer, testmodels  # noqa: E402
from engine.models.roformer_net import mel_bands  # noqa: E402
from protocol.errors import ErrorCode  # noqa: E402

CPU = torch.device("cpu")
TOL = 1e-4
NAMES = ("bs-roformer-viperx-1297", "mel-roformer-kim-vocals", "bs-roformer-sw")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("roformer-models")
    for seed, name in enumerate(NAMES):
        testmodels.make_test_roformer(name, folder, seed=seed,
                                      wrap="state_dict" if seed == 1 else "")
    return folder


@pytest.fixture(scope="module")
def models(root: Path) -> dict[str, roformer.RoFormerModel]:
    return {name: registry.load(name, CPU, root) for name in NAMES}  # type: ignore[misc]


def _oracle_net(model: roformer.RoFormerModel, root: Path) -> Any:
    """python-audio-separator's network class for the config, with our checkpoint."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    cfg = roformer.read_config(root / model.spec.name / model.spec.files[1])
    kwargs = {k: v for k, v in cfg["model"].items()}
    if "num_bands" in kwargs:
        mod = pytest.importorskip(
            "audio_separator.separator.uvr_lib_v5.roformer.mel_band_roformer")
        net = mod.MelBandRoformer(**kwargs)
    else:
        mod = pytest.importorskip("audio_separator.separator.uvr_lib_v5.roformer.bs_roformer")
        net = mod.BSRoformer(**kwargs)
    net.load_state_dict(model.net.state_dict(), strict=True)
    return net.eval(), cfg


def _oracle_demix(model: roformer.RoFormerModel, root: Path, mix: np.ndarray) -> np.ndarray:
    """(sources, 2, n) from python-audio-separator's MDXCSeparator.demix."""
    sep = pytest.importorskip("audio_separator.separator.architectures.mdxc_separator")
    from ml_collections import ConfigDict

    net, cfg = _oracle_net(model, root)
    ref = object.__new__(sep.MDXCSeparator)
    ref.logger = logging.getLogger("audio-separator-oracle")
    ref.is_roformer, ref.pitch_shift, ref.override_model_segment_size = True, 0, False
    ref.model_data_cfgdict = ConfigDict(cfg)
    ref.overlap = cfg["inference"]["num_overlap"]
    ref.model_run, ref.torch_device = net, CPU
    ref.is_primary_stem_main_target = False
    with torch.no_grad():
        out = ref.demix(mix)
    if isinstance(out, dict):
        return np.stack([out[k] for k in cfg["training"]["instruments"]])
    return np.asarray(out)[None]


def _mix(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * rng.standard_normal((2, n))
            ).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_network_equals_audio_separator_and_loads_strictly(
        name: str, models: dict[str, roformer.RoFormerModel], root: Path) -> None:
    model = models[name]
    net, _ = _oracle_net(model, root)
    x = torch.from_numpy(_mix(4000, seed=1))[None]
    with torch.no_grad():
        want, got = net(x), model.net(x)
    want = want if want.dim() == 4 else want[:, None]
    assert got.shape == want.shape
    assert want.abs().max() > 1e-2
    assert (got - want).abs().max() < 1e-5


# a window is 2016 samples (tiny configs: hop 32, dim_t 64); 4 windows overlap
@pytest.mark.parametrize("n", [2015, 2016, 2017, 9001])
@pytest.mark.parametrize("name", ["bs-roformer-viperx-1297", "mel-roformer-kim-vocals"])
def test_chunked_output_equals_the_oracle(name: str, n: int,
                                          models: dict[str, roformer.RoFormerModel],
                                          root: Path) -> None:
    model = models[name]
    mix = _mix(n, seed=n)
    want = _oracle_demix(model, root, mix)
    out = separate(model, torch.from_numpy(mix), overlap=model.config.overlap).numpy()
    # shorter than a window: the oracle's last samples % hop are zeros (see below)
    full = n if n >= model.config.chunk else 32 * (n // 32)
    assert np.abs(out[0][:, :full] - want[0][:, :full]).max() < TOL
    # the other stem is mix - vocals
    assert np.abs(out[1] - (mix - out[0])).max() < 1e-5


@pytest.mark.slow
def test_two_seconds_equal_the_oracle(models: dict[str, roformer.RoFormerModel],
                                      root: Path) -> None:
    """175 windows of BS-RoFormer: long enough for every window position to occur."""
    test_chunked_output_equals_the_oracle("bs-roformer-viperx-1297", 44100 * 2 + 3, models,
                                          root)


def test_shorter_than_a_window_keeps_its_tail(models: dict[str, roformer.RoFormerModel],
                                              root: Path) -> None:
    """The oracle stops at the last full hop (zeros after it); we keep those samples."""
    model = models["bs-roformer-viperx-1297"]
    n = 1000  # 31 hops of 32, then 8 samples
    mix = _mix(n, seed=2)
    want = _oracle_demix(model, root, mix)
    out = separate(model, torch.from_numpy(mix), overlap=model.config.overlap).numpy()
    full = 32 * (n // 32)
    assert np.abs(out[0][:, :full] - want[0][:, :full]).max() < TOL
    assert np.abs(want[0][:, full:]).max() == 0 and np.abs(out[0][:, full:]).max() > 0


def test_six_stems_every_order(models: dict[str, roformer.RoFormerModel], root: Path) -> None:
    model = models["bs-roformer-sw"]
    mix = _mix(12345, seed=4)
    want = _oracle_demix(model, root, mix)
    for start_at, batch in ((0, 1), (9000, 3)):
        out = separate(model, torch.from_numpy(mix), overlap=model.config.overlap,
                       start_at=start_at, batch_size=batch).numpy()
        assert np.abs(out - want).max() < TOL


def test_regions_stream_from_the_cursor(models: dict[str, roformer.RoFormerModel]) -> None:
    model = models["mel-roformer-kim-vocals"]
    mix = torch.from_numpy(_mix(20000, seed=5))
    regions = list(iter_separate(model, mix, overlap=0.75, start_at=15000))
    assert regions[0].start <= 15000 < regions[0].end
    assert sum(r.end - r.start for r in regions) == 20000


def test_mel_bands_equal_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, bands in ((44100, 2048, 60), (48000, 2048, 60), (44100, 4096, 120)):
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=bands)
        fb[0, 0] = fb[-1, -1] = 1.0
        assert torch.equal(torch.from_numpy(fb > 0), mel_bands(sr, n_fft, bands))


def test_wrong_checkpoints_and_configs_are_refused(tmp_path: Path, root: Path) -> None:
    name = "bs-roformer-viperx-1297"
    folder = testmodels.make_test_roformer(name, tmp_path, seed=9)
    ckpt, cfg = (folder / f for f in registry.get_spec(name).files)
    text = cfg.read_text()
    # a config of another size: keys match, shapes do not
    cfg.write_text(text.replace("dim: 16", "dim: 32"))
    with pytest.raises(ModelError, match="wrong shape") as err:
        roformer.load_files(ckpt, cfg, CPU)
    assert err.value.code == ErrorCode.MODEL_CORRUPT
    cfg.write_text(text.replace("depth: 1\n", "depth: 2\n", 1))
    with pytest.raises(ModelError, match="missing"):
        roformer.load_files(ckpt, cfg, CPU)
    cfg.write_text(text.replace("zero_dc: true", "skip_connection: true"))
    with pytest.raises(ModelError, match="skip_connection"):
        roformer.load_files(ckpt, cfg, CPU)
    cfg.write_text("model: [1, 2]\n")
    with pytest.raises(ModelError, match="not a RoFormer config"):
        roformer.load_files(ckpt, cfg, CPU)
    cfg.write_text("model: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ModelError):  # only !!python/tuple is read
        roformer.load_files(ckpt, cfg, CPU)
    cfg.write_text(text)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ModelError, match="checksum"):
        registry.load(name, CPU, tmp_path)


@pytest.mark.parametrize("name", NAMES[:2])
def test_transformers_get_contiguous_input(name: str,
                                           models: dict[str, roformer.RoFormerModel]) -> None:
    """Each attention's projections see a contiguous (rows, seq, dim) input, so they run
    as one matrix product: a transposed view made them batched products that copy the
    weight once per row (a third of a released-size BS-RoFormer window in bf16)."""
    net = models[name].net
    layouts: list[bool] = []
    hooks = [m.to_qkv.register_forward_pre_hook(
        lambda _m, args: layouts.append(args[0].is_contiguous()))
        for m in net.modules() if m.__class__.__name__ == "Attention"]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 2, models[name].config.chunk))
    finally:
        for h in hooks:
            h.remove()
    assert layouts and all(layouts)
