"""The length and channel limits (`engine.config.Limits`): a file refused from its header
before any audio is read (`check_info`), and the refusals decoding and validation share.

Lengths are seconds (``AudioInfo.duration``) against ``Limits.min_seconds`` and
``Limits.max_seconds``; stembridge separates mono or stereo audio (1 or 2 channels).
"""

from __future__ import annotations

from pathlib import Path

from engine.audio.info import AudioInfo, fmt_seconds, input_error
from engine.config import Limits
from engine.errors import InputError
from protocol.errors import ErrorCode


def check_info(info: AudioInfo, limits: Limits) -> None:
    """Refuse a file from its header alone: too many channels, no audio, too long or too
    short. Lengths that are only estimates are checked after decoding instead."""
    if info.channels > 2:
        raise channels_error(info.path, info.channels)
    trusted = info.length in ("exact", "approximate")
    if info.length == "exact" and info.frames == 0:
        raise empty_error(info.path)
    if trusted and info.duration > limits.max_seconds:
        raise too_long_error(info.path, info.duration, limits)
    if info.length == "exact" and info.duration < limits.min_seconds:
        raise too_short_error(info.path, info.duration, limits)


def channels_error(path: str, channels: int) -> InputError:
    return input_error(
        ErrorCode.INPUT_CHANNELS,
        f"'{path}' has {channels} channels; stembridge separates mono or stereo audio. "
        f'Downmix it to stereo first, e.g. `ffmpeg -i "{Path(path).name}" -ac 2 '
        "stereo.wav`.",
    )


def empty_error(path: str) -> InputError:
    return input_error(
        ErrorCode.INPUT_EMPTY,
        f"'{path}' contains no audio (0 samples). Export it again with some audio in it.",
    )


def too_long_error(path: str, seconds: float | None, limits: Limits) -> InputError:
    length = f"is {fmt_seconds(seconds)} long" if seconds else "is longer than the limit"
    return input_error(
        ErrorCode.INPUT_TOO_LONG,
        f"'{path}' {length}; the limit is {fmt_seconds(limits.max_seconds)}. Split it into "
        "shorter parts, or raise the limit with the STEMBRIDGE_MAX_SECONDS environment "
        "variable.",
    )


def too_short_error(path: str, seconds: float, limits: Limits) -> InputError:
    return input_error(
        ErrorCode.INPUT_TOO_SHORT,
        f"'{path}' is only {fmt_seconds(seconds)} long; at least "
        f"{fmt_seconds(limits.min_seconds)} is needed. Use a longer excerpt.",
    )
