"""The loudness meter against EBU Tech 3341 (cases 1-6, 9, 12, 15-19) and Tech 3342
(cases 1-4), with the signals synthesised here as the specifications describe them:
1 kHz sines at the given levels (dBFS peak) and durations, 48 kHz."""

from __future__ import annotations

import numpy as np
import pytest

from engine.mastering import meter

SR = 48000


def sine(seconds: float, dbfs: float, freq: float = 1000.0, channels: int = 2,
         phase_deg: float = 0.0) -> np.ndarray:
    n = np.arange(int(round(seconds * SR)))
    x = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * n / SR + np.radians(phase_deg))
    return np.tile(x, (channels, 1))


def sequence(*parts: tuple[float, float]) -> np.ndarray:
    """Concatenated stereo 1 kHz sines, each (seconds, dBFS)."""
    return np.concatenate([sine(s, db) for s, db in parts], axis=1)


@pytest.mark.parametrize("parts", [
    [(20, -23)],                                            # case 1
    [(20, -33)],                                            # case 2 (reads -33)
    [(10, -36), (60, -23), (10, -36)],                      # case 3
    [(10, -72), (10, -36), (60, -23), (10, -36), (10, -72)],  # case 4
    [(20, -26), (20.1, -20), (20, -26)],                    # case 5
], ids=["3341-1", "3341-2", "3341-3", "3341-4", "3341-5"])
def test_integrated_loudness_tech3341(parts):
    expected = -33.0 if parts == [(20, -33)] else -23.0
    x = sequence(*parts)
    assert meter.measure(x, SR, curves=False, true_peak=False).integrated == pytest.approx(
        expected, abs=0.05)
    assert meter.integrated(x, SR) == pytest.approx(expected, abs=0.05)  # the loop's meter


def test_integrated_five_channels_tech3341_case6():
    # L, R, C, Ls, Rs at -28, -28, -24, -30, -30 dBFS; the surrounds weigh +1.5 dB
    x = np.vstack([sine(20, db, channels=1) for db in (-28, -28, -24, -30, -30)])
    assert meter.measure(x, SR, curves=False, true_peak=False).integrated == pytest.approx(
        -23.0, abs=0.05)


def test_short_term_tech3341_case9():
    x = np.concatenate([sequence((1.34, -20), (1.66, -30)) for _ in range(5)], axis=1)
    m = meter.measure(x, SR, true_peak=False)
    after = [v for v in m.short_term[30:] if v is not None]  # from 3 s on
    assert len(after) >= 100
    assert max(abs(v + 23.0) for v in after) <= 0.1
    assert m.short_term_max == pytest.approx(-23.0, abs=0.1)


def test_momentary_tech3341_case12():
    x = np.concatenate([sequence((0.18, -20), (0.22, -30)) for _ in range(25)], axis=1)
    m = meter.measure(x, SR, true_peak=False)
    after = [v for v in m.momentary[4:] if v is not None]  # from 0.4 s on
    assert len(after) >= 90
    assert max(abs(v + 23.0) for v in after) <= 0.1
    assert m.momentary_max == pytest.approx(-23.0, abs=0.1)


def _faded(x: np.ndarray) -> np.ndarray:
    ramp = np.minimum(1.0, np.arange(x.shape[1]) / (0.01 * SR))
    return x * ramp


@pytest.mark.parametrize("freq,phase,dbfs,expected", [
    (SR / 4, 0.0, -6.0206, -6.02),     # case 15: fs/4, samples on the peaks
    (SR / 4, 45.0, -6.0206, -6.02),    # case 16: fs/4, 45 degrees (samples 3 dB below)
    (SR / 6, 60.0, -6.0206, -6.02),    # case 17: fs/6, 60 degrees
    (SR / 8, 67.5, -6.0206, -6.02),    # case 18: fs/8, 67.5 degrees
    (SR / 4, 45.0, 3.0103, 3.01),      # case 19: fs/4, 45 degrees, samples at 0 dBFS
], ids=["3341-15", "3341-16", "3341-17", "3341-18", "3341-19"])
def test_true_peak_tech3341(freq, phase, dbfs, expected):
    x = _faded(sine(2.0, dbfs, freq=freq, phase_deg=phase))
    m = meter.measure(x, SR, curves=False)
    assert m.true_peak == pytest.approx(expected, abs=0.1)
    assert meter.true_peak_db(x, SR, 16) == pytest.approx(expected, abs=0.1)
    assert meter.true_peak_db(x, SR, 4) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("parts,expected", [
    ([(20, -20), (20, -30)], 10.0),
    ([(20, -20), (20, -15)], 5.0),
    ([(20, -40), (20, -20)], 20.0),
    ([(20, -50), (20, -35), (20, -20), (20, -35), (20, -50)], 15.0),
], ids=["3342-1", "3342-2", "3342-3", "3342-4"])
def test_loudness_range_tech3342(parts, expected):
    m = meter.measure(sequence(*parts), SR, curves=False, true_peak=False)
    assert m.lra == pytest.approx(expected, abs=0.2)


def test_silence_and_very_short_signals_have_no_level():
    silent = meter.measure(np.zeros((2, SR)), SR)
    assert silent.integrated is None and silent.true_peak is None
    assert silent.sample_peak is None and silent.ungated is None
    short = meter.measure(sine(0.2, -20), SR)  # shorter than one 400 ms gating block
    assert short.integrated is None
    assert short.ungated == pytest.approx(-20.0, abs=0.1)
    assert meter.integrated(sine(0.2, -20), SR) == pytest.approx(-20.0, abs=0.1)
