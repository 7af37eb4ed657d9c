"""`stembridge batch`: separate a whole catalogue, resumably (README, "Batch").

    stembridge batch SOURCES... --out DIR [split's output and engine options]
                     [--workers N] [--ray [auto|ADDRESS]] [--no-resume] [--max-attempts N]

The steps: find the inputs (`bridge.batch.sources`), compare them with the batch record
(`bridge.batch.record`: what is done with the same input and options is skipped, what
failed is retried up to ``--max-attempts`` times, a changed input is done again), run the
rest on an executor (`bridge.batch.local`, or `bridge.batch.cluster` with ``--ray``),
recording each input's state as it changes, then print the summary
(`bridge.batch.progress`). A failing input never stops the batch; Ctrl-C stops it after
removing the running input's partial files, keeping everything finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from bridge.batch import record as rec
from bridge.batch.progress import SUMMARY_NAME, ProgressLine, Tally, summary, table
from bridge.batch.sources import BatchItem, SourceError, discover
from bridge.batch.task import BatchOptions, Outcome
from bridge.commands import report
from bridge.commands.split import add_output_arguments, output_arguments_problem
from protocol import settings
from protocol.errors import ErrorCode, exit_status


def add_parser(sub: Any) -> None:
    """Register ``batch`` on the CLI's sub-parsers."""
    b = sub.add_parser("batch", help="separate a whole catalogue (folders, patterns, "
                       "manifests), resumably, here or on a Ray cluster")
    b.add_argument("sources", nargs="+", help="audio files, folders (searched recursively), "
                   "glob patterns (quote them) or CSV/JSONL manifests with a 'path' column")
    b.add_argument("--out", required=True, help="output folder; mirrors the input tree "
                   "and holds the batch record (stembridge-batch.jsonl); or a URL such as "
                   "s3://bucket/stems (needs fsspec and the store's package, e.g. s3fs)")
    b.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="with a URL --out: the local folder for the record and the files "
                   "being uploaded (default: one per URL in the cache folder)")
    b.add_argument("--stems", type=int, choices=(2, 4, 5, 6), default=None)
    b.add_argument("--model", default=None, help="model name (as for split)")
    add_output_arguments(b)
    b.add_argument("--overlap", type=float, default=None, help="window overlap fraction")
    b.add_argument("--device", default=settings.device(), help="auto, cpu, cuda, mps")
    b.add_argument("--precision", default=settings.precision(),
                   choices=("auto", "fp32", "bf16", "fp16"))
    b.add_argument("--batch-size", type=int, default=0, help="windows per forward pass")
    b.add_argument("--threads", type=int, default=0, help="torch threads per engine "
                   "(0: torch's default locally, the worker's CPU share on Ray)")
    b.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    b.add_argument("--models-dir", type=Path, default=None)
    b.add_argument("--master", choices=("streaming", "loud"), default=None,
                   metavar="PRESET", help="also master each input (the mix) into its "
                   "folder: streaming (-14 LUFS, -1 dBTP) or loud (about -8 LUFS); "
                   "<name>.master.wav (24-bit) and <name>.master.json")
    b.add_argument("--workers", type=int, default=0, help="Ray actors (default: one per "
                   "GPU, else one per --cpus-per-worker CPUs); the local executor has one")
    b.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|ADDRESS",
                   help="run on Ray: 'auto' joins the running cluster or starts one here; "
                   "or a cluster address (needs: pip install 'stembridge[ray]')")
    b.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs each Ray actor reserves on a node without a GPU (default 1)")
    b.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="skip what the batch record says is done (the default)")
    b.add_argument("--no-resume", dest="resume", action="store_false",
                   help="do every input again, whatever the record says")
    b.add_argument("--max-attempts", type=int, default=3, help="tries per input across "
                   "runs before a failing input is skipped (default 3)")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def options_of(args: argparse.Namespace, out_url: str | None = None) -> BatchOptions:
    return BatchOptions(model=args.model, stems=args.stems, format=args.format,
                        pcm24=args.pcm24, bit_depth=args.bit_depth,
                        mp3_quality=args.mp3_quality, sample_rate=args.sample_rate,
                        normalize=args.normalize, overlap=args.overlap, device=args.device,
                        precision=args.precision, batch_size=args.batch_size,
                        use_cache=not args.no_cache, models_dir=args.models_dir,
                        threads=args.threads, master=args.master, out_url=out_url)


class BatchRun:
    """One run of a batch: the plan against the record, the hooks the executor calls,
    the tally and the summary."""

    def __init__(self, out: Path, options: BatchOptions, *, quiet: bool = True,
                 max_attempts: int = 3) -> None:
        self.out = out
        self.options = options
        self.max_attempts = max(1, max_attempts)
        self.record = rec.BatchRecord(out)
        self.quiet = quiet
        self.tally = Tally(0, master=options.master)
        master = options.master_options()
        self.master_config = None if master is None else rec.config_id(master)
        self.progress = ProgressLine(self.tally, enabled=False)
        self.first_attempt: dict[str, int] = {}
        self.attempts: dict[str, int] = {}

    def folder(self, item: BatchItem) -> Any:
        """`item`'s output folder as `rec.decide` checks it: local, or on the store."""
        if self.options.out_url is None:
            return self.out / item.rel
        from bridge.batch import storage

        return storage.RemoteFolder(storage.join(self.options.out_url, item.rel))

    def config(self, item: BatchItem) -> str:
        opts = self.options.output_options(item)
        return rec.config_id({**opts, "precision": self.options.precision})

    def plan(self, items: list[BatchItem], resume: bool) -> list[BatchItem]:
        """The inputs to run now; counts those skipped as done or failed before."""
        latest = self.record.load() if resume else {}
        todo = []
        for item in items:
            prev = latest.get(item.rel)
            verdict, attempt = rec.decide(prev, item.url or item.path, self.config(item),
                                          self.folder(item), self.max_attempts,
                                          self.master_config)
            if verdict == "done":
                self.tally.before += 1
            elif verdict == "failed" and prev is not None and prev.error:
                self.tally.failed += 1
                self.tally.failures.append(self._failure(item, prev.error, prev.attempt))
            elif verdict == "master" and prev is not None:
                self.first_attempt[item.rel] = attempt
                todo.append(dataclasses.replace(item, reuse={
                    "cache_key": prev.cache_key, "outputs": prev.outputs,
                    "duration": prev.duration}))
            else:
                self.first_attempt[item.rel] = attempt
                todo.append(item)
        return todo

    def _failure(self, item: BatchItem, error: dict[str, str], attempt: int) -> dict[str, Any]:
        return {"input": item.source, "item": item.rel, "code": error["code"],
                "message": error["message"], "attempts": attempt}

    def on_start(self, item: BatchItem, worker: str, retries: int = 0) -> None:
        """`item` starts on `worker`; `retries`: how often in this run a worker died
        holding it (each retry is one more attempt)."""
        self.attempts[item.rel] = self.first_attempt.get(item.rel, 1) + retries
        self.record.append(rec.Entry(item.rel, item.source, rec.RUNNING,
                                     config=self.config(item), worker=worker,
                                     attempt=self.attempts.get(item.rel, 1)))

    def on_outcome(self, item: BatchItem, outcome: Outcome, worker: str) -> None:
        attempt = self.attempts.get(item.rel, 1)
        self.record.append(rec.Entry(
            item.rel, item.source, outcome.state, fingerprint=outcome.fingerprint,
            config=self.config(item), attempt=attempt, cache_key=outcome.cache_key,
            outputs=outcome.outputs, duration=outcome.duration, error=outcome.error,
            worker=worker, master=outcome.master))
        if outcome.state == rec.DONE:
            self.tally.done += 1
            self.tally.audio_seconds += outcome.duration
            if outcome.master is not None:
                self.tally.add_master(outcome.master)
        else:
            assert outcome.error is not None
            self.tally.failed += 1
            self.tally.failures.append(self._failure(item, outcome.error, attempt))
            if not self.quiet:
                report.error(outcome.error["code"], outcome.error["message"], item.source)
        self.progress.update()


def cmd_batch(args: argparse.Namespace) -> int:
    """Run the batch; exit status 0 when every input is done, 130 when interrupted, else
    that of the first failure's code."""
    from engine.errors import InvalidArgumentError, StembridgeError

    problem = output_arguments_problem(args)
    if problem:
        raise InvalidArgumentError(problem)
    try:
        items, problems = discover(args.sources)
    except SourceError as err:
        raise InvalidArgumentError(str(err)) from None
    out, out_url = _output(args)
    executor = _executor(args, out, out_url)
    run = BatchRun(out, options_of(args, out_url), quiet=args.quiet or args.json,
                   max_attempts=args.max_attempts)
    todo = run.plan(items, args.resume)
    run.tally.total = len(items) + len(problems)
    for p in problems:
        run.tally.failed += 1
        run.tally.failures.append({"input": p.source, "item": "", "code": p.code.value,
                                   "message": p.message, "attempts": 1})
    run.progress = ProgressLine(run.tally, enabled=not (args.quiet or args.json))
    run.progress.update()
    stopped: StembridgeError | None = None
    try:
        if todo:
            executor.run(todo, run.on_start, run.on_outcome)
    except KeyboardInterrupt:
        run.tally.interrupted = True
    except StembridgeError as err:  # the executor itself failed (e.g. the cluster)
        stopped = err
    finally:
        run.record.close()
        run.progress.close()
    data = summary(run.tally, out_url or str(out), executor.name)
    _write_summary(out, data, out_url)
    print(json.dumps(data, indent=2) if args.json else table(data))
    if stopped is not None:
        report.error(stopped.code, f"The batch stopped: {stopped} What finished is kept; "
                     "run the same command to resume.")
        return stopped.exit_code
    if run.tally.interrupted:
        return exit_status(ErrorCode.CANCELLED.value)
    if run.tally.failures:
        return exit_status(run.tally.failures[0]["code"])
    return 0


def _output(args: argparse.Namespace) -> tuple[Path, str | None]:
    """(local folder for the record and the files, remote output URL or None)."""
    import hashlib

    from bridge.batch import storage

    given = storage.local_path(str(args.out))
    if not storage.is_remote(given):
        return Path(os.path.abspath(os.path.expanduser(given))), None
    url = given.rstrip("/")
    storage.filesystem(url)  # a missing fsspec package is reported before anything runs
    if args.work is not None:
        return Path(os.path.abspath(args.work)), url
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return settings.cache_root() / "batch" / key, url


def _executor(args: argparse.Namespace, out: Path, out_url: str | None) -> Any:
    if args.ray is None:
        from bridge.batch.local import LocalExecutor

        return LocalExecutor(options_of(args, out_url), out)
    from bridge.batch.cluster import RayExecutor

    return RayExecutor(options_of(args, out_url), out, address=args.ray,
                       workers=args.workers, cpus_per_worker=args.cpus_per_worker)


def _write_summary(out: Path, data: dict[str, Any], out_url: str | None = None) -> None:
    from protocol.files import write_json_atomic

    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / SUMMARY_NAME, data)
    except OSError as exc:
        report.warning(f"could not write the summary into {out}: {exc.strerror or exc}.")
        return
    if out_url is not None:
        from bridge.batch import storage
        from engine.errors import StorageError

        try:
            storage.publish(out, out_url, [SUMMARY_NAME], keep_local=True)
        except StorageError as err:
            report.warning(f"could not upload the summary: {err}")
