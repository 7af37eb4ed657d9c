"""How every command reports an error on stderr: the message (what is wrong), then the
CLI hint of its code from `protocol.errors.CODES` (what to do), and the exit status from
the same table."""

from __future__ import annotations

import sys

from protocol.errors import ErrorCode, hint


def error(code: str | ErrorCode, message: str, where: str = "") -> None:
    """Print ``stembridge: [where: ]error [code]: message`` and, on the next line, the
    code's CLI hint when the table has one that the message does not already give."""
    value = code.value if isinstance(code, ErrorCode) else str(code)
    prefix = f"stembridge: {where}: " if where else "stembridge: "
    print(f"{prefix}error [{value}]: {message}", file=sys.stderr)
    fix = hint(value, "cli") if value in ErrorCode._value2member_map_ else ""
    if fix and fix not in message:
        print(f"  {fix}", file=sys.stderr)


def warning(message: str) -> None:
    print(f"stembridge: warning: {message}", file=sys.stderr)
