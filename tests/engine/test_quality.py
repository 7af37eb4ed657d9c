"""Separation quality of the embedded default model through the whole engine (decode,
chunk loop with its default overlap, precision as a user gets it, writers), on the real
MUSDB18 excerpt that stempeg ships, with the mixture taken as the sum of its four stems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.config import EngineConfig
from engine.separator import Engine, SplitRequest

stempeg = pytest.importorskip("stempeg")
museval = pytest.importorskip("museval")


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(mixture wav path, true vocals (frames, 2), true accompaniment (frames, 2))."""
    from engine.audio import decode

    path = Path(stempeg.example_stem_path())
    streams = [decode(path, stream_index=i).samples for i in range(5)]  # mix, d, b, o, v
    drums, bass, other, vocals = streams[1:]
    accomp = drums + bass + other
    mix = accomp + vocals
    out = tmp_path_factory.mktemp("excerpt") / "mixture.wav"
    sf.write(out, mix.T, 44100, subtype="FLOAT")
    return out, vocals.T, accomp.T


def _median_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    sdr, _isr, _sir, _sar = museval.evaluate(ref[None], est[None])
    return float(np.nanmedian(sdr[0]))


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_default_model_quality_through_engine(excerpt, tmp_path, precision):
    path, vocals, accomp = excerpt
    engine = Engine(EngineConfig(precision=precision, use_cache=False))
    job, regions = engine.split(SplitRequest(path))  # defaults: spleeter-2stems, 2 stems
    assert job.spec.name == "spleeter-2stems" and job.stem_names == ("vocals", "instrumental")
    est = {n: np.zeros((job.channels, job.frames), np.float32) for n in job.stem_names}
    for r in regions:
        for n, a in r.stems.items():
            est[n][:, r.start:r.end] = a
    mix = sf.read(path, dtype="float32")[0].T
    recon = est["vocals"] + est["instrumental"]
    snr = 10 * np.log10((mix**2).sum() / ((mix - recon) ** 2).sum())
    assert snr >= 40.0, f"vocals + instrumental reconstruct the mixture at {snr:.1f} dB"
    sdr_v = _median_sdr(vocals, est["vocals"].T)
    sdr_a = _median_sdr(accomp, est["instrumental"].T)
    assert sdr_v >= 2.5, f"vocals SDR {sdr_v:.2f} dB"
    assert sdr_a >= 10.0, f"accompaniment SDR {sdr_a:.2f} dB"
