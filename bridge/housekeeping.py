"""The disk budget of the server's job folders: what a finished job may leave behind.

A failed or cancelled job keeps only its ``manifest.json`` (the client reads why it
ended there): its region files and temporary files go at once (`clean_failed`). A done
job keeps its consolidated stems; its ``regions/`` folder (a second copy of the same
audio, which clients read only while the job runs) goes once the grace time has passed
since it finished (`Housekeeper.sweep`). When the finished job folders together exceed
the byte budget, the oldest finished ones are removed whole. Unfinished jobs (queued,
running, or resumable after a crash) are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.jobs import JobRecord
from protocol.files import remove_stale_temps

log = logging.getLogger("stembridge.server")

#: Seconds a done job's region files stay after it finished.
DEFAULT_REGIONS_GRACE_S = 600.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (0 when it is gone)."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def clean_failed(rec: JobRecord) -> None:
    """A failed or cancelled job: remove its region files and temporary files (its
    manifest stays)."""
    shutil.rmtree(rec.folder / "regions", ignore_errors=True)
    with contextlib.suppress(OSError):
        remove_stale_temps(rec.folder)


@dataclass
class Housekeeper:
    """Keeps the finished job folders within `max_bytes` (0: unbounded) and removes done
    jobs' region files `regions_grace_s` seconds after they finished."""

    max_bytes: int
    regions_grace_s: float = DEFAULT_REGIONS_GRACE_S

    def sweep(self, records: list[JobRecord], now: float | None = None) -> list[JobRecord]:
        """Apply the rules to `records` (the server's); returns the records whose folders
        were removed whole (the server forgets them)."""
        now = time.time() if now is None else now
        finished = sorted((r for r in records if not r.active and r.folder.is_dir()),
                          key=lambda r: r.finished or r.created)
        for rec in finished:
            if rec.state == "done" and now - (rec.finished or now) >= self.regions_grace_s:
                shutil.rmtree(rec.folder / "regions", ignore_errors=True)
        if not self.max_bytes:
            return []
        sizes = {rec.id: folder_bytes(rec.folder) for rec in finished}
        total = sum(sizes.values())
        removed = []
        for rec in finished:
            if total <= self.max_bytes:
                break
            if rec.shm is not None:
                continue  # a client still reads it from shared memory
            shutil.rmtree(rec.folder, ignore_errors=True)
            total -= sizes[rec.id]
            removed.append(rec)
            log.info("removed job folder %s (job folders over their budget)", rec.folder)
        return removed
