"""Decoding a whole file to float32 ``(channels, frames)`` at its own sample rate
(`decode`), and the whole input stage: probe, header checks, decode, validate (`load`).

libsndfile (via `soundfile`) decodes what it reads, in blocks of 65536 frames; the ffmpeg
CLI decodes the rest into a float32 pipe. Two things libsndfile does silently are
detected here: a truncated FLAC opens fine and fails only when the decoder reaches the
cut ("lost sync"), and a decode that comes up short of the header's length. A file whose
header cannot tell its length stops decoding as soon as it passes the length limit, so a
10-hour file never fills memory. soundfile is imported on first use.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.audio.ffmpeg import (
    INSTALL_FFMPEG,
    clean_log,
    ffmpeg_input,
    find_ffmpeg,
    input_options,
    last_line,
)
from engine.audio.header import probe
from engine.audio.info import REEXPORT, AudioInfo, DecodedAudio, fmt_seconds, input_error
from engine.audio.limits import check_info, too_long_error
from engine.audio.validation import validate
from engine.config import Limits
from engine.errors import DecoderMissingError, InputError
from protocol.errors import ErrorCode

_DECODE_BLOCK_FRAMES = 1 << 16


def _corrupt_error(path: str, detail: str) -> InputError:
    """INPUT_CORRUPT for damage found while decoding."""
    return input_error(ErrorCode.INPUT_CORRUPT, f"'{path}' is damaged: {detail}. {REEXPORT}")


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
    max_frames = min(math.floor(limits.max_seconds * info.samplerate),
                     limits.decoded_bytes_limit() // (4 * max(info.channels, 1)))
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
            f"its header says {fmt_seconds(info.duration)} but only "
            f"{fmt_seconds(frames / info.samplerate)} could be decoded (truncated?)",
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
            raise too_long_error(self._info.path, None, limits)
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
            f"PATH. {INSTALL_FFMPEG}"
        )
    cmd = [
        tools[0],
        "-nostdin",
        "-v",
        "error",
        *input_options(),
        "-i",
        ffmpeg_input(Path(info.path)),
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
            raise DecoderMissingError(f"Cannot run ffmpeg ({exc}). {INSTALL_FFMPEG}") from None
        timeout = (limits or Limits()).read_timeout
        expired = threading.Event()

        def _expire() -> None:  # a stalled read cannot hang the caller
            expired.set()
            proc.kill()

        watchdog = threading.Timer(timeout, _expire)
        watchdog.daemon = True
        with proc:
            watchdog.start()
            try:
                samples = _read_pipe(proc, info, max_frames, limits)
            except BaseException:
                proc.kill()
                raise
            finally:
                watchdog.cancel()
            returncode = proc.wait()
        if expired.is_set():
            raise input_error(
                ErrorCode.INPUT_UNREADABLE,
                f"ffmpeg did not finish decoding '{info.path}' within {timeout:.0f} s; "
                "convert it to WAV or FLAC.",
            )
        errors.seek(0)
        stderr = clean_log(errors.read().decode("utf-8", "replace"), Path(info.path))
    if returncode != 0:
        raise _corrupt_error(info.path, f"ffmpeg failed ({last_line(stderr)})")
    notes = []
    if stderr:
        notes.append(
            f"ffmpeg reported decoding errors ({last_line(stderr)}); the audio may "
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
