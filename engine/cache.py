"""Cache of finished separations, keyed by what determines the result.

Key = sha256 over (sha256 of the input file's bytes, model name, model version, stem
config, overlap, precision, engine version). An entry is a folder
``<root>/<key[:2]>/<key>/`` holding one float32 WAV per stem at the source rate and
``meta.json``; it is written under a temporary name and renamed into place, so a reader
never sees a half-written entry and a crash leaves at most an ignored temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import __version__ as ENGINE_VERSION


def cache_key(audio_sha256: str, model_name: str, model_version: str, stem_config: str,
              overlap: float, precision: str) -> str:
    parts = [audio_sha256, model_name, model_version, stem_config, f"{overlap:.6f}",
             precision, ENGINE_VERSION]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass
class CacheEntry:
    """A complete cache entry: `files` maps stem name -> float32 WAV path."""

    key: str
    folder: Path
    files: dict[str, Path]
    meta: dict[str, Any]


class ResultCache:
    """Finished results on disk under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> CacheEntry | None:
        """The complete entry for `key`, or None (missing or damaged entries are misses)."""
        folder = self._folder(key)
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        files = {stem: folder / name for stem, name in meta.get("files", {}).items()}
        if not files or not all(p.is_file() for p in files.values()):
            return None
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # recency, for a future size-bounded eviction
        return CacheEntry(key, folder, files, meta)

    def staging(self) -> Path:
        """A fresh temporary folder inside the cache root to build an entry in."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def commit(self, key: str, staging: Path, files: dict[str, str], meta: dict[str, Any]
               ) -> CacheEntry:
        """Write meta.json into `staging` and move it into place as entry `key`.
        `files` maps stem -> file name inside `staging`. If another process committed the
        same key first, its entry is kept and `staging` is removed."""
        from protocol.files import write_json_atomic

        meta = {**meta, "files": files, "created": time.time(), "key": key}
        write_json_atomic(staging / "meta.json", meta)
        folder = self._folder(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            existing = self.get(key)
            if existing is None:
                raise
            return existing
        return CacheEntry(key, folder, {s: folder / n for s, n in files.items()}, meta)
