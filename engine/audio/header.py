"""Probing: what an audio file's header says, without decoding it (`probe`).

Files libsndfile reads (WAV, FLAC, OGG/Vorbis/Opus, MP3 with a length header, AIFF, ...)
are probed with `soundfile.info`; the rest (M4A/AAC/ALAC, MP4, WebM, Matroska, ...,
including the NI ``.stem.mp4`` format whose audio streams 0..4 hold mix + 4 stems) with
``ffprobe``. Two files libsndfile opens still go to ffmpeg when it is installed, because
libsndfile cannot know their length: an MP3 without a Xing/Info/VBRI header (libsndfile
never reads past a length estimated from the first frame's bitrate, so a VBR file can
come back cut to a fraction of its length) and a FLAC written to a pipe (total samples 0
in STREAMINFO, which libsndfile reports as 2**63 - 1 frames).

Lengths in `AudioInfo` are frames (samples per channel) and seconds; rates are Hz.
soundfile is imported on first use.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

from engine.audio.container import (
    check_structure,
    mp3_has_length_header,
    sniff_container,
    truncated_error,
    wav_codec_tag,
)
from engine.audio.ffmpeg import (
    INSTALL_FFMPEG,
    clean_log,
    ffmpeg_input,
    find_ffmpeg,
    input_options,
    last_line,
)
from engine.audio.info import REEXPORT, AudioInfo, input_error
from engine.errors import DecoderMissingError, InputError, InvalidArgumentError
from protocol.errors import ErrorCode

_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX when the length is unknown
_FFPROBE_TIMEOUT_S = 60
_FFPROBE_MIN_SCORE = 26  # ffmpeg warns "misdetection possible" at AVPROBE_SCORE_RETRY (25)

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


def _check_path(path: str | os.PathLike[str]) -> Path:
    """The path as a `Path` once it names a non-empty, readable regular file."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise input_error(
            ErrorCode.INPUT_MISSING,
            f"No file at '{p}'. Check the path; the file may have been moved, renamed or deleted.",
        ) from None
    except OSError as exc:
        raise input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"Cannot access '{p}': {exc.strerror}. Check the path and its permissions.",
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise input_error(
            ErrorCode.INPUT_MISSING,
            f"'{p}' is a folder, not an audio file. Choose an audio file (WAV, FLAC, MP3, "
            "...) inside it.",
        )
    if not stat.S_ISREG(st.st_mode):
        raise input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"'{p}' is not a regular file (a device or a pipe?). Save the audio to a file first.",
        )
    if st.st_size == 0:
        raise input_error(
            ErrorCode.INPUT_EMPTY,
            f"'{p}' is empty (0 bytes); the export or download probably failed. {REEXPORT}",
        )
    try:
        open(p, "rb").close()
    except OSError as exc:
        raise input_error(
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
    check_structure(p)
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
    return sf_info.format == "MP3" and not mp3_has_length_header(path)


def _undecodable_error(path: Path, sf_error: str) -> Exception:
    """The error for a file libsndfile cannot open when ffmpeg is not installed."""
    container = sniff_container(path, sndfile_only=True)
    tag = wav_codec_tag(path) if container == "WAV" else None
    if tag is not None:  # intact RIFF structure: a codec libsndfile lacks, not damage
        return DecoderMissingError(
            f"'{path}' is a WAV file in a codec libsndfile cannot decode (format tag "
            f"0x{tag:04X}); stembridge needs ffmpeg for it, and ffmpeg/ffprobe were not found "
            f"on PATH. {INSTALL_FFMPEG}"
        )
    if container is not None:
        return input_error(
            ErrorCode.INPUT_CORRUPT,
            f"'{path}' looks like a {container} file but cannot be opened ({sf_error}); it "
            f"is probably damaged or truncated. {REEXPORT}",
        )
    if path.suffix.lower() in _SNDFILE_EXTENSIONS:
        return input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"'{path}' is not a readable audio file (libsndfile does not recognise it). Check "
            "that it really is audio; if it plays elsewhere, convert it to WAV or FLAC "
            "(installing ffmpeg also lets stembridge read more formats).",
        )
    return DecoderMissingError(
        f"'{path}' ({path.suffix or 'no extension'}) needs ffmpeg to decode, and ffmpeg/"
        f"ffprobe were not found on PATH. {INSTALL_FFMPEG}"
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
    elif info.format == "MP3" and not mp3_has_length_header(path):
        length = "estimate"
    if info.format == "OGG" and "lacks an end-of-stream bit" in info.extra_info:
        raise truncated_error(path, "its last Ogg page is not marked as the end of the stream")
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


def _probe_ffmpeg(path: Path, ffprobe: str, stream_index: int | None) -> AudioInfo:
    """`AudioInfo` from ``ffprobe -print_format json``."""
    report = _run_ffprobe(path, ffprobe)
    streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    fmt = report.get("format", {})
    if int(fmt.get("probe_score", 100)) < _FFPROBE_MIN_SCORE:
        raise _not_audio_error(path, "is not in a format ffmpeg recognises")
    if not streams:
        if sniff_container(path) is not None:  # e.g. an MP4 whose index is cut off
            raise truncated_error(path, "ffprobe finds no complete audio stream in it")
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
        raise input_error(
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
        *input_options(),
        ffmpeg_input(path),
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
        raise input_error(
            ErrorCode.INPUT_UNREADABLE,
            f"ffprobe did not finish reading '{path}' within {_FFPROBE_TIMEOUT_S} s. "
            "Convert the file to WAV or FLAC.",
        ) from None
    except OSError as exc:
        raise DecoderMissingError(f"Cannot run ffprobe ({exc}). {INSTALL_FFMPEG}") from None
    stderr = clean_log(done.stderr.decode("utf-8", "replace"), path)
    if done.returncode != 0:
        if "moov atom not found" in stderr or sniff_container(path) is not None:
            raise input_error(
                ErrorCode.INPUT_CORRUPT,
                f"'{path}' is damaged or incomplete (ffprobe: {last_line(stderr)}). {REEXPORT}",
            )
        raise _not_audio_error(path, f"is not a readable audio file ({last_line(stderr)})")
    try:
        return dict(json.loads(done.stdout.decode("utf-8", "replace") or "{}"))
    except ValueError:
        raise _not_audio_error(path, "could not be probed (ffprobe printed invalid JSON)") from None


def _not_audio_error(path: Path, what: str) -> InputError:
    return input_error(
        ErrorCode.INPUT_UNREADABLE,
        f"'{path}' {what}. Check that it really is an audio file; if it plays elsewhere, "
        "convert it to WAV or FLAC.",
    )


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
