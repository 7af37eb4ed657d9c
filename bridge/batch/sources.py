"""What a batch separates, and where each result goes.

A SOURCE is a file, a folder (searched recursively for audio files; hidden files and
folders are skipped, symlinked folders are not followed), a glob pattern (``**`` spans
folders), or a manifest: a ``.csv`` or ``.jsonl`` file with a ``path`` column and
optional per-row options (`ROW_OPTIONS`). Each input gets one output folder, relative to
the batch's output folder, that mirrors the input tree:

* a file given by name: ``<name>/``;
* a file found in a folder or by a pattern: its path below that folder (or below the
  pattern's fixed part), e.g. ``albums/a/01 song.flac`` -> ``a/01 song/``;
* a manifest row: its ``out`` column if given, else its path below the manifest's folder.

A SOURCE may also be a URL (``s3://bucket/catalogue/``, a file or a pattern in it;
`bridge.batch.storage`): its inputs are found on that store and staged locally when they
are separated. ``file://`` URLs are local paths.

Names are made file-system safe the way `stembridge split` makes them (nothing can escape
the output folder); two inputs that would share a folder get ``<name> (<extension>)``,
then a number. The same command always plans the same folders (inputs are sorted), so a
resumed batch finds its earlier results.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bridge.batch import storage
from bridge.commands.split import _clean, safe_name
from protocol.errors import ErrorCode

#: Extensions a folder or pattern search takes as audio (a file named directly is always
#: tried, whatever its extension).
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".m4a", ".mp4", ".aac", ".alac", ".wma", ".webm", ".mka", ".caf", ".w64", ".rf64",
    ".au", ".snd",
})
MANIFEST_EXTENSIONS = (".csv", ".jsonl")
#: Per-row options of a manifest, with the type each is read as.
ROW_OPTIONS: dict[str, type] = {"model": str, "stems": int, "format": str, "overlap": float,
                                "bit_depth": str, "sample_rate": int, "out": str}
#: Bounds on reading a manifest (a user file): bytes and rows.
MAX_MANIFEST_BYTES = 256 * 2**20
MAX_ROWS = 2_000_000


class SourceError(ValueError):
    """A SOURCE or manifest the batch cannot use at all (bad column, unreadable); the
    message says what to change."""


@dataclass
class BatchItem:
    """One input of a batch.

    Attributes:
        path: the input file, absolute.
        rel: its output folder relative to the batch's output folder (POSIX separators).
        options: per-row overrides of the batch options (`ROW_OPTIONS`, no ``out``).
        reuse: set when a previous run finished its stems and only its master is to be
            done: that run's ``{"cache_key", "outputs", "duration"}``.
        url: a remote input's URL (then `path` is only its path on the store, until the
            input is staged to a local copy).
    """

    path: Path
    rel: str
    options: dict[str, Any] = field(default_factory=dict)
    reuse: dict[str, Any] | None = None
    url: str | None = None

    @property
    def source(self) -> str:
        """The input as the user named it: its URL, or its local path."""
        return self.url or str(self.path)


@dataclass
class Problem:
    """A SOURCE that named no usable input: reported as a failure of that SOURCE."""

    source: str
    code: ErrorCode
    message: str


def discover(sources: Iterable[str]) -> tuple[list[BatchItem], list[Problem]]:
    """Every input the SOURCES name, each once (the first mention wins), with its output
    folder, and the SOURCES that named nothing. Raises `SourceError` for a manifest that
    cannot be read."""
    found: list[tuple[Path | str, PurePosixPath, dict[str, Any]]] = []
    problems: list[Problem] = []
    for source in sources:
        source = storage.local_path(source)
        before = len(found)
        problem = _expand(source, found)
        if problem is not None:
            problems.append(problem)
        elif len(found) == before:
            problems.append(Problem(source, ErrorCode.INPUT_MISSING,
                                    f"'{source}' holds no audio files."))
    return _assign_folders(found), problems


def _expand(source: str, found: list[tuple[Path | str, PurePosixPath, dict[str, Any]]]
            ) -> Problem | None:
    if storage.is_remote(source):
        found.extend((url, rel, {}) for url, rel in storage.expand(source, AUDIO_EXTENSIONS))
        return None
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        found.extend(read_manifest(path))
    elif path.is_dir():
        root = Path(os.path.abspath(path))
        found.extend((f, _rel_below(f, root), {}) for f in _walk(root))
    elif path.is_file():
        found.append((Path(os.path.abspath(path)), PurePosixPath(path.name), {}))
    elif glob.has_magic(source):
        root = Path(os.path.abspath(_fixed_part(source)))
        for match in sorted(glob.glob(os.path.expanduser(source), recursive=True)):
            f = Path(os.path.abspath(match))
            if f.is_file() and _is_audio(f) and not _hidden(f.relative_to(root).parts):
                found.append((f, _rel_below(f, root), {}))
    else:
        return Problem(source, ErrorCode.INPUT_MISSING,
                       f"No file, folder or matching files at '{source}'. Check the path.")
    return None


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") for p in parts)


def _walk(root: Path) -> list[Path]:
    """The audio files below `root`, sorted, hidden files and folders skipped."""
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(folder) / f for f in sorted(files)
                   if not f.startswith(".") and _is_audio(Path(f)))
    return out


def _fixed_part(pattern: str) -> str:
    """The folder part of `pattern` before its first wildcard (``.`` if none)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _rel_below(path: Path, root: Path) -> PurePosixPath:
    try:
        return PurePosixPath(*path.relative_to(root).parts)
    except ValueError:
        return PurePosixPath(path.name)


# ------------------------------------------------------------------ manifests


def read_manifest(path: Path) -> list[tuple[Path, PurePosixPath, dict[str, Any]]]:
    """The rows of a CSV or JSONL manifest as (input, output folder, options). Paths are
    relative to the manifest's folder. Raises `SourceError` naming the row and column."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise SourceError(f"The manifest '{path}' is {size / 2**20:.0f} MiB; split it "
                              f"into files of at most {MAX_MANIFEST_BYTES // 2**20} MiB.")
        with open(path, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8-sig")
    except OSError as exc:
        raise SourceError(f"Cannot read the manifest '{path}': {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise SourceError(f"The manifest '{path}' is not UTF-8 text.") from None
    rows = _jsonl_rows(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(path, text)
    base = Path(os.path.abspath(path.parent))
    out: list[tuple[Path, PurePosixPath, dict[str, Any]]] = []
    for n, row in rows:
        options = _row_options(path, n, row)
        typed = Path(os.path.expanduser(str(row["path"])))
        f = typed if typed.is_absolute() else base / typed
        f = Path(os.path.abspath(f))
        rel = PurePosixPath(*Path(options.pop("out")).parts) if "out" in options \
            else _rel_below(f, base)
        out.append((f, rel, options))
    return out


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "path" not in reader.fieldnames:
        raise SourceError(f"The manifest '{path}' needs a header line with a 'path' column "
                          f"(optional columns: {', '.join(ROW_OPTIONS)}).")
    rows = []
    for n, row in enumerate(reader, start=2):
        if n > MAX_ROWS:
            raise SourceError(f"The manifest '{path}' has more than {MAX_ROWS} rows; split it.")
        rows.append((n, {k: v for k, v in row.items() if v not in (None, "")}))
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if n > MAX_ROWS:
            raise SourceError(f"The manifest '{path}' has more than {MAX_ROWS} rows; split it.")
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"Line {n} of the manifest '{path}' is not JSON ({exc}).") from None
        if not isinstance(row, dict):
            raise SourceError(f"Line {n} of the manifest '{path}' is not a JSON object.")
        rows.append((n, {k: v for k, v in row.items() if v is not None}))
    return rows


def _row_options(path: Path, n: int, row: dict[str, Any]) -> dict[str, Any]:
    where = f"line {n} of the manifest '{path}'"
    if not str(row.get("path", "")).strip():
        raise SourceError(f"The 'path' of {where} is empty.")
    unknown = sorted(set(row) - set(ROW_OPTIONS) - {"path"})
    if unknown:
        raise SourceError(f"Unknown column(s) {', '.join(unknown)} in {where}; the known "
                          f"ones are path, {', '.join(ROW_OPTIONS)}.")
    options = {}
    for key, kind in ROW_OPTIONS.items():
        if key not in row:
            continue
        try:
            options[key] = kind(row[key])
        except (TypeError, ValueError):
            raise SourceError(f"The {key} of {where} is {row[key]!r}, not a "
                              f"{kind.__name__}.") from None
    if options.get("format", "wav") not in ("wav", "flac", "mp3"):
        raise SourceError(f"The format of {where} is {options['format']!r}; use wav, flac "
                          "or mp3.")
    if options.get("bit_depth", "24") not in ("16", "24", "32f"):
        raise SourceError(f"The bit_depth of {where} is {options['bit_depth']!r}; use 16, 24 "
                          "or 32f.")
    if options.get("sample_rate", 44100) not in (44100, 48000):
        raise SourceError(f"The sample_rate of {where} is {options['sample_rate']!r}; use "
                          "44100 or 48000.")
    return options


# ------------------------------------------------------------------ output folders


def _assign_folders(found: list[tuple[Path | str, PurePosixPath, dict[str, Any]]]
                    ) -> list[BatchItem]:
    """One `BatchItem` per distinct input, with a distinct, safe output folder each."""
    seen: set[str] = set()
    taken: set[str] = set()
    items = []
    for path, rel, options in found:
        key = path if isinstance(path, str) else os.path.realpath(path)
        if key in seen:
            continue
        seen.add(key)
        parents = [_clean(p) for p in rel.parts[:-1]]
        name = safe_name(rel.name) if rel.suffix else _clean(rel.name)
        candidate = str(PurePosixPath(*parents, name))
        if candidate.casefold() in taken:
            suffix = PurePosixPath(str(path)).suffix
            candidate = str(PurePosixPath(*parents, f"{name} ({_clean(suffix[1:])})"))
        base, k = candidate, 2
        while candidate.casefold() in taken:
            candidate, k = f"{base} ({k})", k + 1
        taken.add(candidate.casefold())
        if isinstance(path, str):  # a remote input's URL
            items.append(BatchItem(Path(path.split("://", 1)[1]), candidate, options,
                                   url=path))
        else:
            items.append(BatchItem(path, candidate, options))
    return items
