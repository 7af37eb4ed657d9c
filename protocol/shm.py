"""Shared-memory data plane: a job's stems as POSIX shared memory, zero-copy for local
clients (the preview server). Layout version 1, little-endian (see PROTOCOL.md, "Shared
memory"):

* One **data block** per (stem, channel): float32 samples at the source rate, ``frames + 1``
  long (the extra guard sample is what pyo's ``SharedTable(name, False, frames)`` expects).
  Name: ``sb<token>_<stem index>_<channel>`` (pyo: prefix a ``/``). Unwritten samples are 0.
* One **index block** ``sb<token>_ix``: a header then up to `MAX_RANGES` final ranges::

      0  magic  b"STBI"        4  version u32 (1)     8  seq u32 (seqlock)
      12 state u32 (0 running, 1 done, 2 failed)      16 frames u64
      24 samplerate u32        28 channels u32        32 stems u32
      36 count u32 (ranges)    40 ranges: count x (start u64, end u64), sorted, disjoint

  Readers retry while `seq` is odd or changes during their read (a seqlock): the writer
  makes it odd, rewrites, then makes it even. Audio of a range is written *before* the
  range is published.

`token` is 8 lowercase hex characters (short: macOS limits names to 31 characters).
This module imports numpy lazily; it imports nothing else of stembridge.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"STBI"
VERSION = 1
HEADER = struct.Struct("<4sIIIQIIII")  # magic version seq state frames sr channels stems count
MAX_RANGES = 1024
RANGE = struct.Struct("<QQ")
INDEX_SIZE = HEADER.size + MAX_RANGES * RANGE.size
RUNNING, DONE, FAILED = 0, 1, 2


def block_names(token: str, stems: int, channels: int) -> tuple[str, list[list[str]]]:
    """(index block name, [stem][channel] data block names) for a job token."""
    return f"sb{token}_ix", [[f"sb{token}_{s}_{c}" for c in range(channels)]
                             for s in range(stems)]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class ShmWriter:
    """Creates and fills a job's blocks (the server side)."""

    def __init__(self, token: str, stems: int, channels: int, frames: int,
                 samplerate: int) -> None:
        from multiprocessing import shared_memory

        import numpy as np

        self.index_name, self.names = block_names(token, stems, channels)
        self.frames, self.channels = frames, channels
        self._blocks: list[Any] = []
        self._ranges: list[tuple[int, int]] = []
        try:
            self._index = self._create(shared_memory, self.index_name, INDEX_SIZE)
            self._data = []
            for per_stem in self.names:
                arrays = []
                for name in per_stem:
                    blk = self._create(shared_memory, name, (frames + 1) * 4)
                    arrays.append(np.ndarray((frames + 1,), np.float32, buffer=blk.buf))
                self._data.append(arrays)
        except BaseException:
            self.unlink()
            raise
        HEADER.pack_into(self._index.buf, 0, MAGIC, VERSION, 0, RUNNING, frames, samplerate,
                         channels, stems, 0)

    def _create(self, shared_memory: Any, name: str, size: int) -> Any:
        blk = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._blocks.append(blk)
        return blk

    def write(self, stem: int, start: int, audio: Any) -> None:
        """Audio (channels, n) float32 of one stem at frame `start` (not yet published)."""
        for c in range(self.channels):
            self._data[stem][c][start:start + audio.shape[-1]] = audio[c]

    def publish(self, start: int, end: int, state: int = RUNNING) -> None:
        """Mark ``[start, end)`` final (after `write` of every stem) under the seqlock."""
        if end > start:
            self._ranges = _merge(self._ranges + [(start, end)])
        ranges = self._ranges[:MAX_RANGES]
        buf = self._index.buf
        seq = struct.unpack_from("<I", buf, 8)[0]
        struct.pack_into("<I", buf, 8, seq + 1)  # odd: being written
        for i, (a, b) in enumerate(ranges):
            RANGE.pack_into(buf, HEADER.size + i * RANGE.size, a, b)
        struct.pack_into("<I", buf, 36, len(ranges))
        struct.pack_into("<I", buf, 12, state)
        struct.pack_into("<I", buf, 8, seq + 2)  # even: consistent

    def finish(self, ok: bool) -> None:
        self.publish(0, 0, DONE if ok else FAILED)

    def unlink(self) -> None:
        """Remove every block from the system (readers that attached keep their mapping)."""
        self._data = []
        for blk in self._blocks:
            with contextlib.suppress(BufferError):  # a numpy view is alive: unlink anyway
                blk.close()
            with contextlib.suppress(FileNotFoundError):
                blk.unlink()
        self._blocks = []


@dataclass
class ShmIndex:
    """A consistent snapshot of a job's index block."""

    state: int
    frames: int
    samplerate: int
    channels: int
    stems: int
    ranges: list[tuple[int, int]]

    def is_final(self, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self.ranges)


class ShmReader:
    """Attaches to a job's blocks (any local process; read-only use)."""

    def __init__(self, index_name: str, names: list[list[str]]) -> None:
        from multiprocessing import shared_memory

        import numpy as np

        self._blocks: list[Any] = []
        self._index = self._open(shared_memory, index_name)
        snap = self.index()
        self.data = []
        for per_stem in names:
            arrays = []
            for name in per_stem:
                blk = self._open(shared_memory, name)
                arrays.append(np.ndarray((snap.frames + 1,), np.float32, buffer=blk.buf))
            self.data.append(arrays)

    def _open(self, shared_memory: Any, name: str) -> Any:
        blk = shared_memory.SharedMemory(name=name, create=False)
        try:  # Python < 3.13 registers attached blocks for removal at exit: undo that
            from multiprocessing import resource_tracker

            resource_tracker.unregister(blk._name, "shared_memory")
        except (ImportError, AttributeError, KeyError):
            pass
        self._blocks.append(blk)
        return blk

    def index(self, retries: int = 1000) -> ShmIndex:
        buf = self._index.buf
        for _ in range(retries):
            magic, version, seq, state, frames, sr, ch, stems, count = HEADER.unpack_from(buf, 0)
            if magic != MAGIC or version != VERSION:
                raise ValueError(f"not a stembridge index block (version {version})")
            if seq % 2:
                continue
            ranges = [RANGE.unpack_from(buf, HEADER.size + i * RANGE.size)
                      for i in range(min(count, MAX_RANGES))]
            if struct.unpack_from("<I", buf, 8)[0] == seq:
                return ShmIndex(state, frames, sr, ch, stems, [(a, b) for a, b in ranges])
        raise TimeoutError("the index block kept changing; retry")

    def close(self) -> None:
        self.data = []
        for blk in self._blocks:
            with contextlib.suppress(BufferError):
                blk.close()
        self._blocks = []
