"""Random-weight models of the real architectures, in the real on-disk formats, so the
whole path (loading, chunk loop, stems) runs in tests and benchmarks without downloads
(`stembridge models make-test`). Nothing in the library imports this module.

A test model of ``htdemucs`` is an ``HTDemucs`` with the released hyper-parameters
(``size="full"``) or a small stand-in with the same classes and code paths
(``size="tiny"``), written like a hub snapshot (``<sig>.safetensors`` whose metadata
holds ``klass``, ``args``, ``kwargs``) or like demucs' LocalRepo (``<sig>-<sha8>.th``),
next to ``<name>.yaml`` and the weights manifest.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.errors import InvalidArgumentError, ModelError
from engine.models import catalog
from engine.models.manifest import WeightsManifest, sha256_file
from protocol.files import make_temp, publish, write_bytes_atomic

#: Per demucs model: the class of each bag member, and the bag yaml's ``weights`` and
#: ``segment`` where the released yaml has them.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "htdemucs": {"klass": ["HTDemucs"]},
    "htdemucs_ft": {"klass": ["HTDemucs"] * 4,
                    "weights": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]},
    "htdemucs_6s": {"klass": ["HTDemucs"]},
    "hdemucs_mmi": {"klass": ["HDemucs"], "segment": 44},
    "mdx_extra": {"klass": ["Demucs", "Demucs", "HDemucs", "HDemucs"], "segment": 44},
}
SIZES = ("tiny", "full")
#: The window (seconds) of a tiny stand-in of a bag whose released yaml sets one (44 s
#: for hdemucs_mmi and mdx_extra): the same override code path, shorter windows.
TINY_BAG_SEGMENT = 8
FORMATS = ("safetensors", "th")


#: Architecture kwargs of the released models ("full") and of small stand-ins with the
#: same classes and code paths ("tiny") for fast tests.
def _arch(klass: str, size: str, sources: tuple[str, ...], segment: float) -> dict[str, Any]:
    if klass == "HTDemucs":
        seg = Fraction(39, 5) if segment == 7.8 else segment
        kw: dict[str, Any] = dict(sources=list(sources), audio_channels=2, samplerate=44100,
                                  segment=seg, nfft=4096, cac=True, depth=4, dconv_mode=3,
                                  t_layers=5, bottom_channels=0)
        if size == "full":
            kw.update(channels=48)
        else:
            kw.update(channels=4, t_layers=1, t_heads=2, dconv_comp=4, t_hidden_scale=1.0)
        return kw
    if klass == "HDemucs":
        kw = dict(sources=list(sources), audio_channels=2, samplerate=44100, segment=segment,
                  nfft=4096, depth=6, cac=True)
        kw.update(channels=48 if size == "full" else 4)
        return kw
    if klass == "Demucs":
        kw = dict(sources=list(sources), audio_channels=2, samplerate=44100, segment=segment)
        if size == "full":
            kw.update(channels=64, depth=6, resample=True)
        else:  # the sinc resampler and 2 LSTM layers make even a tiny v2 slow on a CPU
            kw.update(channels=4, depth=4, resample=False, lstm_layers=1)
        return kw
    raise ValueError(klass)


def _encode_json(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator,
                "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(v) for v in value]
    return value


def test_model_names() -> list[str]:
    """Every model `make_test_model` can write."""
    return [*ARCHITECTURES, *catalog.family_specs("mdx"), *catalog.family_specs("roformer")]


def _check_choice(name: str, size: str, fmt: str) -> None:
    if name not in test_model_names():
        close = catalog.suggestion(name, test_model_names())
        guess = f" Did you mean {close!r}?" if close else ""
        raise ModelError(
            f"No test model for {name!r}.{guess} Test models exist for: "
            f"{', '.join(test_model_names())}.")
    if size not in SIZES:
        raise InvalidArgumentError(f"A test model's size is one of {SIZES}, not {size!r}.")
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"A test model's format is one of {FORMATS}, not {fmt!r}.")


def _write_member(klass: Any, kwargs: dict[str, Any], folder: Path, sig: str, fmt: str) -> Path:
    """One bag member with random weights: ``<sig>.safetensors`` or ``<sig>-<sha8>.th``."""
    import torch

    model = klass(**kwargs)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save

        meta = {"klass": f"{klass.__module__}.{klass.__name__}", "args": json.dumps([]),
                "kwargs": json.dumps(_encode_json(kwargs))}
        path = folder / f"{sig}.safetensors"
        write_bytes_atomic(path, save(state, metadata=meta))
        return path
    pkg = {"klass": klass, "args": [], "kwargs": kwargs, "state": state, "training_args": {}}
    tmp = make_temp(folder, ".th")
    try:
        torch.save(pkg, tmp)
        path = folder / f"{sig}-{sha256_file(tmp)[:8]}.th"
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_test_model(name: str, directory: Path, *, size: str = "tiny", fmt: str = "safetensors",
                    seed: int = 0) -> Path:
    """Write a model of `name`'s real architecture with random weights, in the real on-disk
    format (`fmt` "safetensors": hub snapshot; "th": demucs LocalRepo), to
    ``directory/<name>/``. Returns that folder. `size` "full" uses the released sizes.
    An MDX-Net model is an ONNX file (`fmt` is ignored) with its settings in a YAML
    sidecar; a RoFormer a ``.ckpt`` state dict with its YAML config."""
    _check_choice(name, size, fmt)
    family = catalog.get_spec(name).family
    if family == "mdx":
        return make_test_mdx(name, directory, size=size, seed=seed)
    if family == "roformer":
        return make_test_roformer(name, directory, size=size, seed=seed)
    import torch
    import yaml
    from demucs import demucs as demucs_mod
    from demucs import hdemucs, htdemucs

    spec = catalog.get_spec(name)
    arch = ARCHITECTURES[name]
    classes = {"HTDemucs": htdemucs.HTDemucs, "HDemucs": hdemucs.HDemucs,
               "Demucs": demucs_mod.Demucs}
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob("*.safetensors")) + list(folder.glob("*.th")):
        old.unlink()
    torch.manual_seed(seed)
    written = [
        _write_member(classes[kname], _arch(kname, size, spec.sources, spec.segment_seconds),
                      folder, sig, fmt)
        for sig, kname in zip(spec.extra["sigs"], arch["klass"], strict=True)
    ]
    bag: dict[str, Any] = {"models": list(spec.extra["sigs"])}
    bag.update({k: arch[k] for k in ("weights", "segment") if k in arch})
    if size == "tiny" and "segment" in bag:  # the released 44 s windows: minutes per test
        bag["segment"] = TINY_BAG_SEGMENT
    bag_path = folder / f"{name}.yaml"
    write_bytes_atomic(bag_path, yaml.safe_dump(bag).encode("utf-8"))
    source = f"stembridge make-test ({size}, random weights, seed {seed})"
    WeightsManifest.of_files(name, source, [bag_path, *written]).write(folder)
    return folder


#: MDX-Net settings of the tiny test models: a 2048-point STFT, 128 bins, 16 frames
#: (windows of 15360 samples, 0.35 s), so a test runs hundreds of windows in seconds.
TINY_MDX = {"n_fft": 2048, "dim_f": 128, "dim_t": 16}


def make_test_mdx(name: str, directory: Path, *, size: str = "tiny", seed: int = 0,
                  settings: dict[str, Any] | None = None) -> Path:
    """Write ``directory/<name>/<file>.onnx``: a random-weight TFC-TDF U-Net exported to
    ONNX (input "input" [batch, 4, dim_f, dim_t], as UVR's files), its settings sidecar
    ``<file>.yaml`` (the catalogue's at size "full", `TINY_MDX` at "tiny", or
    `settings`) and the weights manifest. Needs the onnx package (the exporter)."""
    import yaml

    from engine.models import mdx_net

    spec = catalog.get_spec(name)
    params = dict(spec.extra["mdx"])
    if size == "tiny":
        params.update(TINY_MDX)
    params.update(settings or {})
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.files[0]
    import torch

    torch.manual_seed(seed)
    net = mdx_net.randomize(
        mdx_net.TFCTDFNet(params["dim_f"], params["dim_t"], **mdx_net.SIZES[size]), seed)
    tmp = make_temp(folder, ".onnx")
    try:
        mdx_net.export_onnx(net, params["dim_f"], params["dim_t"], str(tmp))
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    side = path.with_suffix(".yaml")
    write_bytes_atomic(side, yaml.safe_dump(params).encode("utf-8"))
    source = f"stembridge make-test ({size}, random weights, seed {seed})"
    WeightsManifest.of_files(name, source, [path, side]).write(folder)
    return folder


#: BS-RoFormer's released band layout (62 bands over 1025 bins: n_fft 2048).
BS_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
#: RoFormer configs: the released sizes (viperx' BS-RoFormer, Kim's Mel-Band RoFormer:
#: dim 512 / 384, depth 12 / 6, 8 heads of 64, STFT 2048 / hop 441, 801-frame windows)
#: and tiny stand-ins (n_fft 128, hop 32, 64-frame windows of 2016 samples).
ROFORMER_SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "bs": {
        "full": {"dim": 512, "depth": 12, "heads": 8, "dim_head": 64, "stft_n_fft": 2048,
                 "stft_hop_length": 441, "stft_win_length": 2048, "dim_t": 801,
                 "freqs_per_bands": BS_BANDS},
        "tiny": {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "stft_n_fft": 128,
                 "stft_hop_length": 32, "stft_win_length": 128, "dim_t": 64,
                 "freqs_per_bands": (2,) * 8 + (4,) * 4 + (8,) * 2 + (17,)},
    },
    "mel": {
        "full": {"dim": 384, "depth": 6, "heads": 8, "dim_head": 64, "stft_n_fft": 2048,
                 "stft_hop_length": 441, "stft_win_length": 2048, "dim_t": 801,
                 "num_bands": 60},
        "tiny": {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "stft_n_fft": 128,
                 "stft_hop_length": 32, "stft_win_length": 128, "dim_t": 64,
                 "num_bands": 8},
    },
}


def roformer_config(name: str, size: str = "tiny") -> dict[str, Any]:
    """The YAML config (as a mapping) of a test model of catalogue RoFormer `name`."""
    spec = catalog.get_spec(name)
    arch = dict(ROFORMER_SIZES[spec.extra["arch"]][size])
    dim_t = arch.pop("dim_t")
    one_target = len(spec.sources) == 2
    instruments = ["vocals", "other"] if one_target else list(spec.sources)
    model = {"stereo": True, "num_stems": 1 if one_target else len(instruments),
             "time_transformer_depth": 1, "freq_transformer_depth": 1,
             "linear_transformer_depth": 0, "mask_estimator_depth": 2,
             "mlp_expansion_factor": 4, "stft_normalized": False, "attn_dropout": 0.1,
             "ff_dropout": 0.1, "flash_attn": True, "zero_dc": True,
             "dim_freqs_in": arch["stft_n_fft"] // 2 + 1, **arch}
    if "num_bands" in model:  # Mel-Band configs have no linear transformer
        model["sample_rate"] = 44100
        del model["linear_transformer_depth"]
    training = {"instruments": instruments,
                "target_instrument": "vocals" if one_target else None}
    hop = arch["stft_hop_length"]
    return {"audio": {"chunk_size": hop * (dim_t - 1), "hop_length": hop,
                      "n_fft": arch["stft_n_fft"], "num_channels": 2, "sample_rate": 44100},
            "model": model, "training": training,
            "inference": {"batch_size": 1, "dim_t": dim_t, "num_overlap": 4}}


def _yaml_with_tuples(data: dict[str, Any]) -> bytes:
    """YAML as the community code writes it: tuples tagged ``!!python/tuple``."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    _Dumper.add_representer(tuple, lambda d, t: d.represent_sequence(
        "tag:yaml.org,2002:python/tuple", list(t), flow_style=True))
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False).encode("utf-8")


def make_test_roformer(name: str, directory: Path, *, size: str = "tiny", seed: int = 0,
                       wrap: str = "") -> Path:
    """Write ``directory/<name>/``: a random-weight network of the real architecture as
    a ``.ckpt`` state dict (under `wrap`, e.g. ``"state_dict"``, when given), its YAML
    config with ``!!python/tuple`` bands, and the weights manifest."""
    import torch

    from engine.models import roformer

    spec = catalog.get_spec(name)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_name, yaml_name = spec.files
    config_bytes = _yaml_with_tuples(roformer_config(name, size))
    yaml_path = folder / yaml_name
    write_bytes_atomic(yaml_path, config_bytes)
    config = roformer.parse_config(roformer.read_config(yaml_path), str(yaml_path))
    torch.manual_seed(seed)
    from engine.models.roformer_net import RoFormer

    net = RoFormer(**config.net)
    with torch.no_grad():  # RMSNorm gains away from 1, so they matter
        for key, value in net.state_dict().items():
            if key.endswith("gamma"):
                value.uniform_(0.5, 1.5)
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    tmp = make_temp(folder, ".ckpt")
    try:
        torch.save({wrap: state} if wrap else state, tmp)
        publish(tmp, folder / ckpt_name)
    finally:
        tmp.unlink(missing_ok=True)
    source = f"stembridge make-test ({size}, random weights, seed {seed})"
    WeightsManifest.of_files(name, source, [folder / ckpt_name, yaml_path]).write(folder)
    return folder
