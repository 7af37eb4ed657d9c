"""A user's source file, opened once and pinned: what the decoder read is what is hashed.

`SourceFile` opens the file without blocking (a FIFO swapped in for the file cannot hang
the open), checks on the opened descriptor, not the path, that it is a regular file of
at most `Limits.max_source_bytes`, and records its identity: device, inode, size, mtime
and ctime (ns). The decoder reads the same inode by path; `unchanged` proves afterwards
that both the descriptor and the path still name that inode with the same size and
times, so the bytes hashed through the descriptor (`sha256`, bounded in bytes and time)
are the bytes that were decoded. A change of the file in place (which moves mtime and
ctime), a rename over it, or its removal all break `unchanged`. Nothing here writes to
the file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from engine.audio.info import REEXPORT, input_error
from engine.errors import InputError
from protocol.errors import ErrorCode

_BLOCK = 1 << 20
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(
    os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)

Identity = tuple[int, int, int, int, int]


def identity(st: os.stat_result) -> Identity:
    """``(device, inode, size in bytes, mtime ns, ctime ns)`` of a stat result."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def changed_error(path: Path) -> InputError:
    """SOURCE_CHANGED: the file was replaced, written to or removed while it was read."""
    return input_error(ErrorCode.SOURCE_CHANGED,
                       f"'{path}' changed while it was being read; split it again once it "
                       "is no longer being written.")


class SourceFile:
    """The open, checked source file (see the module docstring). Close it when done;
    it is also a context manager.

    Args:
        path: the file as the user named it (symlinks are followed once, at the open).
        max_bytes: largest file accepted, bytes.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, _FLAGS)
        except FileNotFoundError:
            raise input_error(ErrorCode.INPUT_MISSING,
                              f"No file at '{self.path}'. Check the path; the file may have "
                              "been moved, renamed or deleted.") from None
        except OSError as exc:
            raise input_error(ErrorCode.INPUT_UNREADABLE,
                              f"Cannot open '{self.path}': {exc.strerror}. Check that you may "
                              "read it.") from None
        try:
            st = os.fstat(self._fd)
            self._check(st, max_bytes)
        except BaseException:
            self.close()
            raise
        self.identity = identity(st)
        self._digest: str | None = None

    def _check(self, st: os.stat_result, max_bytes: int) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise input_error(ErrorCode.INPUT_MISSING,
                              f"'{self.path}' is a folder, not an audio file. Choose an audio "
                              "file (WAV, FLAC, MP3, ...) inside it.")
        if not stat.S_ISREG(st.st_mode):
            raise input_error(ErrorCode.INPUT_UNREADABLE,
                              f"'{self.path}' is not a regular file (a device or a pipe?). "
                              "Save the audio to a file first.")
        if st.st_size == 0:
            raise input_error(ErrorCode.INPUT_EMPTY,
                              f"'{self.path}' is empty (0 bytes); the export or download "
                              f"probably failed. {REEXPORT}")
        if st.st_size > max_bytes:
            raise input_error(ErrorCode.INPUT_TOO_LONG,
                              f"'{self.path}' is {st.st_size / 2**30:.1f} GiB; the largest "
                              f"source file accepted is {max_bytes / 2**30:.1f} GiB.")

    @property
    def size(self) -> int:
        """Bytes of the file when it was opened."""
        return self.identity[2]

    def unchanged(self) -> bool:
        """True while the descriptor and the path both still name the opened file with
        its size and times as they were at the open."""
        if self._fd is None:
            return False
        try:
            return (identity(os.fstat(self._fd)) == self.identity
                    and identity(os.stat(self.path)) == self.identity)
        except (OSError, ValueError):
            return False

    def check_unchanged(self) -> None:
        """Raise SOURCE_CHANGED unless `unchanged`."""
        if not self.unchanged():
            raise changed_error(self.path)

    def sha256(self, timeout: float, cancel: Any = None) -> str:
        """Hex sha256 of the opened file's first `size` bytes, read through the
        descriptor (at most `size` bytes, within `timeout` seconds; `cancel`, a
        `CancelToken`, stops it); then `check_unchanged`. Computed once."""
        if self._digest is None:
            if self._fd is None:
                raise changed_error(self.path)
            digest = hashlib.sha256()
            deadline = time.monotonic() + timeout
            offset = 0
            while offset < self.size:
                block = os.pread(self._fd, min(_BLOCK, self.size - offset), offset)
                if not block:
                    raise changed_error(self.path)  # shorter than at the open
                digest.update(block)
                offset += len(block)
                if time.monotonic() > deadline:
                    raise input_error(ErrorCode.INPUT_UNREADABLE,
                                      f"Reading '{self.path}' took longer than {timeout:.0f} s "
                                      "(a slow or network drive?); copy it to a local drive "
                                      "first.")
                if cancel is not None:
                    cancel.raise_if_cancelled()
            self._digest = digest.hexdigest()
        self.check_unchanged()
        return self._digest

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SourceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
