"""The work on one input of a batch, the same in every executor: decode (`prepare`), then
separate and write (`finish`) exactly as `stembridge split` writes one input.

An input's outputs go to ``<out>/<item.rel>/`` through `bridge.commands.split.split_one`
(each stem replaced atomically, ``stems.json`` last), so a batch's folder equals the one
`stembridge split` writes for the same file and options. Before writing, the temporary
files an earlier, killed attempt at the same input left in that folder are removed (the
batch owns the folder; only one attempt runs at a time). The input's fingerprint is taken
before decoding and checked again after writing: an input that changed meanwhile fails
with ``source_changed`` (a resumed batch does it again).
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


@dataclass
class BatchOptions:
    """The options of a batch: what shapes every output, and how the engine runs.

    Output options (``model``, ``stems``, ``format``, ``overlap``) can be overridden per
    manifest row; the engine options are the same for every input."""

    model: str | None = None
    stems: int | None = None
    format: str = "wav"
    pcm24: bool = False
    overlap: float | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 0
    use_cache: bool = True
    models_dir: Path | None = None
    threads: int = 0

    def output_options(self, item: BatchItem) -> dict[str, Any]:
        """The options that shape `item`'s output: the batch's, then its row's."""
        opts = {"model": self.model, "stems": self.stems, "format": self.format,
                "pcm24": self.pcm24, "overlap": self.overlap}
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
    ``failed`` (error code and message). `seconds`: wall time spent on it."""

    state: str
    fingerprint: list[int] = field(default_factory=list)
    cache_key: str = ""
    outputs: list[str] = field(default_factory=list)
    duration: float = 0.0
    error: dict[str, str] | None = None
    seconds: float = 0.0
    cache_hit: bool = False


@dataclass
class Prepared:
    """An input after decoding: its engine job, or the error that stopped it."""

    item: BatchItem
    fingerprint: list[int]
    job: Any = None
    failure: Outcome | None = None
    started: float = 0.0


def failed(code: ErrorCode | str, message: str, fp: list[int] | None = None) -> Outcome:
    value = code.value if isinstance(code, ErrorCode) else str(code)
    return Outcome("failed", list(fp or []), error={"code": value, "message": message})


def split_args(options: dict[str, Any]) -> argparse.Namespace:
    """The `split_one` arguments of one input's output options."""
    return argparse.Namespace(stems=options["stems"], model=options["model"], start_at=0.0,
                              overlap=options["overlap"], format=options["format"],
                              pcm24=options["pcm24"], quiet=True)


def prepare(engine: Any, item: BatchItem, batch: BatchOptions) -> Prepared:
    """Fingerprint and decode `item` (no model runs); never raises a `StembridgeError`."""
    from bridge.commands.split import check_input
    from engine.errors import StembridgeError
    from engine.separator import SplitRequest

    t0 = time.perf_counter()
    problem = check_input(item.path)
    if problem is not None:
        return Prepared(item, [], failure=failed(*problem), started=t0)
    try:
        fp = fingerprint(item.path)
    except OSError as exc:
        return Prepared(item, [], failure=failed(ErrorCode.INPUT_UNREADABLE, str(exc)),
                        started=t0)
    opts = batch.output_options(item)
    try:
        job = engine.prepare(SplitRequest(item.path, stems=opts["stems"], model=opts["model"],
                                          overlap=opts["overlap"]))
    except StembridgeError as err:
        return Prepared(item, fp, failure=failed(err.code, str(err), fp), started=t0)
    return Prepared(item, fp, job=job, started=t0)


def finish(engine: Any, prep: Prepared, out: Path, batch: BatchOptions) -> Outcome:
    """Separate a prepared input and write its folder under `out`. Raises only
    `KeyboardInterrupt` and the like (the folder then holds no temporary file)."""
    from bridge.commands.split import Target, split_one
    from engine.errors import StembridgeError
    from protocol.files import remove_stale_temps

    if prep.failure is not None:
        prep.failure.seconds = time.perf_counter() - prep.started
        return prep.failure
    item = prep.item
    folder = out / item.rel
    if folder.is_dir():
        remove_stale_temps(folder)  # left by a killed attempt at this input
    target = Target(item.path, item.path, folder)
    try:
        # the key hashes the decoded bytes through the job's open source file, which the
        # job lets go of when it ends: take it first
        key = prep.job.cache_key()
        meta = split_one(engine, target, split_args(batch.output_options(item)), job=prep.job)
        after = fingerprint(item.path)
    except StembridgeError as err:
        return _timed(failed(err.code, str(err), prep.fingerprint), prep)
    except OSError as exc:
        return _timed(failed(ErrorCode.INPUT_MISSING, f"'{item.path}' disappeared while it "
                             f"was being separated ({exc.strerror or exc}).",
                             prep.fingerprint), prep)
    except BaseException:
        # Ctrl-C can land between a temporary file's creation and its writer's clean-up
        # hook: the batch owns this folder, so remove whatever temporary file is left
        if folder.is_dir():
            remove_stale_temps(folder)
        raise
    if after != prep.fingerprint:
        return _timed(failed(ErrorCode.SOURCE_CHANGED, f"'{item.path}' changed while it was "
                             "being separated; it is done again when the batch resumes.",
                             prep.fingerprint), prep)
    files = sorted(meta["output"]["files"].values()) + ["stems.json"]
    return _timed(Outcome("done", prep.fingerprint, cache_key=key,
                          outputs=files, duration=float(meta["input"]["duration"]),
                          cache_hit=bool(meta["cache_hit"])), prep)


def _timed(outcome: Outcome, prep: Prepared) -> Outcome:
    outcome.seconds = time.perf_counter() - prep.started
    return outcome


def run_one(engine: Any, item: BatchItem, out: Path, batch: BatchOptions) -> Outcome:
    """`prepare` and `finish` in one call (the Ray actors' unit of work)."""
    return finish(engine, prepare(engine, item, batch), out, batch)


def worker_name() -> str:
    """Who runs this process's tasks: host name and process id."""
    return f"{os.uname().nodename}:{os.getpid()}" if hasattr(os, "uname") else str(os.getpid())
