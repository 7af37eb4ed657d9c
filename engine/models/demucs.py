"""The Demucs family (htdemucs, htdemucs_ft, htdemucs_6s, hdemucs_mmi, mdx_extra) through the
`demucs` package.

On-disk layouts accepted in ``<models_dir>/<name>/`` (first match wins):

1. Hub snapshot (what `stembridge models fetch` writes, and demucs' Hugging Face export):
   ``<name>.yaml`` (``models: [sig, ...]``, optional ``weights`` and ``segment``) and one
   ``<sig>.safetensors`` per model, whose metadata holds ``klass``, ``args``, ``kwargs``.
2. demucs' LocalRepo layout (``demucs --repo``): ``<sig>-<sha256 prefix>.th`` files, with
   ``<name>.yaml`` in the folder or taken from demucs' own remote folder. Checksums are
   verified. ``.th`` files are pickles: only use them from a source you trust.

If the folder has neither, the Hugging Face cache is tried (offline). Weights are never
downloaded implicitly while offline: loading fails at once with what to do.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cache import file_sha256
from engine.errors import ModelError
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import torch

FOUR = ("drums", "bass", "other", "vocals")
SIX = ("drums", "bass", "other", "vocals", "guitar", "piano")
HUB_NAMESPACE = "adefossez"

#: name -> (spec, signatures, bag weights, bag segment, test architecture)
SPECS: dict[str, ModelSpec] = {
    "htdemucs": ModelSpec(
        "htdemucs", "955717e8", "demucs", FOUR, 44100, 7.8,
        description="Hybrid Transformer Demucs v4, 4 stems (demucs' default).",
        size_mb=84, license="MIT",
        extra={"sigs": ["955717e8"], "klass": "HTDemucs"},
    ),
    "htdemucs_ft": ModelSpec(
        "htdemucs_ft", "f7e0c4bc+d12395a8+92cfc3b6+04573f0d", "demucs", FOUR, 44100, 7.8,
        description="htdemucs fine-tuned per source (bag of 4): best quality, 4x slower.",
        size_mb=336, license="MIT",
        extra={"sigs": ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"], "klass": "HTDemucs",
               "weights": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]},
    ),
    "htdemucs_6s": ModelSpec(
        "htdemucs_6s", "5c90dfd2", "demucs", SIX, 44100, 7.8,
        description="htdemucs with guitar and piano stems (6 stems, experimental).",
        size_mb=55, license="MIT",
        extra={"sigs": ["5c90dfd2"], "klass": "HTDemucs"},
    ),
    "hdemucs_mmi": ModelSpec(
        "hdemucs_mmi", "75fc33f5", "demucs", FOUR, 44100, 44.0,
        description="Hybrid Demucs v3 trained on MusDB + 800 songs.",
        size_mb=84, license="MIT",
        extra={"sigs": ["75fc33f5"], "klass": "HDemucs", "segment": 44},
    ),
    "mdx_extra": ModelSpec(
        "mdx_extra", "e51eebcc+a1d90b5c+5d2d6c55+cfa93e08", "demucs", FOUR, 44100, 44.0,
        description="MDX 2021 challenge bag (track B), trained with extra data.",
        size_mb=336, license="MIT",
        extra={"sigs": ["e51eebcc", "a1d90b5c", "5d2d6c55", "cfa93e08"],
               "klass": ["Demucs", "Demucs", "HDemucs", "HDemucs"], "segment": 44},
    ),
}


class DemucsSeparator:
    """A demucs model or bag of models behind the `SeparationModel` interface.

    A bag's sub-models run on the same window and their outputs are combined with the
    bag's per-source weights, which equals demucs' per-model overlap-add then average
    (both steps are linear)."""

    normalize_input = True

    def __init__(self, model: Any, spec: ModelSpec) -> None:
        from demucs.apply import BagOfModels

        self.spec = spec
        self.raw = model
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

    @staticmethod
    def _valid(model: Any, length: int) -> int:
        return int(model.valid_length(length)) if hasattr(model, "valid_length") else length

    def valid_length(self, length: int) -> int:
        """The longest input any member needs for `length` real samples."""
        return max(self._valid(m, length) for m in self.models)

    def _run(self, model: Any, mix: torch.Tensor, length: int | None) -> torch.Tensor:
        """Run one member on its own centred crop of `mix` (as `apply_model` pads for it),
        trimmed back to `length` samples."""
        if length is None:
            return model(mix)
        total = mix.shape[-1]
        need = self._valid(model, length)
        start = (total - length) // 2 - (need - length) // 2
        out = model(mix[..., start:start + need])
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


# ---------------------------------------------------------------- locating weights


def model_folder(name: str, models_root: Path) -> Path:
    return models_root / name


def _bag_description(name: str, folder: Path) -> dict[str, Any]:
    """The bag yaml of `name`: from the model folder, else demucs' packaged copy."""
    import yaml

    path = folder / f"{name}.yaml"
    if not path.exists():
        import demucs.pretrained

        path = demucs.pretrained.REMOTE_ROOT / f"{name}.yaml"
    if not path.exists():
        raise ModelError(f"No bag description {name}.yaml in {folder}.",
                         code=ErrorCode.MODEL_NOT_INSTALLED)
    with open(path, encoding="utf-8") as fh:
        bag = yaml.safe_load(fh)
    if not isinstance(bag, dict) or not bag.get("models"):
        raise ModelError(f"{path} is not a valid demucs bag description (needs 'models:').",
                         code=ErrorCode.MODEL_CORRUPT)
    return bag


def installed_files(name: str, models_root: Path) -> list[Path] | None:
    """The weight files of `name` in its model folder, or None if not (fully) installed."""
    folder = model_folder(name, models_root)
    if not folder.is_dir():
        return None
    try:
        bag = _bag_description(name, folder)
    except ModelError:
        return None
    files: list[Path] = []
    for sig in bag["models"]:
        st = folder / f"{sig}.safetensors"
        th = sorted(folder.glob(f"{sig}-*.th")) + sorted(folder.glob(f"{sig}.th"))
        if st.exists():
            files.append(st)
        elif th:
            files.append(th[0])
        else:
            return None
    return files


def _hf_cached(name: str) -> list[Path] | None:
    """Files of `name` in the Hugging Face cache, without touching the network."""
    try:
        from demucs.hf import hf_repo_name
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo = f"{HUB_NAMESPACE}/{hf_repo_name(name)}"
    yaml_path = try_to_load_from_cache(repo, f"{name}.yaml")
    if not isinstance(yaml_path, str):
        return None
    import yaml

    with open(yaml_path, encoding="utf-8") as fh:
        bag = yaml.safe_load(fh)
    files = [Path(yaml_path)]
    for sig in bag.get("models", []):
        p = try_to_load_from_cache(repo, f"{sig}.safetensors")
        if not isinstance(p, str):
            return None
        files.append(Path(p))
    return files


def is_offline(timeout: float = 1.5) -> bool:
    """True when downloads are disabled (``HF_HUB_OFFLINE``/``STEMBRIDGE_OFFLINE``) or the
    hub cannot be reached within `timeout` seconds."""
    for var in ("STEMBRIDGE_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return False
    except OSError:
        return True


def not_installed_error(name: str, models_root: Path) -> ModelError:
    folder = model_folder(name, models_root)
    return ModelError(
        f"The weights of {name} are not installed and this machine is offline.\n"
        f"  Fix: on a machine with internet run `stembridge models fetch {name}` and copy\n"
        f"  the folder {folder} here, or put demucs' files ({name}.yaml + <sig>.safetensors,\n"
        f"  or <sig>-<checksum>.th) into {folder}.\n"
        "  The embedded model `spleeter-2stems` (vocals/instrumental) works offline.",
        code=ErrorCode.MODEL_NOT_INSTALLED,
    )


# ---------------------------------------------------------------- loading


def _verify_manifest(folder: Path, files: list[Path]) -> None:
    """If the folder has a manifest.json (written by fetch/make-test), check sha256s."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return
    recorded = json.loads(manifest.read_text(encoding="utf-8")).get("sha256", {})
    for f in files:
        want = recorded.get(f.name)
        if want and file_sha256(f) != want:
            raise ModelError(
                f"{f} does not match its recorded checksum (corrupt or partial download). "
                f"Delete {folder} and run `stembridge models fetch {folder.name}` again.",
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
        raise ModelError(f"{path}: {exc}. Delete it and fetch the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"Could not load {path} ({exc}). The file is damaged or not a "
                         "demucs model: delete it and fetch the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc


def load(name: str, device: torch.device, models_root: Path) -> DemucsSeparator:
    """Load `name` from its model folder (or the HF cache), on `device`, in eval mode."""
    spec = SPECS[name]
    folder = model_folder(name, models_root)
    files = installed_files(name, models_root)
    if files is not None:
        _verify_manifest(folder, files)
        bag = _bag_description(name, folder)
    else:
        cached = _hf_cached(name)
        if cached is None:
            if is_offline():
                raise not_installed_error(name, models_root)
            fetch(name, models_root)
            return load(name, device, models_root)
        import yaml

        bag = yaml.safe_load(cached[0].read_text(encoding="utf-8"))
        files = cached[1:]
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


# ---------------------------------------------------------------- fetch and test models


def _write_manifest(folder: Path, source: str) -> None:
    sums = {p.name: file_sha256(p) for p in sorted(folder.iterdir())
            if p.suffix in (".safetensors", ".th", ".yaml")}
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps({"source": source, "sha256": sums}, indent=2), encoding="utf-8")
    os.replace(tmp, folder / "manifest.json")


def fetch(name: str, models_root: Path) -> Path:
    """Download `name` from the Hugging Face hub into its model folder (atomically:
    a temporary folder renamed into place). Needs internet."""
    from demucs.hf import hf_repo_name

    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a demucs dependency
        raise ModelError("huggingface_hub is missing: pip install huggingface_hub") from exc
    if name not in SPECS:
        raise ModelError(f"Unknown demucs model {name!r}; known: {', '.join(SPECS)}.")
    folder = model_folder(name, models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=models_root))
    repo = f"{HUB_NAMESPACE}/{hf_repo_name(name)}"
    try:
        hf_hub_download(repo, f"{name}.yaml", local_dir=tmp)
        bag = _bag_description(name, tmp)
        for sig in bag["models"]:
            hf_hub_download(repo, f"{sig}.safetensors", local_dir=tmp)
        for extra in tmp.glob(".cache"):
            import shutil

            shutil.rmtree(extra, ignore_errors=True)
        _write_manifest(tmp, f"https://huggingface.co/{repo}")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except Exception as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"Could not download {name} from {repo}: {exc}. Check the internet "
                         "connection, or copy the files by hand (see `stembridge models list`).",
                         code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    return folder


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


def make_test_model(name: str, directory: Path, *, size: str = "tiny", fmt: str = "safetensors",
                    seed: int = 0) -> Path:
    """Write a model of `name`'s real architecture with random weights, in the real on-disk
    format (`fmt` "safetensors": hub snapshot; "th": demucs LocalRepo), to
    ``directory/<name>/``. Returns that folder. `size` "full" uses the released sizes."""
    import torch
    import yaml
    from demucs import demucs as demucs_mod
    from demucs import hdemucs, htdemucs

    if name not in SPECS:
        raise ModelError(f"No test model for {name!r}; demucs models: {', '.join(SPECS)}.")
    if size not in ("tiny", "full") or fmt not in ("safetensors", "th"):
        raise ValueError("size must be tiny|full and fmt safetensors|th")
    spec = SPECS[name]
    extra = spec.extra
    klasses = extra["klass"] if isinstance(extra["klass"], list) else [extra["klass"]] * len(
        extra["sigs"])  # type: ignore[arg-type]
    classes = {"HTDemucs": htdemucs.HTDemucs, "HDemucs": hdemucs.HDemucs,
               "Demucs": demucs_mod.Demucs}
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob("*.safetensors")) + list(folder.glob("*.th")):
        old.unlink()
    torch.manual_seed(seed)
    for sig, kname in zip(extra["sigs"], klasses, strict=True):  # type: ignore[call-overload]
        klass = classes[kname]
        kwargs = _arch(kname, size, spec.sources, spec.segment_seconds)
        model = klass(**kwargs)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if fmt == "safetensors":
            from safetensors.torch import save_file

            meta = {"klass": f"{klass.__module__}.{klass.__name__}", "args": json.dumps([]),
                    "kwargs": json.dumps(_encode_json(kwargs))}
            save_file(state, str(folder / f"{sig}.safetensors"), metadata=meta)
        else:
            pkg = {"klass": klass, "args": [], "kwargs": kwargs, "state": state,
                   "training_args": {}}
            tmp = folder / f"{sig}.th.tmp"
            torch.save(pkg, tmp)
            digest = file_sha256(tmp)[:8]
            os.replace(tmp, folder / f"{sig}-{digest}.th")
    bag: dict[str, Any] = {"models": list(extra["sigs"])}  # type: ignore[call-overload]
    if "weights" in extra:
        bag["weights"] = extra["weights"]
    if "segment" in extra:
        bag["segment"] = extra["segment"]
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(bag), encoding="utf-8")
    _write_manifest(folder, f"stembridge make-test ({size}, random weights, seed {seed})")
    return folder
