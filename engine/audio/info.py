"""The facts about an audio file and its decoded samples, shared by every stage.

`AudioInfo` is what a file's header says (`engine.audio.header.probe`); `DecodedAudio`
holds float32 samples shaped ``(channels, frames)`` at the file's own sample rate (Hz).
Also the message pieces every stage's errors share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.errors import InputError
from protocol.errors import ErrorCode

#: Advice for a damaged or unreadable file, in the file's own terms.
REEXPORT = "Export, copy or download it again; if it plays elsewhere, convert it to WAV or FLAC."


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


def fmt_seconds(seconds: float) -> str:
    """``"0.012 s"``, ``"3.5 s"`` or ``"1:02:03"``."""
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def input_error(code: ErrorCode, message: str) -> InputError:
    """An `InputError` with `code` (one of the INPUT_* codes)."""
    return InputError(message, code=code)
