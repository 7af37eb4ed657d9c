"""The chain's stages: crossovers sum flat, the true-peak limiter's ceiling holds on
stress signals (at 4x and 16x, and after an MP3 round trip), stereo shaping keeps the lows
mono-safe, the dynamic stages act only when they should."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine.mastering import analysis, compressor, dyneq, filters, limiter, meter, stereo
from engine.mastering.settings import Compressor, DynamicBand, DynamicEQ, Limiter, Stereo
from tests.conftest import music_like

SR = 44100


@pytest.mark.parametrize("crossovers", [[200.0, 3000.0], [120.0], [80.0, 500.0, 4000.0]])
def test_linkwitz_riley_bands_sum_flat(crossovers):
    impulse = np.zeros((1, 1 << 16))
    impulse[0, 0] = 1.0
    bands = filters.split_bands(impulse, crossovers, SR)
    total = np.fft.rfft(sum(bands)[0])
    assert np.max(np.abs(20 * np.log10(np.abs(total)))) <= 0.01
    # and each band really is a band: the low band is >= 20 dB down two octaves above
    f = np.fft.rfftfreq(impulse.shape[1], 1 / SR)
    low = np.abs(np.fft.rfft(bands[0][0]))
    assert 20 * np.log10(low[np.argmin(np.abs(f - 4 * crossovers[0]))]) < -20


def _stress_signals() -> dict[str, np.ndarray]:
    n = np.arange(2 * SR)
    t = n / SR
    fs4 = np.sin(2 * np.pi * n / 4 + np.pi / 4)  # samples 3 dB below its true peak
    square = np.sign(np.sin(2 * np.pi * 441.0 * t))
    music = music_like(2.0, SR, seed=3).astype(np.float64)
    music *= 10 ** (12 / 20) / np.max(np.abs(music))  # +12 dB over full scale
    return {"fs/4 at 45 deg": np.vstack([fs4, -fs4]),
            "square": np.vstack([square, 0.8 * square]),
            "overdriven music": music}


@pytest.mark.parametrize("name", list(_stress_signals()))
@pytest.mark.parametrize("ceiling", [-1.0, -2.0])
def test_limiter_ceiling_holds(name, ceiling):
    x = _stress_signals()[name]
    y, info = limiter.limit(x, SR, Limiter(ceiling_dbtp=ceiling, drive_db=3.0))
    assert y.shape == x.shape
    assert meter.measure(y, SR, curves=False).true_peak <= ceiling  # libebur128, 4x
    assert meter.true_peak_db(y, SR, 4) <= ceiling
    assert meter.true_peak_db(y, SR, 16) <= ceiling + 0.1
    assert info["max_reduction_db"] > 3.0


def test_limiter_leaves_quiet_audio_alone():
    x = 0.1 * music_like(1.0, SR, seed=1).astype(np.float64)
    y, info = limiter.limit(x, SR, Limiter(ceiling_dbtp=-1.0))
    assert np.array_equal(y, x) and info["max_reduction_db"] == 0.0


def test_limiter_ceiling_after_mp3_round_trip():
    """Real music (the stempeg excerpt), driven 12 dB into the limiter, 320 kbps CBR."""
    lameenc = pytest.importorskip("lameenc")
    stempeg = pytest.importorskip("stempeg")
    import soundfile as sf

    from engine.audio import decode

    x = decode(stempeg.example_stem_path()).samples[:, : 3 * SR].astype(np.float64)
    y, _ = limiter.limit(x, SR, Limiter(ceiling_dbtp=-1.0, drive_db=12.0))
    enc = lameenc.Encoder()
    enc.set_bit_rate(320)
    enc.set_in_sample_rate(SR)
    enc.set_channels(2)
    enc.set_quality(2)
    pcm = (np.clip(y.T, -1, 1) * 32767).astype("<i2").tobytes()
    mp3 = bytes(enc.encode(pcm)) + bytes(enc.flush())
    decoded, rate = sf.read(io.BytesIO(mp3), dtype="float64")
    assert rate == SR
    assert meter.true_peak_db(decoded.T, SR, 16) <= -1.0 + 1.0


def test_stereo_shaping_keeps_lows_mono_safe_and_the_centre():
    rng = np.random.default_rng(0)
    mid = rng.standard_normal(4 * SR) * 0.1
    wide = rng.standard_normal((2, 4 * SR)) * 0.1  # uncorrelated: side everywhere
    x = mid + wide
    before = analysis.stereo(x, SR)
    y, _ = stereo.shape(x, SR, Stereo(enabled=True, low_side_cut=0.6, high_width_db=2.0))
    after = analysis.stereo(y, SR)
    assert after["correlation_low"] > before["correlation_low"] + 0.1
    # the mid keeps its level (allpassed only), the highs got wider
    m_in, m_out = (x[0] + x[1]) / 2, (y[0] + y[1]) / 2
    assert 10 * np.log10(np.mean(m_out**2) / np.mean(m_in**2)) == pytest.approx(0.0, abs=0.05)
    hi = filters.butter(4, 6000.0, SR, "highpass")
    s_in, s_out = filters.apply(hi, (x[0] - x[1])[None]), filters.apply(hi, (y[0] - y[1])[None])
    assert 10 * np.log10(np.mean(s_out**2) / np.mean(s_in**2)) == pytest.approx(2.0, abs=0.3)


def test_stereo_shaping_passes_mono():
    x = np.ones((1, 1000))
    assert stereo.shape(x, SR, Stereo(enabled=True, low_side_cut=1.0))[0] is x


def test_dynamic_eq_cuts_only_when_the_band_flares():
    t = np.arange(6 * SR) / SR
    rng = np.random.default_rng(2)
    chords = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 330.0, 1100.0, 3300.0))
    base = 0.05 * chords + 0.01 * rng.standard_normal((2, t.size))  # steady: no flare
    flare = np.where((t > 3) & (t < 4.5), 0.3, 0.0) * np.sin(2 * np.pi * 3500 * t)
    x = base + flare
    band = DynamicBand("harshness", 3500.0, 1.2, threshold_db=3.0, max_cut_db=6.0)
    rel = dyneq.relative_level(base, band, SR)
    band.baseline_db = float(np.median(rel))
    y, info = dyneq.dynamic_eq(x, SR, DynamicEQ(bands=[band]))
    gain = dyneq.band_gain_db(x, band, SR, x.shape[1])
    assert gain[int(3.7 * SR)] < -2.0  # inside the flare
    assert gain[int(1.5 * SR)] > gain[int(3.7 * SR)] + 1.5  # before it: (nearly) untouched
    assert np.mean(gain[: 3 * SR] < -1.0) < 0.1
    assert info["harshness"]["max_cut_db"] <= 6.0


def test_compressor_reduces_only_above_threshold():
    quiet = 0.01 * music_like(2.0, SR, seed=4).astype(np.float64)
    cfg = Compressor(threshold_db=-30.0, ratio=4.0)
    y, info = compressor.compress(quiet, SR, cfg)
    assert info["max_reduction_db"] < 0.1
    loud, info = compressor.compress(quiet * 100, SR, cfg)
    assert info["max_reduction_db"] > 3.0
    assert compressor.compress(quiet, SR, Compressor(ratio=1.0))[0] is quiet
