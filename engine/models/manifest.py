"""The weights manifest: ``manifest.json`` in a model's folder, the sha256 of every
weight file and where the files came from. One format for every writer (the spleeter
conversion, `stembridge models fetch`, the test-model writer)::

    {"format": 2, "model": "htdemucs", "source": "https://huggingface.co/adefossez/HTDemucs",
     "files": {"955717e8.safetensors": {"sha256": "..."}, ...}}

A file entry may carry more facts (spleeter: the checkpoint it was converted from, as
``source`` and ``source_sha256``). Written atomically through `protocol.files` (unique
temporary names: two writers never collide). The two formats older versions wrote still
read: spleeter's ``{"format": 1, "files": ..., "source_distribution", "source_version"}``
and demucs' ``{"source": ..., "sha256": {file: sha256}}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from protocol.errors import ErrorCode
from protocol.files import write_json_atomic

#: File name of the manifest inside a model's folder.
NAME = "manifest.json"
#: The format this version writes.
FORMAT = 2


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsManifest:
    """What a model folder holds.

    Attributes:
        model: the model name.
        source: where the files came from (a URL, a package ``name==version``, or a
            description such as ``stembridge make-test (tiny, seed 0)``).
        files: file name (inside the folder) -> ``{"sha256": hex, ...more facts}``.
    """

    model: str
    source: str
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of_files(cls, model: str, source: str, paths: list[Path]) -> WeightsManifest:
        """A manifest of the files at `paths` (their sha256 computed now)."""
        return cls(model, source, {p.name: {"sha256": sha256_file(p)} for p in sorted(paths)})

    def sha256(self, name: str) -> str | None:
        """The recorded sha256 of file `name`, or None if it is not listed."""
        entry = self.files.get(name)
        return entry.get("sha256") if entry else None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "source": self.source,
                "files": self.files}

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` atomically; returns its path."""
        path = Path(folder) / NAME
        write_json_atomic(path, self.to_json())
        return path

    def mismatches(self, folder: Path, paths: list[Path]) -> list[Path]:
        """Those of `paths` (files in `folder`) whose sha256 differs from the recorded
        one; files the manifest does not list are not checked."""
        return [p for p in paths
                if (want := self.sha256(p.name)) is not None and sha256_file(p) != want]


def from_json(data: Any, model: str = "") -> WeightsManifest:
    """Parse any of the three formats (ValueError when `data` is none of them)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fmt = data.get("format")
    if fmt in (1, FORMAT) and isinstance(data.get("files"), dict):
        files = {str(k): {str(a): str(b) for a, b in v.items()}
                 for k, v in data["files"].items() if isinstance(v, dict)}
        if any("sha256" not in v for v in files.values()) or len(files) != len(data["files"]):
            raise ValueError("a file entry lacks its sha256")
        source = data.get("source")
        if fmt == 1:  # spleeter before format 2
            source = f"{data.get('source_distribution')}=={data.get('source_version')}"
        return WeightsManifest(str(data.get("model", model)), str(source or ""), files)
    if fmt is None and isinstance(data.get("sha256"), dict):  # demucs before format 2
        files = {str(k): {"sha256": str(v)} for k, v in data["sha256"].items()}
        return WeightsManifest(model, str(data.get("source", "")), files)
    raise ValueError(f"unknown manifest format {fmt!r}")


def read(folder: Path) -> WeightsManifest | None:
    """The manifest in `folder`, or None when there is none. Raises `ModelError`
    (MODEL_CORRUPT) when it exists but cannot be read."""
    path = Path(folder) / NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"Cannot read {path} ({exc.strerror or exc}).",
                         code=ErrorCode.MODEL_CORRUPT) from exc
    try:
        return from_json(json.loads(text), Path(folder).name)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ModelError(f"{path} is not a weights manifest ({exc}); the folder is damaged: "
                         "delete it and install the model again.",
                         code=ErrorCode.MODEL_CORRUPT) from exc
