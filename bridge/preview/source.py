"""The job's stems as the preview reads them: the shared-memory blocks a `protocol.shm.
ShmReader` mapped (no copy of the stems), how far they are final from a position, and
one block's window of each of them.

Thread-safe: the audio thread reads while another thread may `detach` (the player's
close). Nothing here imports pyo; numpy only through the arrays it is given.

Units: positions and lengths are frames at the song's rate (`int`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from bridge.preview.report import PlayReport
    from protocol.shm import ShmReader

#: The index block's job states, as the status payload names them.
_SEPARATION = {0: "running", 1: "done", 2: "failed"}


class StemSource:
    """The stems of one job, or none (`reader` None: the mixture plays everywhere).

    Args:
        reader: the job's attached blocks, ``reader.data[stem][channel]`` float32
            ``(frames,)`` arrays.
        frames: the song's length in frames.
    """

    def __init__(self, reader: ShmReader | None, frames: int) -> None:
        self.frames = frames
        self._lock = threading.Lock()
        self._reader = reader
        self._data: list[list[np.ndarray]] | None = None if reader is None else reader.data

    def lead(self, pos: int, report: PlayReport) -> int:
        """Frames of final stems from `pos` on (0 when `pos` is not final); records the
        separation's state and the lead in `report`. An index that cannot be read right
        now (the writer holds it) counts as 0 and records nothing."""
        with self._lock:
            reader = self._reader
        if reader is None:
            report.lead_frames = 0
            return 0
        try:
            snap = reader.index()
        except (TimeoutError, ValueError):
            return 0
        report.separation = _SEPARATION.get(snap.state, "running")
        end = min(self.frames, snap.frames)
        lead = 0
        for a, b in snap.ranges:
            if a <= pos < b:
                lead = min(b, end) - pos
                break
        report.lead_frames = max(0, lead)
        return report.lead_frames

    def fill(self, pos: int, n: int, bufs: Sequence[Sequence[np.ndarray]]) -> bool:
        """Copy `n` frames from `pos` of every stem into ``bufs[stem][channel]`` (block-
        long arrays; the rest zeroed; a mono stem fills every channel). False, and
        nothing copied, when there are no stems."""
        with self._lock:
            data = self._data
        if data is None:
            return False
        for s, row in enumerate(bufs):
            for c, buf in enumerate(row):
                src = data[s][min(c, len(data[s]) - 1)]
                m = max(0, min(n, src.shape[0] - 1 - pos))
                buf[:m] = src[pos:pos + m]
                buf[m:] = 0
        return True

    def detach(self) -> None:
        """Forget the mapped arrays (the caller closes the reader afterwards)."""
        with self._lock:
            self._reader, self._data = None, None
