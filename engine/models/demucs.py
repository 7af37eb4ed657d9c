"""The Demucs family (htdemucs, htdemucs_ft, htdemucs_6s, hdemucs_mmi, mdx_extra) through the
`demucs` package: `load` builds a `DemucsSeparator` (the `SeparationModel`) from the files
in the model's folder (layouts: `engine.models.store`), or the Hugging Face cache.

Loading never downloads: a model that is not installed fails at once with
MODEL_NOT_INSTALLED, saying where its weights were looked for and which files are
expected (this runs inside the server's worker, where a download would hang a job).
`stembridge models fetch` (`engine.models.hub`) downloads; `load(..., allow_download=True)`
opts in. ``.th`` files are pickles: only use them from a source you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.artifacts import ArtifactCache
from engine.errors import ModelError
from engine.models import catalog, store
from engine.models.base import ModelSpec
from engine.models.manifest import read as read_manifest
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import torch

    from engine.acceleration import FastForward

#: The demucs models' specs, by name (from `engine.models.catalog`).
SPECS: dict[str, ModelSpec] = catalog.family_specs("demucs")


class DemucsSeparator:
    """A demucs model or bag of models behind the `SeparationModel` interface.

    A bag's sub-models run on the same window and their outputs are combined with the
    bag's per-source weights, which equals demucs' per-model overlap-add then average
    (both steps are linear)."""

    #: a short window sits in the middle of the model's input, with real neighbouring
    #: audio on both sides (as `demucs.apply.TensorChunk.padded` does)
    align = "center"
    normalize_input = True

    def __init__(self, model: Any, spec: ModelSpec) -> None:
        from demucs.apply import BagOfModels

        self.spec = spec
        self.raw = model
        self.models: list[Any]
        if isinstance(model, BagOfModels):
            self.models = list(model.models)
            self.weights = [list(map(float, w)) for w in model.weights]
        else:
            self.models = [model]
            self.weights = [[1.0] * len(model.sources)]
        segments = {float(m.segment) for m in self.models}
        if len(segments) != 1:
            raise ModelError(
                f"{spec.name}: sub-models have different segments {sorted(segments)}; "
                "stembridge needs one window length per model.",
                code=ErrorCode.MODEL_CORRUPT)
        first = self.models[0]
        self.samplerate = int(first.samplerate)
        self.segment_length = int(first.samplerate * first.segment)
        self.sources = tuple(first.sources)
        self.audio_channels = int(first.audio_channels)
        for m in self.models:
            m.eval()
        #: what each member's eager forward runs: `eager_layers` (same weights)
        self.eager = [eager_layers(m) for m in self.models]
        #: member index -> its compiled forward (`accelerate`); eager without one
        self.fast: dict[int, FastForward] = {}
        totals = [sum(w[k] for w in self.weights) for k in range(len(self.sources))]
        self._scales = None
        if len(self.models) > 1:
            import torch

            self._scales = [
                torch.tensor([w[k] / totals[k] for k in range(len(self.sources))])
                for w in self.weights
            ]

    @property
    def device(self) -> torch.device:
        return next(iter(self.models[0].parameters())).device

    def to(self, device: torch.device) -> DemucsSeparator:
        for m in self.models:
            m.to(device)
        if self._scales is not None:
            self._scales = [s.to(device) for s in self._scales]
        return self

    def accelerate(self, cache: ArtifactCache, precision: str, batch: int = 1
                   ) -> list[FastForward]:
        """Start compiling every member's forward for full windows of `batch` at
        `precision` in the background (see `engine.acceleration`); until each is ready,
        and for other shapes or precisions, the forward stays eager."""
        from engine.acceleration import FastForward

        started = []
        device = self.device
        for i, m in enumerate(self.models):
            fast = self.fast.get(i)
            if fast is None:
                fast = FastForward(m, {"model": self.spec.name, "version": self.spec.version,
                                       "member": i}, cache, compile_layers, onnx_layers)
                self.fast[i] = fast
            shape = (batch, self.audio_channels, self._valid(m, self.segment_length))
            fast.start(shape, precision, device.type)
            started.append(fast)
        return started

    @staticmethod
    def _valid(model: Any, length: int) -> int:
        return int(model.valid_length(length)) if hasattr(model, "valid_length") else length

    def valid_length(self, length: int) -> int:
        """The longest input any member needs for `length` real samples."""
        return max(self._valid(m, length) for m in self.models)

    def _run(self, model: Any, mix: torch.Tensor, length: int | None) -> torch.Tensor:
        """Run one member on its own centred crop of `mix` (as `apply_model` pads for it),
        trimmed back to `length` samples."""
        run = next((f for f in self.fast.values() if f.module is model), None)
        if run is None:
            run = self.eager[next(i for i, m in enumerate(self.models) if m is model)]
        if length is None:
            return run(mix)
        total = mix.shape[-1]
        need = self._valid(model, length)
        start = (total - length) // 2 - (need - length) // 2
        out = run(mix[..., start:start + need])
        delta = out.shape[-1] - length
        return out[..., delta // 2: delta // 2 + length] if delta else out

    def forward(self, mix: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(batch, channels, samples) -> (batch, sources, channels, length or samples)."""
        if self._scales is None:
            return self._run(self.models[0], mix, length)
        out = None
        for model, scale in zip(self.models, self._scales, strict=True):
            if bool((scale == 0).all()):
                continue
            part = self._run(model, mix, length) * scale.to(mix.device)[None, :, None, None]
            out = part if out is None else out + part
        assert out is not None
        return out


class SelfAttention:
    """Drop-in for the `torch.nn.MultiheadAttention` of a demucs transformer layer's
    self-attention, as the layer calls it (``batch_first``, no mask, no weights): one
    fused scaled-dot-product attention instead of torch's native CPU path, which forms
    the whole [heads, T, T] score matrix with two batched matrix products and a softmax.
    Same weights (the wrapped module's); [batch, T, channels] -> ([batch, T, channels],
    None). Measured at the released htdemucs size, fp32, 2 threads: 201 -> 116 ms for
    T = 2688, 66 -> 35 ms for T = 1344, max abs difference 4e-8 (issue 15). Under CPU
    autocast the native path is faster (bf16 products: 106 against 123 ms), so it is
    used there, as it is whenever a mask or the weights are asked for."""

    def __init__(self, attention: Any) -> None:
        self.attention = attention
        self.heads = int(attention.num_heads)

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 **kwargs: Any) -> tuple[torch.Tensor, Any]:
        import torch
        import torch.nn.functional as F

        m = self.attention
        native = (query is not key or key is not value or not m.batch_first
                  or m.in_proj_weight is None or kwargs.get("need_weights")
                  or any(kwargs.get(k) is not None
                         for k in ("attn_mask", "key_padding_mask"))
                  or kwargs.get("is_causal")
                  or (query.device.type == "cpu" and torch.is_autocast_enabled("cpu")))
        if native:
            return m(query, key, value, **kwargs)
        batch, length, channels = query.shape
        qkv = F.linear(query, m.in_proj_weight, m.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, channels // self.heads
                           ).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, length, channels)
        return F.linear(out, m.out_proj.weight, m.out_proj.bias), None


def _shallow(module: Any) -> Any:
    """A copy of `module` sharing its weights and submodules, whose submodules can be
    replaced without touching `module`."""
    import copy

    fast = copy.copy(module)
    fast._modules = dict(module._modules)
    return fast


def eager_layers(model: Any) -> Any:
    """A shallow copy of a demucs model (same weights; `model` itself unchanged) whose
    transformer layers' self-attention runs through `SelfAttention`. What the engine's
    eager forward runs; a model without a cross-transformer is returned as is."""
    import torch

    cross = getattr(model, "crosstransformer", None)
    if cross is None:
        return model
    fast = _shallow(model)
    cross = _shallow(cross)
    for name in ("layers", "layers_t"):
        stack = cross._modules.get(name)
        if not isinstance(stack, torch.nn.ModuleList):
            continue
        layers = []
        for layer in stack:
            attention = getattr(layer, "self_attn", None)
            if isinstance(attention, torch.nn.MultiheadAttention):
                layer = _shallow(layer)
                del layer._modules["self_attn"]
                object.__setattr__(layer, "self_attn", SelfAttention(attention))
            layers.append(layer)
        cross._modules[name] = torch.nn.ModuleList(layers)
    fast._modules["crosstransformer"] = cross
    return fast


def compile_layers(model: Any) -> Any:
    """A shallow copy of a demucs model (same weights) whose encoder and decoder layers
    (both branches) and cross-transformer layers are `torch.compile`d with fixed shapes;
    the STFT, iSTFT and the glue between layers stay eager. Compiling the whole forward
    instead made inductor generate one 90,000-line kernel around the complex STFT that
    had not built after 40 minutes on 2 busy cores; by layer, htdemucs at the released
    size built in minutes and ran one window 1.25x faster than eager at fp32 (1.14-1.5x
    at bf16), same process, noisy machine (issue 15's closing note)."""

    import torch

    def layers(modules: Any) -> Any:
        return torch.nn.ModuleList([torch.compile(m, dynamic=False)  # type: ignore[misc]
                                    for m in modules])

    fast = _shallow(model)
    for name in ("encoder", "decoder", "tencoder", "tdecoder"):
        if isinstance(fast._modules.get(name), torch.nn.ModuleList):
            fast._modules[name] = layers(fast._modules[name])
    cross = fast._modules.get("crosstransformer")
    if cross is not None:  # compiled by layer: demucs tests `if self.crosstransformer`
        cross = _shallow(cross)
        for name in ("layers", "layers_t"):
            if isinstance(cross._modules.get(name), torch.nn.ModuleList):
                cross._modules[name] = layers(cross._modules[name])
        fast._modules["crosstransformer"] = cross
    return fast


def onnx_layers(model: Any, probe: torch.Tensor, payload: bytes | None) -> tuple[Any, bytes]:
    """`engine.onnxlayers.export_layers` on a demucs model's encoder and decoder layers
    (both branches) and its cross-transformer, for windows shaped like `probe`; the STFT,
    iSTFT and the glue stay in torch. At the released htdemucs size one window ran
    1.30-1.52x faster than eager at fp32 (medians of 3, 2 loaded cores), max abs 4e-6;
    export 30-37 s (issue 15, second round); 0.77x eager once `engine.allocator` keeps
    freed memory for reuse (the gain had been onnxruntime's own memory reuse)."""
    from engine.onnxlayers import export_layers

    layers: dict[str, Any] = {}
    for name in ("encoder", "decoder", "tencoder", "tdecoder"):
        for i, layer in enumerate(getattr(model, name, None) or []):
            layers[f"{name}.{i}"] = layer
    if getattr(model, "crosstransformer", None) is not None:
        layers["crosstransformer"] = model.crosstransformer
    return export_layers(model, layers, probe, payload)


# ---------------------------------------------------------------- loading


def _verify_manifest(folder: Path, files: list[Path]) -> None:
    """If the folder has a weights manifest, check the sha256 of the files it lists."""
    manifest = read_manifest(folder)
    if manifest is None:
        return
    bad = manifest.mismatches(folder, files)
    if bad:
        raise ModelError(
            f"{bad[0]} does not match its recorded checksum (corrupt or partial download). "
            f"Delete {folder} and install {folder.name} again "
            f"(`stembridge models fetch {folder.name}`).",
            code=ErrorCode.MODEL_CORRUPT)


def _load_one(path: Path) -> Any:
    from demucs.hf import load_safetensors_model
    from demucs.repo import LocalRepo, ModelLoadingError

    try:
        if path.suffix == ".safetensors":
            return load_safetensors_model(path)
        repo = LocalRepo(path.parent)
        sig = path.stem.rsplit("-", 1)[0]
        return repo.get_model(sig)
    except ModelLoadingError as exc:
        raise ModelError(f"{path}: {exc}. Delete it and install the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"Could not load {path} ({exc}). The file is damaged or not a "
                         "demucs model: delete it and install the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc


def _bag_and_files(name: str, models_root: Path, allow_download: bool
                   ) -> tuple[dict[str, Any], list[Path]]:
    """The bag description and weight files of `name`: its folder, else the HF cache,
    else (only with `allow_download`) a fresh download, else MODEL_NOT_INSTALLED."""
    folder = store.model_folder(name, models_root)
    files = store.demucs_files(name, models_root)
    if files is not None:
        _verify_manifest(folder, files)
        return store.bag_description(name, folder), files
    cached = store.hub_cached(name)
    if cached is not None:
        return store.read_bag(cached[0]), cached[1:]
    if not allow_download:
        raise store.not_installed_error(name, models_root)
    from engine.models import hub

    hub.fetch(name, models_root)
    return _bag_and_files(name, models_root, allow_download=False)


def load(name: str, device: torch.device, models_root: Path, *,
         allow_download: bool = False) -> DemucsSeparator:
    """Load `name` from its model folder (or the HF cache), on `device`, in eval mode.

    Raises `ModelError`: MODEL_UNKNOWN, MODEL_NOT_INSTALLED (at once, without touching
    the network unless `allow_download`), MODEL_CORRUPT."""
    spec = SPECS.get(name)
    if spec is None:
        raise catalog.unknown_model_error(name, list(SPECS))
    folder = store.model_folder(name, models_root)
    bag, files = _bag_and_files(name, models_root, allow_download)
    from demucs.apply import BagOfModels

    models = [_load_one(f) for f in files]
    try:
        model = BagOfModels(models, bag.get("weights"), bag.get("segment"))
    except AssertionError as exc:
        raise ModelError(f"The files in {folder} do not form a consistent {name} bag "
                         "(sources, rates or weights differ).",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    if tuple(model.sources) != spec.sources:
        raise ModelError(f"{folder} holds a model with sources {model.sources}, expected "
                         f"{spec.sources} for {name}.", code=ErrorCode.MODEL_CORRUPT)
    sep = DemucsSeparator(model if len(models) > 1 else models[0], spec)
    return sep.to(device)
