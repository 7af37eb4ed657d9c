"""engine.audio.resampler: resample equals scipy's resample_poly; RegionResampler,
fed regions in any order, equals resample of the whole signal.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from scipy.signal import resample_poly

from engine import audio
from protocol.errors import ErrorCode
from tests.audio_helpers import raises_code, random_regions


@pytest.mark.parametrize(
    ("src", "dst"), [(44100, 48000), (48000, 44100), (44100, 22050), (44100, 32000), (8000, 44100)]
)
def test_resample_is_resample_poly(src: int, dst: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3001)).astype(np.float32)
    y = audio.resample(x, src, dst)
    assert y.dtype == np.float32 and y.shape == (2, audio.resampled_length(3001, src, dst))
    np.testing.assert_array_equal(y, resample_poly(x, dst, src, axis=-1))
    y64 = audio.resample(x.astype(np.float64), src, dst)
    assert y64.dtype == np.float32


def test_resample_identity_and_errors() -> None:
    x = np.arange(10, dtype=np.float64)
    y = audio.resample(x, 44100, 44100)
    assert y.dtype == np.float32 and np.array_equal(y, x)
    assert audio.resample(np.zeros((2, 0)), 44100, 48000).shape == (2, 0)
    raises_code(ErrorCode.INVALID_ARGUMENT, audio.resample, x, 0, 48000)


def _run_regions(
    rs: audio.RegionResampler, x: np.ndarray, regions: list[tuple[int, int]]
) -> np.ndarray:
    """Push regions, check the spans tile the output exactly once, return the output."""
    out = np.full(x.shape[:-1] + (rs.total_dst_frames,), np.nan, np.float32)
    hits = np.zeros(rs.total_dst_frames, np.int64)
    for start, stop in regions:
        for dst_start, span in rs.push(start, x[..., start:stop]):
            assert span.dtype == np.float32 and span.shape[:-1] == x.shape[:-1]
            hits[dst_start : dst_start + span.shape[-1]] += 1
            out[..., dst_start : dst_start + span.shape[-1]] = span
    assert rs.done and rs.retained_frames == 0
    assert (hits == 1).all(), "output spans must tile [0, total) exactly once"
    return out


RATE_PAIRS = [
    (44100, 48000),
    (44100, 22050),
    (44100, 96000),
    (44100, 32000),
    (44100, 44100),
    (48000, 44100),
]


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("lead", [(), (2,), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_region_resampler_random_order(src: int, dst: int, lead: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed * 1000 + src + dst + len(lead))
    total = int(rng.integers(700, 4000))
    x = rng.standard_normal(lead + (total,)).astype(np.float32)
    regions = random_regions(rng, total)
    rng.shuffle(regions)
    rs = audio.RegionResampler(src, dst, total)
    assert rs.total_dst_frames == audio.resampled_length(total, src, dst)
    out = _run_regions(rs, x, regions)
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
@pytest.mark.parametrize("total", [1, 2, 5, 37])
def test_region_resampler_tiny_signals_one_sample_at_a_time(src: int, dst: int, total: int) -> None:
    rng = np.random.default_rng(total)
    x = rng.standard_normal((2, total)).astype(np.float32)
    regions = [(i, i + 1) for i in rng.permutation(total)]
    out = _run_regions(audio.RegionResampler(src, dst, total), x, regions)
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("src", "dst"), [(44100, 48000), (44100, 32000)])
def test_region_resampler_play_cursor_order(src: int, dst: int) -> None:
    """Start in the middle (the DAW's cursor), run to the end, then do the beginning."""
    total, size = 20011, 1023
    x = np.random.default_rng(3).standard_normal((4, 2, total)).astype(np.float32)
    starts = list(range(0, total, size))
    cursor = len(starts) // 2
    order = starts[cursor:] + starts[:cursor]
    out = _run_regions(
        audio.RegionResampler(src, dst, total), x, [(s, min(total, s + size)) for s in order]
    )
    np.testing.assert_allclose(out, audio.resample(x, src, dst), rtol=0, atol=1e-5)


def test_region_resampler_emits_early_and_frees_memory() -> None:
    total = 441_000  # 10 s
    x = np.random.default_rng(4).standard_normal((2, total)).astype(np.float32)
    rs = audio.RegionResampler(44100, 48000, total)
    middle = np.array(x[:, 200_000:300_000])
    ref = weakref.ref(middle)
    spans = rs.push(200_000, middle)
    # all but a few dozen frames at each edge of the region are computable right away
    assert len(spans) == 1 and spans[0][1].shape[-1] > 100_000 * 48000 / 44100 - 100
    del middle, spans
    assert ref() is None, "the resampler must not keep pushed regions alive"
    assert 0 < rs.retained_frames < 200
    for start in range(0, 200_000, 50_000):
        rs.push(start, x[:, start : start + 50_000])
        assert rs.retained_frames < 200
    rs.push(300_000, x[:, 300_000:])
    assert rs.done and rs.retained_frames == 0


def test_region_resampler_equal_rates_pass_through() -> None:
    rs = audio.RegionResampler(44100, 44100, 100)
    region = np.ones((2, 60), np.float32)
    [(start, span)] = rs.push(40, region)
    assert start == 40 and np.array_equal(span, region)
    assert rs.push(0, np.zeros((2, 40), np.float32))[0][0] == 0 and rs.done


def test_region_resampler_refuses_bad_regions() -> None:
    rs = audio.RegionResampler(44100, 48000, 1000)
    rs.push(100, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 150, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 950, np.zeros((2, 100), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, -1, np.zeros((2, 1), np.float32))
    raises_code(ErrorCode.INVALID_ARGUMENT, rs.push, 0, np.zeros((3, 10), np.float32))
    assert rs.push(0, np.zeros((2, 0), np.float32)) == []
