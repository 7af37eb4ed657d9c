"""Every error code that crosses a process boundary, in one table: its exit status and
what a user does about it, in the terms of each front end.

A code is a short stable string (on the wire, in manifests, reply files and the CLI's
``--json``). The engine's messages say what is wrong in the engine's own terms; the hints
here add how to fix it: `Hint.cli` for the command line, `Hint.daw` for the DAW scripts
(the REAPER and Ardour actions show it; it is generated into their constants file).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    INPUT_SAMPLERATE = "input_samplerate"
    SOURCE_CHANGED = "source_changed"
    DECODER_MISSING = "decoder_missing"
    PACKAGE_MISSING = "package_missing"
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
    # the wire: the server refused a message
    BAD_MESSAGE = "bad_message"
    UNKNOWN_ADDRESS = "unknown_address"
    UNAUTHORIZED = "unauthorized"
    TOO_MANY_JOBS = "too_many_jobs"
    UNKNOWN_JOB = "unknown_job"
    # the client side: no server could be reached
    NOT_RUNNING = "not_running"
    TIMEOUT = "timeout"
    START_FAILED = "start_failed"
    # mastering
    REFERENCE_UNUSABLE = "reference_unusable"
    # quality measurement (`stembridge eval`)
    QUALITY_REGRESSION = "quality_regression"
    # `stembridge batch`: its executor and its storage
    CLUSTER_UNAVAILABLE = "cluster_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"


@dataclass(frozen=True)
class Hint:
    """What a user does about a code: `cli` in a terminal, `daw` inside a DAW script.
    Empty: the message says enough."""

    cli: str = ""
    daw: str = ""


@dataclass(frozen=True)
class CodeInfo:
    """One row of the table: the process exit status and the hints."""

    exit_status: int
    hint: Hint = Hint()


#: Exit status for a client command whose server cannot be reached.
EXIT_NO_SERVER = 11
#: Exit status for a client command the server refused (a protocol-level error).
EXIT_SERVER_ERROR = 12
#: Exit status of `stembridge eval --compare` when a stem fell below its baseline.
EXIT_REGRESSION = 13
#: Exit status for a batch whose Ray cluster cannot be used (unreachable, workers that
#: cannot start).
EXIT_NO_CLUSTER = 14
#: Exit status for a batch whose remote storage cannot be reached or read.
EXIT_NO_STORAGE = 15

_REPORT = "This is a bug in stembridge; please report it with the server log."

#: THE table. 0 is success, 1 an unexpected internal error, 2 a usage error (argparse's
#: own convention); the rest group by stage (README, "Exit codes").
CODES: dict[ErrorCode, CodeInfo] = {
    ErrorCode.INTERNAL: CodeInfo(1, Hint(_REPORT, _REPORT)),
    ErrorCode.INVALID_ARGUMENT: CodeInfo(2, Hint("See `stembridge --help`.")),
    ErrorCode.INPUT_MISSING: CodeInfo(3, Hint(
        "Check the file name.", "Was the item's file moved or deleted? Relink it in REAPER.")),
    ErrorCode.INPUT_UNREADABLE: CodeInfo(4, Hint(
        "Convert it, e.g. `ffmpeg -i IN -c:a pcm_s16le out.wav`.",
        "Render or glue the item to a WAV file, then split that.")),
    ErrorCode.INPUT_CORRUPT: CodeInfo(4, Hint(
        "Re-export or re-download the file.", "Re-export the item's file, then split it.")),
    ErrorCode.INPUT_EMPTY: CodeInfo(5),
    ErrorCode.INPUT_TOO_SHORT: CodeInfo(5),
    ErrorCode.INPUT_TOO_LONG: CodeInfo(5, Hint(
        "Split it into shorter parts or raise STEMBRIDGE_MAX_SECONDS.",
        "Split a shorter item, or raise STEMBRIDGE_MAX_SECONDS for the engine.")),
    ErrorCode.INPUT_NOT_FINITE: CodeInfo(5),
    ErrorCode.INPUT_CHANNELS: CodeInfo(5, Hint(
        "Downmix first: `ffmpeg -i IN -ac 2 out.wav`.",
        "Set the item's channel mode to stereo and glue it, then split that.")),
    ErrorCode.INPUT_SAMPLERATE: CodeInfo(5, Hint(
        "Resample it first: `ffmpeg -i IN -ar 48000 out.wav`.",
        "Set the item's file to a lower sample rate (e.g. 48 kHz) and glue it, then split "
        "that.")),
    ErrorCode.SOURCE_CHANGED: CodeInfo(4, Hint(
        "Run it again once the file is no longer being written.",
        "Split again once the file is no longer being written.")),
    ErrorCode.DECODER_MISSING: CodeInfo(6, Hint(
        "Install ffmpeg (apt install ffmpeg / brew install ffmpeg / winget install ffmpeg).",
        "Install ffmpeg for the engine, or glue the item to WAV first.")),
    ErrorCode.PACKAGE_MISSING: CodeInfo(6, Hint(
        "Install the extra the message names, e.g. `pip install 'stembridge[eval]'`.",
        "Install the package the message names into the engine's environment.")),
    ErrorCode.MODEL_UNKNOWN: CodeInfo(7, Hint(
        "`stembridge models list` shows the known models.",
        "Choose another model in stembridge: Settings (empty: the default).")),
    ErrorCode.MODEL_NOT_INSTALLED: CodeInfo(8, Hint(
        "`stembridge models fetch NAME` (needs internet once), or copy the weights by hand "
        "(`stembridge models list` says where).",
        "Install the model: stembridge models fetch NAME (needs internet once), or choose "
        "another model in stembridge: Settings.")),
    ErrorCode.MODEL_CORRUPT: CodeInfo(8, Hint(
        "Fetch the model again: `stembridge models fetch NAME`.",
        "Fetch the model again (stembridge models fetch NAME).")),
    ErrorCode.STEMS_UNSUPPORTED: CodeInfo(7, Hint(
        "`stembridge models list` shows each model's stems.",
        "Choose a model that has these stems in stembridge: Settings.")),
    ErrorCode.DEVICE_UNAVAILABLE: CodeInfo(9, Hint(
        "Choose another device (`--device cpu`), or install the matching PyTorch build.",
        "Set the device to auto or cpu in stembridge: Settings.")),
    ErrorCode.CANCELLED: CodeInfo(130),
    ErrorCode.OUTPUT_FAILED: CodeInfo(10, Hint(
        "Choose a writable output folder with enough free space.",
        "Choose a writable output folder in stembridge: Settings.")),
    ErrorCode.BAD_MESSAGE: CodeInfo(EXIT_SERVER_ERROR, Hint(
        "Client and server may be different versions; update both.",
        "The scripts and the engine may be different versions; update both.")),
    ErrorCode.UNKNOWN_ADDRESS: CodeInfo(EXIT_SERVER_ERROR, Hint(
        "Client and server may be different versions; update both.",
        "The scripts and the engine may be different versions; update both.")),
    ErrorCode.UNAUTHORIZED: CodeInfo(EXIT_SERVER_ERROR, Hint(
        "Pass the server's token (`--token` or STEMBRIDGE_TOKEN).",
        "Set STEMBRIDGE_TOKEN to the engine's token.")),
    ErrorCode.TOO_MANY_JOBS: CodeInfo(EXIT_SERVER_ERROR, Hint(
        "Wait for running jobs to finish, or cancel some (`stembridge cancel JOB`).",
        "Wait for the running splits to finish, or cancel them.")),
    ErrorCode.UNKNOWN_JOB: CodeInfo(EXIT_SERVER_ERROR, Hint(
        "`stembridge status` lists the server's jobs.")),
    ErrorCode.NOT_RUNNING: CodeInfo(EXIT_NO_SERVER, Hint(
        "Start one with `stembridge serve --detach`, or check --host/--port.",
        "Is the engine installed? Set its path in stembridge: Settings.")),
    ErrorCode.TIMEOUT: CodeInfo(EXIT_NO_SERVER, Hint(
        "Is the server running and reachable (`stembridge ping`)?",
        "The engine did not answer; is it installed? Set its path in stembridge: Settings.")),
    ErrorCode.START_FAILED: CodeInfo(EXIT_NO_SERVER, Hint(
        "See the server log named in the message.",
        "The engine could not start; see its server.log.")),
    ErrorCode.REFERENCE_UNUSABLE: CodeInfo(5, Hint(
        "Choose a reference track with at least 3 s of music (`--reference FILE`).",
        "Select a reference item with at least 3 s of music as the first selected item.")),
    ErrorCode.QUALITY_REGRESSION: CodeInfo(EXIT_REGRESSION, Hint(
        "Find the change that cost quality; if the drop is intended, pass the new run's "
        "eval.json as the baseline from then on.")),
    ErrorCode.CLUSTER_UNAVAILABLE: CodeInfo(EXIT_NO_CLUSTER, Hint(
        "Check the cluster (`ray status` on its head node) and that stembridge is "
        "installed on every node, or run the batch without --ray.")),
    ErrorCode.STORAGE_UNAVAILABLE: CodeInfo(EXIT_NO_STORAGE, Hint(
        "Check the URL and the store's credentials (e.g. AWS_PROFILE for s3://), or use "
        "local paths.")),
}

#: CLI exit status per code (kept for callers that want only the number).
EXIT_CODES: dict[ErrorCode, int] = {code: info.exit_status for code, info in CODES.items()}


def lookup(code: str | ErrorCode) -> ErrorCode:
    """The `ErrorCode` of a wire string; unknown strings map to INTERNAL."""
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.INTERNAL


def exit_status(code: str | ErrorCode) -> int:
    """The process exit status for `code` (1 for codes this version does not know)."""
    return CODES[lookup(code)].exit_status


def hint(code: str | ErrorCode, front_end: str = "cli") -> str:
    """What to do about `code` in `front_end`'s terms (``"cli"`` or ``"daw"``)."""
    h = CODES[lookup(code)].hint
    return h.daw if front_end == "daw" else h.cli
