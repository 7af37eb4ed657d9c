"""Stem-aware mastering: separate the mix with the warm engine and use the stems.

The stems key the detectors (the presence dynamic EQ and the mid-band compressor listen
to the instrumental, so a voice never pushes itself back), and the vocal-to-instrumental
loudness balance is measured before and after by separating the master again.
Audio is float ``(channels, frames)`` at the mix's rate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.mastering import meter

if TYPE_CHECKING:
    from engine.separator import Engine

#: The largest change of the vocal-to-instrumental balance a master may make, in LU.
BALANCE_TOLERANCE_LU = 0.5
#: Above this change the master is made again with the input's vocals remixed against it.
STEER_LU = 0.3


def separate_file(engine: Engine, path: Path, cancel: Any = None) -> dict[str, np.ndarray]:
    """The default model's vocals and instrumental of `path`, each ``(channels, frames)``
    float64 at the file's rate (assembled from the streamed regions)."""
    from protocol.messages import SplitRequest

    job = engine.prepare(SplitRequest(source=str(path), stems=2))
    out = {name: np.zeros((job.channels, job.frames)) for name in job.stem_names}
    for region in job.run(cancel=cancel):
        for name, audio in region.stems.items():
            out[name][:, region.start : region.end] = audio
    return out


def separate_samples(engine: Engine, x: np.ndarray, samplerate: int, cancel: Any = None
                     ) -> dict[str, np.ndarray]:
    """`separate_file` for samples in memory (written to a private temporary WAV)."""
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="stembridge-master-") as tmp:
        path = Path(tmp) / "master.wav"
        sf.write(str(path), np.ascontiguousarray(x.T, dtype=np.float32), samplerate,
                 subtype="FLOAT")
        return separate_file(engine, path, cancel)


def balance_lu(stems: dict[str, np.ndarray], samplerate: int) -> float | None:
    """Vocal loudness minus instrumental loudness (LU); None when either is silent."""
    vocals = meter.integrated(stems["vocals"], samplerate)
    rest = meter.integrated(stems["instrumental"], samplerate)
    if vocals is None or rest is None:
        return None
    return round(vocals - rest, 3)


def report(before: float | None, after: float | None) -> dict[str, Any]:
    """The stem balance section of the master report."""
    change = None if before is None or after is None else round(after - before, 3)
    return {"vocal_to_instrumental_lu_before": before,
            "vocal_to_instrumental_lu_after": after, "change_lu": change,
            "within_tolerance": change is not None and abs(change) <= BALANCE_TOLERANCE_LU,
            "tolerance_lu": BALANCE_TOLERANCE_LU}
