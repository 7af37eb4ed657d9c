"""On-disk layouts shared by the server and its clients (see PROTOCOL.md, "Files").

* Discovery: ``<runtime dir>/server.json`` = {host, port, pid, version, protocol, started,
  token_required, output_root}. Runtime dir: ``$STEMBRIDGE_RUNTIME_DIR``, else
  ``$XDG_RUNTIME_DIR/stembridge``, else ``<cache>/run`` where cache is
  ``$STEMBRIDGE_CACHE_DIR`` or ``$XDG_CACHE_HOME/stembridge`` or ``~/.cache/stembridge``.
* A job folder ``<output root>/<job id>/``: ``manifest.json``, ``regions/<stem>/
  <start>-<end>.wav`` (frames at the source rate, zero-padded to 10 digits; each file is
  written once, atomically, and never changed), and at the end ``<stem>.wav``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
DISCOVERY = "server.json"


def cache_root() -> Path:
    env = os.environ.get("STEMBRIDGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "stembridge" / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "stembridge"


def runtime_dir() -> Path:
    env = os.environ.get("STEMBRIDGE_RUNTIME_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "stembridge"
    return cache_root() / "run"


def discovery_path() -> Path:
    return runtime_dir() / DISCOVERY


def region_file(stem: str, start: int, end: int) -> str:
    """Path of a region file relative to its job folder."""
    return f"regions/{stem}/{start:010d}-{end:010d}.wav"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON atomically (temporary file in the same folder,
    then os.replace): a reader sees the old or the new version, never a partial one. On
    Windows a reader holding the file open makes os.replace fail for a moment: retry."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    for attempt in range(50):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.02)
