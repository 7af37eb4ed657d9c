"""`engine.evaluation`: BSS Eval v4 figures against museval itself on hand-built cases
(perfect, scaled, silent frames, a silent stem), the evaluation sets museval's MUSDB18
evaluation forms, and the data set layouts."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import soundfile as sf

from engine.errors import InputError, PackageMissingError
from engine.evaluation import (
    bss_eval,
    bss_eval_frames,
    evaluation_sets,
    find_tracks,
    iter_tracks,
    load_track,
)
from engine.evaluation.metrics import median, museval_module
from protocol.errors import ErrorCode

museval = pytest.importorskip("museval")

#: Hand-built cases are mono at 8 kHz: museval's cost is its 512-tap filters per
#: channel and source (stereo costs 4-5 times as much), not the rate.
RATE = 8000


@pytest.fixture(scope="module")
def sources() -> dict[str, np.ndarray]:
    """Two independent noise stems, 3 s mono (frames, 1) at `RATE`."""
    rng = np.random.default_rng(7)
    return {"vocals": rng.standard_normal((3 * RATE, 1)),
            "drums": rng.standard_normal((3 * RATE, 1))}


def _museval_medians(refs: dict, ests: dict) -> dict[str, dict[str, float]]:
    """museval.evaluate directly, median over frames: the oracle."""
    names = list(refs)
    sdr, isr, sir, sar = museval.evaluate(np.stack([refs[n] for n in names]),
                                          np.stack([ests[n] for n in names]), win=RATE, hop=RATE)
    return {n: {"SDR": np.nanmedian(sdr[i]), "ISR": np.nanmedian(isr[i]),
                "SIR": np.nanmedian(sir[i]), "SAR": np.nanmedian(sar[i])}
            for i, n in enumerate(names)}


def test_perfect_estimate_is_infinite_sdr(sources):
    got = bss_eval(sources, {n: a.copy() for n, a in sources.items()}, RATE)
    for stem in sources:
        # museval's SDR of an exact estimate is +inf; the other figures are only limited
        # by float precision (about 300 dB)
        assert got[stem]["SDR"] == math.inf
        assert min(got[stem][m] for m in ("SIR", "SAR", "ISR")) > 200


def test_scaled_estimates_against_museval(sources):
    """BSS Eval v4 (images) is scale-sensitive: an estimate g * s has SDR = ISR =
    -20 log10 |1 - g| (6.02 dB for g = 0.5, 0 dB for g = 2), and no interference or
    artifacts (SIR, SAR only limited by precision)."""
    ests = {"vocals": 0.5 * sources["vocals"], "drums": 2.0 * sources["drums"]}
    got = bss_eval(sources, ests, RATE)
    assert got["vocals"]["SDR"] == pytest.approx(-20 * math.log10(0.5), abs=0.01)
    assert got["vocals"]["ISR"] == pytest.approx(6.02, abs=0.01)
    assert got["drums"]["SDR"] == pytest.approx(0.0, abs=0.01)
    assert min(got["vocals"]["SIR"], got["vocals"]["SAR"], got["drums"]["SAR"]) > 200
    oracle = _museval_medians(sources, ests)
    for stem in sources:
        for m in ("SDR", "SIR", "SAR", "ISR"):
            assert got[stem][m] == pytest.approx(oracle[stem][m], rel=1e-9)


def test_silent_frames_are_nan_and_ignored(sources):
    """museval: a frame in which any reference of the set is silent is nan for every
    stem; the median over frames ignores it."""
    refs = {n: a.copy() for n, a in sources.items()}
    refs["vocals"][RATE:2 * RATE] = 0.0  # the second 1 s frame of the vocals is silent
    rng = np.random.default_rng(1)
    ests = {n: a + 0.3 * rng.standard_normal(a.shape) for n, a in refs.items()}
    frames = bss_eval_frames(refs, ests, RATE)
    for stem in refs:
        for m in ("SDR", "SIR", "SAR", "ISR"):
            values = frames[stem][m]
            assert len(values) == 3 and math.isnan(values[1])
            assert not math.isnan(values[0] + values[2])
            assert median(values) == pytest.approx((values[0] + values[2]) / 2)
    # noise at 0.3 of the signal: about 10.5 dB SDR in the scored frames
    assert 8 < median(frames["drums"]["SDR"]) < 13


def test_a_wholly_silent_stem_leaves_the_set_unscored(sources):
    """museval refuses a set with an all-zero reference (or estimate); we score every
    frame nan instead, so the track counts as unscored."""
    refs = {"vocals": np.zeros_like(sources["vocals"]), "drums": sources["drums"]}
    with pytest.raises(ValueError, match="non-silent"):
        museval.evaluate(np.stack(list(refs.values())), np.stack(list(sources.values())))
    frames = bss_eval_frames(refs, sources, RATE)
    assert len(frames["drums"]["SIR"]) == 3
    assert all(math.isnan(v) for per in frames.values() for f in per.values() for v in f)
    assert all(math.isnan(v) for per in bss_eval(refs, sources, RATE).values()
               for v in per.values())


def test_bad_arguments_say_what_is_wrong(sources):
    with pytest.raises(Exception, match="same stems"):
        bss_eval(sources, {"vocals": sources["vocals"]}, RATE)
    with pytest.raises(Exception, match=r"\(frames, channels\)"):
        bss_eval({"vocals": np.zeros(10)}, {"vocals": np.zeros(10)}, RATE)
    short = {n: a[:-5] for n, a in sources.items()}
    with pytest.raises(Exception, match="differ"):
        bss_eval(sources, short, RATE)


def test_museval_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "museval", None)  # import museval raises ImportError
    with pytest.raises(PackageMissingError, match=r"stembridge\[eval\]") as err:
        museval_module()
    assert err.value.code is ErrorCode.PACKAGE_MISSING


def test_median_ignores_nan_and_keeps_inf():
    assert median([1.0, math.nan, 3.0]) == 2.0
    assert math.isnan(median([math.nan]))
    assert median([math.inf, math.inf, 1.0]) == math.inf


def test_evaluation_sets_follow_museval():
    four = ("drums", "bass", "other", "vocals")
    assert evaluation_sets(("vocals", "drums", "bass", "other"), four) == [
        {"vocals": ("vocals",), "drums": ("drums",), "bass": ("bass",), "other": ("other",)}]
    # vocals + instrumental: one pair, the instrumental's reference is the sum of the rest
    assert evaluation_sets(("vocals", "instrumental"), four) == [
        {"vocals": ("vocals",), "instrumental": ("drums", "bass", "other")}]
    # a 6-stem model: guitar and piano have no MUSDB18 reference and are left out
    assert evaluation_sets(("vocals", "drums", "bass", "other", "guitar", "piano"), four) == [
        {"vocals": ("vocals",), "drums": ("drums",), "bass": ("bass",), "other": ("other",)}]
    assert evaluation_sets(("guitar",), four) == []


def _write_track(folder, stems, seconds=0.5, rate=22050, lengths=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    total = 0
    for stem in stems:
        n = (lengths or {}).get(stem, int(seconds * rate))
        x = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
        sf.write(folder / f"{stem}.wav", x, rate, subtype="FLOAT")
        total = total + x if stem != "mixture" else total
    return folder


def test_folder_of_tracks(tmp_path):
    root = tmp_path / "musdb18hq"
    _write_track(root / "test" / "B song", ["mixture", "other", "vocals", "drums", "bass"])
    _write_track(root / "test" / "A song", ["mixture", "vocals", "guitar"])
    _write_track(root / "train" / "C song", ["mixture", "vocals"])
    (root / "test" / "notes.txt").write_text("not a track")
    before = {p: p.read_bytes() for p in root.rglob("*.wav")}
    tracks = list(iter_tracks(root, subset="test"))
    assert [t.name for t in tracks] == ["A song", "B song"]
    a, b = tracks
    assert list(b.references) == ["drums", "bass", "other", "vocals"]  # MUSDB18's order
    assert list(a.references) == ["vocals", "guitar"] and a.rate == 22050
    assert a.mixture.shape == (11025, 2) and a.mixture.dtype == np.float32
    np.testing.assert_array_equal(a.mixture, sf.read(root / "test/A song/mixture.wav",
                                                     dtype="float32")[0])
    assert [p.name for p in find_tracks(root, "train")] == ["C song"]
    assert [p.name for p in find_tracks(root / "test", "test", tracks=1)] == ["A song"]
    assert {p: p.read_bytes() for p in root.rglob("*.wav")} == before  # only read


def test_musdb18_stem_files_are_found(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "Artist - Title.stem.mp4").write_bytes(b"")
    (tmp_path / "test" / "cover.jpg").write_bytes(b"")
    assert [p.name for p in find_tracks(tmp_path)] == ["Artist - Title.stem.mp4"]


def test_bad_data_sets_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="No data set") as err:
        find_tracks(tmp_path / "missing")
    assert err.value.code is ErrorCode.INPUT_MISSING
    with pytest.raises(InputError, match=r"mixture\.wav"):
        find_tracks(tmp_path)
    lonely = _write_track(tmp_path / "lonely", ["mixture"])
    with pytest.raises(InputError, match="no stem beside"):
        load_track(lonely)
    uneven = _write_track(tmp_path / "uneven", ["mixture", "vocals"],
                          lengths={"vocals": 5000})
    with pytest.raises(InputError, match="differ in length") as err:
        load_track(uneven)
    assert err.value.code is ErrorCode.INPUT_UNREADABLE
    rates = _write_track(tmp_path / "rates", ["mixture"])
    sf.write(rates / "vocals.wav", np.zeros((11025, 2), np.float32), 44100)
    with pytest.raises(InputError, match="sample rates"):
        load_track(rates)


def test_builtin_excerpt_mixture_is_the_sum_of_its_stems():
    pytest.importorskip("stempeg")
    (track,) = iter_tracks("builtin")
    assert track.name.startswith("builtin: ") and track.rate == 44100
    assert list(track.references) == ["drums", "bass", "other", "vocals"]
    assert track.mixture.shape == track.references["vocals"].shape
    assert track.mixture.shape[0] > 5 * 44100 and track.mixture.shape[1] == 2
    np.testing.assert_allclose(track.mixture, sum(track.references.values()), atol=1e-6)


def test_an_instrumental_is_scored_against_the_sum_of_the_other_stems(sources):
    """A 2-stem model's instrumental pairs with the vocals, its reference the sum of every
    reference but the vocals (museval's MUSDB18 accompaniment): half of that sum scores
    6.02 dB SDR, the exact vocals +inf."""
    from engine.evaluation import Track, score

    rng = np.random.default_rng(3)
    refs = {"vocals": sources["vocals"], "drums": sources["drums"],
            "bass": rng.standard_normal(sources["drums"].shape)}
    track = Track("t", sum(refs.values()), refs, RATE)
    got = score({"vocals": refs["vocals"], "instrumental": 0.5 * (refs["drums"] + refs["bass"])},
                track)
    assert set(got) == {"vocals", "instrumental"}
    assert got["instrumental"]["SDR"] == pytest.approx(6.02, abs=0.01)
    assert got["vocals"]["SDR"] == math.inf and len(got["vocals"]["frames"]["SDR"]) == 3
