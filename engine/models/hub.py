"""Downloading a model's weights into its folder: the only place stembridge downloads
(`stembridge models fetch`; a load may opt in). Demucs models come from the Hugging Face
hub; MDX-Net and RoFormer files from their URLs (`fetch_files`: plain HTTPS, each file
checked against its recorded sha256, bounded in size and time).

Needs the optional ``huggingface_hub`` package (the ``fetch`` extra). Before any request
the hub is checked once, with a short timeout: an offline machine gets one clear error
within seconds instead of the hub's retries. ``STEMBRIDGE_OFFLINE`` / ``HF_HUB_OFFLINE``
turn downloads off altogether. The hub's own retry messages are silenced; a failure
becomes one `ModelError`. The files land in a temporary folder renamed into place, with
a weights manifest (`engine.models.manifest`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from engine.errors import ModelError
from engine.models import catalog, store
from engine.models.base import ModelSpec
from engine.models.manifest import WeightsManifest
from protocol import settings
from protocol.errors import ErrorCode

#: Seconds the reachability check waits for the hub (name lookup and TCP connect).
REACH_TIMEOUT = 3.0


def _hub_module() -> ModuleType:
    """The huggingface_hub package, or a clear MODEL_NOT_INSTALLED if it is missing."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ModelError(
            "Downloading models needs the huggingface_hub package, which is not installed. "
            "It comes with stembridge's 'fetch' extra: pip install 'stembridge[fetch]'.",
            code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    return huggingface_hub


def endpoint() -> str:
    """The hub's base URL (``HF_ENDPOINT``, else https://huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def unreachable_reason(url: str, timeout: float = REACH_TIMEOUT) -> str | None:
    """None when a TCP connection to `url`'s host opens within `timeout` seconds, else
    why not (in words). The name lookup is bounded by the same timeout."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=probe, name="stembridge-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's warnings (one line per retry) for the block."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_can_download(name: str) -> None:
    """Raise MODEL_NOT_INSTALLED at once when `name` cannot be downloaded now: no
    huggingface_hub, downloads turned off, or the hub out of reach."""
    _hub_module()
    if settings.offline():
        raise ModelError(
            f"Cannot download {name}: downloads are turned off (STEMBRIDGE_OFFLINE or "
            "HF_HUB_OFFLINE is set). Unset it, or copy the files by hand (the model list "
            "says which files go where).",
            code=ErrorCode.MODEL_NOT_INSTALLED)
    url = endpoint()
    reason = unreachable_reason(url)
    if reason is not None:
        raise ModelError(
            f"Cannot download {name}: the Hugging Face hub {url} cannot be reached "
            f"({reason}); this machine seems to be offline. Connect it, or copy the files "
            "by hand (the model list says which files go where).",
            code=ErrorCode.MODEL_NOT_INSTALLED)


def _download(name: str, repo: str, folder: Path) -> list[Path]:
    """Every file of `name` from `repo` into `folder`; returns their paths."""
    from huggingface_hub import hf_hub_download

    bag_path = Path(hf_hub_download(repo, f"{name}.yaml", local_dir=folder))
    paths = [bag_path]
    for sig in store.read_bag(bag_path)["models"]:
        paths.append(Path(hf_hub_download(repo, f"{sig}.safetensors", local_dir=folder)))
    shutil.rmtree(folder / ".cache", ignore_errors=True)
    return paths


def _first_line(exc: BaseException) -> str:
    """The first line of the innermost cause of `exc` (the hub wraps the HTTP error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fetch(name: str, models_root: Path) -> Path:
    """Download demucs model `name` into ``<models_root>/<name>/`` (atomically: a
    temporary folder renamed into place) and return that folder. Needs internet.

    Raises `ModelError`: MODEL_UNKNOWN (with a suggestion), MODEL_NOT_INSTALLED when the
    download is impossible or fails (one message, within seconds when offline)."""
    demucs_specs = catalog.family_specs("demucs")
    spec = demucs_specs.get(name)
    if spec is None and name in catalog.SPECS and catalog.SPECS[name].extra.get("urls"):
        return fetch_files(name, models_root)
    if spec is None:
        names = [n for n, s in catalog.SPECS.items() if s.family != "spleeter"]
        raise catalog.unknown_model_error(name, names)
    check_can_download(name)
    page = f"{endpoint()}/{spec.hub_repo}"
    folder = store.model_folder(name, models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=models_root))
    try:
        with _quiet_hub():
            paths = _download(name, spec.hub_repo, tmp)
        WeightsManifest.of_files(name, page, paths).write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ModelError):
            raise
        detail = _first_line(exc)
        raise ModelError(
            f"Could not download {name} from {page}: {detail}. Check the "
            "internet connection, or copy the files by hand (the model list says which "
            "files go where).",
            code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    return folder


#: Seconds a file download may stall before it fails; bytes a file may hold at most
#: (its catalogue size times 3, at least 64 MiB: a wrong URL never fills the disk).
READ_TIMEOUT = 30.0
MIN_LIMIT = 64 << 20


def _file_url(spec: ModelSpec, file: str) -> str:
    mirror = settings.models_mirror()
    return f"{mirror}/{spec.name}/{file}" if mirror else str(spec.extra["urls"][file])


def _download_file(url: str, dest: Path, limit: int) -> str:
    """Stream `url` into `dest`; returns the sha256 of what arrived. Raises `ModelError`
    when the server is gone, answers an error, sends more than `limit` bytes or fewer
    than it announced."""
    import hashlib
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT) as resp, open(dest, "wb") as fh:
            announced = int(resp.headers.get("Content-Length") or -1)
            if announced > limit:
                raise ModelError(f"{url} announces {announced} bytes, more than the "
                                 f"{limit} expected: the address serves another file.",
                                 code=ErrorCode.MODEL_NOT_INSTALLED)
            while block := resp.read(1 << 20):
                received += len(block)
                if received > limit:
                    raise ModelError(f"{url} sends more than {limit} bytes: the address "
                                     "serves another file.", code=ErrorCode.MODEL_NOT_INSTALLED)
                digest.update(block)
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
    except ModelError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(f"Could not download {url} ({reason}). Check the connection, or "
                         "copy the files by hand (the model list says which files go where).",
                         code=ErrorCode.MODEL_NOT_INSTALLED) from exc
    if 0 <= announced != received:
        raise ModelError(f"The download of {url} stopped after {received} of {announced} "
                         "bytes. Run the fetch again.", code=ErrorCode.MODEL_NOT_INSTALLED)
    return digest.hexdigest()


def fetch_files(name: str, models_root: Path) -> Path:
    """Download every file of MDX-Net/RoFormer model `name` into ``<models_root>/<name>/``
    (a temporary folder renamed into place, with the weights manifest) and return it.

    A file whose recorded sha256 differs fails with MODEL_CORRUPT and nothing is kept;
    a file without a recorded sha256 is kept and its sha256 goes into the manifest
    (later loads check it)."""
    spec = catalog.get_spec(name)
    if settings.offline():
        raise ModelError(
            f"Cannot download {name}: downloads are turned off (STEMBRIDGE_OFFLINE or "
            "HF_HUB_OFFLINE is set). Unset it, or copy the files by hand (the model list "
            "says which files go where).", code=ErrorCode.MODEL_NOT_INSTALLED)
    folder = store.model_folder(name, models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=models_root))
    limit = max(MIN_LIMIT, int(spec.size_mb * 3 * (1 << 20)))
    try:
        paths, sources = [], []
        for file in spec.files:
            url = _file_url(spec, file)
            got = _download_file(url, tmp / file, limit)
            want = spec.extra.get("sha256", {}).get(file)
            if want and got != want:
                raise ModelError(f"{url} does not match its recorded sha256 (got {got}, "
                                 f"expected {want}): nothing was installed. The server "
                                 "serves another or a damaged file.",
                                 code=ErrorCode.MODEL_CORRUPT)
            paths.append(tmp / file)
            sources.append(url)
        WeightsManifest.of_files(name, " ".join(sources), paths).write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
