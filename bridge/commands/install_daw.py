"""`stembridge install-daw ardour [--dir DIR]`: put the Ardour scripts where Ardour finds
them. Copies `clients/ardour/scripts/` (the action scripts, the follow hook and the
`stembridge/` library folder) into Ardour's user scripts folder,
`$XDG_CONFIG_HOME/ardour<N>/scripts` (default `~/.config`; the newest `ardour<N>` folder
there, else `ardour8`), each file written atomically; files of the user's own are kept.
Client side: imports only `protocol`."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from bridge.commands import report
from protocol.errors import CODES, ErrorCode
from protocol.files import atomic_write

#: The scripts as shipped in this source tree (clients/ardour/scripts).
SCRIPTS = Path(__file__).resolve().parents[2] / "clients" / "ardour" / "scripts"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install-daw", help="install the DAW scripts (ardour) into the DAW's "
                       "scripts folder")
    p.add_argument("daw", choices=("ardour",))
    p.add_argument("--dir", type=Path, default=None,
                   help="the scripts folder (default: Ardour's, in ~/.config/ardour<N>/scripts)")


def ardour_scripts_dir() -> Path:
    """Ardour's user scripts folder: the newest ~/.config/ardour<N>, else ardour8."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    versions = sorted(int(m.group(1)) for d in (base.glob("ardour*") if base.is_dir() else [])
                      if (m := re.fullmatch(r"ardour(\d+)", d.name)) and d.is_dir())
    return base / f"ardour{versions[-1] if versions else 8}" / "scripts"


def install(target: Path, source: Path = SCRIPTS) -> list[Path]:
    """Copy every file under `source` to `target` (same layout). Returns the files written."""
    written = []
    for path in sorted(source.rglob("*.lua")):
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest) as f:
            f.write(path.read_bytes())
        written.append(dest)
    return written


def cmd_install_daw(args: argparse.Namespace) -> int:
    if not SCRIPTS.is_dir():
        report.error(ErrorCode.INVALID_ARGUMENT, f"the Ardour scripts are not in {SCRIPTS}: "
                     "install stembridge from its source tree (pip install -e .)")
        return CODES[ErrorCode.INVALID_ARGUMENT].exit_status
    target = args.dir or ardour_scripts_dir()
    try:
        written = install(target)
    except OSError as err:
        report.error(ErrorCode.OUTPUT_FAILED, f"cannot write into {target}: {err}")
        return CODES[ErrorCode.OUTPUT_FAILED].exit_status
    print(f"installed {len(written)} files into {target}")
    print("In Ardour: Edit > Lua Scripts > Script Manager: add the \"stembridge: follow "
          "splits\" action hook once, and bind the stembridge actions to buttons or keys.",
          file=sys.stderr)
    return 0
