"""How every command reports an error on stderr: the message (what is wrong), then the
CLI hint of its code from `protocol.errors.CODES` (what to do), and the exit status from
the same table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display). ImportError
    without matplotlib (the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, out: Path) -> Path:
    """Write the matplotlib figure `fig` to the PNG `out` atomically, then close it."""
    import matplotlib.pyplot as plt

    from protocol.files import make_temp, publish

    tmp = make_temp(out.parent, ".png")
    try:
        fig.savefig(str(tmp), format="png", dpi=100)
        publish(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def bar(frac: float, width: int = 24) -> str:
    """``[####....]``'s inside: `frac` (0..1) of `width` characters filled."""
    filled = int(frac * width)
    return "#" * filled + "." * (width - filled)


class StatusLine:
    """One progress line on stderr: redrawn in place on a TTY; otherwise printed only
    when its `key` changes (a decile, a phase), so logs stay short. `enabled` False
    draws nothing. `clear` also erases the rest of the TTY line before each redraw."""

    def __init__(self, enabled: bool, clear: bool = False) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.prefix = "\r\x1b[K" if clear else "\r"
        self.last: Any = object()

    def show(self, line: str, key: Any) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write(self.prefix + line)
            sys.stderr.flush()
        elif key != self.last:
            self.last = key
            sys.stderr.write(line + "\n")

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
