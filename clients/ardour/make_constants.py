"""Write clients/ardour/scripts/stembridge/constants.lua from protocol/, the one source.

    python clients/ardour/make_constants.py          # rewrite constants.lua
    python clients/ardour/make_constants.py --check  # exit 1 if it is out of date

The same table as the REAPER scripts' stembridge_constants.lua (built by
clients/reaper/make_constants.py, whose Lua is also valid Lua 5.3, the Lua of Ardour 7),
with its own header. This script imports only `protocol` and that generator.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "scripts" / "stembridge" / "constants.lua"
COMMAND = "python clients/ardour/make_constants.py"
HEADER = ["-- stembridge constants for the Ardour scripts (Lua 5.3): generated from protocol/, "
          "do not edit.", f"-- Regenerate with: {COMMAND}"]


def _reaper_generator():
    path = HERE.parent / "reaper" / "make_constants.py"
    spec = importlib.util.spec_from_file_location("stembridge_reaper_constants", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> str:
    """The text of constants.lua for the `protocol` package on sys.path."""
    lines = _reaper_generator().build().split("\n")
    body = lines[3:]  # the REAPER header: @noindex, what it is, how to regenerate
    return "\n".join(HEADER + body)


def main(argv: list[str]) -> int:
    return int(_reaper_generator().write_or_check(build(), TARGET, COMMAND, argv))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))  # the repository's protocol/
    sys.exit(main(sys.argv[1:]))
