"""A small client of `stembridge serve` (never imports torch: starts in milliseconds).

    with Client.connect() as c:                  # discovery file, or start the server
        job = c.split("/abs/song.wav", stems=4, start_at=30.0)
        for msg in c.events(job):                # progress, region, done / error
            ...
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge import discovery
from protocol import settings
from protocol.errors import EXIT_SERVER_ERROR, ErrorCode, exit_status
from protocol.files import MANIFEST, runtime_dir, write_json_atomic
from protocol.jobfiles import ReplyFile, RequestFile
from protocol.messages import (
    MAX_DATAGRAM,
    PUSH_TYPES,
    Address,
    Cancel,
    Done,
    ErrorMsg,
    Hello,
    Jobs,
    JobsReply,
    Message,
    Payload,
    Ping,
    Progress,
    ProtocolError,
    RegionDone,
    Release,
    Shutdown,
    SplitRequest,
    Started,
    Status,
    decode,
    encode,
    status_reply,
)


class ClientError(Exception):
    """The server answered with an error, or did not answer. `code` as on the wire."""

    def __init__(self, code: str | ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: str = code.value if isinstance(code, ErrorCode) else code

    @property
    def exit_code(self) -> int:
        """The CLI exit status for this error (see `client_exit_status`)."""
        return client_exit_status(self.code)


def client_exit_status(code: str) -> int:
    """The exit status of a client command that got error `code`: the table's status for
    every code this version knows (an engine error such as ``input_missing`` gives 3, a
    refusal such as ``unauthorized`` 12, no server 11); a code this version does not know
    is the server's error, 12."""
    if code in ErrorCode._value2member_map_:
        return exit_status(code)
    return EXIT_SERVER_ERROR


def read_discovery(port: int | None = None) -> dict[str, Any] | None:
    """The discovery record (host, port, pid, ...) of the live server on `port`, or of
    the default server when no port is given; None when there is none. Records of dead
    processes are ignored (and removed)."""
    record = discovery.find(port)
    return None if record is None else record.to_payload()


def parse_push(msg: Message) -> Payload:
    """The typed form of a push (`ProtocolError` when it is not a valid one)."""
    if msg.address == Address.STATUS_REPLY:
        return status_reply(msg)
    kinds = PUSH_TYPES.get(msg.address)
    if kinds is None:
        raise ProtocolError(f"{msg.address} is not a push")
    return kinds[0].from_message(msg)


class Client:
    """One UDP socket on loopback talking to one server."""

    def __init__(self, host: str | None = None, port: int | None = None, *,
                 token: str | None = None, timeout: float = 5.0) -> None:
        """`host`/`port`/`token` default to ``STEMBRIDGE_HOST``/``STEMBRIDGE_PORT``/
        ``STEMBRIDGE_TOKEN`` (read now), else 127.0.0.1, `settings.DEFAULT_PORT`, none.
        `timeout`: seconds to wait for each answer."""
        host = host or settings.host()
        port = settings.port() if port is None else int(port)
        self.server = (host, port)
        self.token = token if token is not None else settings.token()
        self.timeout = timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0)
                       if host in ("127.0.0.1", "::1", "localhost") else ("", 0))
        self._ids = itertools.count(1)
        self._pending: list[Message] = []

    @classmethod
    def connect(cls, *, host: str | None = None, port: int | None = None,
                token: str | None = None, start: bool = True, timeout: float = 5.0,
                start_timeout: float = 60.0, serve_args: tuple[str, ...] = ()) -> Client:
        """A client of the server at `host`:`port` when either is given (or set in
        ``STEMBRIDGE_HOST``/``STEMBRIDGE_PORT``); otherwise of the server in the discovery
        record, starting one (detached, with `serve_args`) if none answers and `start` is
        true. A server at an explicit address is never started here: start it with the
        same port. `token` defaults to ``STEMBRIDGE_TOKEN``."""
        if host is None and settings.get("STEMBRIDGE_HOST"):
            host = settings.host()
        if port is None and settings.get("STEMBRIDGE_PORT"):
            port = settings.port()
        if host is not None or port is not None:
            return cls(host, port, token=token, timeout=timeout)
        info = ensure_running(start_timeout, serve_args) if start else read_discovery()
        if info is None:
            raise ClientError(ErrorCode.NOT_RUNNING, "No stembridge server is running (no discovery "
                              f"record in {runtime_dir()}).")
        return cls(info.get("host") or settings.DEFAULT_HOST, int(info["port"]),
                   token=token, timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(encode(address, *args), self.server)

    def receive(self, timeout: float | None = None) -> Message:
        """The next message from the server (pending ones first)."""
        if self._pending:
            return self._pending.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(ErrorCode.TIMEOUT, f"No answer from the server at "
                                  f"{self.server[0]}:{self.server[1]}; is it running?")
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except ConnectionRefusedError as exc:
                raise ClientError(ErrorCode.NOT_RUNNING, "The server refused the connection; is "
                                  "it running? (`stembridge serve --detach`)") from exc
            try:
                return decode(data)
            except ProtocolError:
                continue

    def _expect(self, addresses: set[str], match: Any = None, timeout: float | None = None
                ) -> Message:
        """Wait for a message at one of `addresses` (errors raise), keeping others."""
        kept: list[Message] = []
        try:
            while True:
                msg = self.receive(timeout)
                if msg.address == Address.ERROR:
                    try:
                        err = ErrorMsg.from_message(msg)
                    except ProtocolError:
                        continue
                    # an error naming no job and no request answers what we just sent
                    generic = not err.job and err.request_id == -1
                    if generic or match is None or match(msg):
                        raise ClientError(err.code, err.message)
                if msg.address in addresses and (match is None or match(msg)):
                    return msg
                kept.append(msg)
        finally:
            self._pending[:0] = kept

    # ------------------------------------------------------------------ requests

    def _ask(self, request: Payload, reply: str, match: Any = None,
             timeout: float | None = None) -> Message:
        self.send(request.ADDRESS, *request.to_args())
        return self._expect({reply}, match, timeout)

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        nonce = next(self._ids)
        t0 = time.perf_counter()
        self._ask(Ping(nonce, self.token), Address.PONG,
                  lambda m: bool(m.args) and m.args[0] == nonce, timeout)
        return time.perf_counter() - t0

    def hello(self) -> dict[str, Any]:
        msg = self._ask(Hello(protocol=1, client="stembridge-python", token=self.token),
                        Address.WELCOME)
        return parse_push(msg).to_payload()

    def split(self, source: str | Path | SplitRequest, **options: Any) -> str:
        """Submit a job (`options` as for `submit`); returns its id once accepted."""
        return str(self.submit(source, **options)["job"])

    def submit(self, source: str | Path | SplitRequest, **options: Any) -> dict[str, Any]:
        """Submit a job: a `SplitRequest`, or a source path and the request's fields as
        keywords (``stems``, ``model``, ``start_at``, ``section_start``, ``shm``,
        ``format``...). Returns the `job/accepted` payload (request_id, job, folder)."""
        if isinstance(source, SplitRequest):
            req = replace(source, **options)
        else:
            req = SplitRequest(source=str(source), **options)
        rid = next(self._ids)
        req = replace(req, source=str(Path(req.source).resolve()), request_id=rid,
                      token=req.token or self.token)
        req.check()

        def mine(m: Message) -> bool:
            try:
                return parse_push(m).to_payload().get("request_id") == rid
            except (ProtocolError, IndexError):
                return False

        return parse_push(self._ask(req, Address.ACCEPTED, mine)).to_payload()

    def events(self, job: str, timeout: float = 600.0) -> Iterator[tuple[str, Any]]:
        """(kind, data) for `job` until done: ("started", payload), ("progress",
        (done, total, eta)), ("region", payload), then ("done", payload); an error raises
        ClientError."""
        kinds = {Started: "started", RegionDone: "region", Done: "done"}
        while True:
            msg = self.receive(timeout)
            if msg.address not in (Address.PROGRESS, Address.STARTED, Address.REGION,
                                   Address.DONE, Address.ERROR):
                continue
            try:
                push = parse_push(msg)
            except ProtocolError:
                continue
            if getattr(push, "job", None) != job:
                continue
            if isinstance(push, Progress):
                yield "progress", (push.regions_done, push.regions_total, push.eta)
            elif isinstance(push, ErrorMsg):
                raise ClientError(push.code, push.message)
            else:
                kind = kinds[type(push)]
                yield kind, push.to_payload()
                if kind == "done":
                    return

    def status(self, job: str = "") -> dict[str, Any]:
        return status_reply(self._ask(Status(job, self.token), Address.STATUS_REPLY)
                            ).to_payload()

    def cancel(self, job: str, timeout: float | None = None) -> dict[str, Any]:
        """Cancel `job`; returns its summary once it has stopped (a running job stops at
        its next batch of windows, so this waits up to ``max(timeout, 60)`` s)."""
        wait = max(self.timeout if timeout is None else timeout, 60.0)

        def answer(m: Message) -> bool:  # not the job's own `cancelled` error push
            if m.address != Address.ERROR:
                return True
            try:
                return ErrorMsg.from_message(m).code != ErrorCode.CANCELLED
            except ProtocolError:
                return False

        return status_reply(self._ask(Cancel(job, self.token), Address.STATUS_REPLY,
                                      answer, timeout=wait)).to_payload()

    def release(self, job: str) -> dict[str, Any]:
        """Free the job's shared memory on the server (its files stay)."""
        return status_reply(self._ask(Release(job, self.token), Address.STATUS_REPLY)
                            ).to_payload()

    def jobs(self) -> list[dict[str, Any]]:
        reply = parse_push(self._ask(Jobs(self.token), Address.JOBS_REPLY))
        assert isinstance(reply, JobsReply)
        return [j.to_payload() for j in reply.jobs]

    def shutdown(self) -> dict[str, Any]:
        """Ask the server to stop gracefully; returns its status (state `stopping`)."""
        return status_reply(self._ask(Shutdown(self.token), Address.STATUS_REPLY)
                            ).to_payload()


def _alive(info: dict[str, Any]) -> bool:
    """True when a server answers at the record's address. Any answer counts: a server
    that requires a token answers an unauthorized ping with an error, and is alive."""
    try:
        with Client(info.get("host") or settings.DEFAULT_HOST, int(info["port"]),
                    timeout=1.0) as c:
            c.ping()
        return True
    except ClientError as err:
        return err.code not in (ErrorCode.TIMEOUT.value, ErrorCode.NOT_RUNNING.value)
    except OSError:
        return False


def ensure_running(timeout: float = 60.0, serve_args: tuple[str, ...] = (),
                   port: int | None = None) -> dict[str, Any]:
    """The discovery record of a live server (the default one, or the one on `port`),
    starting a detached one if needed (on `port`, else on any free port). Idempotent: a
    second call finds the first one's server. `serve_args` (e.g. ``("--device",
    "cpu")``) only apply when this call has to start it."""
    info = read_discovery(port)
    if info is not None and _alive(info):
        return info
    log_dir = runtime_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "server.log", "ab") as log_file:
        port_args = () if "--port" in serve_args else ("--port", str(port or 0))
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", *port_args,
                                 *serve_args],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = discovery.find(port) if port is not None else next(
            (r for r in discovery.live_records() if r.pid == proc.pid), None)
        if mine is not None and mine.pid == proc.pid and _alive(mine.to_payload()):
            return mine.to_payload()
        if proc.poll() is not None:
            info = read_discovery(port)  # lost a race with another starter: use theirs
            if info is not None and _alive(info):
                return info
            raise ClientError(ErrorCode.START_FAILED, f"The server exited with "
                              f"{proc.returncode}; see {log_dir / 'server.log'}.")
        time.sleep(0.1)
    raise ClientError(ErrorCode.START_FAILED, f"The server did not start within "
                      f"{timeout:.0f}s; see {log_dir / 'server.log'}.")


def reply_path(request: Path) -> Path:
    """Where `submit --request` answers: ``x.json`` -> ``x.reply.json``."""
    return request.with_name(request.name.removesuffix(".json") + ".reply.json")


def submit_request_file(request: Path) -> int:
    """Submit the job described by a JSON request file (`protocol.jobfiles.RequestFile`:
    every split option) and answer in its reply file (`ReplyFile`).

    For clients that cannot speak UDP (REAPER's Lua): they write ``<name>.json``, launch
    ``stembridge submit --request <name>.json`` without waiting, and poll
    ``<name>.reply.json`` (written atomically). The reply goes through
    ``{"state": "launched"}`` (this process runs), then ``{"state": "accepted", "job",
    "folder", "manifest"}`` or ``{"state": "error", "code", "message"}``. Returns the exit
    status (0 accepted, else the code's)."""
    out = reply_path(request)

    def answer(state: str, **fields: Any) -> None:
        write_json_atomic(out, ReplyFile(state, os.getpid(), **fields).to_payload())

    def error(code: ErrorCode | str, message: str) -> int:
        answer("error", code=ErrorCode(code).value if isinstance(code, ErrorCode) else code,
               message=message)
        return client_exit_status(code.value if isinstance(code, ErrorCode) else code)

    answer("launched")
    try:
        return _submit_file(request, answer, error)
    except Exception as exc:  # the reply never stays `launched`
        return error(ErrorCode.INTERNAL, f"Internal error in submit --request: {exc!r}")


#: Largest request file read, bytes (a request is a few hundred bytes).
MAX_REQUEST_FILE_BYTES = 1 << 20


def read_request_file(request: Path) -> RequestFile:
    """The parsed request file: a regular file (checked on the opened descriptor, so a
    FIFO cannot block the read) of at most `MAX_REQUEST_FILE_BYTES`, JSON of bounded
    depth, an absolute source. Raises `ProtocolError` (``invalid_argument``)."""
    import stat

    bad = ErrorCode.INVALID_ARGUMENT
    fd = os.open(request, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ProtocolError("it is not a regular file", code=bad)
        data = fh.read(MAX_REQUEST_FILE_BYTES + 1)
    if len(data) > MAX_REQUEST_FILE_BYTES:
        raise ProtocolError(f"it is larger than {MAX_REQUEST_FILE_BYTES} bytes", code=bad)
    try:
        parsed = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ProtocolError("its JSON is nested too deeply", code=bad) from None
    body = RequestFile.from_payload(parsed)
    if not Path(body.split.source).is_absolute():
        raise ProtocolError("source must be an absolute path (a relative one would be "
                            "resolved against an unknown folder)", code=bad)
    return body


def _submit_file(request: Path, answer: Any, error: Any) -> int:
    try:
        body = read_request_file(request)
    except (OSError, ValueError) as exc:
        code = exc.code if isinstance(exc, ProtocolError) else ErrorCode.INVALID_ARGUMENT
        if code == ErrorCode.BAD_MESSAGE.value:
            code = ErrorCode.INVALID_ARGUMENT
        return error(code, f"Bad request file {request}: {exc}")
    serve_args = ("--device", body.device) if body.device else ()
    try:
        with Client.connect(start=True, serve_args=serve_args, timeout=10.0) as client:
            accepted = client.submit(body.split)
    except ClientError as err:
        return error(err.code, str(err))
    except OSError as exc:
        return error(ErrorCode.NOT_RUNNING, f"Cannot reach the engine: {exc}")
    folder = str(accepted["folder"])
    answer("accepted", job=str(accepted["job"]), folder=folder,
           manifest=str(Path(folder) / MANIFEST))
    return 0
