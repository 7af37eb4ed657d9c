"""`stembridge serve`: the warm engine process that DAW scripts and other clients talk to.

One UDP socket speaks the OSC protocol of `protocol.messages`; a worker thread runs jobs
one at a time on the warm `engine.separator.Engine` (interactive before batch, then in
arrival order) and streams each finalized region to the client:

* as a push message (``/stembridge/job/region``) to the client's reply address, and
* as files (the data plane for clients without sockets, e.g. REAPER's Lua): per job a
  folder ``<output root>/<job id>/`` with one new WAV per finalized region and stem under
  ``regions/<stem>/`` (never rewritten: a DAW may hold it open), ``manifest.json``
  (atomically replaced after every region) and, at the end, one consolidated
  ``<stem>.wav`` per stem. Layout: PROTOCOL.md, "Files".

Every datagram gets an answer: malformed or unknown ones are counted, logged and answered
with ``/stembridge/error``; nothing a client sends can stop the server.
"""

from __future__ import annotations

import contextlib
import heapq
import hmac
import ipaddress
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.files import (
    MANIFEST,
    cache_root,
    discovery_path,
    region_file,
    runtime_dir,
    write_json_atomic,
)
from protocol.messages import (
    MAX_DATAGRAM,
    PUSHES,
    REQUESTS,
    Address,
    Message,
    ProtocolError,
    SplitRequestMsg,
    decode,
    encode,
    payload,
)

log = logging.getLogger("stembridge.server")

DEFAULT_PORT = 47800


def default_output_root() -> Path:
    env = os.environ.get("STEMBRIDGE_OUTPUT_ROOT")
    return Path(env).expanduser() if env else cache_root() / "jobs"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class ServerConfig:
    """How the server listens and where it writes.

    Attributes:
        host: bind address; anything but loopback requires `token`.
        port: UDP port; 0 picks a free one (written to the discovery file).
        token: shared secret every request must carry (None: none needed, loopback only).
        output_root: every job folder lives under it; requests cannot write elsewhere.
        max_jobs_per_client: queued + running jobs one reply address may have.
        write_discovery: write the discovery file (tests with several servers turn it off).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    output_root: Path = field(default_factory=default_output_root)
    max_jobs_per_client: int = 8
    write_discovery: bool = True


@dataclass
class JobRecord:
    """Server-side state of one job (also what `status` reports)."""

    id: str
    request: SplitRequestMsg
    reply_to: tuple[str, int] | None
    folder: Path
    priority: int
    state: str = "queued"  # queued | running | done | failed | cancelled
    regions_done: int = 0
    regions_total: int = 0
    eta: float | None = None
    error: dict[str, str] | None = None
    resume: list[dict[str, Any]] = field(default_factory=list)
    shm: Any = None
    manifest: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    cancel: Any = None
    source_stat: tuple[int, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"job": self.id, "state": self.state, "source": self.request.source,
                "regions_done": self.regions_done, "regions_total": self.regions_total,
                "eta": -1.0 if self.eta is None else float(self.eta),
                "folder": str(self.folder), "error": self.error}


class StembridgeServer:
    """The OSC server. `start()` binds and starts threads; `stop()` shuts down cleanly."""

    def __init__(self, config: ServerConfig, engine: Any = None) -> None:
        if not is_loopback(config.host) and not config.token:
            raise ValueError(
                f"Refusing to listen on {config.host} without a token: anyone on the network "
                "could use this machine. Pass --token SECRET (clients must send it), or "
                "bind 127.0.0.1.")
        self.config = config
        if engine is None:
            from engine.separator import Engine

            engine = Engine()
        self.engine = engine
        self.stats = {"received": 0, "handled": 0, "malformed": 0, "unknown": 0,
                      "unauthorized": 0, "internal": 0, "ignored": 0}
        self.jobs: dict[str, JobRecord] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._send_lock = threading.Lock()
        self.started = time.time()

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> StembridgeServer:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # absorb bursts of requests
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((self.config.host, self.config.port))
        sock.settimeout(0.2)
        self._sock = sock
        self.config.output_root.mkdir(parents=True, exist_ok=True)
        self._recover()
        for target, name in ((self._receive_loop, "osc-receive"), (self._work_loop, "engine")):
            t = threading.Thread(target=target, name=f"stembridge-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.config.write_discovery:
            self._write_discovery()
        log.info("listening on %s:%d", *self.address)
        return self

    def _recover(self) -> None:
        """Re-queue the jobs a previous server left unfinished (crash, kill -9, power
        loss): they resume from the regions their manifests list as final."""
        root = self.config.output_root
        for manifest in sorted(root.glob(f"*/{MANIFEST}")):
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                if data.get("state") not in ("queued", "running"):
                    continue
                req = SplitRequestMsg.from_payload(
                    {k: v for k, v in data["request"].items() if v is not None})
            except (OSError, ValueError, KeyError, ProtocolError) as exc:
                log.warning("cannot recover %s: %s", manifest, exc)
                continue
            job_id = manifest.parent.name
            for stale in manifest.parent.glob(".*.tmp*"):  # the dead process's temp files
                stale.unlink(missing_ok=True)
            for stale in manifest.parent.glob(".stembridge-tmp-*"):
                stale.unlink(missing_ok=True)
            rec = JobRecord(job_id, req, None, manifest.parent,
                            0 if req.priority == "interactive" else 1,
                            resume=list(data.get("regions") or []), manifest=data)
            if data.get("source_stat"):
                rec.source_stat = tuple(data["source_stat"])  # type: ignore[assignment]
            self.jobs[job_id] = rec
            heapq.heappush(self._queue, (rec.priority, next(self._seq), job_id))
            log.info("resuming job %s (%d regions already final)", job_id, len(rec.resume))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving, cancel the running job (its files stay for later pick-up),
        join the threads, remove the discovery file."""
        self._stop.set()
        with self._cond:
            for rec in self.jobs.values():
                if rec.state == "running" and rec.cancel is not None:
                    rec.cancel.cancel()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        for rec in self.jobs.values():
            if rec.shm is not None:
                rec.shm.unlink()
                rec.shm = None
        if self._sock is not None:
            self._sock.close()
        if self.config.write_discovery:
            try:
                data = json.loads(discovery_path().read_text(encoding="utf-8"))
                if data.get("pid") == os.getpid():
                    discovery_path().unlink()
            except (OSError, ValueError):
                pass

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def _write_discovery(self) -> None:
        from engine import __version__

        host, port = self.address
        folder = runtime_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            folder.chmod(0o700)
        write_json_atomic(discovery_path(), {
            "host": host, "port": port, "pid": os.getpid(), "version": __version__,
            "protocol": PROTOCOL_VERSION, "started": self.started,
            "token_required": bool(self.config.token),
            "output_root": str(self.config.output_root)})

    # ------------------------------------------------------------------ sending

    def send(self, addr: tuple[str, int] | None, address: str, *args: Any) -> None:
        if addr is None:  # a job recovered after a restart: its client is gone
            return
        try:
            data = encode(address, *args)
        except ProtocolError:
            log.exception("could not encode %s", address)
            return
        with self._send_lock:
            try:
                assert self._sock is not None
                self._sock.sendto(data, addr)
            except OSError as exc:  # the client went away: the job goes on
                log.debug("send to %s failed: %s", addr, exc)

    def _error(self, addr: tuple[str, int], code: str, message: str, *,
               job: str = "", request_id: int = -1) -> None:
        self.send(addr, Address.ERROR, {"job": job, "request_id": request_id, "code": code,
                                        "message": message})

    # ------------------------------------------------------------------ receiving

    def _receive_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.stats["received"] += 1
            try:
                self._handle(data, addr[:2])
            except Exception:  # a bug must never take the server down
                self.stats["internal"] += 1
                log.exception("internal error handling a datagram from %s", addr)
                self._error(addr[:2], "internal", "Internal server error; see the server log.")

    def _authorized(self, msg: Message, data: dict[str, Any] | None) -> bool:
        if not self.config.token:
            return True
        given = data.get("token") if data else None
        if given is None and msg.args and isinstance(msg.args[-1], str):
            given = msg.args[-1]
        return isinstance(given, str) and hmac.compare_digest(given, self.config.token)

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = decode(data)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            log.info("malformed datagram from %s: %s", addr, exc)
            self._error(addr, "bad_message", f"Malformed OSC message: {exc}")
            return
        if msg.address in PUSHES:
            # never answer a push: two peers (or a spoofed sender) would ping-pong forever
            self.stats["ignored"] += 1
            return
        if msg.address not in REQUESTS:
            self.stats["unknown"] += 1
            log.info("unknown address %r from %s", msg.address, addr)
            self._error(addr, "unknown_address",
                        f"Unknown address {msg.address!r}; see PROTOCOL.md.")
            return
        body: dict[str, Any] | None = None
        try:
            if msg.address == Address.SPLIT and msg.args and isinstance(msg.args[0], str):
                body = SplitRequestMsg.payload_from_args(msg.args)
            elif msg.address in (Address.HELLO, Address.SPLIT):
                body = payload(msg)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            self._error(addr, exc.code, f"{msg.address}: {exc}")
            return
        if not self._authorized(msg, body):
            self.stats["unauthorized"] += 1
            self._error(addr, "unauthorized", "Missing or wrong token.")
            return
        if self.config.token and body is None and msg.args and isinstance(msg.args[-1], str):
            msg = Message(msg.address, msg.args[:-1])  # handlers never see the token
        handler = {
            Address.HELLO: self._on_hello, Address.PING: self._on_ping,
            Address.SPLIT: self._on_split, Address.CANCEL: self._on_cancel,
            Address.STATUS: self._on_status, Address.JOBS: self._on_jobs,
            Address.RELEASE: self._on_release,
        }[msg.address]
        try:
            handler(msg, body, addr)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            rid = body.get("request_id") if body else None
            port = body.get("reply_port") if body else None
            to = (addr[0], port) if type(port) is int and 0 < port < 65536 else addr
            self._error(to, exc.code, f"{msg.address}: {exc}",
                        request_id=rid if type(rid) is int else -1)
            return
        self.stats["handled"] += 1

    # ------------------------------------------------------------------ handlers

    def _on_hello(self, msg: Message, body: dict[str, Any] | None, addr: tuple[str, int]) -> None:
        from engine import __version__
        from engine.models.registry import all_specs

        self.send(addr, Address.WELCOME, {
            "engine_version": __version__, "protocol_version": PROTOCOL_VERSION,
            "models_available": list(all_specs()),
            "models_loaded": self.engine.loaded_models(),
            "device": str(self.engine.device), "precision": self.engine.precision,
            "capabilities": ["split", "cancel", "status", "jobs", "files", "start_at",
                             "section", "shm", "release"],
            "output_root": str(self.config.output_root)})

    def _on_ping(self, msg: Message, body: Any, addr: tuple[str, int]) -> None:
        nonce = msg.args[0] if msg.args and isinstance(msg.args[0], int) else 0
        self.send(addr, Address.PONG, nonce)

    def _output_root(self, req: SplitRequestMsg) -> Path:
        root = self.config.output_root.resolve()
        if req.output_root is None:
            return root
        wanted = Path(req.output_root)
        wanted = (wanted if wanted.is_absolute() else root / wanted).resolve()
        if wanted != root and root not in wanted.parents:
            raise ProtocolError(f"output_root must lie inside the server's output root {root}",
                                code="invalid_argument")
        return wanted

    def _on_split(self, msg: Message, body: dict[str, Any] | None, addr: tuple[str, int]
                  ) -> None:
        assert body is not None
        req = SplitRequestMsg.from_payload(body)
        reply_to = (addr[0], req.reply_port or addr[1])
        source = Path(req.source)
        if not source.is_absolute():
            self._error(reply_to, "invalid_argument", "source must be an absolute path.",
                        request_id=req.request_id)
            return
        root = self._output_root(req)
        with self._cond:
            active = sum(1 for r in self.jobs.values()
                         if r.reply_to == reply_to and r.state in ("queued", "running"))
            if active >= self.config.max_jobs_per_client:
                self._error(reply_to, "too_many_jobs",
                            f"This client already has {active} jobs queued or running; "
                            "wait for one to finish or cancel one.",
                            request_id=req.request_id)
                return
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
            folder = root / job_id
            folder.mkdir(parents=True)
            rec = JobRecord(job_id, req, reply_to, folder,
                            0 if req.priority == "interactive" else 1)
            self.jobs[job_id] = rec
        # Manifest and `accepted` first, then queue: a job's pushes never precede them.
        self._write_manifest(rec, {"state": "queued"})
        self.send(reply_to, Address.ACCEPTED, {"request_id": req.request_id, "job": job_id,
                                               "folder": str(folder)})
        with self._cond:
            heapq.heappush(self._queue, (rec.priority, next(self._seq), job_id))
            self._cond.notify_all()

    def _on_cancel(self, msg: Message, body: Any, addr: tuple[str, int]) -> None:
        job_id = msg.args[0] if msg.args and isinstance(msg.args[0], str) else ""
        with self._cond:
            rec = self.jobs.get(job_id)
            if rec is None:
                self._error(addr, "unknown_job", f"No job {job_id!r}.", job=job_id)
                return
            was_queued = rec.state == "queued"
            if was_queued:
                rec.state = "cancelled"
            elif rec.state == "running" and rec.cancel is not None:
                rec.cancel.cancel()
        if was_queued:
            self._fail(rec, "cancelled", "The job was cancelled before it started.")
        self.send(addr, Address.STATUS_REPLY, rec.summary())

    def _on_status(self, msg: Message, body: Any, addr: tuple[str, int]) -> None:
        job_id = msg.args[0] if msg.args and isinstance(msg.args[0], str) else ""
        if job_id:
            rec = self.jobs.get(job_id)
            if rec is None:
                self._error(addr, "unknown_job", f"No job {job_id!r}.", job=job_id)
                return
            self.send(addr, Address.STATUS_REPLY, rec.summary())
            return
        self.send(addr, Address.STATUS_REPLY, {
            "state": "running", "pid": os.getpid(), "uptime": time.time() - self.started,
            "queued": sum(r.state == "queued" for r in self.jobs.values()),
            "running": sum(r.state == "running" for r in self.jobs.values()),
            "models_loaded": self.engine.loaded_models(), "stats": dict(self.stats)})

    def _on_release(self, msg: Message, body: Any, addr: tuple[str, int]) -> None:
        """Free a job's shared memory (its files stay)."""
        job_id = msg.args[0] if msg.args and isinstance(msg.args[0], str) else ""
        rec = self.jobs.get(job_id)
        if rec is None:
            self._error(addr, "unknown_job", f"No job {job_id!r}.", job=job_id)
            return
        if rec.shm is not None and rec.state != "running":
            rec.shm.unlink()
            rec.shm = None
        self.send(addr, Address.STATUS_REPLY, rec.summary())

    def _on_jobs(self, msg: Message, body: Any, addr: tuple[str, int]) -> None:
        jobs = sorted(self.jobs.values(), key=lambda r: r.created)[-50:]
        self.send(addr, Address.JOBS_REPLY, {"jobs": [r.summary() for r in jobs]})

    # ------------------------------------------------------------------ jobs

    def _work_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                _prio, _seq, job_id = heapq.heappop(self._queue)
                rec = self.jobs[job_id]
                if rec.state != "queued":
                    continue
                from engine.chunking import CancelToken

                rec.state = "running"
                rec.cancel = CancelToken()
            try:
                self._run(rec)
            except Exception as exc:  # never let one job kill the worker
                log.exception("job %s failed", rec.id)
                self._fail(rec, "internal", f"Internal error: {exc}")

    def _fail(self, rec: JobRecord, code: str, message: str) -> None:
        rec.state = "cancelled" if code == "cancelled" else "failed"
        rec.error = {"code": code, "message": message}
        self._write_manifest(rec, {"state": rec.state, "error": rec.error})
        self._error(rec.reply_to, code, message, job=rec.id, request_id=rec.request.request_id)

    def _write_manifest(self, rec: JobRecord, update: dict[str, Any],
                        regions: list[dict[str, Any]] | None = None) -> None:
        with rec.lock:
            self._write_manifest_locked(rec, update, regions)

    def _write_manifest_locked(self, rec: JobRecord, update: dict[str, Any],
                               regions: list[dict[str, Any]] | None) -> None:
        if rec.manifest is None:
            rec.manifest = {"protocol": PROTOCOL_VERSION, "job": rec.id,
                            "source": rec.request.source,
                            "request": rec.request.to_payload() | {"token": None},
                            "regions": [], "final": None}
        rec.manifest.update(update)
        if regions is not None:
            rec.manifest["regions"] = regions
        rec.manifest["updated"] = time.time()
        write_json_atomic(rec.folder / MANIFEST, rec.manifest)

    @staticmethod
    def _drop_shm(rec: JobRecord) -> None:
        if rec.shm is not None:
            rec.shm.finish(False)
            rec.shm.unlink()
            rec.shm = None

    def _reload_regions(self, rec: JobRecord, writers: dict[str, Any]
                        ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Put a recovered job's finished region files back into the stem writers.
        Returns the manifest entries kept and their frame ranges; a region whose files
        are missing or unreadable is dropped (and recomputed)."""
        import soundfile as sf

        kept: list[dict[str, Any]] = []
        for entry in rec.resume:
            try:
                files = entry["files"]
                if set(files) != set(writers):
                    continue
                data = {}
                for stem, rel in files.items():
                    path = (rec.folder / rel).resolve()
                    if rec.folder.resolve() not in path.parents:
                        raise ValueError(f"region file outside the job folder: {rel}")
                    arr, _sr = sf.read(str(path), dtype="float32", always_2d=True)
                    if arr.shape[0] != entry["end"] - entry["start"]:
                        raise ValueError(f"{rel} has {arr.shape[0]} frames")
                    data[stem] = arr.T
            except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
                log.warning("job %s: dropping region %s (%s)", rec.id, entry, exc)
                continue
            for stem, arr in data.items():
                writers[stem].write(int(entry["start"]), arr)
            kept.append(entry)
        return kept, [(int(e["start"]), int(e["end"])) for e in kept]

    def _run(self, rec: JobRecord) -> None:
        from engine.audio import StemFileWriter, write_audio
        from engine.errors import StembridgeError
        from engine.separator import SplitRequest

        req = rec.request
        source = Path(req.source)
        try:
            st = source.stat()
            if rec.resume and rec.source_stat is not None and \
                    tuple(rec.source_stat) != (st.st_size, st.st_mtime_ns):
                self._fail(rec, ErrorCode.SOURCE_CHANGED.value,
                           f"{source} changed since the job started; split it again.")
                return
            rec.source_stat = (st.st_size, st.st_mtime_ns)
            job = self.engine.prepare(SplitRequest(
                source, stems=req.stems, model=req.model, start_at=req.start_at,
                section_start=req.section_start, section_length=req.section_length))
        except StembridgeError as err:
            self._fail(rec, err.code.value, str(err))
            return
        except OSError as exc:
            self._fail(rec, "input_missing", f"Cannot read {source}: {exc}")
            return
        stems = list(job.stem_names)
        self._write_manifest(rec, {
            "state": "running", "stems": stems, "samplerate": job.samplerate,
            "channels": job.channels, "frames": job.frames,
            "source_stat": list(rec.source_stat)})
        for s in stems:
            (rec.folder / "regions" / s).mkdir(parents=True, exist_ok=True)
        writers = {s: StemFileWriter(rec.folder, job.frames, job.channels, job.samplerate)
                   for s in stems}
        if job.samplerate != job.spec.samplerate:
            rec.resume = []  # resampled output: regions are recomputed (see Job.run)
        regions, resume = self._reload_regions(rec, writers)
        shm_info = None
        if req.shm:
            from protocol.shm import ShmWriter

            try:
                rec.shm = ShmWriter(rec.id[-8:], len(stems), job.channels, job.frames,
                                    job.samplerate)
            except OSError as exc:
                for w in writers.values():
                    w.abort()
                self._fail(rec, "output_failed", f"Cannot create shared memory: {exc}")
                return
            shm_info = {"index": rec.shm.index_name,
                        "blocks": {st: rec.shm.names[i] for i, st in enumerate(stems)}}
        self.send(rec.reply_to, Address.STARTED, {
            "job": rec.id, "stems": stems, "samplerate": job.samplerate,
            "channels": job.channels, "frames": job.frames, "folder": str(rec.folder),
            "shm": shm_info})

        def progress(p: Any) -> None:
            rec.regions_done, rec.regions_total, rec.eta = p.regions_done, p.regions_total, p.eta
            self.send(rec.reply_to, Address.PROGRESS, rec.id, int(p.regions_done),
                      int(p.regions_total), float(-1.0 if p.eta is None else p.eta))

        try:
            for region in job.run(cancel=rec.cancel, on_progress=progress, resume=resume):
                files = {}
                for s, arr in region.stems.items():
                    writers[s].write(region.start, arr)
                    rel = region_file(s, region.start, region.end)
                    write_audio(rec.folder / rel, arr, job.samplerate)
                    files[s] = rel
                if rec.shm is not None:
                    for i, st in enumerate(stems):
                        rec.shm.write(i, region.start, region.stems[st])
                    rec.shm.publish(region.start, region.end)
                entry = {"start": region.start, "end": region.end, "files": files}
                regions.append(entry)
                self._write_manifest(rec, {}, regions)
                self.send(rec.reply_to, Address.REGION, {
                    "job": rec.id, "start": region.start, "end": region.end,
                    "samplerate": job.samplerate, "start_s": region.start_seconds,
                    "end_s": region.end_seconds,
                    "files": {s: str(rec.folder / f) for s, f in files.items()}})
            try:
                st = source.stat()
            except OSError as exc:
                raise StembridgeError(f"{source} disappeared while it was being separated "
                                      f"({exc}).", code=ErrorCode.INPUT_MISSING) from exc
            if (st.st_size, st.st_mtime_ns) != rec.source_stat:
                raise StembridgeError(f"{source} changed while it was being separated; "
                                      "split it again.", code=ErrorCode.SOURCE_CHANGED)
            final = {}
            for s, w in writers.items():
                w.commit(rec.folder / f"{s}.wav")
                final[s] = f"{s}.wav"
        except StembridgeError as err:
            for w in writers.values():
                w.abort()
            self._drop_shm(rec)
            self._fail(rec, err.code.value, str(err))
            return
        except BaseException:
            for w in writers.values():
                w.abort()
            self._drop_shm(rec)
            raise
        if rec.shm is not None:
            rec.shm.finish(True)
        assert job.result is not None
        meta = job.result.metadata
        rec.state = "done"
        self._write_manifest(rec, {"state": "done", "final": final, "metadata": meta})
        self.send(rec.reply_to, Address.DONE, {
            "job": rec.id, "files": {s: str(rec.folder / f) for s, f in final.items()},
            "manifest": str(rec.folder / MANIFEST), "metadata": _jsonable(meta)})


def _jsonable(value: Any) -> Any:
    """Metadata as msgpack-friendly plain types (no None inside lists is needed)."""
    return json.loads(json.dumps(value, default=str))
