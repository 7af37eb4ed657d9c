"""The server's `master` requests (`/stembridge/master`): checked, queued and run on one
worker thread of their own, with `job/accepted`, `job/progress` (percent) and
`master/done` or `error` pushes, in that order. A master job's folder is
``<output root>/<job id>/``; it holds ``<name>.master.<ext>`` and ``<name>.master.json``.

`MasterJobs.handle` is the server's handler for the address; `MasterJobs.cancel` answers
a `cancel` that names a master job.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import ErrorCode
from protocol.messages import (
    Accepted,
    ErrorMsg,
    JobError,
    JobSummary,
    MasterDone,
    MasterRequest,
    Payload,
    Progress,
    ProtocolError,
)

log = logging.getLogger("stembridge.server")

Addr = tuple[str, int]
Send = Callable[[Addr | None, Payload], None]


@dataclass
class MasterRecord:
    id: str
    request: MasterRequest
    reply_to: Addr
    folder: Path
    state: str = "queued"
    percent: int = 0
    error: JobError | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def summary(self) -> JobSummary:
        return JobSummary(self.id, self.state, self.request.source, self.percent, 100, -1.0,
                          str(self.folder), self.error)


class MasterJobs:
    """Master jobs of one server: `send` pushes, `root` the server's output root,
    `engine` the warm engine (stem-aware masters separate with it)."""

    def __init__(self, send: Send, root: Path, engine: Any) -> None:
        self.send, self.root, self.engine = send, root, engine
        self.jobs: dict[str, MasterRecord] = {}
        self._queue: queue.Queue[MasterRecord | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ requests

    def _folder_root(self, req: MasterRequest) -> Path:
        root = self.root.resolve()
        if req.output_root is None:
            return root
        wanted = Path(req.output_root)
        wanted = (wanted if wanted.is_absolute() else root / wanted).resolve()
        if wanted != root and root not in wanted.parents:
            raise ProtocolError(f"output_root must lie inside the server's output root {root}",
                                code=ErrorCode.INVALID_ARGUMENT)
        return wanted

    @staticmethod
    def _refusal(req: MasterRequest) -> tuple[ErrorCode, str] | None:
        for name, value in (("source", req.source), ("reference", req.reference)):
            if value is None:
                continue
            path = Path(value)
            if not path.is_absolute():
                return ErrorCode.INVALID_ARGUMENT, f"{name} must be an absolute path."
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                return ErrorCode.INPUT_MISSING, f"Cannot read {path}: it {what}."
        return None

    def handle(self, req: MasterRequest, addr: Addr) -> None:
        """Check, then accept and queue (or answer with `error`)."""
        reply_to = (addr[0], req.reply_port or addr[1])
        refusal = self._refusal(req)
        if refusal is not None:
            self.send(reply_to, ErrorMsg("", req.request_id, refusal[0], refusal[1]))
            return
        root = self._folder_root(req)
        job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        folder = root / job_id
        folder.mkdir(parents=True)
        rec = MasterRecord(job_id, req, reply_to, folder)
        with self._lock:
            self.jobs[job_id] = rec
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="master-worker",
                                                daemon=True)
                self._thread.start()
        self.send(reply_to, Accepted(req.request_id, job_id, str(folder)))
        self._queue.put(rec)

    def cancel(self, job: str, addr: Addr) -> bool:
        """Cancel master job `job` (True: it is one of ours; answered with its summary
        now if it had not started, else when it has stopped)."""
        rec = self.jobs.get(job)
        if rec is None:
            return False
        rec.cancelled.set()
        if rec.state == "queued":
            self._fail(rec, ErrorCode.CANCELLED, "The master was cancelled before it started.")
        self.send(addr, rec.summary())
        return True

    def stop(self) -> None:
        """Cancel every job and end the worker (the server is stopping)."""
        for rec in list(self.jobs.values()):
            rec.cancelled.set()
        self._queue.put(None)

    # ------------------------------------------------------------------ the worker

    def _fail(self, rec: MasterRecord, code: ErrorCode, message: str) -> None:
        if rec.state in ("done", "failed", "cancelled"):
            return
        rec.state = "cancelled" if code is ErrorCode.CANCELLED else "failed"
        rec.error = JobError(code.value, message)
        self.send(rec.reply_to, ErrorMsg(rec.id, rec.request.request_id, code, message))

    def _work(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                return
            if rec.state != "queued":
                continue
            try:
                self._run(rec)
            except Exception as exc:  # never take the server down
                from engine.errors import StembridgeError

                if isinstance(exc, StembridgeError):
                    self._fail(rec, exc.code, str(exc))
                else:
                    log.exception("master job %s crashed", rec.id)
                    self._fail(rec, ErrorCode.INTERNAL, f"Internal error: {exc}")

    def _run(self, rec: MasterRecord) -> None:
        from engine.errors import CancelledError
        from engine.mastering.job import MasterOptions, master_file

        rec.state = "running"
        req = rec.request
        options = MasterOptions(
            preset=req.preset, platform=req.platform,
            reference=Path(req.reference) if req.reference else None,
            target_lufs=req.target_lufs, true_peak_db=req.true_peak_db, amount=req.amount,
            stem_aware=req.stem_aware, format=req.format, bit_depth=req.bit_depth,
            sample_rate=req.sample_rate, out_dir=rec.folder)

        def check() -> None:
            if rec.cancelled.is_set():
                raise CancelledError("The master was cancelled.")

        def progress(frac: float, what: str) -> None:
            pct = int(round(100 * frac))
            if pct != rec.percent:
                rec.percent = pct
                self.send(rec.reply_to, Progress(rec.id, pct, 100, -1.0))

        result = master_file(req.path, options, engine=self.engine, check=check,
                             on_progress=progress)
        rep = result.report
        a, b = rep["input_analysis"], rep["output_analysis"]
        rec.state, rec.percent = "done", 100
        self.send(rec.reply_to, MasterDone(
            job=rec.id, file=str(result.output), report=str(result.report_path),
            lufs_before=_loudness(a), lufs_after=_loudness(b),
            true_peak_before=a["peaks"]["true_peak_dbtp"],
            true_peak_after=b["peaks"]["true_peak_dbtp"],
            lra_before=a["loudness"]["lra_lu"], lra_after=b["loudness"]["lra_lu"],
            passes=len(rep["passes"]), warnings=list(rep["warnings"])))


def _loudness(analysis: dict[str, Any]) -> float | None:
    loud = analysis["loudness"]
    return loud["integrated_lufs"] if loud["integrated_defined"] else loud["ungated_lufs"]
