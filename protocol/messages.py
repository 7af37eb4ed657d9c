"""Every message of the stembridge OSC protocol: addresses and one type per message.

A message is one OSC message in one UDP datagram (codec: `protocol.osc`). Simple values
travel as plain OSC arguments; structured values as ONE msgpack blob argument (OSC type
``b``) holding a map with string keys. Unknown map keys are ignored (newer peers may add
fields); missing required keys or wrong types are a `ProtocolError`. Every type here has
``to_payload()`` / ``from_payload()`` (the map, or for plain-argument messages the named
arguments), ``to_args()`` / ``from_message()`` (the OSC arguments) and ``encode()``.
PROTOCOL.md's field tables and tests/golden/ are generated from these types.

Requests (client -> server) may carry the server's access token: in the payload map as
``token`` or, for messages with plain arguments, as a trailing string argument.
"""

from __future__ import annotations

import contextlib
from dataclasses import MISSING, dataclass
from typing import Any

from protocol import settings as _settings
from protocol.bounds import (
    MAX_MESSAGE_CHARS,
    MAX_NAME_BYTES,
    MAX_OUTPUT_ROOT_BYTES,
    MAX_PATH_BYTES,
    MAX_TIME_S,
    TRUNCATED,
    bounded_text,
)
from protocol.errors import ErrorCode
from protocol.mastering import MasterDone, MasterRequest
from protocol.osc import (
    MAX_DATAGRAM,
    Message,
    ProtocolError,
    decode,
    encode,
    field,
    pack,
    payload,
    unpack,
)
from protocol.payload import Payload, spec
from protocol.preview import PREVIEW_CONTROLS, PreviewAddress
from protocol.split import (
    OUTPUT_FORMATS,
    PRIORITIES,
    REST_MODES,
    SAMPLE_RATES,
    SPLIT_BIT_DEPTHS,
    SplitRequest,
)

__all__ = ["MAX_DATAGRAM", "MAX_MESSAGE_CHARS", "MAX_NAME_BYTES", "MAX_OUTPUT_ROOT_BYTES",
           "MAX_PATH_BYTES", "MAX_TIME_S", "TRUNCATED", "MasterDone", "MasterRequest", "Message",
           "PREVIEW_CONTROLS", "PreviewAddress",
           "Payload", "ProtocolError", "decode", "encode", "field",
           "pack", "payload", "spec", "unpack", "OUTPUT_FORMATS", "PRIORITIES",
           "REST_MODES", "SAMPLE_RATES", "SPLIT_BIT_DEPTHS", "SplitRequest"]

PREFIX = "/stembridge"


class Address:
    """Every known OSC address. The server handles exactly the request addresses."""

    HELLO = f"{PREFIX}/hello"
    PING = f"{PREFIX}/ping"
    SPLIT = SplitRequest.ADDRESS  # protocol.split
    CANCEL = f"{PREFIX}/cancel"
    STATUS = f"{PREFIX}/status"
    JOBS = f"{PREFIX}/jobs"
    RELEASE = f"{PREFIX}/release"
    SHUTDOWN = f"{PREFIX}/shutdown"
    # pushes and replies (server -> client)
    WELCOME = f"{PREFIX}/hello/reply"
    PONG = f"{PREFIX}/pong"
    ACCEPTED = f"{PREFIX}/job/accepted"
    STARTED = f"{PREFIX}/job/started"
    PROGRESS = f"{PREFIX}/job/progress"
    REGION = f"{PREFIX}/job/region"
    DONE = f"{PREFIX}/job/done"
    ERROR = f"{PREFIX}/error"
    STATUS_REPLY = f"{PREFIX}/status/reply"
    JOBS_REPLY = f"{PREFIX}/jobs/reply"
    # mastering
    MASTER = MasterRequest.ADDRESS  # protocol.mastering
    MASTER_DONE = MasterDone.ADDRESS


REQUESTS = frozenset({Address.HELLO, Address.PING, Address.SPLIT, Address.CANCEL,
                      Address.STATUS, Address.JOBS, Address.RELEASE, Address.SHUTDOWN,
                      Address.MASTER})
PUSHES = frozenset({Address.WELCOME, Address.PONG, Address.ACCEPTED, Address.STARTED,
                    Address.PROGRESS, Address.REGION, Address.DONE, Address.ERROR,
                    Address.STATUS_REPLY, Address.JOBS_REPLY, Address.MASTER_DONE})


#: UDP port of the preview player's control socket on 127.0.0.1 (defined in settings).
DEFAULT_PREVIEW_PORT = _settings.DEFAULT_PREVIEW_PORT

#: Job states, in the order a job goes through them (PROTOCOL.md, "Files").
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


_TOKEN = "access token, when the server has one"

def _token() -> Any:
    return spec(str, _TOKEN, type="str", default=None)


# --------------------------------------------------------------------------- requests


@dataclass
class Hello(Payload):
    """Optional handshake: what the server is and can do."""

    ADDRESS = Address.HELLO
    DIRECTION = "request"
    OMIT_DEFAULTS = True

    protocol: int | None = spec(int, "the client's protocol version (informational; the "
                                "server does not check it)", type="int", default=None)
    client: str | None = spec(str, "the client's name, e.g. `stembridge-reaper` "
                              "(informational)", type="str", default=None)
    token: str | None = _token()


@dataclass
class Ping(Payload):
    """Are you there? Answered with `Pong` echoing `nonce`."""

    ADDRESS = Address.PING
    DIRECTION = "request"
    ARGS = ("nonce", "token")

    nonce: int = spec(int, "any integer, echoed", type="int", default=0)
    token: str | None = _token()


#: The name version 1's first clients imported.
SplitRequestMsg = SplitRequest


def _job_arg(doc: str, default: Any = MISSING) -> Any:
    return spec(str, doc, type="str", default=default)


@dataclass
class Cancel(Payload):
    """Cancel a job. Answered, once the job has stopped, with its `JobSummary`."""

    ADDRESS = Address.CANCEL
    DIRECTION = "request"
    ARGS = ("job", "token")

    job: str = _job_arg("job id")
    token: str | None = _token()


@dataclass
class Status(Payload):
    """A job's summary, or (no job) the server's status."""

    ADDRESS = Address.STATUS
    DIRECTION = "request"
    ARGS = ("job", "token")

    job: str = _job_arg("job id; empty or absent: the server's status", "")
    token: str | None = _token()


@dataclass
class Jobs(Payload):
    """The summaries of the server's recent jobs."""

    ADDRESS = Address.JOBS
    DIRECTION = "request"
    ARGS = ("token",)

    token: str | None = _token()


@dataclass
class Release(Payload):
    """Free a job's shared memory (its files stay)."""

    ADDRESS = Address.RELEASE
    DIRECTION = "request"
    ARGS = ("job", "token")

    job: str = _job_arg("job id")
    token: str | None = _token()


@dataclass
class Shutdown(Payload):
    """Stop the server gracefully: the running job finishes its current region and is
    checkpointed (resumable), shared memory is released, the discovery record removed.
    Answered with the server's `ServerStatus` (state `stopping`) before it stops."""

    ADDRESS = Address.SHUTDOWN
    DIRECTION = "request"
    ARGS = ("token",)

    token: str | None = _token()


# --------------------------------------------------------------------------- pushes


@dataclass
class Welcome(Payload):
    """Answer to `hello`."""

    ADDRESS = Address.WELCOME
    DIRECTION = "push"

    engine_version: str = spec(str, "stembridge version", type="str")
    protocol_version: int = spec(int, "`1`", type="int")
    models_available: list[str] = spec(list, "every known model name (the embedded "
                                       "default first)", type="array of str", item=str)
    models_loaded: list[str] = spec(list, "models warm in memory now (no load delay)",
                                    type="array of str", item=str)
    device: str = spec(str, "`cpu`, `cuda`, `cuda:1`, `mps`", type="str")
    precision: str = spec(str, "`fp32`, `bf16` or `fp16`", type="str")
    capabilities: list[str] = spec(list, "what this server can do: `split`, `cancel`, "
                                   "`status`, `jobs`, `files`, `start_at`, `section`, "
                                   "`shm`, `release`, `shutdown`, `format`, `output` (the "
                                   "split's `bit_depth`, `mp3_quality`, `sample_rate`, "
                                   "`normalize`)",
                                   type="array of str", item=str)
    output_root: str = spec(str, "absolute path under which job folders are created",
                            type="str")


@dataclass
class Pong(Payload):
    """Answer to `ping`."""

    ADDRESS = Address.PONG
    DIRECTION = "push"
    ARGS = ("nonce",)

    nonce: int = spec(int, "the ping's integer", type="int", default=0)

    def to_args(self) -> tuple[Any, ...]:
        return (self.nonce,)


@dataclass
class Accepted(Payload):
    """The `split` was checked and queued."""

    ADDRESS = Address.ACCEPTED
    DIRECTION = "push"

    request_id: int = spec(int, "the `split`'s `request_id`", type="int")
    job: str = spec(str, "job id: `YYYYMMDD-HHMMSS-xxxxxxxx` (server local time, 8 random "
                    "hex digits)", type="str")
    folder: str = spec(str, "absolute path of the job folder (its `manifest.json` exists "
                       "already)", type="str")


@dataclass
class ShmInfo(Payload):
    """Names of a job's shared-memory blocks (`protocol.shm`)."""

    DIRECTION = "part"

    index: str = spec(str, "name of the index block", type="str")
    blocks: dict[str, list[str]] = spec(dict, "stem -> block name per channel",
                                        type="map str → array of str", item=list)


@dataclass
class Started(Payload):
    """The worker started the job: what the output will be."""

    ADDRESS = Address.STARTED
    DIRECTION = "push"

    job: str = spec(str, "job id", type="str")
    stems: list[str] = spec(list, "output stems, in order", type="array of str", item=str)
    samplerate: int = spec(int, "Hz of the regions and the shared memory (the "
                           "source's); the consolidated files follow the split's "
                           "`sample_rate`", type="int")
    channels: int = spec(int, "channels of every output (the source's: 1 or 2)", type="int")
    frames: int = spec(int, "length of every output, frames", type="int")
    folder: str = spec(str, "the job folder", type="str")
    shm: ShmInfo | None = spec(ShmInfo, "with `shm: true` in the split: `{\"index\": name, "
                               "\"blocks\": {stem: [name per channel]}}`",
                               type="null or map", default=None)


@dataclass
class Progress(Payload):
    """Progress of a running job: plain arguments (cheap to read without msgpack)."""

    ADDRESS = Address.PROGRESS
    DIRECTION = "push"
    ARGS = ("job", "regions_done", "regions_total", "eta")

    job: str = spec(str, "job id", type="str")
    regions_done: int = spec(int, "regions final so far, including those a resumed job "
                             "kept", type="int")
    regions_total: int = spec(int, "regions of the whole job", type="int")
    eta: float = spec(float, "estimated seconds left; `-1.0`: not known yet", type="float")

    def to_args(self) -> tuple[Any, ...]:
        return (self.job, int(self.regions_done), int(self.regions_total), float(self.eta))


@dataclass
class RegionDone(Payload):
    """A stretch `[start, end)` of every stem is final; its files exist for good."""

    ADDRESS = Address.REGION
    DIRECTION = "push"

    job: str = spec(str, "job id", type="str")
    start: int = spec(int, "first frame at `samplerate`; frame 0 = start of the separated "
                      "audio (the section)", type="int")
    end: int = spec(int, "frame after the last, `[start, end)`", type="int")
    samplerate: int = spec(int, "the source file's sample rate, Hz", type="int")
    start_s: float = spec(float, "`start` in seconds", type="float")
    end_s: float = spec(float, "`end` in seconds", type="float")
    files: dict[str, str] = spec(dict, "stem name → absolute path of this region's WAV "
                                 "(`regions/<stem>/<start>-<end>.wav` in the job folder)",
                                 type="map str → str", item=str)


@dataclass
class Done(Payload):
    """The job finished; the consolidated files exist."""

    ADDRESS = Address.DONE
    DIRECTION = "push"

    job: str = spec(str, "job id", type="str")
    files: dict[str, str] = spec(dict, "stem name → absolute path of `<stem>.<format>` "
                                 "(`.wav`, `.flac` or `.mp3`), the whole length", type="map str → str",
                                 item=str)
    manifest: str = spec(str, "absolute path of the job's `manifest.json`", type="str")
    metadata: dict[str, Any] = spec(dict, "model, device, precision, timings, warnings, "
                                    "cache hit, input...: informational, free-form",
                                    type="map", factory=dict)


@dataclass
class ErrorMsg(Payload):
    """Something failed: a request that cannot be served, or a job."""

    ADDRESS = Address.ERROR
    DIRECTION = "push"

    job: str = spec(str, "the job id, or `\"\"` when the error is about a request",
                    type="str", default="")
    request_id: int = spec(int, "the `split`'s `request_id`, or `-1`", type="int",
                           default=-1)
    code: ErrorCode | str = spec(str, "a stable code from [Error codes](#error-codes)",
                                 type="str", default=ErrorCode.INTERNAL)
    message: str = spec(str, "for people: what happened and what to do", type="str",
                        default="")

    def __post_init__(self) -> None:
        self.message = bounded_text(self.message)
        if not isinstance(self.code, ErrorCode):
            with contextlib.suppress(ValueError):  # a newer peer's code stays a string
                self.code = ErrorCode(self.code)


@dataclass
class JobError(Payload):
    """Why a job failed or was cancelled."""

    DIRECTION = "part"

    code: str = spec(str, "error code", type="str")
    message: str = spec(str, "what happened and what to do", type="str")

    def __post_init__(self) -> None:
        self.message = bounded_text(self.message)


@dataclass
class JobSummary(Payload):
    """One job, as `status`, `cancel`, `release` and `jobs` report it."""

    ADDRESS = Address.STATUS_REPLY
    DIRECTION = "push"

    job: str = spec(str, "job id", type="str")
    state: str = spec(str, "`queued`, `running`, `done`, `failed` or `cancelled`",
                      type="str")
    source: str = spec(str, "the request's `source`", type="str")
    regions_done: int = spec(int, "regions final so far (with those a resumed job kept)",
                             type="int", default=0)
    regions_total: int = spec(int, "regions of the whole job (0 before the first "
                              "progress)", type="int", default=0)
    eta: float = spec(float, "seconds left, `-1.0` if not known", type="float",
                      default=-1.0)
    folder: str = spec(str, "absolute path of the job folder", type="str", default="")
    error: JobError | None = spec(JobError, "`{\"code\": str, \"message\": str}` once "
                                  "`failed` or `cancelled`", type="nil or map",
                                  default=None)


@dataclass
class ServerStatus(Payload):
    """The server's own status (answer to `status` without a job, and to `shutdown`)."""

    ADDRESS = Address.STATUS_REPLY
    DIRECTION = "push"

    state: str = spec(str, "`running`, or `stopping` after `shutdown`", type="str")
    pid: int = spec(int, "server process id", type="int")
    uptime: float = spec(float, "seconds since start", type="float")
    queued: int = spec(int, "number of queued jobs", type="int")
    running: int = spec(int, "number of running jobs", type="int")
    models_loaded: list[str] = spec(list, "models warm in memory", type="array of str",
                                    item=str)
    stats: dict[str, int] = spec(dict, "datagrams `received`, `handled`, `malformed`, "
                                 "`unknown`, `unauthorized`, `internal`, `ignored`",
                                 type="map str → int", item=int)


def status_reply(msg: Message) -> JobSummary | ServerStatus:
    """A ``/stembridge/status/reply``: a job summary when it names a job, else the
    server's status."""
    data = payload(msg)
    return JobSummary.from_payload(data) if "job" in data else ServerStatus.from_payload(data)


@dataclass
class JobsReply(Payload):
    """Answer to `jobs`: the 50 most recently created jobs, oldest first (as many of them
    as fit one datagram)."""

    ADDRESS = Address.JOBS_REPLY
    DIRECTION = "push"

    jobs: list[JobSummary] = spec(list, "job summaries (as in `status/reply`)",
                                  type="array of map", item=JobSummary, factory=list)
    left_out: int = spec(int, "older jobs of those 50 left out so the reply fits one "
                         "datagram (ask `status` for one of them)", type="int", default=0)


#: Every message type, by address (the status reply has two shapes: `status_reply`).
REQUEST_TYPES: dict[str, type[Payload]] = {
    t.ADDRESS: t for t in (Hello, Ping, SplitRequest, Cancel, Status, Jobs, Release,
                           Shutdown, MasterRequest)}
PUSH_TYPES: dict[str, tuple[type[Payload], ...]] = {
    Address.WELCOME: (Welcome,), Address.PONG: (Pong,), Address.ACCEPTED: (Accepted,),
    Address.STARTED: (Started,), Address.PROGRESS: (Progress,),
    Address.REGION: (RegionDone,), Address.DONE: (Done,), Address.ERROR: (ErrorMsg,),
    Address.STATUS_REPLY: (JobSummary, ServerStatus), Address.JOBS_REPLY: (JobsReply,),
    Address.MASTER_DONE: (MasterDone,)}
