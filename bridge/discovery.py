"""Discovery records: how clients on this machine find running servers.

Every listening server publishes its own record, ``<runtime>/servers/<port>.json`` (a
`protocol.jobfiles.DiscoveryRecord`), and the first one also ``<runtime>/server.json``:
the default server, which clients that name no port use. A server that stops removes its
records (only those that still name its pid and port) and hands the default to another
live server, if any. Records of dead processes are ignored and removed when seen, so a
crashed server never strands the others. Imports only `protocol` (the light client uses
it).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from protocol import settings
from protocol.files import discovery_path, runtime_dir, write_json_atomic
from protocol.jobfiles import DiscoveryRecord
from protocol.osc import ProtocolError

SERVERS = "servers"


def servers_dir() -> Path:
    return runtime_dir() / SERVERS


def record_path(port: int) -> Path:
    """The record of the server on `port`."""
    return servers_dir() / f"{port}.json"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (True when it cannot be told: pid 0, other OS)."""
    if pid <= 0 or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load(path: Path) -> DiscoveryRecord | None:
    """The record in `path`; None (and the file removed) when its process is dead."""
    try:
        record = DiscoveryRecord.from_payload(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ProtocolError):
        return None
    if not pid_alive(record.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return record


def _same(a: DiscoveryRecord | None, b: DiscoveryRecord) -> bool:
    return a is not None and (a.pid, a.port) == (b.pid, b.port)


def live_records() -> list[DiscoveryRecord]:
    """Every live server's record, the default port first, then by start time."""
    found = [r for p in sorted(servers_dir().glob("*.json")) if (r := _load(p)) is not None]
    return sorted(found, key=lambda r: (r.port != settings.DEFAULT_PORT, r.started))


def publish(record: DiscoveryRecord) -> None:
    """Write `record` as its port's record, and as the default when there is none."""
    folder = servers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for f in (runtime_dir(), folder):
        with contextlib.suppress(OSError):
            f.chmod(0o700)
    write_json_atomic(record_path(record.port), record.to_payload())
    current = _load(discovery_path())
    if current is None or _same(current, record):
        write_json_atomic(discovery_path(), record.to_payload())


def withdraw(record: DiscoveryRecord) -> None:
    """Remove `record` (if still its own) and pass the default to another live server."""
    if _same(_load(record_path(record.port)), record):
        with contextlib.suppress(OSError):
            record_path(record.port).unlink()
    if _same(_load(discovery_path()), record):
        with contextlib.suppress(OSError):
            discovery_path().unlink()
        others = [r for r in live_records() if not _same(r, record)]
        if others:
            write_json_atomic(discovery_path(), others[0].to_payload())


def find(port: int | None = None) -> DiscoveryRecord | None:
    """The live record of the server on `port`, or of the default server (no port)."""
    if port is not None:
        record = _load(record_path(port))
        if record is None:
            default = _load(discovery_path())
            record = default if default is not None and default.port == port else None
        return record
    record = _load(discovery_path())
    if record is None:
        others = live_records()
        record = others[0] if others else None
    return record
