"""UVR's MDX-Net models: an ONNX network run through onnxruntime.

Signal path of one window (44.1 kHz, stereo; ``chunk = hop * (dim_t - 1)`` samples)::

    mix (batch, 2, chunk)
      -> STFT (n_fft per model, hop 1024, periodic Hann, centred), bins [:dim_f], the
         lowest three zeroed -> (batch, 4, dim_f, dim_t) float32, channels
         [L.re, L.im, R.re, R.im]
      -> the network (onnxruntime): the primary stem's spectrogram, same shape
         (with "denoise": 1/2 f(x) - 1/2 f(-x))
      -> inverse STFT (bins above dim_f zero) -> primary (batch, 2, chunk)
      -> the other stem = mix - compensate * primary (UVR's and python-audio-separator's
         convention: the primary stays as the network gives it)

Windows and weights are UVR's (`window_layout`): windows of `chunk` samples that begin
``n_fft / 2`` samples before the track, every ``(1 - overlap) * chunk`` samples, each
weighted by a symmetric Hann window as long as the part of the window inside UVR's padded
track. They run through our chunk loop (any order, streaming, cancel, resume).

Settings per model (n_fft, dim_f, dim_t, compensate, primary stem): from a YAML sidecar
next to the file (``<file>.yaml``), else UVR's hash of the file (`uvr_hash`) in
`KNOWN_SETTINGS`, else the catalogue entry's.
"""

from __future__ import annotations

import hashlib
import logging
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

log = logging.getLogger(__name__)

SAMPLERATE = 44100
HOP = 1024
#: UVR hashes the last 10,000 x 1024 bytes of a model file (the whole file if smaller).
HASH_TAIL = 10000 * 1024


@dataclass(frozen=True)
class MDXSettings:
    """The per-model facts UVR keeps for an MDX-Net file.

    Attributes:
        n_fft: STFT size in samples.
        dim_f: frequency bins the network sees (bins ``[:dim_f]``).
        dim_t: STFT frames per window (UVR's ``2 ** mdx_dim_t_set``).
        compensate: the other stem is ``mix - compensate * primary``.
        primary: the stem the network predicts (``"vocals"`` or ``"instrumental"``).
        denoise: run the network on x and -x and take ``(f(x) - f(-x)) / 2``.
        hop: STFT hop in samples (1024 for every UVR model).
    """

    n_fft: int
    dim_f: int
    dim_t: int
    compensate: float
    primary: str
    denoise: bool = False
    hop: int = HOP

    @property
    def chunk(self) -> int:
        """Window length in samples: ``hop * (dim_t - 1)``."""
        return self.hop * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        """Samples a window reaches before the track: ``n_fft // 2``."""
        return self.n_fft // 2

    def check(self, where: str) -> MDXSettings:
        """Self, or MODEL_CORRUPT naming `where` when the numbers cannot work."""
        problems = []
        if self.n_fft < self.hop or self.n_fft % 2:
            problems.append(f"n_fft {self.n_fft} must be even and at least the hop {self.hop}")
        if not 3 < self.dim_f <= self.n_fft // 2 + 1:
            problems.append(f"dim_f {self.dim_f} must lie in 4..{self.n_fft // 2 + 1}")
        if self.dim_t < 2 or self.chunk <= 2 * self.trim:
            problems.append(f"dim_t {self.dim_t} is too small for n_fft {self.n_fft}")
        if self.primary not in ("vocals", "instrumental"):
            problems.append(f"primary stem {self.primary!r} is not vocals or instrumental")
        if not 0.5 < self.compensate < 2.0:
            problems.append(f"compensate {self.compensate} is not near 1")
        if problems:
            raise ModelError(f"The MDX-Net settings from {where} are unusable: "
                             f"{'; '.join(problems)}. Correct them.",
                             code=ErrorCode.MODEL_CORRUPT)
        return self


#: Settings of the public UVR files by UVR hash. Source: UVR's model_data.json
#: (TRvlvr/application_data), as quoted by python-audio-separator users' catalogues.
KNOWN_SETTINGS: dict[str, MDXSettings] = {
    "77d07b2667ddf05b9e3175941b4454a0": MDXSettings(7680, 3072, 256, 1.021, "vocals"),
    "55657dd70583b0fedfba5f67df11d711": MDXSettings(6144, 3072, 256, 1.022, "instrumental"),
}


def uvr_hash(path: Path) -> str:
    """UVR's key of a model file: the MD5 of its last 10,000 x 1024 bytes (of the whole
    file when it is smaller), hex."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - HASH_TAIL))
        return hashlib.md5(fh.read(HASH_TAIL)).hexdigest()


def settings_from_dict(data: Any, where: str) -> MDXSettings:
    """Settings from a sidecar's mapping: ``n_fft``, ``dim_f``, ``dim_t`` (frames, or
    UVR's ``mdx_dim_t_set`` exponent), ``compensate``, ``primary_stem``, ``denoise``.
    UVR's own key names (``mdx_n_fft_scale_set``, ``mdx_dim_f_set``) are read too."""
    if not isinstance(data, dict):
        raise ModelError(f"{where} is not a mapping of MDX-Net settings.",
                         code=ErrorCode.MODEL_CORRUPT)
    try:
        dim_t = int(data["dim_t"]) if "dim_t" in data else 2 ** int(data["mdx_dim_t_set"])
        settings = MDXSettings(
            n_fft=int(data["n_fft"] if "n_fft" in data else data["mdx_n_fft_scale_set"]),
            dim_f=int(data["dim_f"] if "dim_f" in data else data["mdx_dim_f_set"]),
            dim_t=dim_t,
            compensate=float(data.get("compensate", 1.0)),
            primary=str(data.get("primary_stem", "vocals")).lower(),
            denoise=bool(data.get("denoise", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where} lacks an MDX-Net setting or has a wrong one ({exc}); it "
                         "needs n_fft, dim_f, dim_t, compensate and primary_stem.",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    return settings.check(where)


def sidecar_path(onnx_path: Path) -> Path:
    """``<file>.yaml`` next to an ONNX file: its settings when UVR does not know it."""
    return onnx_path.with_suffix(".yaml")


def resolve_settings(onnx_path: Path, spec: ModelSpec | None = None) -> MDXSettings:
    """The settings of the file at `onnx_path`: its sidecar, else its UVR hash, else the
    catalogue entry `spec`; MODEL_CORRUPT (saying how to write a sidecar) when none."""
    side = sidecar_path(onnx_path)
    if side.is_file():
        import yaml

        try:
            data = yaml.safe_load(side.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ModelError(f"Cannot read {side} ({exc}).",
                             code=ErrorCode.MODEL_CORRUPT) from exc
        return settings_from_dict(data, str(side))
    known = KNOWN_SETTINGS.get(uvr_hash(onnx_path))
    if known is not None:
        return known
    if spec is not None and "mdx" in spec.extra:
        return settings_from_dict(spec.extra["mdx"], f"the catalogue entry {spec.name}")
    raise ModelError(
        f"{onnx_path} is an MDX-Net file whose settings are unknown. Write them into "
        f"{side} (n_fft, dim_f, dim_t, compensate, primary_stem: vocals or instrumental).",
        code=ErrorCode.MODEL_CORRUPT)


def uvr_layout(total: int, settings: MDXSettings, overlap: float) -> WindowLayout:
    """UVR's windows over a track of `total` samples, in track positions.

    UVR pads the track with ``trim`` zeros before and ``pad = chunk - 2 trim + trim -
    total % (chunk - 2 trim)`` after (``M = trim + total + pad`` samples), cuts windows of
    `chunk` samples every ``int((1 - overlap) * chunk)`` from 0 while below M, and weights
    each with ``np.hanning(min(chunk, M - start))``. Windows that hold no track sample
    are left out; the others are clipped to the track's end."""
    import numpy as np
    import torch

    from engine.chunking import WindowLayout

    chunk, trim = settings.chunk, settings.trim
    gen = chunk - 2 * trim
    padded = trim + total + (gen + trim - total % gen)
    step = max(1, int((1 - overlap) * chunk))
    windows: list[tuple[int, int]] = []
    weights: list[torch.Tensor] = []
    hann: dict[int, torch.Tensor] = {}
    for start in range(0, padded, step):
        offset = start - trim
        if offset >= total:
            break
        span = min(chunk, padded - start)
        end = min(offset + span, total)
        if span not in hann:
            hann[span] = (torch.from_numpy(np.hanning(span).astype(np.float32)) if overlap
                          else torch.ones(span))
        windows.append((offset, end - offset))
        weights.append(hann[span])
    return WindowLayout(tuple(windows), tuple(weights))


class MDXNet:
    """A loaded MDX-Net file: the `SeparationModel` the chunk loop runs.

    ``forward(mix (batch, 2, chunk)) -> (batch, 2 sources, 2, chunk)`` float32, the
    sources in `spec.sources` order (the primary stem and the other one)."""

    align = "start"
    normalize_input = False

    def __init__(self, spec: ModelSpec, session: Any, settings: MDXSettings,
                 device: torch.device) -> None:
        import torch

        self.spec = spec
        self.settings = settings
        self.session = session
        self.segment_length = settings.chunk
        self._device = device
        self._input = session.get_inputs()[0]
        fixed = self._input.shape[0] if self._input.shape else None
        self._fixed_batch = fixed if isinstance(fixed, int) else None
        self._window = torch.hann_window(settings.n_fft, periodic=True)
        self._primary_index = spec.sources.index(settings.primary)
        self._output_name = session.get_outputs()[0].name
        #: the network reads and writes device memory (onnxruntime's CUDA provider,
        #: I/O binding) instead of numpy arrays on the host
        self.device_binding = binds_device(session, device)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device) -> MDXNet:
        self._device = device
        self.device_binding = binds_device(self.session, device)
        return self

    def valid_length(self, length: int) -> int:
        return self.settings.chunk

    def window_layout(self, total: int, overlap: float) -> WindowLayout:
        return uvr_layout(total, self.settings, overlap)

    def spectrogram(self, mix: torch.Tensor) -> torch.Tensor:
        """(batch, 2, chunk) -> the network's input (batch, 4, dim_f, dim_t)."""
        import torch

        s = self.settings
        b, c, n = mix.shape
        spec = torch.stft(mix.reshape(b * c, n).float(), s.n_fft, s.hop,
                          window=self._window.to(mix.device), center=True,
                          return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)  # (b*c, re/im, bins, frames)
        spec = spec.reshape(b, c * 2, -1, spec.shape[-1])[:, :, : s.dim_f].contiguous()
        spec[:, :, :3] = 0
        return spec

    def waveform(self, spec: torch.Tensor) -> torch.Tensor:
        """(batch, 4, dim_f, dim_t) -> (batch, 2, chunk): bins above dim_f are zero."""
        import torch
        import torch.nn.functional as F

        s = self.settings
        b, _, f, t = spec.shape
        full = F.pad(spec, (0, 0, 0, s.n_fft // 2 + 1 - f))
        full = full.reshape(b * 2, 2, -1, t).permute(0, 2, 3, 1).contiguous()
        wave = torch.istft(torch.view_as_complex(full), s.n_fft, s.hop,
                           window=self._window.to(spec.device), center=True)
        return wave.reshape(b, 2, -1)

    def network(self, spec: torch.Tensor) -> torch.Tensor:
        """The ONNX network on (batch, 4, dim_f, dim_t) float32, batch by batch when the
        file fixes its batch size."""
        import numpy as np
        import torch

        if self.device_binding and spec.device.type == "cuda":
            return self._network_bound(spec)
        x = spec.detach().float().cpu().numpy()
        step = self._fixed_batch or x.shape[0]
        outs = [self.session.run(None, {self._input.name: x[i: i + step]})[0]
                for i in range(0, x.shape[0], step)]
        return torch.from_numpy(np.concatenate(outs)).to(spec.device)

    def _network_bound(self, spec: torch.Tensor) -> torch.Tensor:
        """`network` on a CUDA tensor through I/O binding: onnxruntime reads `spec` and
        writes the output (same shape, float32) in device memory, with no host copy."""
        import numpy as np
        import torch

        x = spec.detach().float().contiguous()
        out = torch.empty_like(x)
        step = self._fixed_batch or x.shape[0]
        device_id = x.device.index or 0
        # onnxruntime runs on its own stream: the STFT that wrote `x` must be done
        torch.cuda.current_stream(x.device).synchronize()
        for i in range(0, x.shape[0], step):
            part, dest = x[i: i + step], out[i: i + step]
            binding = self.session.io_binding()
            binding.bind_input(self._input.name, "cuda", device_id, np.float32,
                               list(part.shape), part.data_ptr())
            binding.bind_output(self._output_name, "cuda", device_id, np.float32,
                                list(dest.shape), dest.data_ptr())
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return out

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        import torch

        spec = self.spectrogram(mix)
        if self.settings.denoise:
            pred = self.network(spec) * 0.5 - self.network(-spec) * 0.5
        else:
            pred = self.network(spec)
        primary = self.waveform(pred)
        other = mix.float() - self.settings.compensate * primary
        pair = (primary, other) if self._primary_index == 0 else (other, primary)
        return torch.stack(pair, dim=1)


def providers(device: torch.device) -> list[str]:
    """onnxruntime execution providers for `device`: CUDA first on a CUDA device when
    onnxruntime-gpu offers it (else a warning and the CPU)."""
    import onnxruntime as ort

    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDA execution provider (install onnxruntime-gpu); "
                    "the MDX-Net model runs on the CPU.")
    return ["CPUExecutionProvider"]


def binds_device(session: Any, device: torch.device) -> bool:
    """Whether the network's input and output stay in device memory (I/O binding): on a
    CUDA device, when `session` really runs on onnxruntime's CUDA provider (a session
    that fell back to the CPU provider keeps the numpy path)."""
    return device.type == "cuda" and "CUDAExecutionProvider" in session.get_providers()


def _session(path: Path, device: torch.device) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelError("MDX-Net models need the onnxruntime package: pip install "
                         "'stembridge[onnx]' (or onnxruntime-gpu on an NVIDIA machine).",
                         code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # onnxruntime's threads spin after each run by default, competing with the torch
    # STFTs between its calls (measured on 2 busy cores, a 1-minute pass of the tiny
    # test model: 13.0 s with spinning, 11.9 s without)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers(device))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"Could not load {path} as an ONNX model ({exc}). The file is "
                         "damaged: delete it and install the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc


def load_file(path: Path, device: torch.device, spec: ModelSpec | None = None) -> MDXNet:
    """Load the ONNX file at `path` (its settings from `resolve_settings`)."""
    settings = resolve_settings(path, spec)
    if spec is None:
        other = "instrumental" if settings.primary == "vocals" else "vocals"
        spec = ModelSpec(path.stem, uvr_hash(path), "mdx", (settings.primary, other),
                         SAMPLERATE, settings.chunk / SAMPLERATE)
    session = _session(path, device)
    shape = session.get_inputs()[0].shape
    want = [4, settings.dim_f, settings.dim_t]
    if len(shape) != 4 or any(isinstance(a, int) and a != b for a, b in zip(shape[1:], want,
                                                                            strict=True)):
        raise ModelError(f"{path} takes input {shape}, but its settings say "
                         f"[batch, {', '.join(map(str, want))}]: the settings do not belong "
                         "to this file; correct its sidecar.", code=ErrorCode.MODEL_CORRUPT)
    return MDXNet(spec, session, settings, device)


def model_file(name: str, models_root: Path) -> Path:
    """Where catalogue model `name`'s ONNX file lives (MODEL_NOT_INSTALLED if absent);
    its sha256 is checked against the folder's manifest when there is one."""
    spec = catalog.get_spec(name)
    folder = store.model_folder(name, models_root)
    path = folder / spec.files[0]
    if not path.is_file():
        raise store.not_installed_error(name, models_root)
    recorded = manifest.read(folder)
    if recorded is not None and recorded.mismatches(folder, [path]):
        raise ModelError(f"{path} does not match the checksum recorded in {folder}'s "
                         "manifest: the download is damaged; fetch the model again.",
                         code=ErrorCode.MODEL_CORRUPT)
    return path


def load(name: str, device: torch.device, models_root: Path) -> MDXNet:
    """Load catalogue model `name` from ``<models_root>/<name>/``."""
    spec = catalog.get_spec(name)
    model = load_file(model_file(name, models_root), device, spec)
    if model.settings.primary not in spec.sources:
        raise ModelError(f"{name}'s file predicts {model.settings.primary}, which the "
                         "model does not give.", code=ErrorCode.MODEL_CORRUPT)
    return model
