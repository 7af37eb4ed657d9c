"""Every exception the engine raises, in one place.

Each carries a stable `code` (see `protocol.errors.ErrorCode`) for the wire and the CLI's
exit status, and a message that says what happened *and what to do about it*.
"""

from __future__ import annotations

from protocol.errors import EXIT_CODES, ErrorCode


class StembridgeError(Exception):
    """Base class: `code` for machines, `str(err)` for people."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.code, 1)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": str(self)}


class InvalidArgumentError(StembridgeError):
    code = ErrorCode.INVALID_ARGUMENT


class InputError(StembridgeError):
    """The input audio cannot be separated; `code` says why (missing, corrupt, too long...)."""

    code = ErrorCode.INPUT_UNREADABLE


class DecoderMissingError(StembridgeError):
    code = ErrorCode.DECODER_MISSING


class ModelError(StembridgeError):
    """Unknown model, weights not installed, or weights that fail their checksum."""

    code = ErrorCode.MODEL_UNKNOWN


class DeviceError(StembridgeError):
    code = ErrorCode.DEVICE_UNAVAILABLE


class CancelledError(StembridgeError):
    code = ErrorCode.CANCELLED

    def __init__(self, message: str = "The job was cancelled.") -> None:
        super().__init__(message)


class OutputError(StembridgeError):
    code = ErrorCode.OUTPUT_FAILED


class PackageMissingError(StembridgeError):
    """An optional package a feature needs is not installed (the message names the extra)."""

    code = ErrorCode.PACKAGE_MISSING


class ClusterError(StembridgeError):
    """A batch's Ray cluster cannot be used: unreachable, or workers that die or never
    start. (Ray not installed is a `PackageMissingError`.)"""

    code = ErrorCode.CLUSTER_UNAVAILABLE


class StorageError(StembridgeError):
    """A batch's remote storage cannot be listed, read or written. (A missing fsspec
    package is a `PackageMissingError`.)"""

    code = ErrorCode.STORAGE_UNAVAILABLE


class BatcherClosedError(CancelledError):
    """The engine stopped running forward passes (it is shutting down) while a job's
    windows waited for one: the job was interrupted, as by a cancel, and can run again."""

    def __init__(self, message: str = "The engine is shutting down and runs no more "
                 "forward passes; the job was interrupted: run it again.") -> None:
        super().__init__(message)
