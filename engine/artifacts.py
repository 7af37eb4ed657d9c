"""The on-disk cache of compiled model forwards (see `engine.acceleration`).

A compiled forward is expensive to build (minutes on a few cores) and cheap to load, so it
is built once and kept under ``<models dir>/.compiled/``, one file per key. The key names
everything the compiled code depends on: the model (name, version, a digest of its
weights), the window's shape, the precision, the compiler's backend and the library
versions (torch, demucs, Python, the CPU's instruction set). A file is::

    b"STEMBRIDGE-ARTIFACT 1\\n" + header (one JSON line: key, size, sha256) + payload

written atomically (`protocol.files`). Reading checks the magic, that the header's key
is the expected one, the size and the sha256 before a byte of the payload is used; a
file that fails any check (truncated, damaged, written for another key) is deleted and
reported as absent, so the caller rebuilds it. Reads are bounded by `MAX_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

from protocol.files import write_bytes_atomic

log = logging.getLogger(__name__)

MAGIC = b"STEMBRIDGE-ARTIFACT 1\n"
#: the largest artifact file read back, bytes (a compiled htdemucs is a few MB)
MAX_BYTES = 512 * 2**20
#: the header line's longest length, bytes
MAX_HEADER = 64 * 1024


def library_versions() -> dict[str, str]:
    """The versions compiled code depends on: torch, demucs, Python, the CPU's vector
    instruction set as torch sees it (code built for AVX-512 does not run on AVX2)."""
    import torch

    versions = {"torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine()}
    with contextlib.suppress(ImportError):
        import demucs

        versions["demucs"] = str(getattr(demucs, "__version__", "?"))
    with contextlib.suppress(AttributeError, RuntimeError):
        versions["cpu"] = str(torch.backends.cpu.get_cpu_capability())
    return versions


def weights_digest(module: Any) -> str:
    """sha256 of a torch module's parameters and buffers (names, shapes, dtypes, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in list(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def key_digest(key: dict[str, Any]) -> str:
    """A short stable name for `key` (a JSON-able dict): 20 hex digits of its sha256."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ArtifactCache:
    """Keyed payloads in `folder` (created on first write).

    Args:
        folder: e.g. ``<models dir>/.compiled``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: dict[str, Any]) -> Path:
        """The file of `key`: ``<folder>/<model>-<digest>.bin``."""
        model = str(key.get("model", "model")).replace("/", "_")
        return self.folder / f"{model}-{key_digest(key)}.bin"

    def read(self, key: dict[str, Any]) -> bytes | None:
        """The payload stored for `key`, or None when there is none or the file fails a
        check (then it is deleted, so the next `write` replaces it)."""
        path = self.path(key)
        try:
            size = path.stat().st_size
        except OSError:
            return None
        problem = None
        payload = b""
        if size > MAX_BYTES + MAX_HEADER + len(MAGIC):
            problem = f"larger than {MAX_BYTES} bytes"
        else:
            try:
                with open(path, "rb") as fh:
                    payload, problem = _check(fh.read(MAX_BYTES + MAX_HEADER + len(MAGIC)), key)
            except OSError as exc:
                problem = f"unreadable ({exc})"
        if problem is not None:
            log.warning("compiled-model cache %s %s: deleting it (it will be rebuilt)",
                        path, problem)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return payload

    def write(self, key: dict[str, Any], payload: bytes) -> Path:
        """Store `payload` for `key` atomically; returns the file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        header = {"key": key, "size": len(payload),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        line = json.dumps(header, sort_keys=True).encode() + b"\n"
        path = self.path(key)
        write_bytes_atomic(path, MAGIC + line + payload)
        return path


def _check(data: bytes, key: dict[str, Any]) -> tuple[bytes, str | None]:
    """(payload, None) when `data` is a complete, intact artifact for `key`, else
    (b"", what is wrong)."""
    if not data.startswith(MAGIC):
        return b"", "is not an artifact file"
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        return b"", "has no header"
    try:
        header = json.loads(data[len(MAGIC):end])
    except ValueError:
        return b"", "has a damaged header"
    if not isinstance(header, dict) or header.get("key") != json.loads(json.dumps(key)):
        return b"", "was written for another key"
    payload = data[end + 1:]
    if len(payload) != header.get("size"):
        return b"", f"is truncated ({len(payload)} of {header.get('size')} bytes)"
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return b"", "fails its checksum"
    return payload, None
