"""Jobs of `stembridge serve`: their records, the priority queue and the worker loop.

A `JobRecord` is the server's state of one job (what `status` reports). The `JobQueue`
hands queued jobs to the `Worker` threads (one by default; `ServerConfig.jobs`),
interactive before batch, then in arrival order. `recover` turns the manifests an earlier server left unfinished back into records.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import allocator
from protocol.files import MANIFEST, remove_stale_temps
from protocol.jobfiles import Manifest, ManifestRegion
from protocol.messages import JobError, JobSummary, ProtocolError, SplitRequest

log = logging.getLogger("stembridge.server")

Addr = tuple[str, int]
#: The client key of a recovered job (its client is gone).
NO_CLIENT: Addr = ("", 0)


def priority_of(request: SplitRequest) -> int:
    """Queue rank: 0 interactive, 1 batch (lower runs first; the engine's batcher ranks
    windows the same way)."""
    from engine.batcher import rank

    return rank(request.priority)


@dataclass
class JobRecord:
    """Server-side state of one job.

    Attributes:
        reply_to: where the job's pushes go (None: a recovered job, its client is gone).
        client: the address the `split` came from: per-client limits and the queue's
            round-robin are keyed by it (None: a recovered job).
        resume: regions a previous server made final (a recovered job).
        regions_done, regions_total: progress counters, including the resumed regions.
        eta: seconds left (None: unknown).
        stopping: the server is shutting down: an interruption is a checkpoint, not a
            cancel (the manifest stays resumable).
        cancel_replies: addresses whose `cancel` is answered once the job has stopped.
        finished: Unix time the job became done, failed or cancelled.
    """

    id: str
    request: SplitRequest
    reply_to: Addr | None
    folder: Path
    priority: int
    state: str = "queued"  # queued | running | done | failed | cancelled
    regions_done: int = 0
    regions_total: int = 0
    eta: float | None = None
    error: JobError | None = None
    resume: list[ManifestRegion] = field(default_factory=list)
    shm: Any = None
    manifest: Manifest | None = None
    created: float = field(default_factory=time.time)
    cancel: Any = None
    source_stat: tuple[int, int] | None = None
    stopping: bool = False
    cancel_replies: list[Addr] = field(default_factory=list)
    client: Addr | None = None
    index_entry: Path | None = None
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def summary(self) -> JobSummary:
        return JobSummary(job=self.id, state=self.state, source=str(self.request.source),
                          regions_done=self.regions_done, regions_total=self.regions_total,
                          eta=-1.0 if self.eta is None else float(self.eta),
                          folder=str(self.folder), error=self.error)


class JobQueue:
    """Queued job ids: interactive before batch; within a priority, round-robin between
    clients (one job of each client in turn), each client's jobs in arrival order. So a
    client that queued 30 jobs delays another client's job by at most one job. `cond`
    also guards the records' states."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        # priority -> client -> its queued job ids; dict order is the round-robin turn
        self._lanes: dict[int, dict[Addr, deque[str]]] = {}
        self._closed = False

    def put(self, rec: JobRecord) -> None:
        with self.cond:
            lane = self._lanes.setdefault(rec.priority, {})
            lane.setdefault(rec.client or NO_CLIENT, deque()).append(rec.id)
            self.cond.notify_all()

    def __len__(self) -> int:
        with self.cond:
            return sum(len(q) for lane in self._lanes.values() for q in lane.values())

    def _pop(self, records: dict[str, JobRecord]) -> JobRecord | None:
        """The next queued record; ids of jobs no longer queued (cancelled) are dropped
        without using up their client's turn."""
        for priority in sorted(self._lanes):
            lane = self._lanes[priority]
            while lane:
                client = next(iter(lane))
                ids = lane.pop(client)
                while ids:
                    rec = records.get(ids.popleft())
                    if rec is not None and rec.state == "queued":
                        if ids:
                            lane[client] = ids  # to the back of the turn
                        return rec
        return None

    def get(self, records: dict[str, JobRecord]) -> JobRecord | None:
        """The next queued job, now `running` with a cancel token; None once closed."""
        from engine.chunking import CancelToken

        with self.cond:
            while not self._closed and (rec := self._pop(records)) is None:
                self.cond.wait(0.5)
            if self._closed or rec is None:
                return None
            rec.state = "running"
            rec.cancel = CancelToken()
            return rec

    def close(self) -> None:
        """Wake the worker and make `get` return None (queued jobs stay queued)."""
        with self.cond:
            self._closed = True
            self.cond.notify_all()


class Worker:
    """An engine thread: runs `run(rec)` for each job `queue` hands out; an exception
    `run` lets through goes to `on_crash` and the loop goes on. Several workers may share
    one queue (jobs at once); each job runs on one of them from start to end."""

    def __init__(self, queue: JobQueue, records: dict[str, JobRecord],
                 run: Callable[[JobRecord], None],
                 on_crash: Callable[[JobRecord, Exception], None],
                 name: str = "stembridge-engine") -> None:
        self.queue = queue
        self.records = records
        self.run = run
        self.on_crash = on_crash
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Worker:
        self.thread.start()
        return self

    def _loop(self) -> None:
        while True:
            rec = self.queue.get(self.records)
            if rec is None:
                return
            try:
                self.run(rec)
            except Exception as exc:  # never let one job kill the worker
                log.exception("job %s failed", rec.id)
                self.on_crash(rec, exc)
            if self._idle():  # do not hold the job's peak memory
                allocator.release()

    def _idle(self) -> bool:
        """No job queued, none running (on another worker)."""
        with self.queue.cond:
            return not len(self.queue) and not any(
                r.state == "running" for r in self.records.values())

    def join(self, timeout: float) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout)


#: Folder of the output root holding one entry per unfinished job (its folder).
INDEX = ".unfinished"


def index_add(root: Path, rec: JobRecord) -> None:
    """Record `rec` as unfinished: ``<root>/.unfinished/<job id>`` names its folder
    (relative to `root`), so recovery finds jobs in sub-folders (``output_root``)."""
    from protocol.files import write_bytes_atomic

    index = root / INDEX
    index.mkdir(mode=0o700, exist_ok=True)
    rec.index_entry = index / rec.id
    write_bytes_atomic(rec.index_entry, str(rec.folder.relative_to(root.resolve())).encode())


def index_remove(rec: JobRecord) -> None:
    """The job finished (done, failed, cancelled): nothing left to recover."""
    if rec.index_entry is not None:
        rec.index_entry.unlink(missing_ok=True)
        rec.index_entry = None


def _unfinished_folders(root: Path) -> list[tuple[Path, Path | None]]:
    """``(job folder, index entry)`` of every job the index lists, then of the job
    folders directly under `root` (written before the index existed)."""
    out: list[tuple[Path, Path | None]] = []
    real = root.resolve()
    index = root / INDEX
    for entry in sorted(index.iterdir()) if index.is_dir() else []:
        try:
            folder = (root / entry.read_text(encoding="utf-8").strip()).resolve()
        except (OSError, ValueError):
            continue
        if real in folder.parents:
            out.append((folder, entry))
        else:
            entry.unlink(missing_ok=True)
    listed = {f for f, _ in out}
    out += [(p.parent.resolve(), None) for p in sorted(root.glob(f"*/{MANIFEST}"))
            if p.parent.resolve() not in listed]
    return out


def recover(root: Path) -> list[JobRecord]:
    """Records of the jobs under `root` whose manifests say `queued` or `running` (left by
    a server that crashed, was killed or stopped), found through the index and in
    `root`'s own sub-folders: they resume from the regions their manifests list as
    final. Temporary files of the dead writer are removed."""
    out = []
    for folder, entry in _unfinished_folders(root):
        path = folder / MANIFEST
        try:
            manifest = Manifest.from_payload(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ProtocolError) as exc:
            if entry is not None:
                log.warning("cannot recover %s: %s", path, exc)
                entry.unlink(missing_ok=True)
            continue
        if not manifest.resumable:
            if entry is not None:
                entry.unlink(missing_ok=True)
            continue
        for stale in folder.glob(".*.tmp*"):  # older versions' temporary names
            stale.unlink(missing_ok=True)
        remove_stale_temps(folder)
        for stem_folder in (folder / "regions").glob("*"):  # a region write cut short
            if stem_folder.is_dir():
                remove_stale_temps(stem_folder)
        rec = JobRecord(folder.name, manifest.request, None, folder,
                        priority_of(manifest.request), resume=list(manifest.regions),
                        manifest=manifest, regions_done=len(manifest.regions))
        rec.index_entry = entry
        if manifest.source_stat and len(manifest.source_stat) == 2:
            rec.source_stat = (manifest.source_stat[0], manifest.source_stat[1])
        out.append(rec)
        log.info("resuming job %s (%d regions already final)", rec.id, len(rec.resume))
    return out
