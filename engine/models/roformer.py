"""BS-RoFormer and Mel-Band RoFormer models: the community training code's checkpoints
(a ``.ckpt`` state dict, possibly wrapped under ``state_dict``/``model``/``state``) and
their YAML configs (which use ``!!python/tuple``), run by our network
(`engine.models.roformer_net`) through our chunk loop.

Config keys honoured (``model:``): dim, depth, stereo, num_stems,
time_transformer_depth, freq_transformer_depth, freqs_per_bands (BS) or num_bands and
sample_rate (Mel), dim_head, heads, stft_n_fft, stft_hop_length, stft_win_length,
stft_normalized, mask_estimator_depth, mlp_expansion_factor; zero_dc is accepted and has
no effect (as in python-audio-separator's networks); skip_connection and
linear_transformer_depth > 0 are refused. ``training:`` instruments and
target_instrument give the stems; ``inference:`` dim_t (else ``audio: chunk_size``) and
num_overlap give the window and the default overlap.

Windows are python-audio-separator's: `hop * (dim_t - 1)` samples every
``chunk // num_overlap``, the last one ending at the track's end, weighted by a
symmetric Hamming window. A track shorter than one window is one window of its own
length, and its last ``samples % hop`` samples are kept (the reference leaves them at
zero: its inverse STFT stops at the last full hop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelError
from engine.models import catalog, manifest, store
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import torch

    from engine.chunking import WindowLayout
    from engine.models.roformer_net import RoFormer

#: Names a config's instruments may use for the stems our protocol calls otherwise.
STEM_ALIASES = {"vocal": "vocals", "voice": "vocals", "no_vocals": "instrumental",
                "accompaniment": "instrumental", "inst": "instrumental"}
_NET_KEYS = ("dim", "depth", "stereo", "num_stems", "time_transformer_depth",
             "freq_transformer_depth", "dim_head", "heads", "stft_n_fft", "stft_hop_length",
             "stft_win_length", "stft_normalized", "mask_estimator_depth",
             "mlp_expansion_factor")


def read_config(path: Path) -> dict[str, Any]:
    """The YAML config at `path`; ``!!python/tuple`` reads as a tuple, nothing else of
    Python's tags is allowed (a safe loader)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple[Any, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise yaml.constructor.ConstructorError(None, None, "a tuple must be a list",
                                                    node.start_mark)
        return tuple(loader.construct_sequence(node))

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"Cannot read the model config {path} ({exc}).",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(f"{path} is not a RoFormer config (it needs a 'model:' section).",
                         code=ErrorCode.MODEL_CORRUPT)
    return data


def stem_name(name: str) -> str:
    """A config's instrument name in our protocol's terms (vocals, instrumental...)."""
    low = str(name).strip().lower()
    return STEM_ALIASES.get(low, low)


@dataclass(frozen=True)
class RoFormerConfig:
    """What a config says: the network's arguments, its stems, window and overlap.

    Attributes:
        kind: ``"bs"`` (freqs_per_bands) or ``"mel"`` (num_bands).
        net: keyword arguments of `RoFormer` (bands resolved).
        stems: the network's output stems, in its order; `target` is set for a one-stem
            network whose other stem is ``mix - target``.
        chunk: window length in samples; overlap: the default fraction
            (``1 - 1 / num_overlap``); samplerate in Hz.
    """

    kind: str
    net: dict[str, Any]
    stems: tuple[str, ...]
    target: str
    chunk: int
    overlap: float
    samplerate: int

    @property
    def sources(self) -> tuple[str, ...]:
        """The model's sources: the network's stems, plus the rest for one target."""
        if not self.target:
            return self.stems
        rest = "instrumental" if self.target == "vocals" else "other"
        return (self.target, rest)


def parse_config(data: dict[str, Any], where: str) -> RoFormerConfig:
    """A `RoFormerConfig` from a config mapping (MODEL_CORRUPT naming what is wrong)."""
    from engine.models.roformer_net import mel_bands

    m = data["model"]
    bad = [k for k in ("skip_connection",) if m.get(k)]
    if m.get("linear_transformer_depth", 0):
        bad.append("linear_transformer_depth")
    if bad:
        raise ModelError(f"{where} uses {', '.join(bad)}, which stembridge's RoFormer does "
                         "not implement.", code=ErrorCode.MODEL_CORRUPT)
    try:
        net = {k: m[k] for k in _NET_KEYS if k in m}
        samplerate = int(m.get("sample_rate", data.get("audio", {}).get("sample_rate", 44100)))
        if "freqs_per_bands" in m:
            kind, net["bands"] = "bs", tuple(int(f) for f in m["freqs_per_bands"])
        else:
            kind = "mel"
            net["bands"] = mel_bands(samplerate, int(m.get("stft_n_fft", 2048)),
                                     int(m["num_bands"]))
            net.update(final_norm=False, transformer_norm=True)
            net["keep_length"] = bool(m.get("match_input_audio_length", False))
        training = data.get("training", {})
        instruments = tuple(stem_name(s) for s in training.get("instruments", ()))
        target = stem_name(training["target_instrument"]) if training.get(
            "target_instrument") else ""
        stems = (target,) if target else instruments
        if int(m.get("num_stems", 1)) != len(stems) or not stems:
            raise ValueError(f"num_stems {m.get('num_stems', 1)} but stems {stems}")
        hop = int(m.get("stft_hop_length", 512))
        inference = data.get("inference", {})
        dim_t = inference.get("dim_t")
        chunk = hop * (int(dim_t) - 1) if dim_t else int(data["audio"]["chunk_size"])
        num_overlap = int(inference.get("num_overlap", 4))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where} lacks a setting or has a wrong one ({exc}).",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    return RoFormerConfig(kind, net, stems, target, chunk, 1 - 1 / max(1, num_overlap),
                          samplerate)


def unwrap_state(obj: Any, where: str) -> dict[str, Any]:
    """The state dict inside a checkpoint: the object itself, or under ``state_dict``,
    ``model`` or ``state`` (a Lightning ``model.`` prefix removed)."""
    import torch

    for key in ("state_dict", "model", "state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{where} holds no state dict of tensors.",
                         code=ErrorCode.MODEL_CORRUPT)
    if obj and all(k.startswith("model.") for k in obj):
        obj = {k[len("model."):]: v for k, v in obj.items()}
    return obj


def build(config: RoFormerConfig, state: dict[str, Any], where: str) -> RoFormer:
    """The network of `config` with `state` loaded, every key matching (missing or
    unexpected keys, or wrong shapes: MODEL_CORRUPT listing the first few)."""
    from engine.models.roformer_net import RoFormer

    gates = any(k.endswith("to_gates.weight") for k in state)
    net = RoFormer(**config.net, gates=gates)
    mine = net.state_dict()
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    shapes = [k for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or extra or shapes:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra),
                                     ("wrong shape", shapes)) if keys]
        raise ModelError(f"{where} does not match its config ({'; '.join(parts)}): the "
                         "checkpoint and the YAML belong to different models.",
                         code=ErrorCode.MODEL_CORRUPT)
    net.load_state_dict(state, strict=True)
    return net.eval()


def reference_layout(total: int, chunk: int, overlap: float) -> WindowLayout:
    """python-audio-separator's RoFormer windows over `total` samples (see the module
    docstring), with their Hamming weights."""
    import math

    import torch
    from scipy.signal import windows as sw

    from engine.chunking import WindowLayout

    step = max(1, math.floor((1 - overlap) * chunk + 1e-9))
    weight = torch.from_numpy(sw.hamming(chunk)).float()
    if total <= chunk:
        return WindowLayout(((0, total),), (weight,))
    starts = []
    for off in range(0, total, step):
        if off + chunk >= total:
            starts.append(total - chunk)
            break
        starts.append(off)
    if len(starts) > 1 and starts[-1] == starts[-2]:
        starts.pop()
    return WindowLayout(tuple((s, chunk) for s in starts), (weight,) * len(starts))


class RoFormerModel:
    """A loaded RoFormer: the `SeparationModel` the chunk loop runs.

    ``forward(mix (batch, 2, n)) -> (batch, sources, 2, n)`` float32."""

    align = "start"
    normalize_input = False

    def __init__(self, spec: ModelSpec, net: RoFormer, config: RoFormerConfig) -> None:
        self.spec = spec
        self.net = net
        #: the torch modules (the engine's warm-memory accounting reads them)
        self.nets = [net]
        self.config = config
        self.segment_length = config.chunk

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device) -> RoFormerModel:
        self.net.to(device)
        return self

    def valid_length(self, length: int) -> int:
        return length

    def window_layout(self, total: int, overlap: float) -> WindowLayout:
        return reference_layout(total, self.config.chunk, overlap)

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        import torch

        n = mix.shape[-1]
        if self.net.channels == 1:  # a mono network separates each channel alone
            b = mix.shape[0]
            out = self.net(mix.reshape(b * 2, 1, n), length=n).reshape(b, 2, -1, n)
            out = out.transpose(1, 2)
        else:
            out = self.net(mix, length=n)
        out = out.float()
        if self.config.target:
            out = torch.cat([out, mix.float()[:, None] - out], dim=1)
        return out


def load_files(ckpt: Path, yaml_path: Path, device: torch.device,
               spec: ModelSpec | None = None) -> RoFormerModel:
    """Load checkpoint `ckpt` with its config `yaml_path` onto `device`."""
    import torch

    config = parse_config(read_config(yaml_path), str(yaml_path))
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ModelError(f"Could not read {ckpt} ({exc}). The file is damaged: delete it "
                         "and install the model again.", code=ErrorCode.MODEL_CORRUPT) from exc
    net = build(config, unwrap_state(obj, str(ckpt)), str(ckpt))
    if spec is None:
        spec = ModelSpec(ckpt.stem, ckpt.stem, "roformer", config.sources, config.samplerate,
                         config.chunk / config.samplerate, default_overlap=config.overlap)
    elif tuple(spec.sources) != config.sources:
        raise ModelError(f"{yaml_path} describes stems {config.sources}, but {spec.name} "
                         f"gives {spec.sources}: the config belongs to another model.",
                         code=ErrorCode.MODEL_CORRUPT)
    return RoFormerModel(spec, net, config).to(device)


def load(name: str, device: torch.device, models_root: Path) -> RoFormerModel:
    """Load catalogue model `name` from ``<models_root>/<name>/`` (its ``.ckpt`` and
    ``.yaml``; their sha256 checked against the folder's manifest when there is one)."""
    spec = catalog.get_spec(name)
    folder = store.model_folder(name, models_root)
    paths = [folder / f for f in spec.files]
    if not all(p.is_file() for p in paths):
        raise store.not_installed_error(name, models_root)
    recorded = manifest.read(folder)
    if recorded is not None and recorded.mismatches(folder, paths):
        raise ModelError(f"A file in {folder} does not match the checksum recorded in its "
                         "manifest: the download is damaged; fetch the model again.",
                         code=ErrorCode.MODEL_CORRUPT)
    ckpt = next(p for p in paths if p.suffix == ".ckpt")
    yaml_path = next(p for p in paths if p.suffix in (".yaml", ".yml"))
    return load_files(ckpt, yaml_path, device, spec)
