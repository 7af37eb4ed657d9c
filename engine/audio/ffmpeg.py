"""The ``ffmpeg`` and ``ffprobe`` command-line tools: finding them on ``PATH``, input
arguments that can only mean a local file, and their logs.

libsndfile reads most files; these tools decode the rest (M4A/AAC/ALAC, MP4, WebM,
Matroska, ..., see `engine.audio.header` and `engine.audio.decoder`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: How to get ffmpeg when a file needs it.
INSTALL_FFMPEG = (
    "Install ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`, macOS: `brew install "
    "ffmpeg`, Windows: `winget install ffmpeg`) or convert the file to WAV or FLAC."
)


def find_ffmpeg() -> tuple[str, str] | None:
    """Paths of ``(ffmpeg, ffprobe)`` found on ``PATH``, or None when either is missing."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        return None
    return ffmpeg, ffprobe


#: ffmpeg demuxers stembridge lets read a source: audio containers only, so a playlist
#: (``hls``, ``concat``, ``dash``...) can never make ffmpeg open other files or devices.
AUDIO_DEMUXERS = (
    "mov", "mp4", "m4a", "3gp", "matroska", "webm", "ogg", "mp3", "aac", "wav", "flac",
    "asf", "aiff", "caf", "w64", "ac3", "eac3", "dts", "amr", "mpeg", "mpegts", "truehd",
    "mlp", "wv", "ape", "tta", "au", "avi", "flv", "rm", "loas", "opus", "wsaud", "voc",
    "dsf", "iff", "mpc", "mpc8", "tak", "shn", "aa", "sox", "rf64",
)


def input_options() -> list[str]:
    """Options that go before ``-i``: only the ``file`` protocol and `AUDIO_DEMUXERS`."""
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(AUDIO_DEMUXERS)]


def ffmpeg_input(path: Path) -> str:
    """An ffmpeg input argument that can only mean this local file: the ``file:``
    protocol stops names like ``-x.wav`` or ``concat:...`` being read as options or URLs."""
    return "file:" + os.path.abspath(path)


def clean_log(text: str, path: Path) -> str:
    """ffmpeg's stderr without the ``file:/abs/path: `` prefix it puts on messages."""
    return text.replace(ffmpeg_input(path) + ": ", "").strip()


def last_line(text: str) -> str:
    """The last non-empty line of a tool's log (its most specific complaint)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no details"
