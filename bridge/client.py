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
from pathlib import Path
from typing import Any

from protocol import settings
from protocol.errors import EXIT_NO_SERVER, EXIT_SERVER_ERROR, ErrorCode, exit_status
from protocol.files import MANIFEST, discovery_path, runtime_dir, write_json_atomic
from protocol.messages import (
    MAX_DATAGRAM,
    Address,
    Message,
    ProtocolError,
    SplitRequestMsg,
    decode,
    encode,
    unpack,
)


class ClientError(Exception):
    """The server answered with an error, or did not answer. `code` as on the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

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


def read_discovery() -> dict[str, Any] | None:
    """The running server's discovery record (host, port, pid, ...), or None."""
    try:
        data = json.loads(discovery_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "port" in data else None


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
            raise ClientError("not_running", "No stembridge server is running (no discovery "
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
                raise ClientError("timeout", f"No answer from the server at "
                                  f"{self.server[0]}:{self.server[1]}; is it running?")
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except ConnectionRefusedError as exc:
                raise ClientError("not_running", "The server refused the connection; is "
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
                    body = unpack(msg.args[0])
                    # an error naming no job and no request answers what we just sent
                    generic = not body.get("job") and body.get("request_id", -1) == -1
                    if generic or match is None or match(msg):
                        raise ClientError(body.get("code", "error"), body.get("message", ""))
                if msg.address in addresses and (match is None or match(msg)):
                    return msg
                kept.append(msg)
        finally:
            self._pending[:0] = kept

    def _tok(self) -> tuple[str, ...]:
        return (self.token,) if self.token else ()

    # ------------------------------------------------------------------ requests

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        nonce = next(self._ids)
        t0 = time.perf_counter()
        self.send(Address.PING, nonce, *self._tok())
        self._expect({Address.PONG}, lambda m: m.args and m.args[0] == nonce, timeout)
        return time.perf_counter() - t0

    def hello(self) -> dict[str, Any]:
        body: dict[str, Any] = {"protocol": 1, "client": "stembridge-python"}
        if self.token:
            body["token"] = self.token
        self.send(Address.HELLO, body)
        return unpack(self._expect({Address.WELCOME}).args[0])

    def split(self, source: str | Path, **options: Any) -> str:
        """Submit a job (`options` as for `submit`); returns its id once accepted."""
        return str(self.submit(source, **options)["job"])

    def submit(self, source: str | Path, *, stems: int | None = None, model: str | None = None,
               start_at: float = 0.0, priority: str = "interactive",
               section_start: float = 0.0, section_length: float | None = None,
               output_root: str | None = None, shm: bool = False) -> dict[str, Any]:
        """Submit a job; returns the `job/accepted` payload (request_id, job, folder)."""
        rid = next(self._ids)
        req = SplitRequestMsg(rid, str(Path(source).resolve()), stems=stems, model=model,
                              start_at=start_at, priority=priority,
                              section_start=section_start, section_length=section_length,
                              output_root=output_root, token=self.token, shm=shm)
        self.send(Address.SPLIT, req.to_payload())

        def mine(m: Message) -> bool:
            try:
                return unpack(m.args[0]).get("request_id") == rid
            except (ProtocolError, IndexError):
                return False

        return dict(unpack(self._expect({Address.ACCEPTED}, mine).args[0]))

    def events(self, job: str, timeout: float = 600.0) -> Iterator[tuple[str, Any]]:
        """(kind, data) for `job` until done: ("started", payload), ("progress",
        (done, total, eta)), ("region", payload), then ("done", payload); an error raises
        ClientError."""
        while True:
            msg = self.receive(timeout)
            if msg.address == Address.PROGRESS and msg.args and msg.args[0] == job:
                yield "progress", tuple(msg.args[1:4])
            elif msg.address in (Address.STARTED, Address.REGION, Address.DONE,
                                 Address.ERROR):
                body = unpack(msg.args[0])
                if body.get("job") != job:
                    continue
                if msg.address == Address.ERROR:
                    raise ClientError(body.get("code", "error"), body.get("message", ""))
                kind = {Address.STARTED: "started", Address.REGION: "region"}.get(
                    msg.address, "done")
                yield kind, body
                if kind == "done":
                    return

    def status(self, job: str = "") -> dict[str, Any]:
        self.send(Address.STATUS, job, *self._tok())
        return unpack(self._expect({Address.STATUS_REPLY}).args[0])

    def cancel(self, job: str) -> dict[str, Any]:
        self.send(Address.CANCEL, job, *self._tok())
        return unpack(self._expect({Address.STATUS_REPLY}).args[0])

    def release(self, job: str) -> dict[str, Any]:
        """Free the job's shared memory on the server (its files stay)."""
        self.send(Address.RELEASE, job, *self._tok())
        return unpack(self._expect({Address.STATUS_REPLY}).args[0])

    def jobs(self) -> list[dict[str, Any]]:
        self.send(Address.JOBS, *self._tok())
        return list(unpack(self._expect({Address.JOBS_REPLY}).args[0])["jobs"])


def _alive(info: dict[str, Any]) -> bool:
    try:
        with Client(info.get("host", "127.0.0.1"), int(info["port"]), timeout=1.0) as c:
            c.ping()
        return True
    except (ClientError, OSError):
        return False


def ensure_running(timeout: float = 60.0, serve_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """The discovery record of a live server, starting a detached one if needed.
    Idempotent: a second call finds the first one's server. `serve_args` (e.g.
    ``("--device", "cpu")``) only apply when this call has to start it."""
    info = read_discovery()
    if info is not None and _alive(info):
        return info
    log_dir = runtime_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "server.log", "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                                 *serve_args],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_discovery()
        if info is not None and info.get("pid") == proc.pid and _alive(info):
            return info
        if proc.poll() is not None:
            info = read_discovery()  # lost a race with another starter: use theirs
            if info is not None and _alive(info):
                return info
            raise ClientError("start_failed", f"The server exited with {proc.returncode}; "
                              f"see {log_dir / 'server.log'}.")
        time.sleep(0.1)
    raise ClientError("start_failed", f"The server did not start within {timeout:.0f}s; "
                      f"see {log_dir / 'server.log'}.")


#: Fields a request file (``stembridge submit --request FILE``) may hold.
REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "source": str, "stems": int, "model": str, "start_at": (int, float), "device": str,
    "priority": str}


def reply_path(request: Path) -> Path:
    """Where `submit --request` answers: ``x.json`` -> ``x.reply.json``."""
    return request.with_name(request.name.removesuffix(".json") + ".reply.json")


def submit_request_file(request: Path) -> int:
    """Submit the job described by a JSON request file and answer in its reply file.

    For clients that cannot speak UDP (REAPER's Lua): they write ``<name>.json``, launch
    ``stembridge submit --request <name>.json`` without waiting, and poll
    ``<name>.reply.json`` (written atomically). The reply goes through
    ``{"state": "launched"}`` (this process runs), then ``{"state": "accepted", "job",
    "folder", "manifest"}`` or ``{"state": "error", "code", "message"}``. Returns the exit
    code (0 accepted)."""
    out = reply_path(request)

    def answer(state: str, **fields: Any) -> None:
        write_json_atomic(out, {"state": state, "pid": os.getpid(), **fields})

    answer("launched")
    try:
        body = json.loads(request.read_text(encoding="utf-8"))
        if not isinstance(body, dict) or not isinstance(body.get("source"), str):
            raise ValueError("the request must be a JSON object with a \"source\" path")
        for key, kind in REQUEST_FIELDS.items():
            if body.get(key) is not None and (not isinstance(body[key], kind)
                                              or isinstance(body[key], bool)):
                raise ValueError(f"request field {key!r} has the wrong type")
    except (OSError, ValueError) as exc:
        answer("error", code="invalid_argument", message=f"Bad request file {request}: {exc}")
        return exit_status(ErrorCode.INVALID_ARGUMENT)
    serve_args = ("--device", body["device"]) if body.get("device") else ()
    try:
        with Client.connect(start=True, serve_args=serve_args, timeout=10.0) as client:
            accepted = client.submit(body["source"], stems=body.get("stems") or None,
                                     model=body.get("model") or None,
                                     start_at=float(body.get("start_at") or 0.0),
                                     priority=body.get("priority") or "interactive")
    except ClientError as err:
        answer("error", code=err.code, message=str(err))
        return err.exit_code
    except OSError as exc:
        answer("error", code="not_running", message=f"Cannot reach the engine: {exc}")
        return EXIT_NO_SERVER
    folder = str(accepted["folder"])
    answer("accepted", job=str(accepted["job"]), folder=folder,
           manifest=str(Path(folder) / MANIFEST))
    return 0
