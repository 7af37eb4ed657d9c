"""The preview's job on the server: which server (`connect`), following the job's pushes
and attaching to the shared memory that ``job/started`` names (`JobFollower`), and
cancelling and releasing it at the end (`finish_job`).

Client side only: `bridge.client` and `protocol`, never torch or the engine's models
(the engine's errors are imported inside the functions that raise them).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from protocol import settings
from protocol.errors import ErrorCode

if TYPE_CHECKING:
    from bridge.client import Client
    from protocol.shm import ShmReader

#: Seconds a server named by address has to answer the first ping.
PING_TIMEOUT_S = 3.0


def server_address(host: str | None, port: int | None) -> tuple[str, int] | None:
    """Where the preview's server is: `host`/`port` as given (flags), else
    ``STEMBRIDGE_HOST``/``STEMBRIDGE_PORT`` (read now), filling the other from
    `protocol.settings`; None when neither says anything: then the local server is found
    by its discovery record (and started if none runs)."""
    env_host, env_port = settings.get("STEMBRIDGE_HOST"), settings.get("STEMBRIDGE_PORT")
    if host is None and port is None and env_host is None and env_port is None:
        return None
    return (host if host is not None else settings.host(),
            port if port is not None else settings.port())


def connect(host: str | None, port: int | None, token: str | None) -> Client:
    """A client of the preview's server (see `server_address`), with `token` (default
    ``STEMBRIDGE_TOKEN``). A server named by address must answer a ping within
    `PING_TIMEOUT_S` (else `ClientError`: ``timeout``, ``not_running``, ``unauthorized``);
    it is never started from here."""
    from bridge.client import Client

    token = token if token is not None else settings.token()
    where = server_address(host, port)
    if where is None:
        return Client.connect(start=True, token=token)
    client = Client(*where, token=token)
    try:
        client.ping(timeout=PING_TIMEOUT_S)
    except BaseException:
        client.close()
        raise
    return client


class JobFollower(threading.Thread):
    """Reads the job's pushes on the client's socket; attaches to the shared memory that
    ``job/started`` names. `state`: queued, running, done or failed; `news`: lines for
    the terminal."""

    def __init__(self, client: Client, job: str) -> None:
        super().__init__(name="preview-job", daemon=True)
        self.client, self.job = client, job
        self.state = "queued"
        self.error: Exception | None = None
        self.started: dict[str, Any] | None = None
        self.reader: ShmReader | None = None
        self.news: deque[str] = deque(maxlen=50)
        self._halt = threading.Event()

    def run(self) -> None:
        from bridge.client import ClientError

        while not self._halt.is_set():
            try:  # short waits, so that `stop` is noticed; no push is lost in between
                for kind, data in self.client.events(self.job, timeout=0.25):
                    if kind == "started":
                        self._on_started(data)
                    elif kind == "done":
                        self.state = "done"
                        self.news.append("separation done")
                return
            except ClientError as err:
                if err.code == ErrorCode.TIMEOUT:
                    continue
                self.state, self.error = "failed", err
                self.news.append(f"the job failed [{err.code}]: {err}; playing the mixture "
                                 "where the stems are missing")
                return
            except OSError:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(2.0)

    def _on_started(self, data: dict[str, Any]) -> None:
        from protocol.shm import ShmReader

        self.state = "running"
        shm = data.get("shm")
        reader = None
        if not shm:
            self.news.append("the server gave no shared memory (is it older than the "
                             "client?); playing the mixture only")
        else:
            try:
                reader = ShmReader(shm["index"], [shm["blocks"][s] for s in data["stems"]])
            except (OSError, KeyError, ValueError) as exc:
                self.news.append(f"cannot attach the shared memory ({exc}); playing the "
                                 "mixture only")
        self.reader = reader
        self.started = data  # last: the main thread waits for it

    def wait_started(self) -> dict[str, Any]:
        """The ``job/started`` payload, once it came; a job that failed before raises
        its error (`StembridgeError` with the wire code, or `ClientError`)."""
        from bridge.client import ClientError
        from engine.errors import StembridgeError

        t0 = time.monotonic()
        told = False
        while self.started is None:
            if self.error is not None:
                err = self.error
                if isinstance(err, ClientError) and err.code in {c.value for c in ErrorCode}:
                    raise StembridgeError(str(err), code=ErrorCode(err.code)) from err
                raise err
            if not self.is_alive():
                raise ClientError(ErrorCode.TIMEOUT.value,
                                  "The server stopped sending news of the job.")
            if not told and time.monotonic() - t0 > 2.0:
                print("stembridge preview: waiting for the engine to start the job (it "
                      "runs one job at a time)...", file=sys.stderr)
                told = True
            time.sleep(0.005)
        return self.started


def finish_job(client: Client, job: str) -> str:
    """Cancel the job if it still runs (its finished regions stay on disk), then release
    its shared memory, on a fresh socket to `client`'s server. Returns the job's last
    state (``unknown`` when the server did not answer)."""
    from bridge.client import Client, ClientError

    try:
        with Client(*client.server, token=client.token, timeout=5.0) as c:
            state = str(c.status(job).get("state", "unknown"))
            if state in ("queued", "running"):
                c.cancel(job)
                state = "cancelled"
            c.release(job)
            return state
    except ClientError as err:
        print(f"stembridge preview: could not release job {job}: {err}", file=sys.stderr)
        return "unknown"
