"""The mastering messages of the protocol: the `master` request and the `master/done`
push. `protocol.messages` imports them, lists their addresses in its `Address` and
registers them with the other types (this module imports nothing of `messages`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import ErrorCode
from protocol.osc import ProtocolError
from protocol.payload import Payload, spec

MASTER = "/stembridge/master"
MASTER_DONE = "/stembridge/master/done"

MASTER_PRESETS = ("streaming", "loud", "reference")
MASTER_PLATFORMS = ("spotify", "apple", "youtube", "amazon", "club")
MASTER_FORMATS = ("wav", "flac", "mp3")
MASTER_BIT_DEPTHS = ("16", "24", "32f")


@dataclass
class MasterRequest(Payload):
    """Master one file: answered with `job/accepted` (or `error`), then `job/progress`
    (percent as `regions_done` of `regions_total` = 100) and `master/done`. Cancel it
    with `cancel` and its job id. The result is written to
    `<output root>/<job>/<name>.master.<ext>` with `<name>.master.json` beside it."""

    ADDRESS = MASTER
    DIRECTION = "request"
    OMIT_DEFAULTS = True
    WIRE_REQUIRED = ("request_id",)

    source: str = spec(str, "**absolute** path of the audio file to master", type="str")
    preset: str = spec(str, "`streaming` (-14 LUFS, -1 dBTP), `loud` (about -8 LUFS) or "
                       "`reference`", type="str", default="streaming")
    platform: str | None = spec(str, "`spotify`, `apple`, `youtube`, `amazon` or `club`: "
                                "that platform's loudness and true-peak targets",
                                type="str", default=None)
    reference: str | None = spec(str, "absolute path of a reference track (`reference` "
                                 "preset)", type="str", default=None)
    target_lufs: float | None = spec(float, "integrated loudness target, LUFS; absent: "
                                     "the preset's", type="float", default=None)
    true_peak_db: float | None = spec(float, "true-peak ceiling, dBTP; absent: the "
                                      "preset's", type="float", default=None)
    amount: float = spec(float, "strength of the corrections, 0..1", type="float",
                         default=1.0)
    stem_aware: bool = spec(bool, "separate the vocals first and keep their balance",
                            type="bool", default=False)
    format: str = spec(str, "`wav`, `flac` or `mp3`", type="str", default="wav")
    bit_depth: str = spec(str, "`16`, `24` or `32f` (WAV float)", type="str", default="24")
    sample_rate: int | None = spec(int, "`44100` or `48000`; absent: the source's",
                                   type="int", default=None)
    output_root: str | None = spec(str, "as in `split`: inside the server's root",
                                   type="str", default=None)
    reply_port: int | None = spec(int, "as in `split`", type="int", default=None)
    request_id: int = spec(int, "chosen by the client, echoed in `job/accepted` and in "
                           "errors about this request", type="int", default=0)
    token: str | None = spec(str, "access token, when the server has one", type="str",
                             default=None)

    @property
    def path(self) -> Path:
        return Path(self.source)

    def check(self) -> None:
        """Ranges and choices (file checks happen on the server)."""
        bad = ErrorCode.INVALID_ARGUMENT
        if self.preset not in MASTER_PRESETS:
            raise ProtocolError("preset must be streaming, loud or reference", code=bad)
        if self.platform is not None and self.platform not in MASTER_PLATFORMS:
            raise ProtocolError("unknown platform", code=bad)
        if self.format not in MASTER_FORMATS or self.bit_depth not in MASTER_BIT_DEPTHS:
            raise ProtocolError("format must be wav, flac or mp3; bit_depth 16, 24 or 32f",
                                code=bad)
        if not (math.isfinite(self.amount) and 0.0 <= self.amount <= 1.0):
            raise ProtocolError("amount must be in [0, 1]", code=bad)
        if self.preset == "reference" and not self.reference:
            raise ProtocolError("the reference preset needs `reference`", code=bad)
        if self.sample_rate is not None and self.sample_rate not in (44100, 48000):
            raise ProtocolError("sample_rate must be 44100 or 48000", code=bad)
        if self.reply_port is not None and not 1 <= self.reply_port <= 65535:
            raise ProtocolError("reply_port must be 1..65535", code=bad)


@dataclass
class MasterDone(Payload):
    """A master is finished: the audio file, its report and the headline figures."""

    ADDRESS = MASTER_DONE
    DIRECTION = "push"

    job: str = spec(str, "job id", type="str")
    file: str = spec(str, "absolute path of the mastered audio file", type="str")
    report: str = spec(str, "absolute path of its `<name>.master.json`", type="str")
    lufs_before: float | None = spec(float, "integrated loudness of the input, LUFS",
                                     type="nil or float", default=None)
    lufs_after: float | None = spec(float, "integrated loudness of the master, LUFS",
                                    type="nil or float", default=None)
    true_peak_before: float | None = spec(float, "dBTP of the input", type="nil or float",
                                          default=None)
    true_peak_after: float | None = spec(float, "dBTP of the master", type="nil or float",
                                         default=None)
    lra_before: float | None = spec(float, "loudness range of the input, LU",
                                    type="nil or float", default=None)
    lra_after: float | None = spec(float, "loudness range of the master, LU",
                                   type="nil or float", default=None)
    passes: int = spec(int, "passes of the loop", type="int", default=0)
    warnings: list[str] = spec(list, "what the user should know", type="array of str",
                               item=str, factory=list)
