"""On-disk layouts shared by the server and its clients (see PROTOCOL.md, "Files"), and
the one way every part of stembridge writes a file atomically.

* Discovery (`protocol.jobfiles.DiscoveryRecord`, written by `bridge.discovery`): one
  record per server, ``<runtime dir>/servers/<port>.json``, and ``<runtime dir>/server.json``
  for the default server = {host, port, pid, version, protocol, started, token_required,
  output_root}. Runtime dir: ``$STEMBRIDGE_RUNTIME_DIR``, else
  ``$XDG_RUNTIME_DIR/stembridge``, else ``<cache>/run`` where cache is
  ``$STEMBRIDGE_CACHE_DIR`` or ``$XDG_CACHE_HOME/stembridge`` or ``~/.cache/stembridge``.
* A job folder ``<output root>/<job id>/``: ``manifest.json``, ``regions/<stem>/
  <start>-<end>.wav`` (frames at the source rate, zero-padded to 10 digits; each file is
  written once, atomically, and never changed), and at the end ``<stem>.wav``.
* Atomic writes: a temporary file ``.stembridge-tmp-*`` in the target's folder (same file
  system), fsynced, given normal permissions, renamed over the target, the folder fsynced.
  A reader sees the old or the new file, never a partial one; a crash leaves at most a
  temporary file, which `remove_stale_temps` cleans up.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from protocol import settings

MANIFEST = "manifest.json"
DISCOVERY = "server.json"
#: Name prefix of every temporary file stembridge writes (never a finished file).
TEMP_PREFIX = ".stembridge-tmp-"


def runtime_dir() -> Path:
    """Where servers publish their discovery records."""
    return settings.runtime_dir()


def discovery_path() -> Path:
    return runtime_dir() / DISCOVERY


def region_file(stem: str, start: int, end: int) -> str:
    """Path of a region file relative to its job folder."""
    return f"regions/{stem}/{start:010d}-{end:010d}.wav"


# --------------------------------------------------------------------------- atomic writes


@lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give (0o666 minus the umask):
    `tempfile.mkstemp` creates 0o600 files, which must not leak into the results."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def make_temp(directory: Path, suffix: str = "") -> Path:
    """A new, empty, uniquely named temporary file in `directory` (the target's folder, so
    that `publish` is one atomic rename). Two writers never share a name."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX); a no-op where folders cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, target: Path) -> None:
    """fsync the finished temporary file `tmp`, give it normal permissions and rename it
    over `target` in one atomic step. On Windows a reader holding `target` open makes the
    rename fail for a moment: it is retried for up to a second."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    with contextlib.suppress(OSError):
        os.chmod(tmp, _file_mode())
    for attempt in range(50):
        try:
            os.replace(tmp, target)
            break
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.02)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(target: Path, mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces `target` atomically when the block
    ends without an exception; on an exception the temporary file is removed and `target`
    is untouched. ``mode`` is ``"wb"`` or ``"w"`` (then pass ``encoding``)."""
    target = Path(target)
    tmp = make_temp(target.parent, target.suffix)
    try:
        with open(tmp, mode, **open_args) as fh:
            yield fh
        publish(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data` atomically (see `atomic_write`)."""
    with atomic_write(target) as fh:
        fh.write(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON atomically: a reader sees the old or the new
    version, never a partial one."""
    write_bytes_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"))


def remove_stale_temps(directory: Path, min_age_seconds: float = 0.0) -> int:
    """Delete the temporary files (`TEMP_PREFIX`) a killed writer left in `directory`
    that are older than `min_age_seconds` (by modification time); returns how many. With
    0 (the default) every one goes: call it so only where no other live writer works in
    that folder."""
    count = 0
    cutoff = time.time() - min_age_seconds
    for candidate in Path(directory).glob(TEMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if min_age_seconds > 0 and not (candidate.is_file()
                                            and candidate.stat().st_mtime < cutoff):
                continue
            candidate.unlink()
            count += 1
    return count
