"""StemMixer: a learned, per-bin blend of two separators' stems (the SpecTacles network).

For each stem, both members' estimates A and B (channels = 2, samples) go through an STFT
on a grid fixed to the track (frame k covers ``[k·hop − n_fft/2, k·hop + n_fft/2)``,
periodic Hann window, zeros outside the track, as `engine.models.ensemble`). A small
network reads the magnitudes and gives a mask α in [0, 1] per bin, frame and channel:

    input  (batch, 4 [+1], F, K + 2c)   |A| of both channels, |B| of both channels
                                        [+ the bin index / (F − 1), the frequency feature]
    conv (1 x context) 4[+1] -> 32, BatchNorm, ReLU   (context = 2c + 1 frames; 1: the
                                                       paper's 1x1)
    conv 1x1 32 -> 16, BatchNorm, ReLU
    conv 1x1 16 -> 2, sigmoid                  -> α  (batch, 2, F, K)

F = n_fft/2 + 1 bins. The blend (`phase`):

- ``"complex"``: Y = α·A + (1 − α)·B on the complex STFTs;
- ``"member_a"``: |Y| = α·|A| + (1 − α)·|B| with member A's phase (the paper reuses
  Demucs' phase; A is the first member).

Both are resynthesised as ``a + iSTFT(Y − STFT(a))`` (overlap-add normalised by the
summed squared window, which reconstructs a exactly where Y = STFT(a)), so α ≡ 1 gives
member A's waveform exactly. One mixer per stem (no shared trunk): each stem has its own
three layers, stored under ``<stem>.`` in one safetensors file.

On disk a trained mixer is a folder: ``stemmixer.safetensors`` and ``stemmixer.json``
(the `MixerConfig`, the members with their versions, the training facts and the sha256
of the weights, checked on every load). Serving: `StemMixerModel` is a fixed ensemble
(`engine.models.ensemble.EnsembleModel`) whose combiner is the mixer, named
``ensemble:NAME`` (a folder under the models directory) or ``ensemble:/abs/path``.
An output sample depends on member audio within `MixerConfig.margin` samples, so regions
stream once final in both members within that margin and equal a whole-file pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError, ModelError
from engine.models import ensemble
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import torch

    from engine.chunking import FinalRegion
    from engine.models.base import SeparationModel

PREFIX = "ensemble:"
CONFIG_NAME = "stemmixer.json"
WEIGHTS_NAME = "stemmixer.safetensors"
PHASES = ("complex", "member_a")
#: Largest config and weights file read (bytes): a mixer is a few kB of weights.
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 64 << 20
FORMAT = 1


@dataclass(frozen=True)
class MixerConfig:
    """What a mixer is: members, stems, STFT and network settings.

    Attributes:
        members: the two catalogue models (A, B); A gives the phase for ``member_a``.
        stems: the stems mixed, in output order.
        samplerate: Hz, the members' rate.
        n_fft, hop: STFT frame length and hop, samples.
        phase: ``"complex"`` or ``"member_a"`` (see the module docstring).
        freq_feature: add the normalised bin index as a fifth input channel.
        context: frames the first layer sees (odd; 1 is the paper's 1x1 convolution).
        hidden: the two hidden widths (32, 16 in the paper).
    """

    members: tuple[str, str]
    stems: tuple[str, ...]
    samplerate: int = 44100
    n_fft: int = 2048
    hop: int = 512
    phase: str = "complex"
    freq_feature: bool = True
    context: int = 1
    hidden: tuple[int, int] = (32, 16)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise InvalidArgumentError(f"The mixer's phase is one of {', '.join(PHASES)}, "
                                       f"not {self.phase!r}.")
        if self.context < 1 or self.context % 2 == 0:
            raise InvalidArgumentError(f"The mixer's context is an odd number of frames "
                                       f"(1, 3, 5...), not {self.context}.")
        if self.n_fft % self.hop or self.n_fft < 2 * self.hop:
            raise InvalidArgumentError(f"The mixer's hop must divide n_fft at least twice "
                                       f"(n_fft {self.n_fft}, hop {self.hop}).")
        if len(self.members) != 2:
            raise InvalidArgumentError("A StemMixer blends exactly two members.")

    @property
    def half_context(self) -> int:
        return self.context // 2

    @property
    def margin(self) -> int:
        """Samples of member audio an output sample reaches on each side."""
        return self.n_fft + self.hop * (1 + self.half_context)

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MixerConfig:
        try:
            return cls(members=tuple(data["members"]), stems=tuple(data["stems"]),
                       samplerate=int(data["samplerate"]), n_fft=int(data["n_fft"]),
                       hop=int(data["hop"]), phase=str(data["phase"]),
                       freq_feature=bool(data["freq_feature"]), context=int(data["context"]),
                       hidden=(int(data["hidden"][0]), int(data["hidden"][1])))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"The mixer config lacks or mistypes {exc}: train the mixer "
                             "again.", code=ErrorCode.MODEL_CORRUPT) from exc


def build(config: MixerConfig) -> torch.nn.ModuleDict:
    """The untrained networks, one per stem (a ModuleDict keyed by stem name)."""
    import torch
    from torch import nn

    def one() -> nn.Sequential:
        h1, h2 = config.hidden
        c_in = 4 + int(config.freq_feature)
        return nn.Sequential(
            nn.Conv2d(c_in, h1, (1, config.context)), nn.BatchNorm2d(h1), nn.ReLU(),
            nn.Conv2d(h1, h2, 1), nn.BatchNorm2d(h2), nn.ReLU(),
            nn.Conv2d(h2, 2, 1), nn.Sigmoid())

    return torch.nn.ModuleDict({s: one() for s in config.stems})


def fuse(nets: torch.nn.ModuleDict) -> torch.nn.ModuleDict:
    """Inference copies of `build`'s networks (eval mode) with each BatchNorm folded
    into the convolution before it and in-place ReLUs: the same function (to float
    rounding) in about half the memory passes."""
    import torch
    from torch import nn

    out = nn.ModuleDict()
    for stem, seq in nets.items():
        layers: list[nn.Module] = []
        mods = list(seq.children())
        i = 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv2d) and i + 1 < len(mods) and \
                    isinstance(mods[i + 1], nn.BatchNorm2d):
                bn = mods[i + 1]
                assert isinstance(bn, nn.BatchNorm2d)
                assert bn.running_var is not None and bn.running_mean is not None
                scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
                kh, kw = m.kernel_size[0], m.kernel_size[-1]
                conv = nn.Conv2d(m.in_channels, m.out_channels, (kh, kw))
                assert conv.bias is not None
                with torch.no_grad():
                    conv.weight.copy_(m.weight * scale.reshape(-1, 1, 1, 1))
                    bias = m.bias if m.bias is not None else torch.zeros_like(bn.running_mean)
                    shift = bn.bias if bn.affine else 0.0
                    conv.bias.copy_((bias - bn.running_mean) * scale + shift)
                layers.append(conv)
                i += 2
                continue
            layers.append(nn.ReLU(inplace=True) if isinstance(m, nn.ReLU) else copy.deepcopy(m))
            i += 1
        out[stem] = nn.Sequential(*layers).eval()
    return out.requires_grad_(False)


def features(config: MixerConfig, spec_a: torch.Tensor, spec_b: torch.Tensor) -> torch.Tensor:
    """Network input from the complex STFTs (batch, 2, F, K) of both members:
    (batch, 4 [+1], F, K) float32 magnitudes [and the bin index / (F - 1)]."""
    import torch

    parts = [spec_a.abs(), spec_b.abs()]
    if config.freq_feature:
        b, _, f, k = spec_a.shape
        ramp = torch.linspace(0.0, 1.0, f, dtype=torch.float32, device=spec_a.device)
        parts.append(ramp[None, None, :, None].expand(b, 1, f, k))
    return torch.cat(parts, 1)


def alpha(net: torch.nn.Module, config: MixerConfig, spec_a: torch.Tensor,
          spec_b: torch.Tensor) -> torch.Tensor:
    """α (batch, 2, F, K − 2c) in [0, 1] from STFTs (batch, 2, F, K): the first and last
    c = context // 2 frames only feed their neighbours."""
    out: torch.Tensor = net(features(config, spec_a, spec_b))
    return out


def blend(config: MixerConfig, a: torch.Tensor, b: torch.Tensor,
          alpha_: torch.Tensor) -> torch.Tensor:
    """The change to A's STFT: Y − A, complex, same shape as `a`, `b`, `alpha_`."""
    if config.phase == "complex":
        return (1.0 - alpha_) * (b - a)
    mag_a = a.abs()
    unit = a / mag_a.clamp_min(1e-30)
    return (1.0 - alpha_) * (b.abs() - mag_a) * unit


def window(config: MixerConfig, device: torch.device | None = None) -> torch.Tensor:
    """The periodic Hann window (n_fft,) float32 on `device` (default the CPU)."""
    import torch

    return torch.hann_window(config.n_fft, periodic=True, device=device)


def stft(config: MixerConfig, x: torch.Tensor) -> torch.Tensor:
    """Frames of `x` (..., samples) hop apart from its first sample: complex
    (..., F, K), K = (samples − n_fft) // hop + 1."""
    import torch

    frames = x.unfold(-1, config.n_fft, config.hop) * window(config, x.device)
    return torch.fft.rfft(frames, dim=-1).transpose(-1, -2)


def istft_ola(config: MixerConfig, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlap-add of the windowed inverse frames of `spec` (..., F, K): the summed
    frames (..., (K − 1)·hop + n_fft) and the summed squared window (same length)."""
    import torch

    win = window(config, spec.device)
    back = torch.fft.irfft(spec.transpose(-1, -2), n=config.n_fft, dim=-1) * win
    k = back.shape[-2]
    out = ensemble.overlap_add(back, config.n_fft, config.hop)
    norm = ensemble.overlap_add((win ** 2).expand(k, config.n_fft)[None],
                                config.n_fft, config.hop)[0]
    return out, norm


def combine(nets: torch.nn.ModuleDict, config: MixerConfig, stem: str, xa: torch.Tensor,
            xb: torch.Tensor, a: int, b: int, total: int,
            device: torch.device | None = None) -> torch.Tensor:
    """Samples ``[a, b)`` (channels, b − a) of the mixed stem from both members' whole
    track waveforms `xa`, `xb` (channels, total): only audio within `config.margin` of
    ``[a, b)`` is read, so a region equals the same samples of a whole-file pass. The
    arithmetic runs on `device` (default: where `xa` is; `nets` must be there too); the
    result is on `xa`'s device."""
    import torch

    n_fft, hop, c = config.n_fft, config.hop, config.half_context
    half = n_fft // 2
    k_lo = (a + half - n_fft) // hop + 1  # first frame reaching past a
    k_hi = (b + half - 1) // hop  # last frame starting before b
    s0 = (k_lo - c) * hop - half
    s1 = (k_hi + c) * hop - half + n_fft
    seg = torch.stack([x[..., max(0, s0):min(total, s1)] for x in (xa, xb)])
    if device is not None:
        seg = seg.to(device, non_blocking=True)
    seg = torch.nn.functional.pad(seg, (max(0, -s0), max(0, s1 - total)))
    spec = stft(config, seg)  # (2 members, ch, F, K + 2c)
    with torch.no_grad():
        al = alpha(nets[stem], config, spec[0][None], spec[1][None])[0]
    inner = slice(c, spec.shape[-1] - c)
    delta = blend(config, spec[0][..., inner], spec[1][..., inner], al)
    out, norm = istft_ola(config, delta)
    first = s0 + c * hop  # where the first inner frame starts
    return xa[..., a:b] + (out / norm)[..., a - first:b - first].to(xa.device)


def mix_track(nets: torch.nn.ModuleDict, config: MixerConfig, est_a: torch.Tensor,
              est_b: torch.Tensor) -> torch.Tensor:
    """Whole-file pass: (stems, channels, samples) from both members' estimates of the
    same shape (stems in `config.stems` order)."""
    import torch

    total = est_a.shape[-1]
    block = max(4 * config.samplerate, 4 * config.margin)  # bounds the frames in memory
    return torch.stack([
        torch.cat([combine(nets, config, s, est_a[j], est_b[j], a, min(total, a + block),
                           total) for a in range(0, total, block)], -1)
        for j, s in enumerate(config.stems)])


# --- the folder on disk ---------------------------------------------------------------


@dataclass
class Trained:
    """A mixer read from its folder: config, networks (eval mode), the facts of its JSON
    (members' versions, training data, seed, validation figures) and its weights' sha256."""

    config: MixerConfig
    nets: Any
    facts: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def save(folder: Path, config: MixerConfig, nets: torch.nn.ModuleDict,
         facts: dict[str, Any]) -> str:
    """Write ``stemmixer.safetensors`` then ``stemmixer.json`` (with the weights' sha256)
    atomically into `folder`; returns the sha256."""
    from safetensors.torch import save as st_save

    from protocol.files import write_bytes_atomic

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in nets.state_dict().items()}
    blob = st_save(state, metadata={"format": "stemmixer", "version": str(FORMAT)})
    digest = hashlib.sha256(blob).hexdigest()
    write_bytes_atomic(folder / WEIGHTS_NAME, blob)
    doc = {"format": FORMAT, "config": config.to_json(), "weights": WEIGHTS_NAME,
           "sha256": digest, **facts}
    write_bytes_atomic(folder / CONFIG_NAME,
                       (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return digest


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError as exc:
        raise ModelError(f"No {what} {path.name} in {path.parent}: train a mixer into that "
                         "folder first, or name the folder of a trained one.",
                         code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    except OSError as exc:
        raise ModelError(f"Cannot read {path} ({exc}).", code=ErrorCode.MODEL_CORRUPT) from exc
    if len(data) > limit:
        raise ModelError(f"{path} is larger than a mixer's {what} can be ({limit} bytes): "
                         "it is not a StemMixer file.", code=ErrorCode.MODEL_CORRUPT)
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed ``stemmixer.json`` of `folder` (ModelError when missing or invalid)."""
    raw = _read_bounded(folder / CONFIG_NAME, MAX_CONFIG_BYTES, "mixer config")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{folder / CONFIG_NAME} is not valid JSON ({exc}): train the mixer "
                         "again.", code=ErrorCode.MODEL_CORRUPT) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "sha256" not in doc:
        raise ModelError(f"{folder / CONFIG_NAME} is not a StemMixer config of format "
                         f"{FORMAT}: train the mixer again.", code=ErrorCode.MODEL_CORRUPT)
    return doc


def load_folder(folder: Path) -> Trained:
    """Read and verify a mixer folder: the weights' sha256 must equal the recorded one."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    doc = read_config(folder)
    config = MixerConfig.from_json(doc.get("config", {}))
    blob = _read_bounded(folder / WEIGHTS_NAME, MAX_WEIGHTS_BYTES, "mixer weights")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != doc["sha256"]:
        raise ModelError(f"The mixer weights {folder / WEIGHTS_NAME} do not match the sha256 "
                         f"recorded in {CONFIG_NAME} (changed or damaged): restore the "
                         "folder or train the mixer again.", code=ErrorCode.MODEL_CORRUPT)
    nets = build(config)
    try:
        nets.load_state_dict(st_load(blob), strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise ModelError(f"The mixer weights in {folder} do not fit its config ({exc}): "
                         "train the mixer again.", code=ErrorCode.MODEL_CORRUPT) from exc
    nets.eval()
    facts = {k: v for k, v in doc.items() if k not in ("config", "sha256", "format")}
    return Trained(config, nets, facts, digest)


# --- serving --------------------------------------------------------------------------


def is_mixer(name: str) -> bool:
    return name.startswith(PREFIX)


def folder_of(name: str, models_root: Path | None = None) -> Path:
    """The folder ``ensemble:NAME`` names: an absolute path, else NAME under
    `models_root` (default: the models directory of the environment,
    STEMBRIDGE_MODELS_DIR)."""
    from protocol import settings

    rest = name[len(PREFIX):].strip()
    if not rest:
        raise InvalidArgumentError("A trained ensemble is named 'ensemble:NAME' (a folder "
                                   "under the models directory) or 'ensemble:/abs/folder'.")
    path = Path(rest).expanduser()
    if path.is_absolute():
        return path
    if len(path.parts) != 1 or rest in (".", ".."):
        raise InvalidArgumentError(f"{name!r}: NAME is one folder name under the models "
                                   "directory, or an absolute path.")
    return (settings.models_dir() if models_root is None else Path(models_root)) / rest


def absolute_name(name: str, models_root: Path) -> str:
    """``ensemble:/abs/folder`` for ``ensemble:NAME`` (NAME under `models_root`), so that
    every later look-up by name (spec, cache key, loading) finds the same folder; any
    other model name unchanged."""
    if not is_mixer(name):
        return name
    return PREFIX + str(folder_of(name, models_root).resolve())


def spec_for(name: str, models_root: Path | None = None) -> ModelSpec:
    """The spec of ``ensemble:NAME``, read from its config (no torch): its version covers
    both members' names and versions and the mixer's sha256. `models_root` as
    `folder_of`."""
    from engine.models import catalog

    folder = folder_of(name, models_root)
    doc = read_config(folder)
    config = MixerConfig.from_json(doc.get("config", {}))
    members = [catalog.get_spec(m) for m in config.members]
    stems = ensemble.ensemble_stems([s.sources for s in members])
    if tuple(stems) != tuple(config.stems) or members[0].samplerate != config.samplerate:
        raise ModelError(f"The mixer in {folder} was trained for other stems or another rate "
                         "than its members give now: train it again.",
                         code=ErrorCode.MODEL_CORRUPT)
    ident = "|".join(f"{s.name}={s.version}" for s in members) + f"|stemmixer={doc['sha256']}"
    return ModelSpec(
        name=name, version=hashlib.sha256(ident.encode()).hexdigest()[:16], family="ensemble",
        sources=tuple(stems), samplerate=config.samplerate,
        segment_seconds=max(s.segment_seconds for s in members), default_overlap=0.25,
        description=f"StemMixer (learned per-bin blend) of {config.members[0]} and "
                    f"{config.members[1]}.",
        size_mb=sum(s.size_mb for s in members), license="MIT (the mixer)",
        extra={"members": config.members, "algorithm": "stemmixer", "folder": str(folder),
               "bytes_per_window": max(s.window_bytes for s in members)})


class StemMixerModel(ensemble.EnsembleModel):
    """Both members run through the chunk loop (`EnsembleModel.iter_regions`); a range is
    mixed once both are final within the mixer's margin of it. The members' outputs are
    kept on the CPU (whole-track buffers); the mixer (STFT, network, blend, inverse STFT)
    runs on the members' device on the range and its margin, and the region comes back to
    the CPU."""

    def __init__(self, spec: ModelSpec, members: list[SeparationModel],
                 trained: Trained) -> None:
        super().__init__(spec, members, ensemble.EnsembleEntry(tuple(trained.config.members)))
        self.trained = trained
        self.mixer = fuse(trained.nets).to(self.device)
        self.margin = trained.config.margin

    def to(self, device: torch.device) -> StemMixerModel:
        super().to(device)
        self.mixer = self.mixer.to(device)
        return self

    def _combine(self, bufs: list[torch.Tensor], a: int, b: int, total: int) -> FinalRegion:
        import torch

        from engine.chunking import FinalRegion

        cfg = self.trained.config
        out = [combine(self.mixer, cfg, s, bufs[0][j], bufs[1][j], a, b, total, self.device)
               for j, s in enumerate(cfg.stems)]
        return FinalRegion(a, b, torch.stack(out))


def load(name: str, device: torch.device, models_root: Path) -> StemMixerModel:
    """Load both members and the mixer onto `device`; a relative ``ensemble:NAME`` is a
    folder under `models_root`."""
    from engine.models import registry

    spec = spec_for(name, models_root)
    trained = load_folder(folder_of(name, models_root))
    members = [registry.load(m, device, models_root) for m in trained.config.members]
    return StemMixerModel(spec, members, trained)
