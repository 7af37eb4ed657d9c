"""`stembridge serve`: the warm engine process that DAW scripts and other clients talk to.

This module is the server's configuration, lifecycle and request dispatch. One UDP
socket (`bridge.udp.UdpEndpoint`) speaks the protocol of `protocol.messages`; requests
are checked, typed and answered here; jobs go to `bridge.jobs` (records, queue, the one
worker thread) and are executed by `bridge.joboutput` (files, shared memory, pushes).

Every datagram gets an answer: malformed or unknown ones are counted, logged and answered
with ``/stembridge/error``; nothing a client sends can stop the server, except a
(token-checked) ``/stembridge/shutdown``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import discovery
from bridge.housekeeping import DEFAULT_REGIONS_GRACE_S, Housekeeper
from bridge.joboutput import checkpoint, fail, run_job, write_manifest
from bridge.jobs import (
    INDEX,
    Addr,
    JobQueue,
    JobRecord,
    Worker,
    index_add,
    priority_of,
    recover,
)
from bridge.udp import UdpEndpoint
from protocol import PROTOCOL_VERSION, settings
from protocol.errors import ErrorCode, lookup
from protocol.files import MANIFEST
from protocol.jobfiles import DiscoveryRecord
from protocol.messages import (
    PUSHES,
    REQUEST_TYPES,
    Accepted,
    Address,
    Cancel,
    ErrorMsg,
    Hello,
    JobsReply,
    Message,
    Payload,
    Ping,
    Pong,
    ProtocolError,
    Release,
    ServerStatus,
    SplitRequest,
    Status,
    Welcome,
    decode,
    payload,
)

log = logging.getLogger("stembridge.server")

DEFAULT_PORT = settings.DEFAULT_PORT
CAPABILITIES = ["split", "cancel", "status", "jobs", "files", "start_at", "section", "shm",
                "release", "shutdown", "format", "output"]


def default_output_root() -> Path:
    """``$STEMBRIDGE_OUTPUT_ROOT``, else ``<cache>/jobs`` (read at call time)."""
    return settings.output_root()


def _fits(message: Payload) -> bool:
    """Whether `message` encodes to one datagram (`protocol.messages.MAX_DATAGRAM`)."""
    try:
        message.encode()
    except ProtocolError:
        return False
    return True


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
        port: UDP port; 0 picks a free one (written to the discovery record).
        token: shared secret every request must carry (None: none needed, loopback only).
        output_root: every job folder lives under it; requests cannot write elsewhere.
        max_jobs_per_client: queued + running jobs one client (the address its
            requests come from, whatever its `reply_port`) may have.
        max_active_jobs: queued + running jobs of all clients together.
        max_records: finished jobs kept in memory for `status`/`jobs` (oldest forgotten
            first; their folders stay).
        jobs_max_bytes: budget of the finished job folders (oldest removed first; 0:
            unbounded); see `bridge.housekeeping`.
        regions_grace_s: seconds a done job keeps its region files.
        write_discovery: publish a discovery record (tests with several servers turn it
            off).
        jobs: jobs run at once, each on a worker thread of its own (priorities as
            before); 0: 4 on a CUDA engine (its batcher merges their windows), else 1 (on
            a CPU, jobs at once only share the same cores).
    """

    host: str = settings.DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    output_root: Path = field(default_factory=default_output_root)
    max_jobs_per_client: int = 8
    max_active_jobs: int = 64
    max_records: int = 500
    jobs_max_bytes: int = field(default_factory=settings.jobs_max_bytes)
    regions_grace_s: float = DEFAULT_REGIONS_GRACE_S
    write_discovery: bool = True
    jobs: int = 0


class StembridgeServer:
    """The OSC server. `start()` binds and starts threads; `stop()` shuts down cleanly
    (also on a ``shutdown`` request); `wait()` blocks until a stop was requested."""

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
        self.queue = JobQueue()
        self._stop = threading.Event()  # a stop was requested
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._udp: UdpEndpoint | None = None
        self._workers: list[Worker] = []
        self._housekeeping = threading.Lock()
        self._record: DiscoveryRecord | None = None
        self.started = time.time()
        self._handlers: dict[str, Callable[[Any, Addr], None]] = {
            Address.HELLO: self._on_hello, Address.PING: self._on_ping,
            Address.SPLIT: self._on_split, Address.CANCEL: self._on_cancel,
            Address.STATUS: self._on_status, Address.JOBS: self._on_jobs,
            Address.RELEASE: self._on_release, Address.SHUTDOWN: self._on_shutdown}
        from bridge.masterjobs import MasterJobs  # the `master` request (mastering)

        self.masters = MasterJobs(self.send, config.output_root, engine)
        self._handlers[Address.MASTER] = self.masters.handle

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> Addr:
        assert self._udp is not None
        return self._udp.address

    def start(self) -> StembridgeServer:
        from engine.models.registry import all_specs

        all_specs()  # import the registry now, not on the receive thread
        self._udp = UdpEndpoint(self.config.host, self.config.port, name="osc-receive")
        self.config.output_root.mkdir(parents=True, exist_ok=True)
        for rec in recover(self.config.output_root):
            self.jobs[rec.id] = rec
            self.queue.put(rec)
        self._workers = [Worker(self.queue, self.jobs, self._run, self._crashed,
                                name=f"stembridge-engine-{i}").start()
                         for i in range(self.job_slots())]
        self._udp.start(self._handle, on_error=self._internal_error)
        if self.config.write_discovery:
            self._publish()
        log.info("listening on %s:%d", *self.address)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop receiving; the running job finishes its current region and is
        checkpointed (its manifest stays resumable, queued ones stay queued); shared
        memory is released; the discovery record is removed. Idempotent."""
        self._stop.set()
        with self._stop_lock:
            if self._stopped.is_set():
                return
            with self.queue.cond:
                for rec in self.jobs.values():
                    if rec.state == "running" and rec.cancel is not None:
                        rec.stopping = True
                        rec.cancel.cancel()
            self.queue.close()
            self.masters.stop()
            deadline = time.monotonic() + timeout
            for worker in self._workers:
                worker.join(max(0.0, deadline - time.monotonic()))
            stop_batching = getattr(self.engine, "stop_batching", None)
            if stop_batching is not None:  # windows still waiting fail: jobs checkpoint
                stop_batching()
            for rec in self.jobs.values():
                if rec.shm is not None:
                    rec.shm.unlink()
                    rec.shm = None
            if self._udp is not None:
                self._udp.stop()
            if self._record is not None:
                discovery.withdraw(self._record)
            self._stopped.set()

    def job_slots(self) -> int:
        """Jobs run at once (`ServerConfig.jobs`, resolved for the engine's device)."""
        if self.config.jobs > 0:
            return self.config.jobs
        device = getattr(self.engine, "device", None)
        return 4 if getattr(device, "type", "cpu") == "cuda" else 1

    def wait(self) -> None:
        """Block until a stop is requested (signal, `shutdown` or `stop()`)."""
        while not self._stop.wait(0.5):
            pass

    def _publish(self) -> None:
        from engine import __version__

        host, port = self.address
        self._record = DiscoveryRecord(
            host=host, port=port, pid=os.getpid(), version=__version__,
            protocol=PROTOCOL_VERSION, started=self.started,
            token_required=bool(self.config.token),
            output_root=str(self.config.output_root))
        discovery.publish(self._record)

    # ------------------------------------------------------------------ sending

    def send(self, addr: Addr | None, message: Payload) -> None:
        """Send `message` to `addr` (None: a recovered job's client is gone)."""
        if addr is None or self._udp is None:
            return
        try:
            data = message.encode()
        except ProtocolError:
            log.exception("could not encode %s", message.ADDRESS)
            return
        self._udp.send(data, addr)

    def _error(self, addr: Addr, code: ErrorCode, message: str, *, job: str = "",
               request_id: int = -1) -> None:
        self.send(addr, ErrorMsg(job, request_id, code, message))

    # ------------------------------------------------------------------ receiving

    def _internal_error(self, addr: Addr) -> None:
        self.stats["internal"] += 1
        self._error(addr, ErrorCode.INTERNAL, "Internal server error; see the server log.")

    def _authorized(self, msg: Message, data: dict[str, Any] | None) -> bool:
        if not self.config.token:
            return True
        given = data.get("token") if data else None
        if given is None and msg.args and isinstance(msg.args[-1], str):
            given = msg.args[-1]
        if not isinstance(given, str):
            return False
        # bytes, not str: compare_digest refuses non-ASCII strings
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                   self.config.token.encode("utf-8", "surrogatepass"))

    def _handle(self, data: bytes, addr: Addr) -> None:
        self.stats["received"] += 1
        try:
            msg = decode(data)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            log.info("malformed datagram from %s: %s", addr, exc)
            self._error(addr, ErrorCode.BAD_MESSAGE, f"Malformed OSC message: {exc}")
            return
        if msg.address in PUSHES:
            # never answer a push: two peers (or a spoofed sender) would ping-pong forever
            self.stats["ignored"] += 1
            return
        kind = REQUEST_TYPES.get(msg.address)
        if kind is None:
            self.stats["unknown"] += 1
            log.info("unknown address %r from %s", msg.address, addr)
            self._error(addr, ErrorCode.UNKNOWN_ADDRESS,
                        f"Unknown address {msg.address!r}; see PROTOCOL.md.")
            return
        body: dict[str, Any] | None = None
        try:
            if msg.address == Address.SPLIT and msg.args and isinstance(msg.args[0], str):
                body = SplitRequest.payload_from_args(msg.args)
            elif kind.ARGS is None:
                body = payload(msg)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            self._error(addr, lookup(exc.code), f"{msg.address}: {exc}")
            return
        if not self._authorized(msg, body):
            self.stats["unauthorized"] += 1
            self._error(addr, ErrorCode.UNAUTHORIZED, "Missing or wrong token.")
            return
        if self.config.token and body is None and msg.args and isinstance(msg.args[-1], str):
            msg = Message(msg.address, msg.args[:-1])  # handlers never see the token
        try:
            request = kind.from_payload(body) if body is not None else kind.from_args(msg.args)
            self._handlers[msg.address](request, addr)
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            rid = body.get("request_id") if body else None
            port = body.get("reply_port") if body else None
            to = (addr[0], port) if type(port) is int and 0 < port < 65536 else addr
            self._error(to, lookup(exc.code), f"{msg.address}: {exc}",
                        request_id=rid if type(rid) is int else -1)
            return
        self.stats["handled"] += 1

    # ------------------------------------------------------------------ handlers

    def _on_hello(self, request: Hello, addr: Addr) -> None:
        from engine import __version__
        from engine.models.registry import model_names

        self.send(addr, Welcome(
            engine_version=__version__, protocol_version=PROTOCOL_VERSION,
            models_available=model_names(self.engine.config.resolved_models_dir()),
            models_loaded=self.engine.loaded_models(),
            device=str(self.engine.device), precision=self.engine.precision,
            capabilities=list(CAPABILITIES), output_root=str(self.config.output_root)))

    def _on_ping(self, request: Ping, addr: Addr) -> None:
        self.send(addr, Pong(request.nonce))

    def _output_root(self, req: SplitRequest) -> Path:
        root = self.config.output_root.resolve()
        if req.output_root is None:
            return root
        wanted = Path(req.output_root)
        wanted = (wanted if wanted.is_absolute() else root / wanted).resolve()
        bad = ErrorCode.INVALID_ARGUMENT
        if wanted != root and root not in wanted.parents:
            raise ProtocolError(f"output_root must lie inside the server's output root {root}",
                                code=bad)
        if wanted.exists() and not wanted.is_dir():
            raise ProtocolError(f"output_root {wanted} is a file, not a folder; choose a "
                                "folder name", code=bad)
        for folder in [wanted, *wanted.parents]:
            if folder == root:
                break
            if (folder / MANIFEST).exists() or folder.name == INDEX:
                raise ProtocolError(f"output_root {wanted} lies inside the job folder "
                                    f"{folder}; choose a folder outside job folders",
                                    code=bad)
        return wanted

    def _refusal(self, req: SplitRequest) -> tuple[ErrorCode, str] | None:
        """Why `req` cannot run, found before it is accepted: a source that is not an
        existing file, an unknown model, stems the model cannot give."""
        from engine.errors import StembridgeError
        from engine.separator import check_request

        source = req.path
        if not source.is_absolute():
            return ErrorCode.INVALID_ARGUMENT, "source must be an absolute path."
        if not source.is_file():
            what = "is not a file" if source.exists() else "does not exist"
            return ErrorCode.INPUT_MISSING, f"Cannot read {source}: it {what}."
        root = self.engine.config.resolved_models_dir()
        try:
            if req.model and req.model.startswith("ensemble:"):
                from engine.models.stemmixer import folder_of

                folder = folder_of(req.model, root).resolve()
                if not folder.is_relative_to(Path(root).resolve()):
                    return ErrorCode.INVALID_ARGUMENT, (
                        f"The server runs trained ensembles from its models folder {root} "
                        "only: put the mixer's folder there and name it ensemble:NAME.")
            check_request(req, root)
        except StembridgeError as err:
            return err.code, str(err)
        return None

    def _on_split(self, req: SplitRequest, addr: Addr) -> None:
        reply_to = (addr[0], req.reply_port or addr[1])
        refusal = self._refusal(req)
        if refusal is not None:
            self._error(reply_to, refusal[0], refusal[1], request_id=req.request_id)
            return
        root = self._output_root(req)
        with self.queue.cond:
            busy = self._too_busy(addr)
            if busy:
                self._error(reply_to, ErrorCode.TOO_MANY_JOBS, busy,
                            request_id=req.request_id)
                return
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
            folder = root / job_id
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                self._error(reply_to, ErrorCode.OUTPUT_FAILED,
                            f"Cannot create the job folder in {root}: {exc.strerror}.",
                            request_id=req.request_id)
                return
            rec = JobRecord(job_id, req, reply_to, folder, priority_of(req), client=addr)
            self.jobs[job_id] = rec
            self._forget_old()
        # Manifest and `accepted` first, then queue: a job's pushes never precede them.
        write_manifest(rec, state="queued")
        index_add(self.config.output_root, rec)
        self.send(reply_to, Accepted(req.request_id, job_id, str(folder)))
        self.queue.put(rec)

    def _too_busy(self, client: Addr) -> str:
        """Why `client` may not queue another job now ("" when it may). Under
        `queue.cond`."""
        active = [r for r in self.jobs.values() if r.active]
        mine = sum(1 for r in active if r.client == client)
        if mine >= self.config.max_jobs_per_client:
            return (f"This client already has {mine} jobs queued or running (the limit "
                    "per client); wait for one to finish or cancel one.")
        if len(active) >= self.config.max_active_jobs:
            return (f"The server already has {len(active)} jobs queued or running (its "
                    "limit); wait for some to finish, then send the job again.")
        return ""

    def _forget_old(self) -> None:
        """Drop the oldest finished records beyond `config.max_records` (their folders
        and manifests stay). Under `queue.cond`."""
        finished = [r for r in self.jobs.values() if not r.active]
        extra = len(finished) - self.config.max_records
        if extra > 0:
            for rec in sorted(finished, key=lambda r: r.created)[:extra]:
                if rec.shm is None and not rec.cancel_replies:
                    del self.jobs[rec.id]

    def _on_cancel(self, request: Cancel, addr: Addr) -> None:
        """Answered with the state after the cancel: at once for a job that is not
        running; for a running one when the worker has stopped it."""
        with self.queue.cond:
            rec = self.jobs.get(request.job)
            if rec is None:
                if not self.masters.cancel(request.job, addr):
                    self._error(addr, ErrorCode.UNKNOWN_JOB, f"No job {request.job!r}.",
                                job=request.job)
                return
            was_queued = rec.state == "queued"
            if was_queued:
                rec.state = "cancelled"
            elif rec.state == "running" and rec.cancel is not None:
                rec.cancel_replies.append(addr)
                rec.cancel.cancel()
                return
        if was_queued:
            fail(rec, ErrorCode.CANCELLED, "The job was cancelled before it started.",
                 self.send)
        self.send(addr, rec.summary())

    def _on_status(self, request: Status, addr: Addr) -> None:
        if request.job:
            rec = self.jobs.get(request.job) or self.masters.jobs.get(request.job)
            if rec is None:
                self._error(addr, ErrorCode.UNKNOWN_JOB, f"No job {request.job!r}.",
                            job=request.job)
                return
            self.send(addr, rec.summary())
            return
        self.send(addr, self._server_status())

    def _server_status(self) -> ServerStatus:
        jobs = list(self.jobs.values())
        return ServerStatus(
            state="stopping" if self._stop.is_set() else "running", pid=os.getpid(),
            uptime=time.time() - self.started,
            queued=sum(r.state == "queued" for r in jobs),
            running=sum(r.state == "running" for r in jobs),
            models_loaded=self.engine.loaded_models(), stats=dict(self.stats))

    def _on_release(self, request: Release, addr: Addr) -> None:
        """Free a job's shared memory (its files stay)."""
        rec = self.jobs.get(request.job)
        if rec is None:
            self._error(addr, ErrorCode.UNKNOWN_JOB, f"No job {request.job!r}.",
                        job=request.job)
            return
        if rec.shm is not None and rec.state != "running":
            rec.shm.unlink()
            rec.shm = None
        self.send(addr, rec.summary())

    def _on_jobs(self, request: Any, addr: Addr) -> None:
        """The 50 newest jobs, oldest first; the oldest of them are left out (and
        counted) while the reply would not fit one datagram."""
        jobs = sorted(self.jobs.values(), key=lambda r: r.created)[-50:]
        reply = JobsReply([r.summary() for r in jobs])
        while reply.jobs and not _fits(reply):
            reply = JobsReply(reply.jobs[1:], reply.left_out + 1)
        self.send(addr, reply)

    def _on_shutdown(self, request: Any, addr: Addr) -> None:
        """Answer `stopping`, then stop on another thread (this is the receive thread)."""
        log.info("shutdown requested by %s", addr)
        self._stop.set()
        self.send(addr, self._server_status())
        threading.Thread(target=self.stop, name="stembridge-stop", daemon=True).start()

    # ------------------------------------------------------------------ jobs

    def _run(self, rec: JobRecord) -> None:
        try:
            run_job(rec, self.engine, self.send)
        finally:
            self._answer_cancels(rec)
            self.housekeeping()

    def housekeeping(self) -> None:
        """Keep finished job folders within their budget (`bridge.housekeeping`); the
        records of removed folders are forgotten."""
        with self.queue.cond:
            records = list(self.jobs.values())
        keeper = Housekeeper(self.config.jobs_max_bytes, self.config.regions_grace_s)
        try:
            with self._housekeeping:  # one sweep at a time (several workers)
                removed = keeper.sweep(records)
        except OSError:
            log.exception("housekeeping failed")
            return
        with self.queue.cond:
            for rec in removed:
                self.jobs.pop(rec.id, None)

    def _crashed(self, rec: JobRecord, exc: Exception) -> None:
        if rec.stopping:
            checkpoint(rec, self.send)
        else:
            fail(rec, ErrorCode.INTERNAL, f"Internal error: {exc}", self.send)
        self._answer_cancels(rec)

    def _answer_cancels(self, rec: JobRecord) -> None:
        with self.queue.cond:
            waiting, rec.cancel_replies = rec.cancel_replies, []
        for addr in waiting:
            self.send(addr, rec.summary())
