"""Error codes that cross process boundaries (CLI exit codes, and later the OSC wire).

Each code is a short stable string; `EXIT_CODES` maps it to the CLI's process exit status.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Stable identifiers of everything that can go wrong, grouped by stage."""

    # bad arguments
    INVALID_ARGUMENT = "invalid_argument"
    # input audio
    INPUT_MISSING = "input_missing"
    INPUT_UNREADABLE = "input_unreadable"
    INPUT_CORRUPT = "input_corrupt"
    INPUT_EMPTY = "input_empty"
    INPUT_TOO_SHORT = "input_too_short"
    INPUT_TOO_LONG = "input_too_long"
    INPUT_NOT_FINITE = "input_not_finite"
    INPUT_CHANNELS = "input_channels"
    SOURCE_CHANGED = "source_changed"
    DECODER_MISSING = "decoder_missing"
    # models
    MODEL_UNKNOWN = "model_unknown"
    MODEL_NOT_INSTALLED = "model_not_installed"
    MODEL_CORRUPT = "model_corrupt"
    STEMS_UNSUPPORTED = "stems_unsupported"
    # runtime
    DEVICE_UNAVAILABLE = "device_unavailable"
    CANCELLED = "cancelled"
    OUTPUT_FAILED = "output_failed"
    INTERNAL = "internal"


#: CLI exit status per code. 0 is success, 1 an unexpected internal error,
#: 2 a usage error (argparse's own convention); the rest group by stage.
EXIT_CODES: dict[ErrorCode, int] = {
    ErrorCode.INTERNAL: 1,
    ErrorCode.INVALID_ARGUMENT: 2,
    ErrorCode.INPUT_MISSING: 3,
    ErrorCode.INPUT_UNREADABLE: 4,
    ErrorCode.INPUT_CORRUPT: 4,
    ErrorCode.INPUT_EMPTY: 5,
    ErrorCode.INPUT_TOO_SHORT: 5,
    ErrorCode.INPUT_TOO_LONG: 5,
    ErrorCode.INPUT_NOT_FINITE: 5,
    ErrorCode.INPUT_CHANNELS: 5,
    ErrorCode.SOURCE_CHANGED: 4,
    ErrorCode.DECODER_MISSING: 6,
    ErrorCode.MODEL_UNKNOWN: 7,
    ErrorCode.MODEL_NOT_INSTALLED: 8,
    ErrorCode.MODEL_CORRUPT: 8,
    ErrorCode.STEMS_UNSUPPORTED: 7,
    ErrorCode.DEVICE_UNAVAILABLE: 9,
    ErrorCode.OUTPUT_FAILED: 10,
    ErrorCode.CANCELLED: 130,
}
