"""Audio in and out: decode, validate, channel layout, resampling and atomic writing.

Every array in this module is laid out ``(channels, frames)`` (or ``(..., channels, frames)``
for stacks of stems): one row per channel, time along the last axis. Lengths called
*frames* are counted in samples per channel; lengths called *seconds* are seconds; sample
rates are in Hz. Decoded audio is always float32 in [-1, 1] nominal full scale.

Decoding goes through libsndfile (via `soundfile`) for everything it reads (WAV, FLAC,
OGG/Vorbis/Opus, MP3 with a length header, AIFF, ...) and through the ``ffmpeg`` and
``ffprobe`` command-line tools for the rest (M4A/AAC/ALAC, MP4, WebM, Matroska, ...,
including the NI ``.stem.mp4`` format whose audio streams 0..4 hold mix + 4 stems).

Things libsndfile does silently, which this module detects (see the tests):

* A WAV/AIFF cut short reports the frames actually present, not the frames its header
  promises, and reads without error; we compare the data chunk's declared size with the
  file size.
* A truncated FLAC opens fine and fails only when the decoder reaches the cut ("lost sync").
* A truncated OGG reports the shorter length; only its log says the last page lacks the
  end-of-stream flag.
* An MP3 without a Xing/Info/VBRI header gets a length *estimated from the first frame's
  bitrate*, and libsndfile never reads past that estimate: a VBR file can come back cut to
  a fraction of its length. Such files go to ffmpeg when it is installed.
* A FLAC written to a pipe (total samples 0 in STREAMINFO) reports 2**63 - 1 frames.

Nothing here runs at import time; soundfile and scipy are imported on first use.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import Limits
from engine.errors import (
    DecoderMissingError,
    InputError,
    InvalidArgumentError,
    OutputError,
)
from protocol.errors import ErrorCode

__all__ = [
    "TEMP_PREFIX",
    "AudioInfo",
    "DecodedAudio",
    "RegionResampler",
    "StemFileWriter",
    "check_info",
    "decode",
    "find_ffmpeg",
    "from_model_channels",
    "load",
    "probe",
    "remove_stale_temp_files",
    "resample",
    "resampled_length",
    "to_model_channels",
    "validate",
    "write_audio",
]

#: Prefix of every temporary file this module creates next to an output file.
TEMP_PREFIX = ".stembridge-tmp-"

#: Peak level (dBFS) below which an input counts as silent.
SILENCE_DBFS = -60.0
#: |sample| at or above this counts as clipped.
CLIP_LEVEL = 0.999
#: Clipped-sample warning threshold: at least this many samples...
CLIP_MIN_COUNT = 16
#: ...and at least this fraction of all samples.
CLIP_MIN_FRACTION = 1e-5

#: Largest PCM value written: 1 - 2**-23, i.e. the 24-bit code 8388607.
PCM_MAX = float(np.float32(1.0 - 2.0**-23))

_DECODE_BLOCK_FRAMES = 1 << 16
_SCAN_BLOCK_FRAMES = 1 << 18
_WRITE_BLOCK_SECONDS = 5
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX when the length is unknown
_WAV_MAX_DATA_BYTES = 0xFFFFFFFF - 4096  # beyond this a float WAV must be RF64
_FFPROBE_TIMEOUT_S = 60
_FFPROBE_MIN_SCORE = 26  # ffmpeg warns "misdetection possible" at AVPROBE_SCORE_RETRY (25)

_INSTALL_FFMPEG = (
    "Install ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`, macOS: `brew install "
    "ffmpeg`, Windows: `winget install ffmpeg`) or convert the file to WAV or FLAC."
)
_REEXPORT = "Export, copy or download it again; if it plays elsewhere, convert it to WAV or FLAC."

#: Extensions libsndfile reads: failing to open one of these means the file is bad,
#: not that a decoder is missing.
_SNDFILE_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
        ".mp3",
    }
)
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
#: ffprobe format names whose duration is estimated from the bitrate.
_ESTIMATED_DURATION_FORMATS = frozenset(
    {"aac", "mp3", "ac3", "eac3", "dts", "mpeg", "mpegts", "amr", "truehd", "mlp"}
)
_FFMPEG_FORMAT_NAMES = {
    "mov": "MP4",
    "matroska": "MATROSKA",
    "ogg": "OGG",
    "mp3": "MP3",
    "aac": "AAC",
    "wav": "WAV",
    "flac": "FLAC",
    "asf": "ASF",
    "aiff": "AIFF",
    "caf": "CAF",
    "w64": "W64",
}


# --------------------------------------------------------------------------- data types


@dataclass
class AudioInfo:
    """What the file's header says, before (or after) decoding.

    Attributes:
        path: the file, as given.
        format: short container name: ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``,
            ``"AIFF"``, ``"MP4"``, ``"WEBM"``, ``"MATROSKA"``...
        subtype: libsndfile subtype (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``...) or the
            ffmpeg codec name (``"aac"``, ``"alac"``, ``"opus"``...).
        samplerate: Hz.
        channels: channels of the file (or of the selected stream).
        frames: length in samples per channel (0 when unknown, see `length`).
        duration: length in seconds (``frames / samplerate``).
        decoder: ``"soundfile"`` or ``"ffmpeg"``.
        length: how far `frames` can be trusted: ``"exact"`` (header, checked on decode),
            ``"approximate"`` (container duration, within milliseconds), ``"estimate"``
            (guessed from the bitrate, may be far off) or ``"unknown"``. After decoding it
            is ``"exact"``.
        stream_index: which audio stream (0-based, among audio streams only).
        audio_streams: number of audio streams in the file (5 in a ``.stem.mp4``).
    """

    path: str
    format: str
    subtype: str
    samplerate: int
    channels: int
    frames: int
    duration: float
    decoder: str
    length: str = "exact"
    stream_index: int = 0
    audio_streams: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every field."""
        return asdict(self)


@dataclass
class DecodedAudio:
    """A decoded audio stream.

    Attributes:
        samples: float32, C-contiguous, shape ``(channels, frames)``; a mono file stays
            one channel here (see `to_model_channels`).
        samplerate: Hz.
        info: the header facts, with `frames`/`duration` updated to what was decoded.
        notes: decoder remarks that are not errors (e.g. ffmpeg reported glitches);
            `validate` returns them with its own warnings.
    """

    samples: np.ndarray
    samplerate: int
    info: AudioInfo
    notes: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.samplerate if self.samplerate else 0.0


# --------------------------------------------------------------------------- small helpers


def _fmt_seconds(seconds: float) -> str:
    """``"0.012 s"``, ``"3.5 s"`` or ``"1:02:03"``."""
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _input_error(code: ErrorCode, message: str) -> InputError:
    return InputError(message, code=code)


def find_ffmpeg() -> tuple[str, str] | None:
    """Paths of ``(ffmpeg, ffprobe)`` found on ``PATH``, or None when either is missing."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        return None
    return ffmpeg, ffprobe


def _ffmpeg_input(path: Path) -> str:
    """An ffmpeg input argument that can only mean this local file: the ``file:``
    protocol stops names like ``-x.wav`` or ``concat:...`` being read as options or URLs."""
    return "file:" + os.path.abspath(path)


def _sniff_container(path: Path, *, sndfile_only: bool = False) -> str | None:
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


# --------------------------------------------------------------------------- probing


def _check_path(path: str | os.PathLike[str]) -> Path:
    """The path as a `Path` once it names a non-empty, readable regular file."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise _input_error(
            ErrorCode.INPUT_MISSING,
            f"No file at '{p}'. Check the path; the file may have been moved, renamed or deleted.",
        ) from None
    except OSError as exc:
        raise _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"Cannot access '{p}': {exc.strerror}. Check the path and its permissions.",
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise _input_error(
            ErrorCode.INPUT_MISSING,
            f"'{p}' is a folder, not an audio file. Choose an audio file (WAV, FLAC, MP3, "
            "...) inside it.",
        )
    if not stat.S_ISREG(st.st_mode):
        raise _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"'{p}' is not a regular file (a device or a pipe?). Save the audio to a file first.",
        )
    if st.st_size == 0:
        raise _input_error(
            ErrorCode.INPUT_EMPTY,
            f"'{p}' is empty (0 bytes); the export or download probably failed. {_REEXPORT}",
        )
    try:
        open(p, "rb").close()
    except OSError as exc:
        raise _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"Cannot open '{p}': {exc.strerror}. Check that you may read it.",
        ) from None
    return p


def probe(path: str | os.PathLike[str], *, stream_index: int | None = None) -> AudioInfo:
    """Read the header of an audio file without decoding it.

    Args:
        path: the file (opened read-only, never modified).
        stream_index: which audio stream, 0-based among the audio streams (default 0).
            Only files ffmpeg decodes can have more than one (e.g. ``.stem.mp4``).

    Raises:
        InputError: missing (INPUT_MISSING), empty (INPUT_EMPTY), not audio
            (INPUT_UNREADABLE) or visibly truncated/damaged (INPUT_CORRUPT).
        DecoderMissingError: the file needs ffmpeg and it is not installed.
        InvalidArgumentError: `stream_index` is out of range.
    """
    if stream_index is not None and stream_index < 0:
        raise InvalidArgumentError(f"stream_index must be 0 or more, not {stream_index}.")
    p = _check_path(path)
    _check_structure(p)
    sf_info, sf_error = _soundfile_info(p)
    tools = find_ffmpeg()
    if sf_info is not None and not (tools and _prefers_ffmpeg(p, sf_info)):
        return _info_from_soundfile(p, sf_info, stream_index)
    if tools is None:
        raise _undecodable_error(p, sf_error)
    return _probe_ffmpeg(p, tools[1], stream_index)


def _soundfile_info(path: Path) -> tuple[Any, str]:
    """``(soundfile info, "")`` or ``(None, libsndfile's complaint)``."""
    import soundfile as sf

    try:
        return sf.info(str(path)), ""
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        return None, str(getattr(exc, "error_string", exc))


def _prefers_ffmpeg(path: Path, sf_info: Any) -> bool:
    """True where libsndfile cannot know the length: an MP3 without a Xing/Info/VBRI
    header (libsndfile stops reading at a bitrate guess) or a FLAC without a total in its
    STREAMINFO (libsndfile fails at the end instead of returning a short read)."""
    if int(sf_info.frames) >= _UNKNOWN_FRAMES:
        return True
    return sf_info.format == "MP3" and not _mp3_has_length_header(path)


def _mp3_has_length_header(path: Path) -> bool:
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


def _undecodable_error(path: Path, sf_error: str) -> Exception:
    """The error for a file libsndfile cannot open when ffmpeg is not installed."""
    container = _sniff_container(path, sndfile_only=True)
    tag = _wav_codec_tag(path) if container == "WAV" else None
    if tag is not None:  # intact RIFF structure: a codec libsndfile lacks, not damage
        return DecoderMissingError(
            f"'{path}' is a WAV file in a codec libsndfile cannot decode (format tag "
            f"0x{tag:04X}); stembridge needs ffmpeg for it, and ffmpeg/ffprobe were not found "
            f"on PATH. {_INSTALL_FFMPEG}"
        )
    if container is not None:
        return _input_error(
            ErrorCode.INPUT_CORRUPT,
            f"'{path}' looks like a {container} file but cannot be opened ({sf_error}); it "
            f"is probably damaged or truncated. {_REEXPORT}",
        )
    if path.suffix.lower() in _SNDFILE_EXTENSIONS:
        return _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"'{path}' is not a readable audio file (libsndfile does not recognise it). Check "
            "that it really is audio; if it plays elsewhere, convert it to WAV or FLAC "
            "(installing ffmpeg also lets stembridge read more formats).",
        )
    return DecoderMissingError(
        f"'{path}' ({path.suffix or 'no extension'}) needs ffmpeg to decode, and ffmpeg/"
        f"ffprobe were not found on PATH. {_INSTALL_FFMPEG}"
    )


def _info_from_soundfile(path: Path, info: Any, stream_index: int | None) -> AudioInfo:
    """`AudioInfo` from ``soundfile.info``, after the checks libsndfile does not make."""
    if stream_index not in (None, 0):
        raise InvalidArgumentError(
            f"'{path}' has a single audio stream; use stream_index 0 (got {stream_index})."
        )
    frames, length = int(info.frames), "exact"
    if frames >= _UNKNOWN_FRAMES:
        frames, length = 0, "unknown"
    elif info.format == "MP3" and not _mp3_has_length_header(path):
        length = "estimate"
    if info.format == "OGG" and "lacks an end-of-stream bit" in info.extra_info:
        raise _truncated_error(path, "its last Ogg page is not marked as the end of the stream")
    rate = int(info.samplerate)
    return AudioInfo(
        path=str(path),
        format=str(info.format),
        subtype=str(info.subtype),
        samplerate=rate,
        channels=int(info.channels),
        frames=frames,
        duration=frames / rate if rate else 0.0,
        decoder="soundfile",
        length=length,
    )


def _truncated_error(path: Path, detail: str) -> InputError:
    return _input_error(ErrorCode.INPUT_CORRUPT, f"'{path}' is truncated: {detail}. {_REEXPORT}")


def _check_structure(path: Path) -> None:
    """Raise INPUT_CORRUPT for a file visibly cut short, whichever decoder reads it:
    libsndfile and ffmpeg both quietly decode what is left of such files."""
    shortfall = _data_chunk_shortfall(path)
    if shortfall is not None:
        declared, present = shortfall
        raise _truncated_error(
            path, f"its header promises {declared} bytes of audio but the file holds only {present}"
        )
    if _ogg_last_page_incomplete(path):
        raise _truncated_error(path, "its last Ogg page is cut off")


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


def _wav_codec_tag(path: Path) -> int | None:
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


def _probe_ffmpeg(path: Path, ffprobe: str, stream_index: int | None) -> AudioInfo:
    """`AudioInfo` from ``ffprobe -print_format json``."""
    report = _run_ffprobe(path, ffprobe)
    streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    fmt = report.get("format", {})
    if int(fmt.get("probe_score", 100)) < _FFPROBE_MIN_SCORE:
        raise _not_audio_error(path, "is not in a format ffmpeg recognises")
    if not streams:
        if _sniff_container(path) is not None:  # e.g. an MP4 whose index is cut off
            raise _truncated_error(path, "ffprobe finds no complete audio stream in it")
        raise _not_audio_error(path, "contains no audio stream")
    index = 0 if stream_index is None else stream_index
    if index >= len(streams):
        raise InvalidArgumentError(
            f"'{path}' has {len(streams)} audio stream(s) (0..{len(streams) - 1}); "
            f"stream_index {index} does not exist."
        )
    stream = streams[index]
    rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"ffprobe found no sample rate or channel count for audio stream {index} of "
            f"'{path}'. Convert the file to WAV or FLAC.",
        )
    frames, length = _ffprobe_length(stream, fmt, rate)
    return AudioInfo(
        path=str(path),
        format=_short_format(fmt.get("format_name", ""), path),
        subtype=str(stream.get("codec_name", "")),
        samplerate=rate,
        channels=channels,
        frames=frames,
        duration=frames / rate,
        decoder="ffmpeg",
        length=length,
        stream_index=index,
        audio_streams=len(streams),
    )


def _run_ffprobe(path: Path, ffprobe: str) -> dict[str, Any]:
    """ffprobe's JSON report, or the right error when ffprobe refuses the file."""
    cmd = [
        ffprobe,
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        _ffmpeg_input(path),
    ]
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_FFPROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"ffprobe did not finish reading '{path}' within {_FFPROBE_TIMEOUT_S} s. "
            "Convert the file to WAV or FLAC.",
        ) from None
    except OSError as exc:
        raise DecoderMissingError(f"Cannot run ffprobe ({exc}). {_INSTALL_FFMPEG}") from None
    stderr = _clean_ffmpeg_log(done.stderr.decode("utf-8", "replace"), path)
    if done.returncode != 0:
        if "moov atom not found" in stderr or _sniff_container(path) is not None:
            raise _input_error(
                ErrorCode.INPUT_CORRUPT,
                f"'{path}' is damaged or incomplete (ffprobe: {_last_line(stderr)}). {_REEXPORT}",
            )
        raise _not_audio_error(path, f"is not a readable audio file ({_last_line(stderr)})")
    try:
        return dict(json.loads(done.stdout.decode("utf-8", "replace") or "{}"))
    except ValueError:
        raise _not_audio_error(path, "could not be probed (ffprobe printed invalid JSON)") from None


def _not_audio_error(path: Path, what: str) -> InputError:
    return _input_error(
        ErrorCode.INPUT_UNREADABLE,
        f"'{path}' {what}. Check that it really is an audio file; if it plays elsewhere, "
        "convert it to WAV or FLAC.",
    )


def _clean_ffmpeg_log(text: str, path: Path) -> str:
    """ffmpeg's stderr without the ``file:/abs/path: `` prefix it puts on messages."""
    return text.replace(_ffmpeg_input(path) + ": ", "").strip()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no details"


def _short_format(format_name: str, path: Path) -> str:
    """``"mov,mp4,m4a,..."`` -> ``"MP4"``; ``"matroska,webm"`` -> ``"WEBM"`` for .webm."""
    first = format_name.split(",")[0]
    if first == "matroska" and path.suffix.lower() == ".webm":
        return "WEBM"
    if first == "mov" and path.suffix.lower() == ".mov":
        return "MOV"
    return _FFMPEG_FORMAT_NAMES.get(first, first.upper() or "UNKNOWN")


def _ffprobe_length(stream: dict[str, Any], fmt: dict[str, Any], rate: int) -> tuple[int, str]:
    """``(frames, length accuracy)`` from the stream's or the container's duration."""
    if fmt.get("format_name", "").split(",")[0] in _ESTIMATED_DURATION_FORMATS:
        seconds = _float_or_none(stream.get("duration")) or _float_or_none(fmt.get("duration"))
        return (round(seconds * rate), "estimate") if seconds else (0, "unknown")
    ticks, base = stream.get("duration_ts"), stream.get("time_base")
    if ticks is not None and base:
        try:
            return round(int(ticks) * Fraction(base) * rate), "exact"
        except (ValueError, ZeroDivisionError):
            pass
    seconds = _float_or_none(stream.get("duration")) or _float_or_none(fmt.get("duration"))
    return (round(seconds * rate), "approximate") if seconds else (0, "unknown")


def _float_or_none(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) and result > 0 else None


# --------------------------------------------------------------------------- header checks


def check_info(info: AudioInfo, limits: Limits) -> None:
    """Refuse a file from its header alone: too many channels, no audio, too long or too
    short. Lengths that are only estimates are checked after decoding instead."""
    if info.channels > 2:
        raise _channels_error(info.path, info.channels)
    trusted = info.length in ("exact", "approximate")
    if info.length == "exact" and info.frames == 0:
        raise _empty_error(info.path)
    if trusted and info.duration > limits.max_seconds:
        raise _too_long_error(info.path, info.duration, limits)
    if info.length == "exact" and info.duration < limits.min_seconds:
        raise _too_short_error(info.path, info.duration, limits)


def _channels_error(path: str, channels: int) -> InputError:
    return _input_error(
        ErrorCode.INPUT_CHANNELS,
        f"'{path}' has {channels} channels; stembridge separates mono or stereo audio. "
        f'Downmix it to stereo first, e.g. `ffmpeg -i "{Path(path).name}" -ac 2 '
        "stereo.wav`.",
    )


def _empty_error(path: str) -> InputError:
    return _input_error(
        ErrorCode.INPUT_EMPTY,
        f"'{path}' contains no audio (0 samples). Export it again with some audio in it.",
    )


def _too_long_error(path: str, seconds: float | None, limits: Limits) -> InputError:
    length = f"is {_fmt_seconds(seconds)} long" if seconds else "is longer than the limit"
    return _input_error(
        ErrorCode.INPUT_TOO_LONG,
        f"'{path}' {length}; the limit is {_fmt_seconds(limits.max_seconds)}. Split it into "
        "shorter parts, or raise the limit with the STEMBRIDGE_MAX_SECONDS environment "
        "variable.",
    )


def _too_short_error(path: str, seconds: float, limits: Limits) -> InputError:
    return _input_error(
        ErrorCode.INPUT_TOO_SHORT,
        f"'{path}' is only {_fmt_seconds(seconds)} long; at least "
        f"{_fmt_seconds(limits.min_seconds)} is needed. Use a longer excerpt.",
    )


def _corrupt_error(path: str, detail: str) -> InputError:
    return _input_error(ErrorCode.INPUT_CORRUPT, f"'{path}' is damaged: {detail}. {_REEXPORT}")


# --------------------------------------------------------------------------- decoding


def decode(path: str | os.PathLike[str], *, stream_index: int | None = None) -> DecodedAudio:
    """Decode a whole audio file to float32 ``(channels, frames)`` at its own sample rate.

    No length/channel limits are applied here; use `load` for that. The input file is
    opened read-only.

    Args:
        path: the audio file.
        stream_index: audio stream to decode (0-based among audio streams; default 0).

    Raises:
        InputError: INPUT_MISSING, INPUT_EMPTY, INPUT_UNREADABLE or INPUT_CORRUPT.
        DecoderMissingError: the file needs ffmpeg, which is not installed.
        InvalidArgumentError: `stream_index` is out of range.
    """
    return _decode(probe(path, stream_index=stream_index), max_frames=None)


def load(
    path: str | os.PathLike[str],
    limits: Limits | None = None,
    *,
    stream_index: int | None = None,
) -> tuple[DecodedAudio, list[str]]:
    """Probe, check the header, decode, then validate the samples.

    A file too long or with too many channels is refused from its header, before any
    audio is read; a file whose header cannot tell its length stops decoding as soon as
    it passes `limits.max_seconds`.

    Returns:
        The decoded audio and the warnings of `validate`.
    """
    limits = limits if limits is not None else Limits()
    info = probe(path, stream_index=stream_index)
    check_info(info, limits)
    max_frames = math.floor(limits.max_seconds * info.samplerate)
    audio = _decode(info, max_frames=max_frames, limits=limits)
    return audio, validate(audio, limits)


def _decode(
    info: AudioInfo, *, max_frames: int | None, limits: Limits | None = None
) -> DecodedAudio:
    if info.decoder == "ffmpeg":
        samples, notes = _decode_ffmpeg(info, max_frames, limits)
    else:
        samples, notes = _decode_soundfile(info, max_frames, limits), []
        if info.length == "estimate":
            notes.append(
                "This MP3 has no length header, so its end may be cut off. Install ffmpeg "
                "or convert the file to WAV or FLAC to be sure the whole file is used."
            )
    frames = int(samples.shape[1])
    expected = info.frames if info.length in ("exact", "approximate") else 0
    if expected and expected - frames > _shortfall_tolerance(expected, info.samplerate):
        raise _corrupt_error(
            info.path,
            f"its header says {_fmt_seconds(info.duration)} but only "
            f"{_fmt_seconds(frames / info.samplerate)} could be decoded (truncated?)",
        )
    decoded = replace(info, frames=frames, duration=frames / info.samplerate, length="exact")
    return DecodedAudio(samples=samples, samplerate=info.samplerate, info=decoded, notes=notes)


def _shortfall_tolerance(expected: int, rate: int) -> int:
    """Frames a decode may come up short of the header without counting as truncated
    (codec priming/padding and container rounding): 50 ms or 1 %."""
    return max(rate // 20, expected // 100)


class _FrameBuffer:
    """Grows a float32 ``(channels, frames)`` array from interleaved ``(n, channels)``
    blocks without ever holding two full-size copies when the length is known upfront."""

    def __init__(
        self, info: AudioInfo, capacity: int, max_frames: int | None, limits: Limits | None
    ) -> None:
        self._info, self._max, self._limits = info, max_frames, limits
        self._data = np.empty((info.channels, max(capacity, 1)), dtype=np.float32)
        self.frames = 0

    def append(self, block: np.ndarray) -> None:
        n = block.shape[0]
        end = self.frames + n
        if self._max is not None and end > self._max:
            limits = self._limits or Limits()
            raise _too_long_error(self._info.path, None, limits)
        if end > self._data.shape[1]:
            self._grow(end)
        self._data[:, self.frames : end] = block.T
        self.frames = end

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self._data.shape[1])
        grown = np.empty((self._data.shape[0], capacity), dtype=np.float32)
        grown[:, : self.frames] = self._data[:, : self.frames]
        self._data = grown

    def result(self) -> np.ndarray:
        if self.frames == self._data.shape[1]:
            return self._data
        return np.ascontiguousarray(self._data[:, : self.frames])


def _decode_soundfile(info: AudioInfo, max_frames: int | None, limits: Limits | None) -> np.ndarray:
    """Read with libsndfile in blocks; a decoder error mid-file means a damaged file."""
    import soundfile as sf

    capacity = info.frames if info.length == "exact" else info.samplerate * 60
    if max_frames is not None:
        capacity = min(capacity, max_frames + 1)
    buf = _FrameBuffer(info, capacity, max_frames, limits)
    try:
        _read_blocks(info.path, 0, _DECODE_BLOCK_FRAMES, buf)
    except (sf.LibsndfileError, RuntimeError) as exc:
        if info.length != "unknown":
            raise _corrupt_error(info.path, f"the decoder failed ({exc})") from None
        _read_tail(info.path, buf)
    return buf.result()


def _read_blocks(path: str, start: int, block: int, buf: _FrameBuffer) -> None:
    """Append frames from `start` to the end of the file, `block` frames per read."""
    import soundfile as sf

    with sf.SoundFile(path, "r") as fh:
        if start:
            fh.seek(start)
        while (chunk := fh.read(block, dtype="float32", always_2d=True)).shape[0]:
            buf.append(chunk)


def _read_tail(path: str, buf: _FrameBuffer) -> None:
    """Finish a FLAC without a length in its header (read by libsndfile only when ffmpeg
    is missing): libsndfile raises, instead of returning a short read, when a read crosses
    the end, so the last block is retried in halving sizes from a fresh handle. libsndfile
    cannot deliver the very last sample of such a file at all."""
    import soundfile as sf

    block = _DECODE_BLOCK_FRAMES // 2
    while block >= 1:
        try:
            _read_blocks(path, buf.frames, block, buf)
            return
        except (sf.LibsndfileError, RuntimeError):
            block //= 2


def _decode_ffmpeg(
    info: AudioInfo, max_frames: int | None, limits: Limits | None
) -> tuple[np.ndarray, list[str]]:
    """Decode one audio stream with the ffmpeg CLI into a float32 pipe."""
    tools = find_ffmpeg()
    if tools is None:
        raise DecoderMissingError(
            f"'{info.path}' needs ffmpeg to decode, and ffmpeg/ffprobe were not found on "
            f"PATH. {_INSTALL_FFMPEG}"
        )
    cmd = [
        tools[0],
        "-nostdin",
        "-v",
        "error",
        "-i",
        _ffmpeg_input(Path(info.path)),
        "-map",
        f"0:a:{info.stream_index}",
        "-ac",
        str(info.channels),
        "-ar",
        str(info.samplerate),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-",
    ]
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            raise DecoderMissingError(f"Cannot run ffmpeg ({exc}). {_INSTALL_FFMPEG}") from None
        with proc:
            try:
                samples = _read_pipe(proc, info, max_frames, limits)
            except BaseException:
                proc.kill()
                raise
            returncode = proc.wait()
        errors.seek(0)
        stderr = _clean_ffmpeg_log(errors.read().decode("utf-8", "replace"), Path(info.path))
    if returncode != 0:
        raise _corrupt_error(info.path, f"ffmpeg failed ({_last_line(stderr)})")
    notes = []
    if stderr:
        notes.append(
            f"ffmpeg reported decoding errors ({_last_line(stderr)}); the audio may "
            "contain glitches."
        )
    return samples, notes


def _read_pipe(
    proc: subprocess.Popen[bytes], info: AudioInfo, max_frames: int | None, limits: Limits | None
) -> np.ndarray:
    """Collect interleaved float32 frames from ffmpeg's stdout. With an exact header
    length, frames past it (encoder padding ffmpeg does not trim) are dropped."""
    assert proc.stdout is not None
    keep = info.frames if info.length == "exact" and info.frames > 0 else None
    capacity = keep if keep else info.samplerate * 60
    if max_frames is not None:
        capacity = min(capacity, max_frames + 1)
    buf = _FrameBuffer(info, capacity, max_frames, limits)
    frame_bytes = 4 * info.channels
    while chunk := proc.stdout.read(_DECODE_BLOCK_FRAMES * frame_bytes):
        n = len(chunk) // frame_bytes
        if keep is not None:
            n = min(n, keep - buf.frames)
        if n > 0:
            block = np.frombuffer(chunk, dtype="<f4", count=n * info.channels)
            buf.append(block.reshape(n, info.channels))
    return buf.result()


# --------------------------------------------------------------------------- validation


@dataclass
class _Stats:
    peak: float = 0.0
    clipped: int = 0
    not_finite: int = 0
    first_not_finite: int = -1


def _scan(samples: np.ndarray) -> _Stats:
    """Peak, clipped and non-finite counts of ``(channels, frames)``, block by block so a
    long file never needs a second full-size temporary."""
    stats = _Stats()
    for start in range(0, samples.shape[1], _SCAN_BLOCK_FRAMES):
        block = samples[:, start : start + _SCAN_BLOCK_FRAMES]
        finite = np.isfinite(block)
        if not finite.all():
            bad = np.flatnonzero(~finite.all(axis=0))
            if stats.first_not_finite < 0:
                stats.first_not_finite = start + int(bad[0])
            stats.not_finite += int(block.size - np.count_nonzero(finite))
            block = np.where(finite, block, 0.0)
        magnitude = np.abs(block)
        stats.peak = max(stats.peak, float(magnitude.max(initial=0.0)))
        stats.clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))
    return stats


def validate(audio: DecodedAudio, limits: Limits) -> list[str]:
    """Check decoded audio against `limits`; raise for what cannot be separated and
    return human warnings for what can but may disappoint.

    Raises:
        InputError: INPUT_EMPTY, INPUT_CHANNELS, INPUT_TOO_SHORT, INPUT_TOO_LONG or
            INPUT_NOT_FINITE (NaN or infinite samples).

    Returns:
        Short warnings: decoder notes, silent input (peak below -60 dBFS), clipped input,
        sample rate below `limits.low_samplerate`, shorter than `limits.short_seconds`.
    """
    path = audio.info.path
    if audio.frames == 0:
        raise _empty_error(path)
    if audio.channels > 2:
        raise _channels_error(path, audio.channels)
    if audio.duration < limits.min_seconds:
        raise _too_short_error(path, audio.duration, limits)
    if audio.duration > limits.max_seconds:
        raise _too_long_error(path, audio.duration, limits)
    stats = _scan(audio.samples)
    if stats.not_finite:
        at = _fmt_seconds(stats.first_not_finite / audio.samplerate)
        raise _input_error(
            ErrorCode.INPUT_NOT_FINITE,
            f"'{path}' contains {stats.not_finite} NaN or infinite sample values (first at "
            f"{at}). Re-render it from its source, or export it as 24-bit PCM WAV, which "
            "cannot hold such values.",
        )
    return list(audio.notes) + _warnings(audio, stats, limits)


def _warnings(audio: DecodedAudio, stats: _Stats, limits: Limits) -> list[str]:
    warnings = []
    peak_db = 20 * math.log10(stats.peak) if stats.peak > 0 else -math.inf
    if peak_db < SILENCE_DBFS:
        level = f"{peak_db:.0f} dBFS" if stats.peak > 0 else "digital silence"
        warnings.append(f"The input is silent (peak {level}); the stems will be silent too.")
    total = audio.samples.size
    if stats.clipped >= max(CLIP_MIN_COUNT, CLIP_MIN_FRACTION * total):
        warnings.append(
            f"{stats.clipped} samples ({100 * stats.clipped / total:.2g} %) are at full scale: "
            "the input looks clipped, which can leak into every stem. Use an unclipped "
            "master if you have one."
        )
    if audio.samplerate < limits.low_samplerate:
        warnings.append(
            f"The sample rate is low ({audio.samplerate} Hz): there is no content above "
            f"{audio.samplerate // 2} Hz, so the stems will sound dull."
        )
    if audio.duration < limits.short_seconds:
        warnings.append(
            f"The input is short ({_fmt_seconds(audio.duration)}); separation works best "
            f"on at least {_fmt_seconds(limits.short_seconds)} of music."
        )
    return warnings


# --------------------------------------------------------------------------- channels


def to_model_channels(samples: np.ndarray, model_channels: int = 2) -> np.ndarray:
    """Map ``(channels, frames)`` to the model's channel count, float32 C-contiguous.

    Mono -> dual-mono ``(2, frames)`` (both rows equal); stereo -> mono is the mean of
    the channels (for a mono model). Equal counts return the input (float32, no copy
    when it already is one).
    """
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgumentError(f"expected audio shaped (channels, frames), got {x.shape}.")
    channels = x.shape[0]
    if channels == model_channels:
        return x
    if channels == 1:
        return np.repeat(x, model_channels, axis=0)
    if model_channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32)
    raise InvalidArgumentError(
        f"cannot map {channels} channels to a {model_channels}-channel model; downmix to "
        "stereo first (e.g. `ffmpeg -i in.wav -ac 2 out.wav`)."
    )


def from_model_channels(stems: np.ndarray, original_channels: int) -> np.ndarray:
    """Map model output ``(..., model_channels, frames)`` back to the source's channels.

    A mono source gets the mean of the model's channels, ``(..., 1, frames)``; a source
    with the model's own channel count gets `stems` back unchanged.
    """
    if stems.ndim < 2:
        raise InvalidArgumentError(f"expected (..., channels, frames), got {stems.shape}.")
    model_channels = stems.shape[-2]
    if original_channels == model_channels:
        return stems
    if original_channels == 1:
        return stems.mean(axis=-2, keepdims=True, dtype=np.float32)
    raise InvalidArgumentError(
        f"cannot map {model_channels} model channels back to {original_channels} channels."
    )


# --------------------------------------------------------------------------- resampling


def _ratio(src_rate: int, dst_rate: int) -> tuple[int, int]:
    """``(up, down)`` reduced by their gcd."""
    if int(src_rate) != src_rate or int(dst_rate) != dst_rate or src_rate <= 0 or dst_rate <= 0:
        raise InvalidArgumentError(
            f"sample rates must be positive whole numbers of Hz, got {src_rate} and {dst_rate}."
        )
    g = math.gcd(int(src_rate), int(dst_rate))
    return int(dst_rate) // g, int(src_rate) // g


def resampled_length(frames: int, src_rate: int, dst_rate: int) -> int:
    """Frames `resample` produces for `frames` input frames: ``ceil(frames * dst / src)``."""
    up, down = _ratio(src_rate, dst_rate)
    return -(-frames * up // down)


@lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's default anti-aliasing FIR (Kaiser, beta 5, 10 zero
    crossings per side at the lower rate), as float32, unscaled; cached per ratio."""
    from scipy.signal import firwin

    rate = max(up, down)
    taps = firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    taps = taps.astype(np.float32)
    taps.setflags(write=False)
    return taps


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=-1, window=_lowpass(up, down))


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling of ``(..., frames)`` along the last axis, float32 out.

    Same result as ``scipy.signal.resample_poly(x, dst, src, axis=-1)`` on float32 input
    (polyphase FIR, zero padding at both ends); ``resampled_length(frames, src, dst)``
    output frames. Equal rates return a float32 copy.
    """
    up, down = _ratio(src_rate, dst_rate)
    x = np.asarray(x, dtype=np.float32)
    if up == down:
        return x.copy()
    if x.shape[-1] == 0:
        return np.zeros(x.shape, dtype=np.float32)
    return np.ascontiguousarray(_resample_poly(x, up, down))


@dataclass
class _Known:
    """A run of pushed source frames ``[start, stop)`` and the few samples at its edges
    that future output still needs, as ``(src_start, array)`` pieces."""

    start: int
    stop: int
    pieces: list[tuple[int, np.ndarray]]


class RegionResampler:
    """Resample a signal that arrives as regions in any order, emitting output as soon as
    it is computable, identical (to float32 rounding) to `resample` of the whole signal.

    Output frame k depends on input frames within ``±10 * max(up, down) / up`` of
    ``k * down / up`` (up/down = dst/src reduced). A span of output is computed by
    `resample_poly` on a slice of the input that starts at a multiple of `down`, which
    keeps the polyphase phase of the whole-signal computation; samples outside every
    output frame's support are zero in both. Only the edge samples of each contiguous run
    of pushed input are retained (tens of frames), so memory stays bounded whatever the
    signal length.

    Example (44.1 kHz model output back to a 48 kHz session)::

        rs = RegionResampler(44100, 48000, total_src_frames=n)
        for start, region in regions:            # any order, any sizes
            for dst_start, out in rs.push(start, region):
                writer.write(dst_start, out)     # spans never overlap
        assert rs.done

    Not thread-safe: push from one thread at a time.
    """

    def __init__(self, src_rate: int, dst_rate: int, total_src_frames: int) -> None:
        if total_src_frames < 0:
            raise InvalidArgumentError(f"total_src_frames must be >= 0, not {total_src_frames}.")
        self.src_rate, self.dst_rate = int(src_rate), int(dst_rate)
        self.up, self.down = _ratio(src_rate, dst_rate)
        self.total_src_frames = int(total_src_frames)
        self.total_dst_frames = resampled_length(self.total_src_frames, src_rate, dst_rate)
        self._half = 10 * max(self.up, self.down)
        self._runs: list[_Known] = []
        self._leading_shape: tuple[int, ...] | None = None

    @property
    def done(self) -> bool:
        """True once every source frame has been pushed (and so every output emitted)."""
        return self.total_src_frames == 0 or (
            len(self._runs) == 1
            and self._runs[0].stop - self._runs[0].start == self.total_src_frames
        )

    @property
    def retained_frames(self) -> int:
        """Source frames currently held (edge samples of runs awaiting neighbours)."""
        return sum(a.shape[-1] for run in self._runs for _, a in run.pieces)

    # -- support arithmetic (all frame indices are integers; N = total_src_frames)

    def _lo(self, k: int) -> int:
        """First source frame output frame k depends on."""
        return min(self.total_src_frames, max(0, -(-(k * self.down - self._half) // self.up)))

    def _hi(self, k: int) -> int:
        """One past the last source frame output frame k depends on."""
        return min(self.total_src_frames, max(0, (k * self.down + self._half) // self.up + 1))

    def _first_computable(self, start: int) -> int:
        """Smallest output frame whose support starts at or after source frame `start`."""
        if start <= 0:
            return 0
        k = ((start - 1) * self.up + self._half) // self.down + 1
        return min(self.total_dst_frames, k)

    def _end_computable(self, stop: int) -> int:
        """One past the largest output frame whose support ends at or before `stop`."""
        if stop >= self.total_src_frames:
            return self.total_dst_frames
        k = -(-(stop * self.up - self._half) // self.down)
        return min(self.total_dst_frames, max(0, k))

    # -- public

    def push(self, src_start: int, audio: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add source frames ``[src_start, src_start + n)`` of ``audio (..., n)``.

        Returns:
            ``(dst_start, array (..., m))`` float32 spans of output that became computable;
            possibly none. Over all pushes the spans tile ``[0, total_dst_frames)``
            exactly once. With equal rates the span is `audio` itself (as float32).

        Raises:
            InvalidArgumentError: the region is out of range, overlaps one pushed before,
                or its leading shape differs from earlier regions.
        """
        x = np.asarray(audio, dtype=np.float32)
        self._check_region(src_start, x)
        n = x.shape[-1]
        if n == 0:
            return []
        left, right = self._neighbours(src_start, src_start + n)
        run = _Known(left.start if left else src_start, right.stop if right else src_start + n, [])
        if self.up == self.down:
            self._replace(left, right, run)
            return [(src_start, x)]
        pieces = (left.pieces if left else []) + [(src_start, x)] + (right.pieces if right else [])
        begin = self._first_computable(run.start)
        if left is not None:
            begin = max(begin, self._end_computable(left.stop))
        end = self._end_computable(run.stop)
        if right is not None:
            end = min(end, self._first_computable(right.start))
        spans = [(begin, self._compute(begin, end, pieces))] if begin < end else []
        run.pieces = self._retain(run, pieces)
        self._replace(left, right, run)
        return spans

    # -- internals

    def _check_region(self, src_start: int, x: np.ndarray) -> None:
        if x.ndim < 1:
            raise InvalidArgumentError("a region must be an array shaped (..., frames).")
        if self._leading_shape is None:
            self._leading_shape = x.shape[:-1]
        elif x.shape[:-1] != self._leading_shape:
            raise InvalidArgumentError(
                f"region shaped {x.shape} does not match earlier regions "
                f"{self._leading_shape + ('frames',)}."
            )
        stop = src_start + x.shape[-1]
        if src_start < 0 or stop > self.total_src_frames:
            raise InvalidArgumentError(
                f"region [{src_start}, {stop}) lies outside the signal "
                f"[0, {self.total_src_frames})."
            )

    def _neighbours(self, start: int, stop: int) -> tuple[_Known | None, _Known | None]:
        """Runs that end exactly at `start` and begin exactly at `stop`; refuses overlap."""
        i = bisect.bisect_right([r.start for r in self._runs], start)
        before = self._runs[i - 1] if i > 0 else None
        after = self._runs[i] if i < len(self._runs) else None
        if (before and before.stop > start) or (after and after.start < stop):
            raise InvalidArgumentError(
                f"region [{start}, {stop}) overlaps source frames pushed before; push each "
                "source frame exactly once."
            )
        return (
            before if before and before.stop == start else None,
            after if after and after.start == stop else None,
        )

    def _replace(self, left: _Known | None, right: _Known | None, run: _Known) -> None:
        self._runs = [r for r in self._runs if r is not left and r is not right]
        bisect.insort(self._runs, run, key=lambda r: r.start)

    def _compute(self, begin: int, end: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Output frames ``[begin, end)`` from a slice starting at a multiple of `down`."""
        src0 = (self._lo(begin) // self.down) * self.down
        src1 = self._hi(end - 1)
        y = _resample_poly(self._gather(src0, src1, pieces), self.up, self.down)
        offset = (src0 // self.down) * self.up
        return np.ascontiguousarray(y[..., begin - offset : end - offset])

    def _gather(self, start: int, stop: int, pieces: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """Source frames ``[start, stop)``; frames no piece holds are zero (they lie outside
        the support of every output frame being computed)."""
        assert self._leading_shape is not None
        out = np.zeros(self._leading_shape + (stop - start,), dtype=np.float32)
        for p_start, arr in pieces:
            lo, hi = max(start, p_start), min(stop, p_start + arr.shape[-1])
            if lo < hi:
                out[..., lo - start : hi - start] = arr[..., lo - p_start : hi - p_start]
        return out

    def _retain(
        self, run: _Known, pieces: list[tuple[int, np.ndarray]]
    ) -> list[tuple[int, np.ndarray]]:
        """Copies of the samples the run's not-yet-computable neighbours will need."""
        kept = []
        if run.start > 0:
            head_stop = min(run.stop, self._hi(self._first_computable(run.start) - 1))
            if head_stop > run.start:
                kept.append((run.start, self._gather(run.start, head_stop, pieces)))
        if run.stop < self.total_src_frames:
            tail_start = max(run.start, self._lo(self._end_computable(run.stop)))
            if tail_start < run.stop:
                kept.append((tail_start, self._gather(tail_start, run.stop, pieces)))
        return kept


# --------------------------------------------------------------------------- writing


_OUTPUT_SUBTYPES = {"wav": ("FLOAT", "PCM_24", "PCM_16"), "flac": ("PCM_24", "PCM_16")}


def _output_format(fmt: str, subtype: str | None) -> tuple[str, str]:
    """Normalised ``(fmt, subtype)``: wav defaults to FLOAT, flac to PCM_24."""
    fmt = str(fmt).lower()
    if fmt not in _OUTPUT_SUBTYPES:
        raise InvalidArgumentError(f"output format must be 'wav' or 'flac', not {fmt!r}.")
    allowed = _OUTPUT_SUBTYPES[fmt]
    chosen = allowed[0] if subtype is None else str(subtype).upper()
    if chosen not in allowed:
        raise InvalidArgumentError(
            f"subtype {subtype!r} is not available for {fmt}; choose one of {', '.join(allowed)}."
        )
    return fmt, chosen


def _container(fmt: str, channels: int, frames: int, subtype: str) -> str:
    """libsndfile container: RF64 for a WAV whose data would pass the 4 GiB RIFF limit."""
    if fmt == "flac":
        return "FLAC"
    width = {"FLOAT": 4, "PCM_24": 3, "PCM_16": 2}[subtype]
    return "RF64" if channels * frames * width > _WAV_MAX_DATA_BYTES else "WAV"


def _pcm_block(block: np.ndarray) -> np.ndarray:
    """Clip to the PCM range [-1, 1 - 2**-23]; NaN becomes 0, ±inf full scale."""
    safe = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(safe, -1.0, PCM_MAX, out=safe)


def _check_output_array(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidArgumentError(
            f"audio to write must be shaped (channels, frames) with at least one frame, "
            f"got {x.shape}."
        )
    return x


def _output_error(path: Path, exc: BaseException) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(
        f"Could not write '{path}': {reason}. Check that the folder exists, is writable and "
        "has enough free space."
    )


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


def _make_temp(directory: Path, suffix: str) -> Path:
    """A new, empty, uniquely named temp file in `directory` (same filesystem as the
    target, so the final rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
    os.close(fd)
    return Path(name)


def _fsync_path(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    """fsync a finished temp file, give it normal permissions and rename it over
    `target` in one atomic step."""
    _fsync_path(tmp)
    with contextlib.suppress(OSError):
        os.chmod(tmp, _file_mode())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _target_dir(path: Path) -> Path:
    directory = path.parent
    if not directory.is_dir():
        raise OutputError(
            f"Cannot write '{path}': the folder '{directory}' does not exist. Create it first "
            "or choose another output folder."
        )
    return directory


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    samplerate: int,
    fmt: str = "wav",
    subtype: str | None = None,
) -> Path:
    """Write ``audio (channels, frames)`` atomically: a temp file in the same folder,
    fsync, then `os.replace` (an existing file is replaced; a crash leaves the old file or
    none, never a partial one).

    Args:
        path: target file.
        audio: float samples shaped ``(channels, frames)``.
        samplerate: Hz.
        fmt: ``"wav"`` (default subtype ``"FLOAT"``, 32-bit float; or ``"PCM_24"``,
            ``"PCM_16"``) or ``"flac"`` (``"PCM_24"`` default, or ``"PCM_16"``).
            Float WAVs over 4 GiB are written as RF64.
        subtype: see `fmt`. PCM output is hard-clipped to [-1, 1 - 2**-23] (no limiter);
            NaN is written as 0. FLOAT keeps values as they are.

    Returns:
        The target path.

    Raises:
        InvalidArgumentError: bad shape, format or subtype.
        OutputError: the folder is missing, not writable or full.
    """
    fmt, subtype = _output_format(fmt, subtype)
    x = _check_output_array(audio)
    target = Path(path)
    directory = _target_dir(target)
    tmp: Path | None = None
    try:
        tmp = _make_temp(directory, "." + fmt)
        _write_array(tmp, x, int(samplerate), fmt, subtype)
        _publish(tmp, target)
    except (OSError, RuntimeError) as exc:
        _unlink(tmp)
        raise _output_error(target, exc) from None
    except BaseException:
        _unlink(tmp)
        raise
    return target


def _write_array(tmp: Path, x: np.ndarray, samplerate: int, fmt: str, subtype: str) -> None:
    import soundfile as sf

    channels, frames = x.shape
    block = max(1, _WRITE_BLOCK_SECONDS * samplerate)
    container = _container(fmt, channels, frames, subtype)
    with sf.SoundFile(str(tmp), "w", samplerate, channels, subtype, format=container) as out:
        for start in range(0, frames, block):
            chunk = np.ascontiguousarray(x[:, start : start + block].T, dtype=np.float32)
            out.write(chunk if subtype == "FLOAT" else _pcm_block(chunk))


class StemFileWriter:
    """One output file whose regions arrive at any offset, in any order.

    A float32 WAV (RF64 beyond 4 GiB) of `total_frames` zero frames is created as a
    ``.stembridge-tmp-*`` file in `directory`, then reopened read/write; `write` puts
    regions in place, `commit` publishes the result atomically under its final name (as
    float WAV directly, or transcoded block by block to FLAC / PCM WAV). Memory use is one
    region plus one block (about 5 s), whatever the file length. Until `commit` returns no
    file exists at the final path, so a killed process never leaves a partial result (only
    a temp file, which `remove_stale_temp_files` cleans up).

    Use as a context manager: leaving the block with an exception, or without `commit`,
    calls `abort`. `write`, `commit` and `abort` may be called from different threads.

    Example::

        with StemFileWriter(out_dir, total_frames=n, channels=2, samplerate=44100) as w:
            for start, region in regions:          # region: (2, m) float32
                w.write(start, region)
            w.commit(out_dir / "vocals.flac", fmt="flac")
    """

    def __init__(
        self, directory: str | os.PathLike[str], total_frames: int, channels: int, samplerate: int
    ) -> None:
        if total_frames < 1 or channels < 1 or samplerate < 1:
            raise InvalidArgumentError(
                f"StemFileWriter needs total_frames >= 1, channels >= 1 and samplerate >= 1 "
                f"(got {total_frames}, {channels}, {samplerate})."
            )
        self.directory = Path(directory)
        self.total_frames, self.channels = int(total_frames), int(channels)
        self.samplerate = int(samplerate)
        self._lock = threading.Lock()
        self._file: Any = None
        self._temps: list[Path] = []
        self._state = "open"
        self._create()

    @property
    def temp_path(self) -> Path:
        """The pre-sized float32 WAV being written."""
        return self._temps[0]

    def _create(self) -> None:
        import soundfile as sf

        if not self.directory.is_dir():
            raise OutputError(
                f"Output folder '{self.directory}' does not exist. Create it first or choose "
                "another output folder."
            )
        self._check_space(self.directory, self.total_frames * self.channels * 4)
        tmp = _make_temp(self.directory, ".wav")
        self._temps.append(tmp)
        try:
            container = _container("wav", self.channels, self.total_frames, "FLOAT")
            if not (container == "WAV" and self._create_sparse(tmp)):
                with sf.SoundFile(
                    str(tmp), "w", self.samplerate, self.channels, "FLOAT", format=container
                ) as fh:
                    block = max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
                    zeros = np.zeros((min(block, self.total_frames), self.channels), np.float32)
                    for start in range(0, self.total_frames, block):
                        fh.write(zeros[: min(block, self.total_frames - start)])
            self._file = sf.SoundFile(str(tmp), "r+")
        except (OSError, RuntimeError) as exc:
            self._remove_temps()
            raise _output_error(tmp, exc) from None

    def _create_sparse(self, tmp: Path) -> bool:
        """Make `tmp` a float WAV of `total_frames` zero frames without writing them: write
        one frame with libsndfile, extend the file (the hole reads as zeros, instantly) and
        patch the RIFF, ``fact`` and ``data`` sizes. False if the layout is not the expected
        one (the caller then writes zeros)."""
        import soundfile as sf

        with sf.SoundFile(str(tmp), "w", self.samplerate, self.channels, "FLOAT",
                          format="WAV") as fh:
            fh.write(np.zeros((1, self.channels), np.float32))
        frame_bytes = 4 * self.channels
        with open(tmp, "r+b") as fh:
            head = bytearray(fh.read(4096))
            size = os.fstat(fh.fileno()).st_size
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return False
            pos, fact, data = 12, None, None
            while pos + 8 <= len(head):
                cid, csize = bytes(head[pos:pos + 4]), int.from_bytes(head[pos + 4:pos + 8],
                                                                       "little")
                if cid == b"fact":
                    fact = pos + 8
                if cid == b"data":
                    data = pos
                    break
                pos += 8 + csize + (csize & 1)
            if data is None or data + 8 + frame_bytes != size:
                return False
            data_bytes = self.total_frames * frame_bytes
            head[data + 4:data + 8] = data_bytes.to_bytes(4, "little")
            head[4:8] = (data + 8 + data_bytes - 8).to_bytes(4, "little")
            if fact is not None:
                head[fact:fact + 4] = self.total_frames.to_bytes(4, "little")
            fh.truncate(data + 8 + data_bytes)
            fh.seek(0)
            fh.write(head[:data + 8])
        with sf.SoundFile(str(tmp)) as check:
            return check.frames == self.total_frames

    @staticmethod
    def _check_space(directory: Path, needed: int) -> None:
        free = shutil.disk_usage(directory).free
        if needed > free:
            raise OutputError(
                f"Not enough free space in '{directory}': {needed / 1e6:.0f} MB needed, "
                f"{free / 1e6:.0f} MB free. Free some space or choose another output folder."
            )

    def write(self, start_frame: int, audio: np.ndarray) -> None:
        """Put ``audio (channels, n)`` at frames ``[start_frame, start_frame + n)``.

        Regions may come in any order; writing a frame twice keeps the last write.
        """
        x = np.asarray(audio)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise InvalidArgumentError(
                f"expected a region shaped ({self.channels}, frames), got {x.shape}."
            )
        stop = start_frame + x.shape[1]
        if start_frame < 0 or stop > self.total_frames:
            raise InvalidArgumentError(
                f"region [{start_frame}, {stop}) lies outside the file [0, {self.total_frames})."
            )
        frames = np.ascontiguousarray(x.T, dtype=np.float32)
        with self._lock:
            self._require_open()
            try:
                self._file.seek(start_frame)
                self._file.write(frames)
            except (OSError, RuntimeError) as exc:
                raise _output_error(self.temp_path, exc) from None

    def commit(
        self, final_path: str | os.PathLike[str], fmt: str = "wav", subtype: str | None = None
    ) -> Path:
        """Publish the file at `final_path` atomically (see `write_audio` for `fmt` and
        `subtype`; PCM output is clipped to [-1, 1 - 2**-23]). Returns `final_path`."""
        fmt, subtype = _output_format(fmt, subtype)
        target = Path(final_path)
        with self._lock:
            self._require_open()
            try:
                self._file.close()
                directory = _target_dir(target)
                if fmt == "wav" and subtype == "FLOAT" and _same_dir(directory, self.directory):
                    _publish(self.temp_path, target)
                else:
                    self._transcode(target, directory, fmt, subtype)
            except (OSError, RuntimeError) as exc:
                self._state = "failed"
                self._remove_temps()
                raise _output_error(target, exc) from None
            except BaseException:
                self._state = "failed"
                self._remove_temps()
                raise
            self._state = "committed"
            self._remove_temps()
        return target

    def _transcode(self, target: Path, directory: Path, fmt: str, subtype: str) -> None:
        """Copy the temp WAV block by block into a second temp file, then publish it."""
        import soundfile as sf

        out_tmp = _make_temp(directory, "." + fmt)
        self._temps.append(out_tmp)
        block = max(1, _WRITE_BLOCK_SECONDS * self.samplerate)
        container = _container(fmt, self.channels, self.total_frames, subtype)
        with (
            sf.SoundFile(str(self.temp_path), "r") as src,
            sf.SoundFile(
                str(out_tmp), "w", self.samplerate, self.channels, subtype, format=container
            ) as dst,
        ):
            while (chunk := src.read(block, dtype="float32", always_2d=True)).shape[0]:
                dst.write(chunk if subtype == "FLOAT" else _pcm_block(chunk))
        _publish(out_tmp, target)

    def abort(self) -> None:
        """Discard everything written; removes the temp files. Safe to call repeatedly."""
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
            if self._file is not None and not self._file.closed:
                self._file.close()
            self._remove_temps()

    def _require_open(self) -> None:
        if self._state != "open":
            raise InvalidArgumentError(f"this StemFileWriter is already {self._state}.")

    def _remove_temps(self) -> None:
        for tmp in self._temps:
            _unlink(tmp)

    def __enter__(self) -> StemFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state != "committed":
            self.abort()


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def remove_stale_temp_files(
    directory: str | os.PathLike[str], min_age_seconds: float = 24 * 3600
) -> int:
    """Delete ``.stembridge-tmp-*`` files older than `min_age_seconds` in `directory`,
    left by a process killed while writing. Returns how many were removed."""
    removed = 0
    cutoff = time.time() - min_age_seconds
    for candidate in Path(directory).glob(TEMP_PREFIX + "*"):
        try:
            if candidate.is_file() and candidate.stat().st_mtime < cutoff:
                candidate.unlink()
                removed += 1
        except OSError:
            continue
    return removed
