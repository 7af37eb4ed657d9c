"""Cache of finished separations, keyed by what determines the result.

Key = sha256 over (sha256 of the input file's bytes, model name, model version and the
sha256 of its weights manifest (`engine.models.store.weights_id`), stem config, overlap,
precision, engine version). An entry is a folder
``<root>/<key[:2]>/<key>/`` holding one float32 WAV per stem at the source rate and
``meta.json``; it is written under a temporary name and renamed into place, so a reader
never sees a half-written entry and a crash leaves at most an ignored temporary folder
(removed by `prune` once it is an hour old).

The cache has a size budget (bytes; `EngineConfig.cache_max_bytes`): after each commit
the least recently used entries (by the mtime of their ``meta.json``, touched on every
hit) are removed until the rest fits (`prune`; ``stembridge cache info|prune``).
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
from typing import TYPE_CHECKING, Any

from engine import __version__ as ENGINE_VERSION

if TYPE_CHECKING:
    from engine.separator import Job, Region


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


#: Seconds after which a staging folder is taken for a crashed writer's.
STALE_STAGING_S = 3600.0


@dataclass
class EntryUsage:
    """One entry's size in bytes and when it was last used (Unix time)."""

    key: str
    folder: Path
    bytes: int
    last_used: float


def _folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


class ResultCache:
    """Finished results on disk under `root`, within `max_bytes` (0: unbounded)."""

    def __init__(self, root: Path, max_bytes: int = 0) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def usage(self) -> list[EntryUsage]:
        """Every complete entry, least recently used first."""
        out = []
        for meta in self.root.glob("??/*/meta.json"):
            with contextlib.suppress(OSError):
                out.append(EntryUsage(meta.parent.name, meta.parent,
                                      _folder_bytes(meta.parent), meta.stat().st_mtime))
        return sorted(out, key=lambda e: e.last_used)

    def prune(self, max_bytes: int, keep: str = "") -> list[EntryUsage]:
        """Remove the least recently used entries until the rest takes at most
        `max_bytes` (never entry `keep`), and staging folders older than an hour;
        returns the entries removed."""
        now = time.time()
        for staging in self.root.glob(".staging-*"):
            with contextlib.suppress(OSError):
                if now - staging.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(staging, ignore_errors=True)
        entries = self.usage()
        total = sum(e.bytes for e in entries)
        removed = []
        for entry in entries:
            if total <= max_bytes:
                break
            if entry.key == keep:
                continue
            shutil.rmtree(entry.folder, ignore_errors=True)
            total -= entry.bytes
            removed.append(entry)
        return removed

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
            os.utime(meta_path)  # recency, for the least-recently-used eviction
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
        if self.max_bytes:
            self.prune(self.max_bytes, keep=key)
        return CacheEntry(key, folder, {s: folder / n for s, n in files.items()}, meta)


class CacheWriter:
    """Writes a job's regions (`engine.separator.Region`) into a cache staging folder;
    commits or aborts."""

    def __init__(self, cache: Any, job: Job) -> None:
        from engine.audio import StemFileWriter

        self.cache = cache
        self.job = job
        self.staging = cache.staging()
        self.names = {n: f"{n}.wav" for n in job.plan.names}
        self.writers = {
            n: StemFileWriter(self.staging, job.frames, job.channels, job.samplerate)
            for n in job.plan.names
        }
        self.done = False

    def write(self, region: Region) -> None:
        for name, arr in region.stems.items():
            self.writers[name].write(region.start, arr)

    def commit(self, meta: dict[str, Any]) -> Any:
        for name, writer in self.writers.items():
            writer.commit(self.staging / self.names[name])
        entry = self.cache.commit(self.job.cache_key(), self.staging, self.names, meta)
        self.done = True
        return entry

    def abort(self) -> None:
        if self.done:
            return
        for writer in self.writers.values():
            writer.abort()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.done = True
