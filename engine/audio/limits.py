"""The length and channel limits (`engine.config.Limits`): a file refused from its header
before any audio is read (`check_info`), and the refusals decoding and validation share.

Lengths are seconds (``AudioInfo.duration``) against ``Limits.min_seconds`` and
``Limits.max_seconds``; rates (Hz) against ``Limits.max_samplerate``; the decoded size
(frames x channels x 4 bytes) against ``Limits.decoded_bytes_limit()``, all before any
audio is decoded. stembridge separates mono or stereo audio (1 or 2 channels).
"""

from __future__ import annotations

from engine.audio.info import AudioInfo, fmt_seconds, input_error
from engine.config import Limits
from engine.errors import InputError
from protocol.errors import ErrorCode


def check_info(info: AudioInfo, limits: Limits) -> None:
    """Refuse a file from its header alone: too many channels, no audio, too long or too
    short. Lengths that are only estimates are checked after decoding instead."""
    if info.channels > 2:
        raise channels_error(info.path, info.channels)
    if not 0 < info.samplerate <= limits.max_samplerate:
        raise input_error(
            ErrorCode.INPUT_SAMPLERATE,
            f"'{info.path}' declares a sample rate of {info.samplerate} Hz; stembridge "
            f"accepts rates from 1 Hz to {limits.max_samplerate} Hz.",
        )
    decoded = info.frames * max(info.channels, 1) * 4
    if info.length in ("exact", "approximate") and decoded > limits.decoded_bytes_limit():
        raise input_error(
            ErrorCode.INPUT_TOO_LONG,
            f"'{info.path}' would take {decoded / 2**30:.1f} GiB of memory once decoded "
            f"({info.frames} frames x {info.channels} channels); the limit is "
            f"{limits.decoded_bytes_limit() / 2**30:.1f} GiB.",
        )
    trusted = info.length in ("exact", "approximate")
    if info.length == "exact" and info.frames == 0:
        raise empty_error(info.path)
    if trusted and info.duration > limits.max_seconds:
        raise too_long_error(info.path, info.duration, limits)
    if info.length == "exact" and info.duration < limits.min_seconds:
        raise too_short_error(info.path, info.duration, limits)


def channels_error(path: str, channels: int) -> InputError:
    """INPUT_CHANNELS for a file of more than 2 channels."""
    return input_error(
        ErrorCode.INPUT_CHANNELS,
        f"'{path}' has {channels} channels; stembridge separates mono or stereo audio "
        "(1 or 2 channels) only.",
    )


def empty_error(path: str) -> InputError:
    """INPUT_EMPTY for a file of 0 frames."""
    return input_error(
        ErrorCode.INPUT_EMPTY,
        f"'{path}' contains no audio (0 samples). Export it again with some audio in it.",
    )


def too_long_error(path: str, seconds: float | None, limits: Limits) -> InputError:
    """INPUT_TOO_LONG for a file of `seconds` (None: a length its header did not tell,
    found while decoding) over ``limits.max_seconds``. The message states the figures;
    how to raise the limit is the front end's hint (`protocol.errors.CODES`)."""
    limit = fmt_seconds(limits.max_seconds)
    if seconds:
        what = f"is {fmt_seconds(seconds)} long; the limit is {limit}"
    else:
        what = f"is longer than the limit of {limit} (decoding stopped there)"
    return input_error(ErrorCode.INPUT_TOO_LONG, f"'{path}' {what}.")


def too_short_error(path: str, seconds: float, limits: Limits) -> InputError:
    """INPUT_TOO_SHORT for a file of `seconds` under ``limits.min_seconds``."""
    return input_error(
        ErrorCode.INPUT_TOO_SHORT,
        f"'{path}' is only {fmt_seconds(seconds)} long; at least "
        f"{fmt_seconds(limits.min_seconds)} is needed. Use a longer excerpt.",
    )
