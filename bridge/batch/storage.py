"""Remote inputs and outputs of a batch, through `fsspec`: ``s3://`` (with ``s3fs``),
``gs://``, ``memory://`` or any protocol whose fsspec package is installed.

* A SOURCE or ``--out`` given as ``file://...`` is a local path; any other ``proto://``
  URL is remote. fsspec is imported only when a batch has one, and a missing package is a
  `PackageMissingError` naming the package to install.
* **Inputs** are found with the file system's own listing (a file, a folder searched
  recursively, or a glob pattern; hidden names skipped, as for local folders), then
  *staged*: copied to a local temporary folder that the batch removes after the input is
  done. The copy is bounded: the file's size is checked against the engine's source limit
  (``STEMBRIDGE_MAX_SOURCE_MB``) before, and the bytes counted while, downloading, and it
  stops after ``STEMBRIDGE_READ_TIMEOUT`` seconds.
* **Outputs** are written to a local work folder first (the batch record stays there),
  then *published*: each file is uploaded under a temporary name in its folder and moved to
  its name (on object stores the final object appears whole or not at all), the files in
  the order given, ``stems.json`` last: it is the input's done marker. The local copies
  are then removed, so the work folder holds only the record and the summary.
* A remote input's fingerprint is [size, a number derived from its ETag / modification
  time as the file system reports it]: a changed object is done again on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Any

from protocol.errors import ErrorCode
from protocol.files import TEMP_PREFIX

_CHUNK = 1 << 20
#: Keys of `fs.info` that change when an object is replaced, in order of preference.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified",
                 "last_modified", "updated", "created")


def is_url(text: str) -> bool:
    """True for ``proto://...`` (but not a Windows drive path such as ``C:\\x``)."""
    head, sep, _ = str(text).partition("://")
    return bool(sep) and len(head) > 1 and head.replace("+", "").replace("-", "").isalnum()


def is_remote(text: str) -> bool:
    """A URL of a protocol other than ``file``."""
    return is_url(text) and not str(text).lower().startswith("file://")


def local_path(text: str) -> str:
    """`text` with a ``file://`` scheme removed (other text unchanged)."""
    if str(text).lower().startswith("file://"):
        return str(text)[len("file://"):] or "/"
    return str(text)


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path inside it) of `url`; raises `PackageMissingError` when
    fsspec or the protocol's package is not installed, `StorageError` for a protocol
    fsspec does not know."""
    from engine.errors import PackageMissingError, StorageError

    protocol = url.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise PackageMissingError(f"Reading or writing '{url}' needs fsspec, which is not "
                                  "installed: pip install 'stembridge[cloud]'.") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError:
        from fsspec.registry import known_implementations

        known = known_implementations.get(protocol, {})
        raise PackageMissingError(
            f"'{url}' needs the fsspec package for {protocol}://, which is not installed. "
            f"{known.get('err') or 'Install it.'} (For s3://: pip install s3fs.)") from None
    except ValueError:
        raise StorageError(f"'{url}': fsspec knows no protocol '{protocol}://'. Use a local "
                           "path or a URL such as s3://bucket/folder.") from None
    return fs, path


def _url(fs: Any, path: str) -> str:
    return str(fs.unstrip_protocol(path))


def _is_audio(name: str, extensions: frozenset[str]) -> bool:
    return PurePosixPath(name).suffix.lower() in extensions


def expand(source: str, extensions: frozenset[str]) -> list[tuple[str, PurePosixPath]]:
    """The audio files a remote SOURCE names, as (URL, output folder relative path); a
    file named directly is taken whatever its extension. Raises `StorageError` when the
    location cannot be listed."""
    from engine.errors import StorageError

    fs, path = filesystem(source)
    try:
        if fs.isfile(path):
            return [(_url(fs, path), PurePosixPath(PurePosixPath(path).name))]
        if any(c in path for c in "*?["):
            root = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
            names = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            root, names = path.rstrip("/"), sorted(fs.find(path))
        else:
            return []
    except OSError as exc:
        raise StorageError(f"Cannot list '{source}': {exc}. Check the URL and the "
                           "credentials.") from None
    found = []
    for name in names:
        rel = PurePosixPath(name[len(root):].lstrip("/")) if name.startswith(root) \
            else PurePosixPath(PurePosixPath(name).name)
        if any(p.startswith(".") for p in rel.parts) or not _is_audio(name, extensions):
            continue
        found.append((_url(fs, name), rel))
    return found


def fingerprint(url: str) -> list[int]:
    """[size in bytes, a 63-bit number of its version] of a remote file; raises `OSError`
    (`FileNotFoundError` when it is gone)."""
    fs, path = filesystem(url)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(url)
    version = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None), "")
    digest = hashlib.sha256(version.encode()).digest()
    return [int(info.get("size") or 0), int.from_bytes(digest[:8], "big") >> 1]


def stage(url: str, folder: Path, max_bytes: int, timeout: float) -> Path:
    """Copy the remote file `url` into the local `folder` under its own name; returns the
    copy. Raises `InputError` (missing, empty or over `max_bytes`; a copy over `timeout`
    seconds) or `StorageError` (the store cannot be read)."""
    from engine.errors import InputError, StorageError

    fs, path = filesystem(url)
    target = folder / (PurePosixPath(path).name or "input")
    try:
        size = int(fs.info(path).get("size") or 0)
        if size > max_bytes:
            raise InputError(f"'{url}' is {size / 2**30:.1f} GiB; the largest source file "
                             f"accepted is {max_bytes / 2**30:.1f} GiB.",
                             code=ErrorCode.INPUT_TOO_LONG)
        deadline = time.monotonic() + timeout
        copied = 0
        with fs.open(path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise InputError(f"'{url}' grew past the largest source file accepted "
                                     f"({max_bytes / 2**30:.1f} GiB) while it was copied.",
                                     code=ErrorCode.INPUT_TOO_LONG)
                if time.monotonic() > deadline:
                    raise InputError(f"Copying '{url}' took more than {timeout:.0f} s; "
                                     "raise STEMBRIDGE_READ_TIMEOUT for slow storage.",
                                     code=ErrorCode.INPUT_UNREADABLE)
                dst.write(chunk)
    except FileNotFoundError:
        raise InputError(f"No file at '{url}'. Check the URL; the object may have been "
                         "moved or deleted.", code=ErrorCode.INPUT_MISSING) from None
    except OSError as exc:
        raise StorageError(f"Cannot read '{url}': {exc}. Check the URL and the "
                           "credentials.") from None
    return target


def exists(url: str) -> bool:
    """Whether the remote file `url` exists (False when the store cannot be asked)."""
    try:
        fs, path = filesystem(url)
        return bool(fs.isfile(path))
    except (OSError, ValueError):
        return False


class RemoteFolder:
    """An output folder on a remote store, as `bridge.batch.record.decide` asks it:
    ``(folder / name).is_file()``."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __truediv__(self, name: str) -> RemoteFolder:
        return RemoteFolder(f"{self.url}/{name}")

    def is_file(self) -> bool:
        return exists(self.url)


def publish(folder: Path, url: str, names: list[str], *, keep_local: bool = False) -> None:
    """Upload `names` from the local `folder` to the remote folder `url`, each under a
    temporary name then moved to its own, in order (``stems.json`` last), then remove the
    local copies (unless `keep_local`). Temporary objects a killed attempt left there are removed first.
    Raises `StorageError`."""
    from engine.errors import StorageError

    fs, root = filesystem(url)
    root = root.rstrip("/")
    with contextlib.suppress(OSError):
        for stale in fs.glob(f"{root}/{TEMP_PREFIX}*"):
            fs.rm(stale)
    for name in names:
        temp = f"{root}/{TEMP_PREFIX}{secrets.token_hex(6)}-{name}"
        try:
            fs.put_file(str(folder / name), temp)
            fs.mv(temp, f"{root}/{name}")
        except OSError as exc:
            with contextlib.suppress(OSError):
                fs.rm(temp)
            raise StorageError(f"Cannot upload '{name}' to '{url}': {exc}. Check the "
                               "credentials and the free space.") from None
    if keep_local:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
    with contextlib.suppress(OSError):
        folder.rmdir()


def join(url: str, rel: str) -> str:
    """The remote folder of item `rel` below the batch's remote output `url`."""
    return f"{url.rstrip('/')}/{rel}" if rel else url.rstrip("/")
