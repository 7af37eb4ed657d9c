"""Every message of the stembridge OSC protocol: addresses, arguments, payload fields.

A message is one OSC message in one UDP datagram. Simple values travel as plain OSC
arguments; structured values as ONE msgpack blob argument (OSC type ``b``) holding a map
with string keys. Unknown map keys are ignored (newer peers may add fields); missing
required keys are a `ProtocolError`. See PROTOCOL.md for the prose and examples, and
tests/golden/ for the exact bytes.

Requests (client -> server) may carry the server's access token: in the payload map as
``token`` or, for messages with plain arguments, as a trailing string argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from protocol import settings as _settings

PREFIX = "/stembridge"


class Address:
    """Every known OSC address. The server handles exactly the request addresses."""

    HELLO = f"{PREFIX}/hello"
    PING = f"{PREFIX}/ping"
    SPLIT = f"{PREFIX}/split"
    CANCEL = f"{PREFIX}/cancel"
    STATUS = f"{PREFIX}/status"
    JOBS = f"{PREFIX}/jobs"
    RELEASE = f"{PREFIX}/release"
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


REQUESTS = frozenset({Address.HELLO, Address.PING, Address.SPLIT, Address.CANCEL,
                      Address.STATUS, Address.JOBS, Address.RELEASE})
PUSHES = frozenset({Address.WELCOME, Address.PONG, Address.ACCEPTED, Address.STARTED,
                    Address.PROGRESS,
                    Address.REGION, Address.DONE, Address.ERROR, Address.STATUS_REPLY,
                    Address.JOBS_REPLY})


class PreviewAddress:
    """Control addresses of the preview player (`stembridge preview`), which listens on
    its own UDP port (`DEFAULT_PREVIEW_PORT`), not on the server's. Errors it answers with
    `Address.ERROR`, in the server's error payload."""

    GAIN = f"{PREFIX}/preview/gain"                # s|i stem, f dB
    GAIN_LINEAR = f"{PREFIX}/preview/gain/linear"  # s|i stem, f factor
    MUTE = f"{PREFIX}/preview/mute"                # s|i stem [, i|f|T|F on]; no flag: toggle
    SOLO = f"{PREFIX}/preview/solo"                # s|i stem [, i|f|T|F on]; no flag: toggle
    KARAOKE = f"{PREFIX}/preview/karaoke"          # [i|f|T|F on]: mute the vocals
    RESET = f"{PREFIX}/preview/reset"              # every stem at 0 dB, unmuted, unsoloed
    SEEK = f"{PREFIX}/preview/seek"                # f seconds from the start of the song
    PLAY = f"{PREFIX}/preview/play"
    STOP = f"{PREFIX}/preview/stop"
    STATUS = f"{PREFIX}/preview/status"            # [i reply_port]
    STATUS_REPLY = f"{PREFIX}/preview/status/reply"  # b payload


PREVIEW_CONTROLS = frozenset({
    PreviewAddress.GAIN, PreviewAddress.GAIN_LINEAR, PreviewAddress.MUTE, PreviewAddress.SOLO,
    PreviewAddress.KARAOKE, PreviewAddress.RESET, PreviewAddress.SEEK, PreviewAddress.PLAY,
    PreviewAddress.STOP, PreviewAddress.STATUS})

#: UDP port of the preview player's control socket on 127.0.0.1 (defined in settings).
DEFAULT_PREVIEW_PORT = _settings.DEFAULT_PREVIEW_PORT

#: Largest datagram either side sends or accepts (bytes).
MAX_DATAGRAM = 65000


class ProtocolError(ValueError):
    """A datagram that is not a valid stembridge message. `code` is an ErrorCode value."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Message:
    """A decoded OSC message: its address and its arguments (a blob arrives as bytes)."""

    address: str
    args: tuple[Any, ...]


# --------------------------------------------------------------------------- OSC bytes


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    if b"\0" in raw:
        raise ProtocolError("OSC strings cannot contain NUL characters")
    return raw + b"\0" * (4 - len(raw) % 4)


def encode(address: str, *args: Any) -> bytes:
    """One OSC message (see `_encode`); raises only `ProtocolError`."""
    import struct

    try:
        return _encode(address, *args)
    except ProtocolError:
        raise
    except (struct.error, OverflowError, TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode {address}: {exc}") from exc


def _encode(address: str, *args: Any) -> bytes:
    """One OSC message: address, type tags, arguments. Supported argument types:
    int (``i``, 32-bit), float (``f``, 32-bit), str (``s``), bytes (``b``), bool (T/F),
    None (``N``). Dicts and lists are packed into a msgpack blob."""
    import struct

    tags = ","
    body = b""
    for arg in args:
        if isinstance(arg, bool):
            tags += "T" if arg else "F"
        elif arg is None:
            tags += "N"
        elif isinstance(arg, int):
            if not -(2**31) <= arg < 2**31:
                raise ProtocolError(f"integer {arg} does not fit OSC int32; use the payload map")
            tags += "i"
            body += struct.pack(">i", arg)
        elif isinstance(arg, float):
            tags += "f"
            body += struct.pack(">f", arg)
        elif isinstance(arg, str):
            tags += "s"
            body += _osc_string(arg)
        elif isinstance(arg, (bytes, bytearray)):
            tags += "b"
            body += struct.pack(">i", len(arg)) + _pad4(bytes(arg))
        elif isinstance(arg, (dict, list, tuple)):
            blob = pack(arg)
            tags += "b"
            body += struct.pack(">i", len(blob)) + _pad4(blob)
        else:
            raise ProtocolError(f"cannot encode {type(arg).__name__} as an OSC argument")
    data = _osc_string(address) + _osc_string(tags) + body
    if len(data) > MAX_DATAGRAM:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise ProtocolError("unterminated OSC string")
    try:
        text = data[pos:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("OSC string is not UTF-8") from exc
    return text, end + 4 - (end - pos) % 4


def decode(data: bytes) -> Message:
    """Parse one OSC message (bundles are not part of this protocol). Never raises
    anything but `ProtocolError`, whatever the bytes."""
    import struct

    if not isinstance(data, (bytes, bytearray)) or len(data) < 8:
        raise ProtocolError("datagram too short for an OSC message")
    if len(data) > MAX_DATAGRAM:
        raise ProtocolError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    if len(data) % 4:
        raise ProtocolError("OSC message length is not a multiple of 4")
    data = bytes(data)
    address, pos = _read_string(data, 0)
    if not address.startswith("/"):
        raise ProtocolError("OSC address must start with '/'")
    if pos >= len(data):
        tags = ","
    else:
        tags, pos = _read_string(data, pos)
    if not tags.startswith(","):
        raise ProtocolError("missing OSC type tag string")
    args: list[Any] = []
    for tag in tags[1:]:
        if tag in "if":
            if pos + 4 > len(data):
                raise ProtocolError("truncated OSC argument")
            args.append(struct.unpack(">i" if tag == "i" else ">f", data[pos:pos + 4])[0])
            pos += 4
        elif tag == "s":
            if pos >= len(data):
                raise ProtocolError("truncated OSC string argument")
            text, pos = _read_string(data, pos)
            args.append(text)
        elif tag == "b":
            if pos + 4 > len(data):
                raise ProtocolError("truncated OSC blob size")
            size = struct.unpack(">i", data[pos:pos + 4])[0]
            pos += 4
            if size < 0 or pos + size > len(data):
                raise ProtocolError("OSC blob size exceeds the datagram")
            args.append(data[pos:pos + size])
            pos += size + (-size % 4)
        elif tag == "T":
            args.append(True)
        elif tag == "F":
            args.append(False)
        elif tag == "N":
            args.append(None)
        else:
            raise ProtocolError(f"unsupported OSC type tag {tag!r}")
    if pos != len(data):
        raise ProtocolError("trailing bytes after the OSC arguments")
    return Message(address, tuple(args))


# --------------------------------------------------------------------------- msgpack


def pack(value: Any) -> bytes:
    """msgpack bytes of a payload (maps keep insertion order, so bytes are stable)."""
    import msgpack

    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: Any) -> dict[str, Any]:
    """A payload map from a msgpack blob; `ProtocolError` for anything else."""
    import msgpack

    if not isinstance(blob, (bytes, bytearray)):
        raise ProtocolError("expected a msgpack blob argument")
    try:
        value = msgpack.unpackb(bytes(blob), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"bad msgpack payload: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError("payload must be a msgpack map")
    if not all(type(k) is str for k in value):
        raise ProtocolError("payload keys must be strings")
    return value


def payload(msg: Message, index: int = 0) -> dict[str, Any]:
    """The payload map in argument `index` of `msg`."""
    if len(msg.args) <= index:
        raise ProtocolError(f"{msg.address} needs a payload blob argument")
    return unpack(msg.args[index])


def field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], *,
          required: bool = True, default: Any = None) -> Any:
    """`data[key]` checked against `kind` (ints accepted where floats are expected)."""
    if key not in data or data[key] is None:
        if required:
            raise ProtocolError(f"missing field {key!r}")
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProtocolError(f"field {key!r} must be {'/'.join(k.__name__ for k in kinds)}")
    return value


# --------------------------------------------------------------------------- requests


@dataclass
class SplitRequestMsg:
    """``/stembridge/split`` payload.

    Fields: ``request_id`` (int, echoed in the reply), ``source`` (absolute path of the
    audio file), ``stems`` (2, 4, 6 or nil), ``model`` (str or nil), ``start_at``
    (seconds, play-cursor order), ``section_start``/``section_length`` (seconds, optional
    part of the file), ``priority`` ("interactive" | "batch"), ``output_root`` (optional;
    must lie inside the server's output root), ``reply_port`` (optional UDP port on the
    sender's host for pushes; default the sender's port), ``token``, ``shm`` (bool: also
    publish the stems in shared memory, see `protocol.shm`).
    """

    request_id: int
    source: str
    stems: int | None = None
    model: str | None = None
    start_at: float = 0.0
    section_start: float = 0.0
    section_length: float | None = None
    priority: str = "interactive"
    output_root: str | None = None
    reply_port: int | None = None
    token: str | None = None
    shm: bool = False

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "source": self.source}
        if self.shm:
            out["shm"] = True
        for key in ("stems", "model", "start_at", "section_start", "section_length",
                    "priority", "output_root", "reply_port", "token"):
            value = getattr(self, key)
            if value is not None and not (key in ("start_at", "section_start") and value == 0):
                if key == "priority" and value == "interactive":
                    continue
                out[key] = value
        return out

    @staticmethod
    def payload_from_args(args: tuple[Any, ...]) -> dict[str, Any]:
        """The payload map of the plain-argument form of ``/stembridge/split``, for OSC
        tools that cannot send blobs (liblo's oscsend, TouchOSC):
        ``s source [i stems (0: default)] [f start_at] [i reply_port (0: sender's)]
        [s token]``. Its ``request_id`` is 0."""
        if not args or not isinstance(args[0], str):
            raise ProtocolError("plain split needs the source path as first argument")
        kinds = (str, int, (int, float), int, str)
        names = ("source", "stems", "start_at", "reply_port", "token")
        if len(args) > len(names):
            raise ProtocolError("plain split takes at most 5 arguments")
        out: dict[str, Any] = {"request_id": 0}
        for name, kind, value in zip(names, kinds, args, strict=False):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ProtocolError(f"plain split argument {name!r} has the wrong type")
            if name in ("stems", "reply_port") and value == 0:
                continue
            out[name] = float(value) if name == "start_at" else value
        return out

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> SplitRequestMsg:
        msg = cls(
            request_id=field(data, "request_id", int),
            source=field(data, "source", str),
            stems=field(data, "stems", int, required=False),
            model=field(data, "model", str, required=False),
            start_at=field(data, "start_at", float, required=False, default=0.0),
            section_start=field(data, "section_start", float, required=False, default=0.0),
            section_length=field(data, "section_length", float, required=False),
            priority=field(data, "priority", str, required=False, default="interactive"),
            output_root=field(data, "output_root", str, required=False),
            reply_port=field(data, "reply_port", int, required=False),
            token=field(data, "token", str, required=False),
            shm=field(data, "shm", bool, required=False, default=False),
        )
        if msg.stems is not None and msg.stems not in (2, 4, 6):
            raise ProtocolError("stems must be 2, 4 or 6", code="invalid_argument")
        if msg.priority not in ("interactive", "batch"):
            raise ProtocolError("priority must be 'interactive' or 'batch'",
                                code="invalid_argument")
        times = [msg.start_at, msg.section_start] + (
            [msg.section_length] if msg.section_length is not None else [])
        if not all(math.isfinite(t) for t in times) or msg.start_at < 0 or (
                msg.section_start < 0) or (
                msg.section_length is not None and msg.section_length <= 0):
            raise ProtocolError("times must be >= 0 (section_length > 0)",
                                code="invalid_argument")
        if msg.reply_port is not None and not 1 <= msg.reply_port <= 65535:
            raise ProtocolError("reply_port must be 1..65535", code="invalid_argument")
        return msg
