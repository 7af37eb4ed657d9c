"""A file's container structure, read from its bytes: what kind of file it is and whether
it is visibly cut short, before any decoder sees it.

libsndfile and ffmpeg both quietly decode what is left of a truncated file:

* A WAV/AIFF cut short reports the frames actually present, not the frames its header
  promises, and reads without error; we compare the data chunk's declared size (bytes)
  with the file size.
* A truncated OGG reports the shorter length; we check that its last page is complete.
* An MP3 without a Xing/Info/VBRI header gets a length *estimated from the first frame's
  bitrate* (see `mp3_has_length_header`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.audio.info import REEXPORT, input_error
from engine.errors import InputError
from protocol.errors import ErrorCode

#: First bytes of containers libsndfile reads; a file that starts like this but cannot
#: be opened is damaged rather than "not audio".
_MAGIC = (
    (b"RIFF", "WAV"),
    (b"RIFX", "WAV"),
    (b"RF64", "WAV"),
    (b"BW64", "WAV"),
    (b"FORM", "AIFF"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"caff", "CAF"),
)


def sniff_container(path: Path, *, sndfile_only: bool = False) -> str | None:
    """Container named by a file's first bytes (None when unrecognised). With
    `sndfile_only`, only containers libsndfile reads count."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:3] == b"ID3":
        return "MP3"
    if sndfile_only:
        return None
    if head[4:8] == b"ftyp":
        return "MP4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "MATROSKA"
    return None


def mp3_has_length_header(path: Path) -> bool:
    """Whether the first MPEG frame (after any ID3v2 tag) carries a Xing/Info/VBRI header."""
    with open(path, "rb") as fh:
        head = fh.read(10)
        offset = 0
        if len(head) == 10 and head[:3] == b"ID3":
            size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14
            size |= (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
            offset = 10 + size + (10 if head[5] & 0x10 else 0)
        fh.seek(offset)
        first = fh.read(4096)
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


def truncated_error(path: Path, detail: str) -> InputError:
    return input_error(ErrorCode.INPUT_CORRUPT, f"'{path}' is truncated: {detail}. {REEXPORT}")


def check_structure(path: Path) -> None:
    """Raise INPUT_CORRUPT for a file visibly cut short, whichever decoder reads it:
    libsndfile and ffmpeg both quietly decode what is left of such files."""
    shortfall = _data_chunk_shortfall(path)
    if shortfall is not None:
        declared, present = shortfall
        raise truncated_error(
            path, f"its header promises {declared} bytes of audio but the file holds only {present}"
        )
    if _ogg_last_page_incomplete(path):
        raise truncated_error(path, "its last Ogg page is cut off")


def _ogg_last_page_incomplete(path: Path) -> bool:
    """Whether an Ogg file ends inside a page (header or body shorter than declared)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(4) != b"OggS":
            return False
        fh.seek(max(0, size - 70_000))  # an Ogg page is at most 65307 bytes
        tail = fh.read()
    page = tail[tail.rfind(b"OggS") :]
    if len(page) < 27 or len(page) < 27 + page[26]:
        return True
    segments = page[27 : 27 + page[26]]
    return len(page) < 27 + len(segments) + sum(segments)


def _data_chunk_shortfall(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` bytes of the audio chunk of a RIFF/RF64 WAV or AIFF file
    that is shorter than declared; None when complete or not checkable.

    A declared size of 0 or 0xFFFFFFFF means "unknown" (streamed WAV from ffmpeg).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
            order = "big" if head[:4] == b"RIFX" else "little"
            found = _find_chunk(fh, b"data", order)
        elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            found = _find_chunk(fh, b"SSND", "big")
        else:
            return None
    if found is None:
        return None
    declared, start = found
    if declared in (0, 0xFFFFFFFF):
        return None
    present = size - start
    return (declared, present) if declared > present else None


def wav_codec_tag(path: Path) -> int | None:
    """The format tag of a RIFF WAV whose ``fmt `` and ``data`` chunks are both present,
    else None. libsndfile calls WAVs in codecs it lacks (MP2, AC-3...) "malformed"."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
            return None
        fmt = _find_chunk(fh, b"fmt ", "little")
        if fmt is None or fmt[0] < 16:
            return None
        fh.seek(fmt[1])
        tag = int.from_bytes(fh.read(2), "little")
        return tag if _find_chunk(fh, b"data", "little") is not None else None


def _find_chunk(fh: Any, chunk_id: bytes, order: str) -> tuple[int, int] | None:
    """``(size, data offset)`` of the first chunk named `chunk_id` after the 12-byte
    RIFF/FORM header, or None."""
    fh.seek(12)
    for _ in range(10_000):
        header = fh.read(8)
        if len(header) < 8:
            return None
        size = int.from_bytes(header[4:8], order)  # type: ignore[arg-type]
        if header[:4] == chunk_id:
            return size, fh.tell()
        fh.seek(size + (size & 1), os.SEEK_CUR)
    return None
