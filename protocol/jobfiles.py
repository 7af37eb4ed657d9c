"""The JSON files of the protocol, typed like the messages (`protocol.messages.Payload`):

* `RequestFile` / `ReplyFile`: ``stembridge submit --request x.json`` reads the request and
  answers in ``x.reply.json`` (clients without sockets, e.g. REAPER's Lua);
* `Manifest` (+ `ManifestRegion`): a job folder's ``manifest.json``, the data plane's index;
* `DiscoveryRecord`: what a running server publishes in the runtime folder.

Layouts and the atomic writes are in `protocol.files`; PROTOCOL.md's tables of these files
are generated from the types below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import PROTOCOL_VERSION
from protocol.messages import JobError, Payload, SplitRequest, spec
from protocol.osc import ProtocolError, field

#: Fields of a split request that a request file does not carry (the submitting process
#: chooses them).
NOT_IN_REQUEST_FILES = ("request_id", "reply_port")
REPLY_STATES = ("launched", "accepted", "error")


@dataclass
class RequestFile(Payload):
    """``<name>.json``: a split request written by a client without sockets. Every
    `SplitRequest` field except ``request_id``/``reply_port``, plus ``device``. An empty
    ``model`` or a ``stems`` of 0 mean the default, as if absent."""

    DIRECTION = "file"

    split: SplitRequest = spec(dict, "the split request's fields, at the top level",
                               type="map")
    device: str | None = spec(str, "`auto`, `cpu`, `cuda`, `mps`: used only if this call "
                              "starts the server", type="str", default=None)

    def to_payload(self) -> dict[str, Any]:
        out = {k: v for k, v in self.split.to_payload().items()
               if k not in NOT_IN_REQUEST_FILES}
        if self.device is not None:
            out["device"] = self.device
        return out

    @classmethod
    def from_payload(cls, data: Any) -> RequestFile:
        if not isinstance(data, dict):
            raise ProtocolError("the request must be a JSON object with a \"source\" path")
        body = {k: v for k, v in data.items() if k not in NOT_IN_REQUEST_FILES}
        if body.get("model") == "":
            del body["model"]
        if body.get("stems") == 0:
            del body["stems"]
        if not isinstance(body.get("source"), str):
            raise ProtocolError("the request must be a JSON object with a \"source\" path")
        device = field(body, "device", str, required=False)
        return cls(SplitRequest.from_payload(body | {"request_id": 0}), device)


@dataclass
class ReplyFile(Payload):
    """``<name>.reply.json``, replaced atomically as `submit --request` goes:
    ``launched``, then ``accepted`` or ``error``."""

    DIRECTION = "file"
    OMIT_DEFAULTS = True

    state: str = spec(str, "`launched` (the process runs), `accepted` or `error`",
                      type="str")
    pid: int = spec(int, "process id of the `submit` process", type="int")
    job: str | None = spec(str, "when `accepted`: the job id", type="str", default=None)
    folder: str | None = spec(str, "when `accepted`: absolute path of the job folder",
                              type="str", default=None)
    manifest: str | None = spec(str, "when `accepted`: absolute path of its `manifest.json`",
                                type="str", default=None)
    code: str | None = spec(str, "when `error`: an error code (also `not_running`, "
                            "`start_failed`, `timeout`)", type="str", default=None)
    message: str | None = spec(str, "when `error`: what happened and what to do",
                               type="str", default=None)

    def check(self) -> None:
        if self.state not in REPLY_STATES:
            raise ProtocolError(f"reply state must be one of {', '.join(REPLY_STATES)}")


@dataclass
class ManifestRegion(Payload):
    """One finalized region of a job, as listed in its manifest."""

    DIRECTION = "part"

    start: int = spec(int, "first frame at the source rate", type="int")
    end: int = spec(int, "frame after the last", type="int")
    files: dict[str, str] = spec(dict, "stem → path relative to the job folder",
                                 type="map str → str", item=str)


@dataclass
class Manifest(Payload):
    """A job folder's ``manifest.json``, rewritten atomically after every change."""

    DIRECTION = "file"
    OMIT_DEFAULTS = True
    #: Keys written even when empty or null.
    ALWAYS = ("regions", "final")

    job: str = spec(str, "job id", type="str")
    source: str = spec(str, "the request's `source`", type="str")
    request: SplitRequest = spec(SplitRequest, "the `split` payload as the server "
                                 "understood it (`to_payload()`), `token` set to `null`",
                                 type="object")
    state: str = spec(str, "`queued`, `running`, `done`, `failed`, `cancelled`", type="str")
    protocol: int = spec(int, "`1`", type="int", default=PROTOCOL_VERSION)
    regions: list[ManifestRegion] = spec(
        list, "finalized regions in the order they became final: `{\"start\": int, "
        "\"end\": int, \"files\": {stem: path relative to the job folder}}`",
        type="array", item=ManifestRegion, factory=list)
    final: dict[str, str] | None = spec(dict, "`null` until done, then `{stem: "
                                        "\"<stem>.wav\"}` (relative)",
                                        type="null or object", item=str, default=None)
    updated: float = spec(float, "Unix time of this version", type="float", default=0.0)
    stems: list[str] | None = spec(list, "from `running`: stem names, in output order",
                                   type="array of str", item=str, default=None)
    samplerate: int | None = spec(int, "from `running`: Hz of the source and of every "
                                  "file", type="int", default=None)
    channels: int | None = spec(int, "from `running`: channels of every file", type="int",
                                default=None)
    frames: int | None = spec(int, "from `running`: length of the separated audio, frames",
                              type="int", default=None)
    source_stat: list[int] | None = spec(
        list, "from `running`: the source's size (bytes) and mtime (ns) when the job "
        "started; a resumed job whose source no longer matches fails with "
        "`source_changed`", type="array [int, int]", item=int, default=None)
    metadata: dict[str, Any] | None = spec(dict, "when `done`: as in `job/done`",
                                           type="object", default=None)
    error: JobError | None = spec(JobError, "when `failed`/`cancelled`: `{\"code\": str, "
                                  "\"message\": str}`", type="object", default=None)

    def to_payload(self) -> dict[str, Any]:
        out = {"protocol": self.protocol} | super().to_payload()
        out["request"] = self.request.to_payload() | {"token": None}
        out.setdefault("regions", [])
        out.setdefault("final", None)
        return out

    @classmethod
    def from_payload(cls, data: Any) -> Manifest:
        if isinstance(data, dict) and isinstance(data.get("request"), dict):
            data = data | {"request": {k: v for k, v in data["request"].items()
                                       if v is not None}}
        return super().from_payload(data)

    @property
    def resumable(self) -> bool:
        """Whether a server that starts should run this job (again)."""
        return self.state in ("queued", "running")


@dataclass
class DiscoveryRecord(Payload):
    """What a listening server publishes (``servers/<port>.json``, and ``server.json``
    for the default one; see PROTOCOL.md, "Discovery")."""

    DIRECTION = "file"

    host: str = spec(str, "the address the server is bound to (`127.0.0.1` by default)",
                     type="str")
    port: int = spec(int, "its UDP port", type="int")
    pid: int = spec(int, "its process id", type="int", default=0)
    version: str = spec(str, "stembridge version", type="str", default="")
    protocol: int = spec(int, "protocol version, `1`", type="int", default=PROTOCOL_VERSION)
    started: float = spec(float, "Unix time the server started", type="float", default=0.0)
    token_required: bool = spec(bool, "whether requests must carry a token", type="bool",
                                default=False)
    output_root: str = spec(str, "the server's output root", type="str", default="")
