"""The OSC codec of the stembridge protocol: our own, strict and dependency-free.

`encode` / `decode` turn one OSC message (address, type tags, arguments) into the bytes of
one UDP datagram and back; `pack` / `unpack` do the same for the msgpack map that
structured messages carry as one blob argument. `decode` and `unpack` raise nothing but
`ProtocolError`, whatever the bytes (a server answers every bad datagram with an error).
`field` reads one checked key of a payload map. The message types built on top of this
live in `protocol.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode

#: Largest datagram either side sends or accepts (bytes).
MAX_DATAGRAM = 65000


class ProtocolError(ValueError):
    """A datagram that is not a valid stembridge message. `code` is an ErrorCode value."""

    def __init__(self, message: str, code: str | ErrorCode = ErrorCode.BAD_MESSAGE) -> None:
        super().__init__(message)
        self.code: str = code.value if isinstance(code, ErrorCode) else code


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
