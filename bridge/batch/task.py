"""The work on one input of a batch, the same in every executor: decode (`prepare`), then
separate and write (`finish`) exactly as `stembridge split` writes one input.

An input's outputs go to ``<out>/<item.rel>/`` through `bridge.commands.split.split_one`
(each stem replaced atomically, ``stems.json`` last), so a batch's folder equals the one
`stembridge split` writes for the same file and options. Before writing, the temporary
files an earlier, killed attempt at the same input left in that folder are removed (the
batch owns the folder; only one attempt runs at a time). The input's fingerprint is taken
before decoding and checked again after writing: an input that changed meanwhile fails
with ``source_changed`` (a resumed batch does it again).

A remote input (`BatchItem.url`) is staged to a local temporary copy first and that copy
removed when the input is done; with a remote output (`BatchOptions.out_url`) the item's
folder is written locally, then published to the store (`bridge.batch.storage`).

With a mastering preset (``--master``), the input (the mix) is then mastered into the same
folder (`master_mix`: ``<name>.master.wav`` and ``<name>.master.json``, each written
atomically). An input whose stems a previous run finished (`BatchItem.reuse`) is only
mastered: its separation is not run again.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.batch.record import fingerprint
from bridge.batch.sources import BatchItem
from protocol.errors import ErrorCode

#: The master's file format and PCM depth (`stembridge master`'s defaults).
MASTER_FORMAT, MASTER_BITS = "wav", "24"


@dataclass
class BatchOptions:
    """The options of a batch: what shapes every output, and how the engine runs.

    Output options (``model``, ``stems``, ``format``, ``overlap``) can be overridden per
    manifest row; the engine options are the same for every input."""

    model: str | None = None
    stems: int | None = None
    format: str = "wav"
    pcm24: bool = False
    bit_depth: str | None = None
    mp3_quality: str = "cbr320"
    sample_rate: int | None = None
    normalize: bool = False
    overlap: float | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 0
    use_cache: bool = True
    models_dir: Path | None = None
    threads: int = 0
    master: str | None = None
    #: A remote output folder (``s3://...``): each item's files are published there.
    out_url: str | None = None

    def master_options(self) -> dict[str, Any] | None:
        """What shapes each master (its config id), or None without ``--master``."""
        if self.master is None:
            return None
        return {"preset": self.master, "format": MASTER_FORMAT, "bit_depth": MASTER_BITS}

    def output_options(self, item: BatchItem) -> dict[str, Any]:
        """The options that shape `item`'s output: the batch's, then its row's."""
        opts = {"model": self.model, "stems": self.stems, "format": self.format,
                "pcm24": self.pcm24, "overlap": self.overlap}
        # set only when asked, so that the outputs of earlier batches stay done
        extra = {"bit_depth": self.bit_depth, "sample_rate": self.sample_rate,
                 "mp3_quality": self.mp3_quality if self.format == "mp3" else None,
                 "normalize": self.normalize or None}
        opts.update({k: v for k, v in extra.items() if v is not None})
        opts.update(item.options)
        return opts

    def engine_config(self) -> Any:
        from engine.config import EngineConfig

        return EngineConfig(device=self.device, precision=self.precision,
                            batch_size=self.batch_size, use_cache=self.use_cache,
                            models_dir=self.models_dir, threads=self.threads)


@dataclass
class Outcome:
    """What became of one input: ``done`` (cache key, output files, seconds of audio) or
    ``failed`` (error code and message). `seconds`: wall time spent on it. `master`: the
    master's section of the record (`master_mix`); a failed master keeps the stems'
    cache key and outputs, so that a resumed batch only masters again."""

    state: str
    fingerprint: list[int] = field(default_factory=list)
    cache_key: str = ""
    outputs: list[str] = field(default_factory=list)
    duration: float = 0.0
    error: dict[str, str] | None = None
    seconds: float = 0.0
    cache_hit: bool = False
    master: dict[str, Any] | None = None


@dataclass
class Prepared:
    """An input after decoding: its engine job, or the error that stopped it."""

    item: BatchItem
    fingerprint: list[int]
    job: Any = None
    failure: Outcome | None = None
    started: float = 0.0
    staged: Path | None = None  # the local folder holding a remote input's copy

    def discard(self) -> None:
        """Remove the staged copy of a remote input, if any."""
        _remove(self.staged)
        self.staged = None


def failed(code: ErrorCode | str, message: str, fp: list[int] | None = None) -> Outcome:
    value = code.value if isinstance(code, ErrorCode) else str(code)
    return Outcome("failed", list(fp or []), error={"code": value, "message": message})


def split_args(options: dict[str, Any]) -> argparse.Namespace:
    """The `split_one` arguments of one input's output options."""
    return argparse.Namespace(stems=options["stems"], model=options["model"], start_at=0.0,
                              overlap=options["overlap"], format=options["format"],
                              pcm24=options["pcm24"], bit_depth=options.get("bit_depth"),
                              mp3_quality=options.get("mp3_quality", "cbr320"),
                              sample_rate=options.get("sample_rate"),
                              normalize=bool(options.get("normalize")), quiet=True)


def prepare(engine: Any, item: BatchItem, batch: BatchOptions) -> Prepared:
    """Fingerprint and decode `item` (no model runs), staging a remote input first; never
    raises a `StembridgeError`."""
    from bridge.commands.split import check_input
    from engine.errors import StembridgeError
    from engine.separator import SplitRequest

    t0 = time.perf_counter()
    staged = None
    if item.url is not None:
        # the remote object's fingerprint first: one that changes while it is copied is
        # caught by the check after writing
        try:
            fp = _fingerprint(item)
            item, staged = _stage(item)
        except FileNotFoundError:
            return Prepared(item, [], failure=failed(
                ErrorCode.INPUT_MISSING, f"No file at '{item.url}'. Check the URL; the "
                "object may have been moved or deleted."), started=t0)
        except (OSError, StembridgeError) as exc:
            return Prepared(item, [], failure=_failure_of(exc), started=t0)
    problem = check_input(item.path)
    if problem is not None:
        _remove(staged)
        return Prepared(item, [], failure=failed(*problem), started=t0)
    if item.url is None:
        try:
            fp = fingerprint(item.path)
        except OSError as exc:
            return Prepared(item, [], failure=_failure_of(exc), started=t0)
    if item.reuse is not None:  # its stems are done: only the master runs
        return Prepared(item, fp, started=t0, staged=staged)
    opts = batch.output_options(item)
    try:
        job = engine.prepare(SplitRequest(item.path, stems=opts["stems"], model=opts["model"],
                                          overlap=opts["overlap"]))
    except StembridgeError as err:
        _remove(staged)
        return Prepared(item, fp, failure=failed(err.code, str(err), fp), started=t0)
    return Prepared(item, fp, job=job, started=t0, staged=staged)


def _failure_of(exc: BaseException) -> Outcome:
    from engine.errors import StembridgeError

    if isinstance(exc, StembridgeError):
        return failed(exc.code, str(exc))
    return failed(ErrorCode.INPUT_UNREADABLE, str(exc))


def _stage(item: BatchItem) -> tuple[BatchItem, Path]:
    """`item` with `path` set to a local copy of its remote input, and the copy's folder."""
    import dataclasses
    import tempfile

    from bridge.batch import storage
    from engine.config import Limits

    assert item.url is not None
    sweep_stale_stages(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
    limits = Limits()
    try:
        local = storage.stage(item.url, folder, limits.max_source_bytes, limits.read_timeout)
    except BaseException:
        _remove(folder)
        raise
    return dataclasses.replace(item, path=local), folder


#: Staged copies live in ``<temp>/stembridge-stage-<pid>-<random>/``.
STAGE_PREFIX = "stembridge-stage-"
_swept: set[Path] = set()


def sweep_stale_stages(temp: Path) -> list[Path]:
    """Remove (once per process and folder) the staged copies left in `temp` by a batch
    process that no longer runs (killed, or its Ray actor died); returns them."""
    if temp in _swept:
        return []
    _swept.add(temp)
    removed = []
    for folder in temp.glob(STAGE_PREFIX + "*"):
        pid_text = folder.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # its process still runs (or it is another user's)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _remove(folder)
        removed.append(folder)
    return removed


def _remove(folder: Path | None) -> None:
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def _fingerprint(item: BatchItem) -> list[int]:
    """The input's fingerprint: of the remote object for a remote input."""
    if item.url is not None:
        from bridge.batch import storage

        return storage.fingerprint(item.url)
    return fingerprint(item.path)


def finish(engine: Any, prep: Prepared, out: Path, batch: BatchOptions) -> Outcome:
    """Separate a prepared input and write its folder under `out` (and publish it to
    `batch.out_url`). Raises only `KeyboardInterrupt` and the like (the folder then holds
    no temporary file)."""
    if prep.failure is not None:
        prep.failure.seconds = time.perf_counter() - prep.started
        return prep.failure
    try:
        return _finish(engine, prep, out, batch)
    finally:
        prep.discard()


def _finish(engine: Any, prep: Prepared, out: Path, batch: BatchOptions) -> Outcome:
    from bridge.commands.split import Target, split_one
    from engine.errors import StembridgeError
    from protocol.files import remove_stale_temps

    item = prep.item
    folder = out / item.rel
    if folder.is_dir():
        remove_stale_temps(folder)  # left by a killed attempt at this input
    target = Target(item.path, item.path, folder)
    try:
        if item.reuse is not None:
            done = Outcome("done", prep.fingerprint, cache_key=str(item.reuse["cache_key"]),
                           outputs=list(item.reuse["outputs"]),
                           duration=float(item.reuse["duration"]))
        else:
            # the key hashes the decoded bytes through the job's open source file, which
            # the job lets go of when it ends: take it first
            key = prep.job.cache_key()
            meta = split_one(engine, target, split_args(batch.output_options(item)),
                             job=prep.job)
            done = Outcome("done", prep.fingerprint, cache_key=key,
                           outputs=sorted(meta["output"]["files"].values()) + ["stems.json"],
                           duration=float(meta["input"]["duration"]),
                           cache_hit=bool(meta["cache_hit"]))
        if batch.master is not None:
            done.master = _master_or_failure(item, folder, batch, done)
        if item.url is not None or batch.out_url is not None:
            _name_locations(folder, item, batch, done)
        if batch.out_url is not None:
            _publish(out, folder, batch.out_url, item, done)
        if done.state == "failed":
            return _timed(done, prep)
        after = _fingerprint(item)
    except StembridgeError as err:
        return _timed(failed(err.code, str(err), prep.fingerprint), prep)
    except OSError as exc:
        return _timed(failed(ErrorCode.INPUT_MISSING, f"'{item.source}' disappeared while it "
                             f"was being separated ({exc.strerror or exc}).",
                             prep.fingerprint), prep)
    except BaseException:
        # Ctrl-C can land between a temporary file's creation and its writer's clean-up
        # hook: the batch owns this folder, so remove whatever temporary file is left
        if folder.is_dir():
            remove_stale_temps(folder)
        raise
    if after != prep.fingerprint:
        return _timed(failed(ErrorCode.SOURCE_CHANGED, f"'{item.source}' changed while it was "
                             "being separated; it is done again when the batch resumes.",
                             prep.fingerprint), prep)
    return _timed(done, prep)


def _name_locations(folder: Path, item: BatchItem, batch: BatchOptions,
                    done: Outcome) -> None:
    """Make this attempt's ``stems.json`` and master report name the input as the user
    gave it (its URL, not the staged copy) and the outputs where they are published."""
    import json

    from bridge.batch import storage
    from protocol.files import write_json_atomic

    where = storage.join(batch.out_url, item.rel) if batch.out_url is not None else None
    reports = [] if item.reuse is not None else [("stems.json", "")]
    if done.master is not None:
        audio, report = done.master["outputs"]
        reports.append((report, audio))
    for name, audio in reports:
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8"))
        data["input"]["path"] = item.source
        if where is not None and audio:
            data["output"]["path"] = f"{where}/{audio}"
        elif where is not None:
            data["output"]["folder"] = where
        write_json_atomic(path, data)


def _publish(out: Path, folder: Path, url: str, item: BatchItem, done: Outcome) -> None:
    """Upload what this attempt wrote in `folder`: the stems (unless reused), the master,
    ``stems.json`` last; then remove the local folder and its empty parents below `out`."""
    from bridge.batch import storage

    stems = [] if item.reuse is not None else [f for f in done.outputs if f != "stems.json"]
    master = list(done.master["outputs"]) if done.master else []
    last = [] if item.reuse is not None else ["stems.json"]
    storage.publish(folder, storage.join(url, item.rel), stems + master + last)
    parent = folder.parent
    while parent != out and out in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def master_mix(item: BatchItem, folder: Path, batch: BatchOptions) -> dict[str, Any]:
    """Master `item`'s input with the batch's preset into `folder`; returns the record's
    master section: ``{"config", "preset", "outputs": [audio, report], "before",
    "after"}``, where before/after are ``{"lufs", "true_peak" (dBTP), "lra" (LU)}`` of
    the input and of the master. Raises the engine's `StembridgeError`s."""
    from bridge.batch.record import config_id
    from bridge.commands.masterrequest import loudness_figures
    from engine.mastering.job import MasterOptions, master_file

    config = batch.master_options()
    assert config is not None
    result = master_file(item.path, MasterOptions(
        preset=str(batch.master), format=MASTER_FORMAT, bit_depth=MASTER_BITS,
        out_dir=folder, use_cache=batch.use_cache))
    rep = result.report
    return {"config": config_id(config), "preset": batch.master,
            "outputs": [result.output.name, result.report_path.name],
            "before": loudness_figures(rep["input_analysis"]),
            "after": loudness_figures(rep["output_analysis"])}


def _master_or_failure(item: BatchItem, folder: Path, batch: BatchOptions,
                       done: Outcome) -> dict[str, Any] | None:
    """`master_mix`, or None with `done` turned into a failure (its stems kept)."""
    from engine.errors import StembridgeError

    try:
        return master_mix(item, folder, batch)
    except StembridgeError as err:
        done.state = "failed"
        done.error = {"code": err.code.value, "message": f"The stems are written, but "
                      f"mastering failed: {err}"}
        return None


def _timed(outcome: Outcome, prep: Prepared) -> Outcome:
    outcome.seconds = time.perf_counter() - prep.started
    return outcome


def worker_name() -> str:
    """Who runs this process's tasks: host name and process id."""
    return f"{os.uname().nodename}:{os.getpid()}" if hasattr(os, "uname") else str(os.getpid())
