"""Audio in and out, one module per stage:

================  =====================================================================
`header`          `probe`: what a file's header says (`AudioInfo`), without decoding
`container`       the container's bytes: its kind, and whether it is visibly cut short
`limits`          `check_info`: refuse a file from its header (channels, length)
`decoder`         `decode` to float32 samples; `load` = probe, check, decode, validate
`validation`      `validate`: NaN/Inf refused; silence, clipping, low rates warned about
`channels`        `to_model_channels` / `from_model_channels`
`resampler`       `resample`, `resampled_length`, `RegionResampler` (regions in any order)
`writer`          `write_audio`, `StemFileWriter`: atomic WAV/FLAC output
`ffmpeg`          finding and calling the ffmpeg/ffprobe tools
`info`            the data types (`AudioInfo`, `DecodedAudio`)
================  =====================================================================

Every array is laid out ``(channels, frames)`` (or ``(..., channels, frames)`` for stacks
of stems): one row per channel, time along the last axis. Lengths called *frames* are
counted in samples per channel; lengths called *seconds* are seconds; sample rates are in
Hz. Decoded audio is always float32 in [-1, 1] nominal full scale.

Nothing here runs at import time: soundfile and scipy are imported on first use; this
package itself imports only numpy.
"""

from __future__ import annotations

from engine.audio.channels import from_model_channels, to_model_channels
from engine.audio.decoder import decode, load
from engine.audio.ffmpeg import find_ffmpeg
from engine.audio.header import probe
from engine.audio.info import AudioInfo, DecodedAudio
from engine.audio.limits import check_info
from engine.audio.resampler import RegionResampler, resample, resampled_length
from engine.audio.validation import (
    CLIP_LEVEL,
    CLIP_MIN_COUNT,
    CLIP_MIN_FRACTION,
    SILENCE_DBFS,
    validate,
)
from engine.audio.writer import (
    PCM_MAX,
    StemFileWriter,
    remove_stale_temp_files,
    write_audio,
)
from protocol.files import TEMP_PREFIX  # the one temporary-file prefix, re-exported

__all__ = [
    "CLIP_LEVEL",
    "CLIP_MIN_COUNT",
    "CLIP_MIN_FRACTION",
    "PCM_MAX",
    "SILENCE_DBFS",
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
