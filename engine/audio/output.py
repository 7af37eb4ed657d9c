"""The last stage of a split: a job's stem writers -> its stem files, with the output
options applied in this order:

1. `samplerate` (Hz): every stem resampled from the engine's rate (the source's) with
   soxr at very high quality (`StemFileWriter.resample`); ``round(frames * new / old)``
   frames out.
2. `normalize`: ONE linear gain for all stems, ``min(1, ceiling / peak)`` where `peak` is
   the largest absolute **sample** (not true-peak) value over every stem at the output
   rate and `ceiling` is `NORMALIZE_CEILING_DB` (-0.1 dBFS). It only ever turns down, so
   no stem passes the ceiling and, the stems being a linear split of the mix, they sum
   to ``gain x mix``. 16-bit dither (+-1 LSB) and MP3 encoding come after the gain: a
   16-bit stem may pass the ceiling by that LSB, and an MP3 decoder's output may
   overshoot it (inter-sample peaks); both stay far from clipping.
3. `fmt` / `subtype`: the writer's encodings (wav FLOAT/PCM_24/PCM_16, flac, mp3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidArgumentError
from protocol.split import NORMALIZE_CEILING_DB, SAMPLE_RATES


@dataclass(frozen=True)
class OutputOptions:
    """How the stem files are written. `subtype`: the writer's (None: the format's
    default); `samplerate`: Hz, None keeps the engine's rate."""

    fmt: str = "wav"
    subtype: str | None = None
    samplerate: int | None = None
    normalize: bool = False
    ceiling_db: float = NORMALIZE_CEILING_DB

    def __post_init__(self) -> None:
        if self.samplerate is not None and self.samplerate not in SAMPLE_RATES:
            rates = " or ".join(str(r) for r in SAMPLE_RATES)
            raise InvalidArgumentError(
                f"The stems can be written at {rates} Hz, not {self.samplerate}.")

    @property
    def ceiling(self) -> float:
        """`ceiling_db` as a linear sample value."""
        return float(10.0 ** (self.ceiling_db / 20.0))


@dataclass(frozen=True)
class OutputResult:
    """What `finish_stems` wrote: stem -> path, the rate (Hz) and length (frames) of
    every file, the gain applied (linear; 1.0 without `normalize`) and, with
    `normalize`, the largest sample peak before it (linear)."""

    files: dict[str, Path]
    samplerate: int
    frames: int
    gain: float
    peak: float | None

    def metadata(self) -> dict[str, Any]:
        """The part of ``stems.json``'s ``output`` (and ``job/done``'s metadata) that
        states rate, gain and peak; gain also in dB."""
        import math

        return {"samplerate": self.samplerate, "frames": self.frames,
                "gain": self.gain,
                "gain_db": round(20.0 * math.log10(self.gain), 4) if self.gain > 0 else None,
                "peak_before_gain": self.peak}


def subtype_for(fmt: str, bit_depth: str | None = None, mp3_quality: str = "cbr320",
                pcm24: bool = False) -> str:
    """The writer subtype of the output options: mp3 ``CBR320``/``V0``, else the PCM
    depth (`bit_depth` ``16``/``24``/``32f``; without it ``PCM_24`` for flac or
    `pcm24`, else wav's ``FLOAT``)."""
    if fmt == "mp3":
        return "V0" if mp3_quality == "v0" else "CBR320"
    if bit_depth is None:
        return "PCM_24" if (pcm24 or fmt == "flac") else "FLOAT"
    return {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}[bit_depth]


def finish_stems(writers: Mapping[str, Any], paths: Mapping[str, Path],
                 options: OutputOptions) -> OutputResult:
    """Resample, normalise and commit every `StemFileWriter` of `writers` to its path in
    `paths` (same keys). On an error the caller aborts the writers (the files committed
    so far are complete files; none is half-written)."""
    rate = options.samplerate
    for writer in writers.values():
        if rate is not None:
            writer.resample(rate)
    first = next(iter(writers.values()))
    peak = max(writer.peak() for writer in writers.values()) if options.normalize else 0.0
    gain = _gain(peak, options.ceiling) if options.normalize else 1.0
    files = {}
    for name, writer in writers.items():
        files[name] = writer.commit(paths[name], fmt=options.fmt, subtype=options.subtype,
                                    gain=gain)
    return OutputResult(files, int(first.samplerate), int(first.total_frames), gain,
                        peak if options.normalize else None)


def _gain(peak: float, ceiling: float) -> float:
    """``min(1, ceiling / peak)``, as the float32 the writer multiplies by, lowered by
    an ulp where float32 rounding would put the peak sample above `ceiling`."""
    import numpy as np

    if peak <= ceiling:
        return 1.0
    gain = np.float32(ceiling / peak)
    while float(np.float32(peak) * gain) > ceiling:  # the product as float32, compared exactly
        gain = np.nextafter(gain, np.float32(0.0))
    return float(gain)
