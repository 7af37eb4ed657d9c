"""Write clients/reaper/Stems/lib/stembridge_constants.lua from protocol/, the one source.

    python clients/reaper/make_constants.py          # rewrite stembridge_constants.lua
    python clients/reaper/make_constants.py --check  # exit 1 if it is out of date

The Lua file is a `[nomain]` library that returns one table:

- ``ERRORS``: ErrorCode member name -> wire code (``ERRORS.MODEL_NOT_INSTALLED``);
- ``EXIT``: wire code -> the CLI's exit status (`protocol.errors.CODES`);
- ``HINTS``: wire code -> what a DAW user does about it (only codes that have a hint);
- ``STEMS``: stem count (2, 4, 6) -> stem names in track order (`protocol.stems.STEM_SETS`);
- ``ADDRESS``: Address member name -> OSC address (`protocol.messages.Address`);
- ``PROTOCOL_VERSION``, ``MAX_DATAGRAM`` (bytes), ``DEFAULT_HOST``, ``DEFAULT_PORT``,
  ``DEFAULT_PREVIEW_PORT`` (UDP ports).

This script imports only `protocol`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "Stems" / "lib" / "stembridge_constants.lua"
COMMAND = "python clients/reaper/make_constants.py"


def lua_string(text: str) -> str:
    """`text` as a double-quoted Lua 5.4 string literal (UTF-8 kept, controls escaped)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


LUA_KEYWORDS = frozenset({
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"})


def lua_key(name: str) -> str:
    """`name` as a Lua table key: bare when it is an identifier, else ``["..."]``."""
    if re.fullmatch(r"[A-Za-z_]\w*", name) and name not in LUA_KEYWORDS:
        return name
    return f"[{lua_string(name)}]"


def _members(cls: type) -> list[tuple[str, str]]:
    """The upper-case string attributes of a class of constants, in definition order."""
    return [(k, v) for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)]


def build() -> str:
    """The text of stembridge_constants.lua for the `protocol` package on sys.path."""
    import protocol
    from protocol import errors, messages, settings, stems

    lines = [
        "-- @noindex",
        "-- stembridge constants for the REAPER scripts: generated from protocol/, do not edit.",
        f"-- Regenerate with: {COMMAND}",
        "",
        "local C = {}",
        "",
        f"C.PROTOCOL_VERSION = {int(protocol.PROTOCOL_VERSION)}",
        f"C.MAX_DATAGRAM = {int(messages.MAX_DATAGRAM)}  -- bytes",
        f"C.DEFAULT_HOST = {lua_string(settings.DEFAULT_HOST)}",
        f"C.DEFAULT_PORT = {int(settings.DEFAULT_PORT)}  -- UDP",
        f"C.DEFAULT_PREVIEW_PORT = {int(settings.DEFAULT_PREVIEW_PORT)}  -- UDP",
        "",
        "--- Error codes (protocol.errors.ErrorCode): member name -> wire code.",
        "C.ERRORS = {",
    ]
    lines += [f"  {lua_key(code.name)} = {lua_string(code.value)}," for code in errors.ErrorCode]
    lines += ["}", "-- (a name that is not a code is a mistake in the scripts: say so at once)",
              "setmetatable(C.ERRORS, { __index = function(_, name)",
              '  error("stembridge: no error code named " .. tostring(name), 2)',
              "end })",
              "", "--- Exit status of the command line per wire code.", "C.EXIT = {"]
    lines += [f"  {lua_key(code.value)} = {errors.CODES[code].exit_status},"
              for code in errors.ErrorCode]
    lines += ["}", "", "--- What a DAW user does about a code (codes without a hint are absent).",
              "C.HINTS = {"]
    lines += [f"  {lua_key(code.value)} = {lua_string(errors.CODES[code].hint.daw)},"
              for code in errors.ErrorCode if errors.CODES[code].hint.daw]
    lines += ["}", "", "--- Stem names per stem count, in track order (protocol.stems.STEM_SETS).",
              "C.STEMS = {"]
    for count, names in sorted(stems.STEM_SETS.items()):
        lines.append(f"  [{int(count)}] = {{ " + ", ".join(lua_string(n) for n in names) + " },")
    lines += ["}", "", "--- OSC addresses (protocol.messages.Address): member name -> address.",
              "C.ADDRESS = {"]
    lines += [f"  {lua_key(name)} = {lua_string(value)},"
              for name, value in _members(messages.Address)]
    lines += ["}", "", "return C", ""]
    return "\n".join(lines)


def write_or_check(text: str, target: Path, command: str, argv: list[str]) -> int:
    """Write `text` to `target`; with ``--check`` in `argv`, only say (exit 1) whether
    `target` is out of date, naming `command` to regenerate it."""
    if "--check" in argv:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print(f"{target.relative_to(HERE.parents[1])} is out of date: run {command}",
                  file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    return write_or_check(build(), TARGET, COMMAND, argv)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # the repository's protocol/
    sys.exit(main(sys.argv[1:]))
