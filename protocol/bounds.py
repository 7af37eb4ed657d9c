"""The bounds of every request field a reply repeats, so every reply fits one datagram
(`protocol.osc.MAX_DATAGRAM`) by construction: path lengths (UTF-8 bytes), request times
(seconds) and error messages (characters, cut with a marker)."""

from __future__ import annotations

from protocol.errors import ErrorCode
from protocol.osc import ProtocolError

#: Longest `source` accepted, in UTF-8 bytes (Linux's PATH_MAX less its NUL). Every
#: field a reply repeats is bounded like this, so every reply fits one datagram.
MAX_PATH_BYTES = 4095
#: Longest `output_root`, in UTF-8 bytes, and longest name of one of its folders.
MAX_OUTPUT_ROOT_BYTES = 1024
MAX_NAME_BYTES = 255
#: Largest request time (`start_at`, `section_start`, `section_length`), seconds.
MAX_TIME_S = 1e7
#: Longest error message sent (characters); a longer one ends with `TRUNCATED`.
MAX_MESSAGE_CHARS = 2000
TRUNCATED = " [...]"


def bounded_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut to `limit` characters with the `TRUNCATED` marker when longer."""
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def check_path_text(name: str, value: str, limit: int) -> None:
    """Refuse a path with a NUL byte, longer than `limit` UTF-8 bytes, or with a folder
    name longer than `MAX_NAME_BYTES` (`ProtocolError` ``invalid_argument``)."""
    bad = ErrorCode.INVALID_ARGUMENT
    if "\0" in value:
        raise ProtocolError(f"{name} contains a NUL character; send the path as it is on "
                            "disk", code=bad)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ProtocolError(f"{name} is {size} bytes long; at most {limit} are accepted",
                            code=bad)
    longest = max((len(p.encode("utf-8", "surrogatepass")) for p in value.split("/")),
                  default=0)
    if longest > MAX_NAME_BYTES:
        raise ProtocolError(f"{name} has a folder or file name of {longest} bytes; at most "
                            f"{MAX_NAME_BYTES} are possible", code=bad)
