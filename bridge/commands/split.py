"""`stembridge split`: separate audio files into stems in this process.

Each input gets ``<out>/<folder>/`` with one file per stem and ``stems.json`` (README,
"Use"). The rules this module settles:

* Folder names come from the input names (`safe_name`). When several inputs of one run
  have the same name, each of them gets ``<name> (<parent folder>)`` (and a number if
  even that repeats), so the same command always writes the same folders. The same file
  given twice is split once.
* A re-run replaces the folder's stems: each stem file is replaced atomically (a reader
  sees the old or the new file), ``stems.json`` last, then the stem files of the previous
  run that this run does not write (another stem set or format) are removed.
* A folder this run created is removed again when its input fails or the run is
  interrupted and it is still empty; stems of an earlier run are kept.
* Inputs are checked before the engine (and torch) is imported: a missing file is
  reported at once. An output folder that cannot be made or written is the input's error
  (``output_failed``); the other inputs are still processed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.commands import report
from protocol.errors import ErrorCode, exit_status

STEMS_JSON = "stems.json"


class ProgressBar:
    """One line on stderr: regions done/total, percent, ETA. Redrawn in place on a TTY,
    printed every ~10 % otherwise (logs stay short)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.line = report.StatusLine(enabled)

    def __call__(self, p: Any) -> None:
        frac = p.frames_done / p.frames_total if p.frames_total else 1.0
        eta = "--" if p.eta is None else f"{p.eta:5.1f}s"
        self.line.show(f"{self.label} [{report.bar(frac)}] regions {p.regions_done}/"
                       f"{p.regions_total} {frac * 100:5.1f}% ETA {eta}", int(frac * 10))

    def close(self) -> None:
        self.line.close()


# ---------------------------------------------------------------------- folders


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """The options that shape the stem files, shared by `split` and `batch`."""
    p.add_argument("--format", choices=("wav", "flac", "mp3"), default="wav",
                   help="wav = 32-bit float (default), flac = 24-bit, mp3 = LAME via ffmpeg")
    p.add_argument("--pcm24", action="store_true", help="write 24-bit PCM WAV instead of float")
    p.add_argument("--bit-depth", choices=("16", "24", "32f"), default=None,
                   help="PCM depth of wav/flac (16 gets TPDF dither; 32f: float, wav only)")
    p.add_argument("--mp3-quality", choices=("cbr320", "v0"), default="cbr320",
                   help="mp3: 320 kbit/s CBR (default) or VBR V0")
    p.add_argument("--sample-rate", type=int, choices=(44100, 48000), default=None,
                   help="resample the stems to this rate (soxr; default: the input's)")
    p.add_argument("--normalize", action="store_true", help="turn every stem down by one "
                   "gain so that none peaks above -0.1 dBFS (sample peak; the gain is in "
                   "stems.json)")


def _clean(name: str) -> str:
    """`name` without path separators or leading/trailing dots and spaces (so it cannot
    escape the output folder), at most 120 characters."""
    return (re.sub(r"[^\w\-. ]+", "_", name).strip(" .") or "audio")[:120]


def safe_name(name: str) -> str:
    """A file-system-safe folder name from an input file name, without its extension."""
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return _clean(name[: -len(suffix)])
    return _clean(Path(name).stem)


@dataclass(frozen=True)
class Target:
    """One input of a run. `path`: absolute (symlinks kept as typed); `typed`: as the user
    typed it (for messages); `folder`: its output folder."""

    path: Path
    typed: Path
    folder: Path


def plan_targets(paths: list[Path], out: Path) -> tuple[list[Target], list[Path]]:
    """The distinct inputs with their output folders, in the order given, and the inputs
    given more than once (split once). See the module docstring for the naming rule."""
    seen: set[str] = set()
    unique: list[Path] = []
    repeated: list[Path] = []
    for typed in paths:
        key = os.path.realpath(typed)
        if key in seen:
            repeated.append(typed)
            continue
        seen.add(key)
        unique.append(typed)
    names = [safe_name(p.name) for p in unique]
    counts = Counter(n.casefold() for n in names)
    taken: set[str] = set()
    targets = []
    for typed, name in zip(unique, names, strict=True):
        absolute = Path(os.path.abspath(typed))
        if counts[name.casefold()] > 1:
            name = f"{name} ({_clean(absolute.parent.name or 'root')})"
        candidate, n = name, 2
        while candidate.casefold() in taken:
            candidate, n = f"{name} ({n})", n + 1
        taken.add(candidate.casefold())
        targets.append(Target(absolute, typed, out / candidate))
    return targets, repeated


def check_input(path: Path) -> tuple[ErrorCode, str] | None:
    """What is wrong with `path` that needs no decoder (missing, a folder, not a regular
    file), as (code, message); None when it is a file the engine can try."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return ErrorCode.INPUT_MISSING, (f"No file at '{path}'. Check the path; the file may "
                                         "have been moved, renamed or deleted.")
    except OSError as exc:
        return ErrorCode.INPUT_UNREADABLE, f"Cannot access '{path}': {exc.strerror or exc}."
    if stat.S_ISDIR(st.st_mode):
        return ErrorCode.INPUT_MISSING, (f"'{path}' is a folder, not an audio file. Choose "
                                         "an audio file (WAV, FLAC, MP3, ...) inside it.")
    if not stat.S_ISREG(st.st_mode):
        return ErrorCode.INPUT_UNREADABLE, f"'{path}' is not a regular file."
    return None


def make_folder(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns the folders created, outermost
    first (for `remove_if_empty`). Raises `OutputError` when it cannot be made."""
    from engine.errors import OutputError

    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    missing.reverse()
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"Cannot create the output folder '{folder}': '{probe}' is a file, "
                          "not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_if_empty(missing)
        raise OutputError(f"Cannot create the output folder '{folder}': "
                          f"{exc.strerror or exc}.") from None
    return missing


def remove_if_empty(created: list[Path]) -> None:
    """Remove the folders of `created` (outermost first) that are empty, innermost first."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def _output_errors(path: Path) -> Iterator[None]:
    """Turn an `OSError` while writing `path` into `OutputError` (exit 10, no traceback)."""
    from engine.errors import OutputError

    try:
        yield
    except OSError as exc:
        raise OutputError(f"Cannot write '{path}': {exc.strerror or exc}.") from None


def _previous_files(folder: Path) -> set[str]:
    """The stem file names the previous run's ``stems.json`` in `folder` lists."""
    try:
        files = json.loads((folder / STEMS_JSON).read_text(encoding="utf-8"))["output"]["files"]
        return {f for f in files.values() if isinstance(f, str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _remove_stale(folder: Path, previous: set[str], current: set[str]) -> None:
    for name in previous - current:
        if name == Path(name).name and not name.startswith(".") and name != STEMS_JSON:
            with contextlib.suppress(OSError):
                (folder / name).unlink()


# ---------------------------------------------------------------------- one input


def split_one(engine: Any, target: Target, args: argparse.Namespace,
              job: Any = None) -> dict[str, Any]:
    """Separate `target` into its folder; returns the metadata written to stems.json.
    Raises `StembridgeError` (the folder holds no new file then). `job`: the engine job
    of `target` when the caller has prepared (decoded) it already (`stembridge batch`)."""
    from engine.separator import SplitRequest

    if job is None:
        stems, only = args.stems, None
        if isinstance(stems, list):  # a subset of stem names (`--stems vocals,drums`)
            stems, only = None, stems
        job = engine.prepare(SplitRequest(target.path, stems=stems, model=args.model,
                                          start_at=args.start_at, overlap=args.overlap,
                                          only=only, rest=getattr(args, "rest", "keep")))
    created = make_folder(target.folder)
    try:
        meta = _write_stems(job, target, args)
    except BaseException:
        remove_if_empty(created)
        raise
    return meta


def _subtype(args: argparse.Namespace) -> str:
    """The writer subtype for the output options: mp3 CBR320/V0, else the PCM depth
    (`--bit-depth`, `--pcm24`, or the format's default: wav float, flac 24-bit)."""
    from engine.audio.output import subtype_for

    return subtype_for(args.format, getattr(args, "bit_depth", None),
                       getattr(args, "mp3_quality", "cbr320"), bool(args.pcm24))


def output_options(args: argparse.Namespace, subtype: str) -> Any:
    """The `OutputOptions` of the command's ``--format``, ``--sample-rate`` and
    ``--normalize`` (`subtype`: from `_subtype`)."""
    from engine.audio.output import OutputOptions

    return OutputOptions(args.format, subtype, getattr(args, "sample_rate", None),
                         bool(getattr(args, "normalize", False)))


def _write_stems(job: Any, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    from engine.audio import StemFileWriter, remove_stale_temp_files
    from engine.audio.output import finish_stems
    from protocol.files import write_json_atomic

    folder = target.folder
    remove_stale_temp_files(folder)  # left by a run that was killed a day or more ago
    previous = _previous_files(folder)
    ext = args.format
    subtype = _subtype(args)
    writers: dict[str, Any] = {}
    bar = ProgressBar(target.typed.name, not args.quiet)
    try:
        for name in job.stem_names:
            with _output_errors(folder):
                writers[name] = StemFileWriter(folder, job.frames, job.channels,
                                               job.samplerate)
        for region in job.run(on_progress=bar):
            for name, arr in region.stems.items():
                writers[name].write(region.start, arr)
        paths = {name: folder / f"{name}.{ext}" for name in writers}
        with _output_errors(folder):
            written = finish_stems(writers, paths, output_options(args, subtype))
        files = {name: path.name for name, path in written.files.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    assert job.result is not None
    meta = dict(job.result.metadata)
    meta["output"] = {"folder": str(folder.resolve()), "files": files, "format": args.format,
                      "subtype": subtype, **written.metadata()}
    with _output_errors(folder / STEMS_JSON):
        write_json_atomic(folder / STEMS_JSON, meta)
    _remove_stale(folder, previous, set(files.values()))
    return meta


# ---------------------------------------------------------------------- the command


def _print_result(target: Target, meta: dict[str, Any], seconds: float) -> None:
    folder = meta["output"]["folder"]
    hit = " (from cache)" if meta["cache_hit"] else ""
    print(f"{target.typed}: {len(meta['stems'])} stems in {folder}{hit} "
          f"[{meta['model_name']} on {meta['device']}, {meta['precision']}, "
          f"{seconds:.1f}s for {meta['input']['duration']:.1f}s of audio]")
    for name, fname in meta["output"]["files"].items():
        print(f"  {name:13s} {Path(folder) / fname}")
    for w in meta["warnings"]:
        print(f"  warning: {w}")


def _failure(target: Target, code: str, message: str) -> dict[str, Any]:
    report.error(code, message, str(target.typed))
    return {"input": str(target.path), "error": {"code": code, "message": message}}


def output_arguments_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of the output options, or None."""
    if args.format == "flac" and getattr(args, "bit_depth", None) == "32f":
        return ("FLAC holds 16 or 24 bits; use --bit-depth 16 or 24, or --format wav for "
                "32-bit float.")
    return None


def cmd_split(args: argparse.Namespace) -> int:
    """Split every input; returns the exit status of the first input that failed (in the
    order given), 0 if none did. ``--json`` prints a list with one entry per input."""
    wrong = output_arguments_problem(args)
    if wrong:
        print(f"stembridge: error: {wrong}", file=sys.stderr)
        return 2
    targets, repeated = plan_targets(list(args.files), args.out)
    for typed in repeated:
        report.warning(f"{typed} is given more than once; it is split once.")
    results: list[dict[str, Any] | None] = [None] * len(targets)
    ready = []
    for i, target in enumerate(targets):
        problem = check_input(target.path)
        if problem is None:
            ready.append(i)
        else:
            results[i] = _failure(target, problem[0].value, problem[1])
    if ready:
        _split_ready(args, targets, ready, results)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if result is not None and "error" in result:
            return exit_status(result["error"]["code"])
    return 0


def _split_ready(args: argparse.Namespace, targets: list[Target], ready: list[int],
                 results: list[dict[str, Any] | None]) -> None:
    from engine.config import EngineConfig
    from engine.errors import StembridgeError
    from engine.separator import Engine

    engine = Engine(EngineConfig(device=args.device, precision=args.precision,
                                 batch_size=args.batch_size, use_cache=not args.no_cache,
                                 models_dir=args.models_dir))
    for i in ready:
        target = targets[i]
        t0 = time.perf_counter()
        try:
            meta = split_one(engine, target, args)
        except StembridgeError as err:
            results[i] = _failure(target, err.code.value, str(err))
            continue
        results[i] = meta
        if not args.json:
            _print_result(target, meta, time.perf_counter() - t0)
