"""The `split` request of the protocol: what to separate and how the stems are written.
`protocol.messages` imports it, lists its address in its `Address` and registers it with
the other types (this module imports nothing of `messages`).

Rates: the region files, the shared memory and the ``job/region`` pushes carry the stems
at the engine's output rate (the source's); only the consolidated files at the end
follow `sample_rate`, `normalize`, `format` and `bit_depth` (see PROTOCOL.md, "Output").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from protocol.bounds import MAX_OUTPUT_ROOT_BYTES, MAX_PATH_BYTES, MAX_TIME_S, check_path_text
from protocol.errors import ErrorCode
from protocol.osc import ProtocolError
from protocol.payload import Payload, spec
from protocol.stems import STEM_SETS

SPLIT = "/stembridge/split"

PRIORITIES = ("interactive", "batch")
#: What `SplitRequest.rest` may be.
REST_MODES = ("keep", "drop")
#: Formats of the consolidated stem files.
OUTPUT_FORMATS = ("wav", "flac", "mp3")
#: PCM depths of wav/flac stems (``32f``: 32-bit float, wav only).
SPLIT_BIT_DEPTHS = ("16", "24", "32f")
#: MP3 encodings: 320 kbit/s CBR or LAME's VBR V0.
MP3_QUALITIES = ("cbr320", "v0")
#: Rates (Hz) the consolidated stems may be resampled to.
SAMPLE_RATES = (44100, 48000)
#: Sample peak (dBFS) that `normalize` keeps every stem at or under.
NORMALIZE_CEILING_DB = -0.1


def _token() -> Any:
    return spec(str, "access token, when the server has one", type="str", default=None)


@dataclass
class SplitRequest(Payload):
    """What to separate and how: THE split request, used by the socket client, the
    request file, the server and the engine (``Engine.prepare``).

    Times are seconds; `start_at` counts from the start of the separated audio (the
    section, if any): separation begins there (the DAW's play cursor), the rest follows.
    A `source` given as a `Path` is kept as its string. Construct with keywords."""

    ADDRESS = SPLIT
    DIRECTION = "request"
    OMIT_DEFAULTS = True
    #: Key order on the wire (kept from version 1's first servers: golden bytes).
    ORDER: ClassVar[tuple[str, ...]] = (
        "request_id", "source", "shm", "stems", "model", "start_at", "overlap",
        "section_start", "section_length", "priority", "format", "output_root",
        "reply_port", "only", "rest", "bit_depth", "mp3_quality", "sample_rate", "normalize",
        "token")
    WIRE_REQUIRED = ("request_id",)

    source: str | os.PathLike[str] = spec(str, "**absolute** path of the audio file (UTF-8), as the server "
                       "sees it", type="str")
    stems: int | None = spec(int, "`2` (vocals + instrumental), `4`, `5` (vocals, "
                             "drums, bass, piano, other: guitar summed into other) or `6`; "
                             "absent: the model's own", type="int", default=None)
    model: str | None = spec(str, "a name from `models_available`; absent: the default "
                             "for `stems`", type="str", default=None)
    start_at: float = spec(float, "seconds from the start of the separated audio; the "
                           "regions around it are computed first (play-cursor order), the "
                           "rest after, wrapping around", type="float", default=0.0)
    overlap: float | None = spec(float, "window overlap fraction in [0, 1); absent: the "
                                 "model's default", type="float", default=None)
    section_start: float = spec(float, "seconds; separate only part of the file, starting "
                                "here", type="float", default=0.0)
    section_length: float | None = spec(float, "seconds, > 0; absent: to the end",
                                        type="float", default=None)
    priority: str = spec(str, "`interactive` jobs run before `batch` jobs; within a "
                         "class, in arrival order", type="str", default="interactive")
    format: str = spec(str, "the consolidated files: `wav` (32-bit float), `flac` "
                       "(24-bit) or `mp3` (see `mp3_quality`); region files are always float "
                       "WAV", type="str", default="wav")
    shm: bool = spec(bool, "also publish the stems in shared memory (see [Shared memory]"
                     "(#shared-memory)); costs RAM: frames × channels × stems × 4 bytes "
                     "until `release`", type="bool", default=False)
    output_root: str | None = spec(str, "where the job folder is created; absolute, or "
                                   "relative to the server's root; must lie inside the "
                                   "server's root", type="str", default=None)
    reply_port: int | None = spec(int, "1..65535: UDP port on the sender's host for this "
                                  "job's pushes; absent: the sender's port", type="int",
                                  default=None)
    only: list[str] | None = spec(list, "a subset of the stems that `stems` (or the "
                                  "model) gives, e.g. `[\"vocals\", \"drums\"]`; absent: all",
                                  type="array of str", item=str, default=None)
    rest: str = spec(str, "with `only`: `keep` sums the other stems into `other` (of "
                     "vocals + instrumental, the one left out stays), so the stems still "
                     "sum to the mix; `drop` leaves them out", type="str", default="keep")
    bit_depth: str | None = spec(str, "`16` (TPDF dither), `24` or `32f` (float, wav only) "
                                 "for wav/flac; absent: the format's own", type="str",
                                 default=None)
    mp3_quality: str = spec(str, "with `mp3`: `cbr320` (320 kbit/s) or `v0` (VBR)",
                            type="str", default="cbr320")
    sample_rate: int | None = spec(int, "`44100` or `48000`: the consolidated files are "
                                   "resampled to it (soxr, very high quality); regions stay "
                                   "at the source's rate; absent: the source's", type="int",
                                   default=None)
    normalize: bool = spec(bool, "scale every consolidated stem by one gain <= 1 so that no "
                           "sample peak passes -0.1 dBFS (the stems still sum to the mix "
                           "times that gain, given in `job/done`'s metadata as "
                           "`output.gain`); regions are not scaled", type="bool",
                           default=False)
    request_id: int = spec(int, "chosen by the client, echoed in `job/accepted` and in "
                           "errors about this request", type="int", default=0)
    token: str | None = _token()

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            self.source = os.fspath(self.source)

    @property
    def path(self) -> Path:
        """`source` as a path."""
        return Path(self.source)

    def to_payload(self) -> dict[str, Any]:
        out = super().to_payload()
        return {key: out[key] for key in self.ORDER if key in out}

    def check(self) -> None:
        """Ranges: stems, priority, output options (format, bit_depth, mp3_quality,
        sample_rate), finite non-negative times, overlap, reply_port."""
        bad = ErrorCode.INVALID_ARGUMENT
        if not str(self.source):
            raise ProtocolError("source must name a file", code=bad)
        check_path_text("source", str(self.source), MAX_PATH_BYTES)
        if self.output_root is not None:
            check_path_text("output_root", self.output_root, MAX_OUTPUT_ROOT_BYTES)
        if self.stems is not None and self.stems not in STEM_SETS:
            raise ProtocolError("stems must be 2, 4, 5 or 6", code=bad)
        if self.priority not in PRIORITIES:
            raise ProtocolError("priority must be 'interactive' or 'batch'", code=bad)
        if self.rest not in REST_MODES:
            raise ProtocolError("rest must be 'keep' or 'drop'", code=bad)
        if self.only is not None and (not self.only or len(set(self.only)) != len(self.only)
                                      or len(self.only) > 8):
            raise ProtocolError("only must name 1 to 8 different stems", code=bad)
        self._check_output()
        times = [self.start_at, self.section_start] + (
            [self.section_length] if self.section_length is not None else [])
        if not all(math.isfinite(t) and t <= MAX_TIME_S for t in times) or (
                self.start_at < 0) or self.section_start < 0 or (
                self.section_length is not None and self.section_length <= 0):
            raise ProtocolError(f"times must be seconds from 0 to {MAX_TIME_S:g} "
                                "(section_length > 0)", code=bad)
        if self.overlap is not None and not (math.isfinite(self.overlap)
                                             and 0.0 <= self.overlap < 1.0):
            raise ProtocolError("overlap must be in [0, 1)", code=bad)
        if self.reply_port is not None and not 1 <= self.reply_port <= 65535:
            raise ProtocolError("reply_port must be 1..65535", code=bad)

    def _check_output(self) -> None:
        bad = ErrorCode.INVALID_ARGUMENT
        if self.format not in OUTPUT_FORMATS:
            raise ProtocolError("format must be 'wav', 'flac' or 'mp3'", code=bad)
        if self.bit_depth is not None and (self.bit_depth not in SPLIT_BIT_DEPTHS
                                           or self.format == "mp3"):
            raise ProtocolError("bit_depth must be '16', '24' or '32f', for wav or flac",
                                code=bad)
        if self.format == "flac" and self.bit_depth == "32f":
            raise ProtocolError("flac holds 16 or 24 bits; use wav for 32-bit float", code=bad)
        if self.mp3_quality not in MP3_QUALITIES:
            raise ProtocolError("mp3_quality must be 'cbr320' or 'v0'", code=bad)
        if self.sample_rate is not None and self.sample_rate not in SAMPLE_RATES:
            raise ProtocolError("sample_rate must be 44100 or 48000", code=bad)

    @staticmethod
    def payload_from_args(args: tuple[Any, ...]) -> dict[str, Any]:
        """The payload map of the plain-argument form of ``/stembridge/split``, for OSC
        tools that cannot send blobs (liblo's oscsend, TouchOSC):
        ``s source [i stems (0: default)] [f start_at] [i reply_port (0: sender's)]
        [s token]``. Its ``request_id`` is 0."""
        if not args or not isinstance(args[0], str):
            raise ProtocolError("plain split needs the source path as first argument")
        kinds: tuple[Any, ...] = (str, int, (int, float), int, str)
        names = ("source", "stems", "start_at", "reply_port", "token")
        if len(args) > len(names):
            raise ProtocolError("plain split takes at most 5 arguments")
        out: dict[str, Any] = {"request_id": 0}
        for name, kind, value in zip(names, kinds, args, strict=False):
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ProtocolError(f"plain split argument {name!r} has the wrong type")
            if name in ("stems", "reply_port") and value == 0:
                continue
            out[name] = float(value) if name == "start_at" else value
        return out


