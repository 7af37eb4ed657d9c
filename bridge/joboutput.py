"""A job's outputs: its manifest, stem writers, region files, shared memory and pushes.

`run_job` executes one job on the engine and writes, per finalized region, one WAV per
stem under ``regions/<stem>/`` (never rewritten), the shared-memory blocks (with
``shm``), the manifest (atomically replaced) and the ``job/region`` push, in that order;
at the end the consolidated ``<stem>.<format>`` files (at the request's `sample_rate`,
`normalize`d, in its `format` and `bit_depth`: `engine.audio.output`; regions stay at the
source's rate, unscaled, as float WAV) and ``job/done``, whose metadata's ``output``
states the files' rate, frames and gain.
Layout: PROTOCOL.md, "Files". Everything of a job runs on its worker thread, so a job's
pushes are always in order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.housekeeping import clean_failed
from bridge.jobs import Addr, JobRecord, index_remove
from protocol import settings
from protocol.errors import ErrorCode
from protocol.files import MANIFEST, region_file, write_json_atomic
from protocol.jobfiles import Manifest, ManifestRegion
from protocol.messages import (
    Done,
    ErrorMsg,
    JobError,
    Payload,
    Progress,
    RegionDone,
    ShmInfo,
    Started,
)

log = logging.getLogger("stembridge.server")

#: How the server sends a push: ``send(reply_to, message)`` (reply_to None: nowhere).
Send = Callable[[Addr | None, Payload], None]


def write_manifest(rec: JobRecord, **changes: Any) -> None:
    """Apply `changes` to the job's manifest and replace ``manifest.json`` atomically."""
    with rec.lock:
        if rec.manifest is None:
            rec.manifest = Manifest(job=rec.id, source=str(rec.request.source),
                                    request=rec.request, state=rec.state)
        for key, value in changes.items():
            setattr(rec.manifest, key, value)
        rec.manifest.updated = time.time()
        write_json_atomic(rec.folder / MANIFEST, rec.manifest.to_payload())


def fail(rec: JobRecord, code: ErrorCode, message: str, send: Send) -> None:
    """End the job as `failed` (or `cancelled`): manifest, then the `error` push."""
    end = "cancelled" if code is ErrorCode.CANCELLED else "failed"
    rec.error = JobError(code.value, message)
    write_manifest(rec, state=end, error=rec.error)
    rec.finished = time.time()
    index_remove(rec)
    clean_failed(rec)
    rec.state = end  # seen as ended only once its manifest and folder are final
    send(rec.reply_to, ErrorMsg(rec.id, rec.request.request_id, code, message))


def checkpoint(rec: JobRecord, send: Send) -> None:
    """The server stops under a running job: its manifest stays `running` with every
    region final so far (the next server resumes it); the client hears why."""
    rec.state = "queued"
    regions = len(rec.manifest.regions) if rec.manifest is not None else 0
    send(rec.reply_to, ErrorMsg(
        rec.id, rec.request.request_id, ErrorCode.NOT_RUNNING,
        f"The server stopped; the job resumes from its {regions} finished regions when a "
        "server starts again."))


def _reload_regions(rec: JobRecord, writers: dict[str, Any]) -> list[ManifestRegion]:
    """Put a recovered job's finished region files back into the stem writers; returns
    the entries kept. A region whose files are missing or unreadable is dropped (and
    recomputed)."""
    import soundfile as sf

    kept: list[ManifestRegion] = []
    for entry in rec.resume:
        try:
            if set(entry.files) != set(writers):
                continue
            data = {}
            for stem, rel in entry.files.items():
                path = (rec.folder / rel).resolve()
                if rec.folder.resolve() not in path.parents:
                    raise ValueError(f"region file outside the job folder: {rel}")
                arr, _sr = sf.read(str(path), dtype="float32", always_2d=True)
                if arr.shape[0] != entry.end - entry.start:
                    raise ValueError(f"{rel} has {arr.shape[0]} frames")
                data[stem] = arr.T
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            log.warning("job %s: dropping region %s (%s)", rec.id, entry, exc)
            continue
        for stem, arr in data.items():
            writers[stem].write(entry.start, arr)
        kept.append(entry)
    return kept


def prepare_unblocked(engine: Any, request: Any, cancel: Any) -> Any:
    """``engine.prepare(request)`` (probe, decode, checks) on a thread of its own, so a
    read that blocks (a FIFO or a stalled drive swapped in for the source) never blocks
    the worker: a cancel (`cancel`, a `CancelToken`) or the read timeout
    (``engine.config.limits.read_timeout``) fails the job at once and the worker goes on;
    the abandoned thread closes its job if it ever finishes."""
    from engine.errors import CancelledError, InputError

    done = threading.Event()
    box: dict[str, Any] = {}
    abandoned = threading.Event()

    def work() -> None:
        try:
            box["job"] = engine.prepare(request)
        except BaseException as exc:  # handed to the waiting worker
            box["error"] = exc
        finally:
            done.set()
            if abandoned.is_set() and "job" in box:
                box["job"].close()

    threading.Thread(target=work, name="stembridge-decode", daemon=True).start()
    limits = getattr(getattr(engine, "config", None), "limits", None)
    timeout = float(limits.read_timeout) if limits is not None else settings.read_timeout()
    deadline = time.monotonic() + timeout
    while not done.wait(0.05):
        if cancel is not None and cancel.cancelled:
            abandoned.set()
            raise CancelledError("The job was cancelled while its source was being read.")
        if time.monotonic() > deadline:
            abandoned.set()
            raise InputError(f"Reading {request.source} took longer than {timeout:.0f} s (a "
                             "pipe, a device or a stalled drive?); copy the audio to a local "
                             "file first.", code=ErrorCode.INPUT_UNREADABLE)
    if "error" in box:
        raise box["error"]
    return box["job"]


def _source_stat(source: Path) -> tuple[int, int]:
    st = source.stat()
    return st.st_size, st.st_mtime_ns


class _Run:
    """One execution of a job (see `run_job`)."""

    def __init__(self, rec: JobRecord, engine: Any, send: Send) -> None:
        self.rec = rec
        self.engine = engine
        self.send = send
        self.job: Any = None
        self.writers: dict[str, Any] = {}
        self.regions: list[ManifestRegion] = []
        self.kept = 0  # regions a resumed job took over from its manifest
        self.output: dict[str, Any] = {}  # what `commit` wrote: format, rate, gain

    def prepare(self) -> bool:
        """Check the source, prepare the engine job; False when the job failed."""
        from engine.errors import StembridgeError

        rec, source = self.rec, self.rec.request.path
        try:
            stat = _source_stat(source)
            if rec.resume and rec.source_stat is not None and rec.source_stat != stat:
                fail(rec, ErrorCode.SOURCE_CHANGED,
                     f"{source} changed since the job started; split it again.", self.send)
                return False
            rec.source_stat = stat
            self.job = prepare_unblocked(self.engine, rec.request, rec.cancel)
            self.job.label = rec.id  # names the job's windows to the engine's batcher
        except StembridgeError as err:
            if rec.stopping and err.code is ErrorCode.CANCELLED:
                checkpoint(rec, self.send)
            else:
                fail(rec, err.code, str(err), self.send)
            return False
        except OSError as exc:
            fail(rec, ErrorCode.INPUT_MISSING, f"Cannot read {source}: {exc}", self.send)
            return False
        return True

    def open(self) -> bool:
        """Manifest `running`, stem writers (refilled from a resumed job's regions),
        shared memory, `job/started`; False when the job failed."""
        from engine.audio import StemFileWriter

        rec, job = self.rec, self.job
        stems = list(job.stem_names)
        assert rec.source_stat is not None
        write_manifest(rec, state="running", stems=stems, samplerate=job.samplerate,
                       channels=job.channels, frames=job.frames,
                       source_stat=list(rec.source_stat))
        for s in stems:
            (rec.folder / "regions" / s).mkdir(parents=True, exist_ok=True)
        self.writers = {s: StemFileWriter(rec.folder, job.frames, job.channels,
                                          job.samplerate) for s in stems}
        if job.samplerate != job.spec.samplerate:
            rec.resume = []  # resampled output: regions are recomputed (see Job.run)
        self.regions = _reload_regions(rec, self.writers)
        self.kept = rec.regions_done = len(self.regions)
        shm_info = None
        if rec.request.shm:
            from protocol.shm import ShmWriter

            try:
                rec.shm = ShmWriter(rec.id[-8:], len(stems), job.channels, job.frames,
                                    job.samplerate)
            except OSError as exc:
                self.abort()
                fail(rec, ErrorCode.OUTPUT_FAILED, f"Cannot create shared memory: {exc}",
                     self.send)
                return False
            shm_info = ShmInfo(rec.shm.index_name,
                               {st: list(rec.shm.names[i]) for i, st in enumerate(stems)})
        self.send(rec.reply_to, Started(rec.id, stems, job.samplerate, job.channels,
                                        job.frames, str(rec.folder), shm_info))
        return True

    def progress(self, p: Any) -> None:
        rec = self.rec
        rec.regions_done = self.kept + int(p.regions_done)
        rec.regions_total = max(int(p.regions_total), rec.regions_done)
        rec.eta = p.eta
        self.send(rec.reply_to, Progress(rec.id, rec.regions_done, rec.regions_total,
                                         float(-1.0 if p.eta is None else p.eta)))

    def region(self, region: Any) -> None:
        """Files, shared memory, manifest, then the push: a region the client hears of
        is final everywhere."""
        from engine.audio import write_audio

        rec, job = self.rec, self.job
        files = {}
        for s, arr in region.stems.items():
            self.writers[s].write(region.start, arr)
            rel = region_file(s, region.start, region.end)
            write_audio(rec.folder / rel, arr, job.samplerate)
            files[s] = rel
        if rec.shm is not None:
            for i, st in enumerate(job.stem_names):
                rec.shm.write(i, region.start, region.stems[st])
            rec.shm.publish(region.start, region.end)
        self.regions.append(ManifestRegion(region.start, region.end, files))
        write_manifest(rec, regions=list(self.regions))
        self.send(rec.reply_to, RegionDone(
            rec.id, region.start, region.end, job.samplerate, region.start_seconds,
            region.end_seconds, {s: str(rec.folder / f) for s, f in files.items()}))

    def commit(self) -> dict[str, str]:
        """The consolidated files, once the source is checked unchanged."""
        from engine.errors import StembridgeError

        rec, source = self.rec, self.rec.request.path
        try:
            stat = _source_stat(source)
        except OSError as exc:
            raise StembridgeError(f"{source} disappeared while it was being separated "
                                  f"({exc}).", code=ErrorCode.INPUT_MISSING) from exc
        if stat != rec.source_stat:
            raise StembridgeError(f"{source} changed while it was being separated; "
                                  "split it again.", code=ErrorCode.SOURCE_CHANGED)
        from engine.audio.output import OutputOptions, finish_stems, subtype_for

        req = rec.request
        options = OutputOptions(req.format, subtype_for(req.format, req.bit_depth,
                                                        req.mp3_quality),
                                req.sample_rate, req.normalize)
        paths = {s: rec.folder / f"{s}.{req.format}" for s in self.writers}
        written = finish_stems(self.writers, paths, options)
        self.output = {"format": req.format, "subtype": options.subtype,
                       **written.metadata()}
        return {s: path.name for s, path in written.files.items()}

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
        rec = self.rec
        if rec.shm is not None:
            rec.shm.finish(False)
            rec.shm.unlink()
            rec.shm = None

    def finish(self, final: dict[str, str]) -> None:
        rec = self.rec
        if rec.shm is not None:
            rec.shm.finish(True)
        assert self.job.result is not None
        meta = dict(self.job.result.metadata, output=self.output)
        rec.regions_done = rec.regions_total = max(rec.regions_total, len(self.regions))
        rec.eta = 0.0
        # The manifest is durable before anyone can see the job as done.
        write_manifest(rec, state="done", final=final, metadata=_jsonable(meta))
        rec.state = "done"
        rec.finished = time.time()
        index_remove(rec)
        self.send(rec.reply_to, Done(
            rec.id, {s: str(rec.folder / f) for s, f in final.items()},
            str(rec.folder / MANIFEST), _jsonable(meta)))


def run_job(rec: JobRecord, engine: Any, send: Send) -> None:
    """Run `rec` (state `running`) to `done`, `failed` or `cancelled`; when the server is
    stopping (`rec.stopping`), an interruption is a checkpoint instead."""
    from engine.errors import StembridgeError

    run = _Run(rec, engine, send)
    if not run.prepare() or not run.open():
        return
    resume = [(e.start, e.end) for e in run.regions]
    try:
        for region in run.job.run(cancel=rec.cancel, on_progress=run.progress,
                                  resume=resume):
            run.region(region)
        final = run.commit()
    except StembridgeError as err:
        run.abort()
        if rec.stopping and err.code is ErrorCode.CANCELLED:
            checkpoint(rec, send)
        else:
            fail(rec, err.code, str(err), send)
        return
    except BaseException:
        run.abort()
        raise
    run.finish(final)


def _jsonable(value: Any) -> Any:
    """Metadata as msgpack/JSON-friendly plain types."""
    return json.loads(json.dumps(value, default=str))
