"""The engine API end to end with tiny random-weight models: streaming regions, sample
rates and channel counts, start-at order, cache, metadata, cancellation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.chunking import CancelToken
from engine.config import EngineConfig
from engine.errors import CancelledError, StembridgeError
from engine.separator import Engine, SplitRequest
from tests.conftest import music_like


def _engine(models_dir: Path, cache: Path, **kw) -> Engine:
    return Engine(EngineConfig(device="cpu", precision="fp32", models_dir=models_dir,
                               cache_dir=cache, **kw))


def _write(path: Path, seconds: float, sr: int, channels: int, seed: int = 0) -> Path:
    sf.write(path, music_like(seconds, sr, channels, seed).T, sr, subtype="FLOAT")
    return path


def _assemble(job, regions):
    out = {n: np.zeros((job.channels, job.frames), np.float32) for n in job.stem_names}
    cover = np.zeros(job.frames, int)
    for r in regions:
        cover[r.start:r.end] += 1
        for n, a in r.stems.items():
            out[n][:, r.start:r.end] = a
    assert (cover == 1).all(), "regions must cover the file exactly once"
    return out


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 2), (22050, 1), (96000, 1),
                                         (8000, 2)])
def test_round_trip_rates_and_channels(test_models_dir, tmp_path, sr, channels):
    src = _write(tmp_path / "in.wav", 9.0, sr, channels)
    engine = _engine(test_models_dir, tmp_path / "cache")
    job, regions = engine.split(SplitRequest(src, stems=4))
    stems = _assemble(job, regions)
    assert job.samplerate == sr and job.channels == channels
    for a in stems.values():
        assert a.shape == (channels, int(9.0 * sr)) and a.dtype == np.float32
        assert np.isfinite(a).all()
    # the four stems of a demucs model sum back to (about) the input for random weights?
    # No: random weights give arbitrary stems; but 2 stems = vocals + sum of the rest.
    job2, regions2 = engine.split(SplitRequest(src, stems=2, model="htdemucs"))
    two = _assemble(job2, regions2)
    np.testing.assert_allclose(two["vocals"], stems["vocals"], atol=1e-5)
    np.testing.assert_allclose(two["instrumental"],
                               stems["drums"] + stems["bass"] + stems["other"], atol=1e-4)


def test_start_at_gives_same_result_and_starts_at_cursor(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 20.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache", use_cache=False)
    job_a, reg_a = engine.split(SplitRequest(src, stems=4))
    job_b, reg_b = engine.split(SplitRequest(src, stems=4, start_at=13.0))
    a, b = _assemble(job_a, reg_a), _assemble(job_b, reg_b)
    for n in a:
        np.testing.assert_allclose(a[n], b[n], atol=1e-5)
    assert reg_a[0].start == 0
    # from the cursor: the first region ends after 20 s, and audio before it comes last
    assert reg_b[0].end > 13.0 * 44100 - 8 * 44100
    assert reg_b[-1].end <= 13.0 * 44100


def test_cache_miss_then_hit(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 8.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache")
    job1, reg1 = engine.split(SplitRequest(src, stems=4))
    assert job1.cache_hit is False and job1.result.cache_entry is not None
    job2, reg2 = engine.split(SplitRequest(src, stems=4))
    assert job2.cache_hit is True and job2.result.metadata["cache_hit"] is True
    a, b = _assemble(job1, reg1), _assemble(job2, reg2)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    # different stem config, or another file with the same name: misses
    job3, _ = engine.split(SplitRequest(src, stems=2, model="htdemucs"))
    assert job3.cache_hit is False
    _write(src, 8.0, 44100, 2, seed=5)
    job4, _ = engine.split(SplitRequest(src, stems=4))
    assert job4.cache_hit is False


def test_other_weights_under_the_same_model_name_miss_the_cache(tmp_path):
    from engine.models.testmodels import make_test_model

    models = tmp_path / "models"
    make_test_model("htdemucs", models, size="tiny", seed=0)
    src = _write(tmp_path / "in.wav", 3.0, 44100, 2)
    job1, reg1 = _engine(models, tmp_path / "cache").split(SplitRequest(src, stems=4))
    assert job1.cache_hit is False
    make_test_model("htdemucs", models, size="tiny", seed=1)  # e.g. the released weights
    job2, reg2 = _engine(models, tmp_path / "cache").split(SplitRequest(src, stems=4))
    assert job2.cache_hit is False, "a result of other weights was served"
    a, b = _assemble(job1, reg1), _assemble(job2, reg2)
    assert not np.allclose(a["vocals"], b["vocals"])


def test_no_cache_writes_nothing(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 5.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache", use_cache=False)
    engine.split(SplitRequest(src, stems=4))
    assert not (tmp_path / "cache").exists()


def test_metadata_fields(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 6.0, 48000, 1)
    job, _ = _engine(test_models_dir, tmp_path / "cache").split(SplitRequest(src, stems=4))
    meta = job.result.metadata
    for key in ("model_name", "model_version", "runtime", "runtime_seconds", "device",
                "precision", "warnings", "input", "stems", "engine_version", "timings"):
        assert key in meta, key
    assert meta["model_name"] == "htdemucs" and meta["model_version"] == "955717e8"
    assert meta["device"] == "cpu" and meta["precision"] == "fp32"
    assert meta["input"]["samplerate"] == 48000 and meta["input"]["channels"] == 1
    assert meta["input"]["duration"] == pytest.approx(6.0)
    assert meta["input"]["format"] == "WAV"
    assert meta["runtime_seconds"] > 0
    assert meta["stems"] == ["vocals", "drums", "bass", "other"]


def test_warnings_reach_metadata(test_models_dir, tmp_path):
    src = tmp_path / "quiet.wav"
    sf.write(src, np.zeros((44100 * 2, 2), np.float32), 44100)
    job, _ = _engine(test_models_dir, tmp_path / "cache").split(SplitRequest(src, stems=4))
    text = " ".join(job.result.metadata["warnings"]).lower()
    assert "silent" in text and "short" in text


def test_cancel_leaves_no_cache_entry(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 30.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache")
    job = engine.prepare(SplitRequest(src, stems=4))
    token = CancelToken()
    it = job.run(cancel=token)
    next(it)
    token.cancel()
    with pytest.raises(CancelledError):
        list(it)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []
    assert engine.prepare(SplitRequest(src, stems=4)).cache_key() == job.cache_key()


def test_validation_happens_before_model_load(tmp_path):
    engine = _engine(tmp_path / "no-models", tmp_path / "cache")
    with pytest.raises(StembridgeError) as err:
        engine.prepare(SplitRequest(tmp_path / "missing.wav", stems=4))
    assert err.value.code.value == "input_missing"
    assert engine.loaded_models() == []


def test_missing_weights_offline_fail_fast(tmp_path):
    import time

    src = _write(tmp_path / "in.wav", 2.0, 44100, 2)
    engine = _engine(tmp_path / "no-models", tmp_path / "cache")
    job = engine.prepare(SplitRequest(src, stems=4))
    t0 = time.perf_counter()
    with pytest.raises(StembridgeError) as err:
        list(job.run())
    assert time.perf_counter() - t0 < 5
    assert err.value.code.value == "model_not_installed"
    assert "stembridge models fetch htdemucs" in str(err.value)


def test_unsupported_stems(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 2.0, 44100, 2)
    with pytest.raises(StembridgeError) as err:
        _engine(test_models_dir, tmp_path / "c").prepare(
            SplitRequest(src, stems=6, model="htdemucs"))
    assert err.value.code.value == "stems_unsupported" and "htdemucs_6s" in str(err.value)


def test_six_to_four_folds_guitar_and_piano(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 5.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache")
    j6, r6 = engine.split(SplitRequest(src, model="htdemucs_6s"))
    j4, r4 = engine.split(SplitRequest(src, stems=4, model="htdemucs_6s"))
    six, four = _assemble(j6, r6), _assemble(j4, r4)
    assert j6.stem_names == ("vocals", "drums", "bass", "other", "guitar", "piano")
    np.testing.assert_allclose(four["other"], six["other"] + six["guitar"] + six["piano"],
                               atol=1e-5)


def test_model_stays_warm(test_models_dir, tmp_path):
    src = _write(tmp_path / "in.wav", 3.0, 44100, 2)
    engine = _engine(test_models_dir, tmp_path / "cache", use_cache=False)
    job1, _ = engine.split(SplitRequest(src, stems=4))
    model = engine.model("htdemucs")
    job2, _ = engine.split(SplitRequest(src, stems=4))
    assert engine.model("htdemucs") is model
    assert job2.timings.model_load < 0.05


def test_warm_models_are_evicted_least_recently_used(test_models_dir, tmp_path):
    from engine.separator import _model_bytes

    engine = _engine(test_models_dir, tmp_path / "cache")
    ht = engine.model("htdemucs")
    six = engine.model("htdemucs_6s")
    assert engine.loaded_models() == ["htdemucs", "htdemucs_6s"]  # within the default budget
    engine.config.model_memory_mb = 0
    tight = Engine(EngineConfig(device="cpu", precision="fp32", models_dir=test_models_dir,
                                model_memory_mb=0.5))
    assert _model_bytes(ht) > 0 and _model_bytes(six) > 0
    tight.model("htdemucs")
    tight.model("htdemucs_6s")
    assert tight.loaded_models() == ["htdemucs_6s"], "the least recently used one goes"
    tight.model("htdemucs")
    assert tight.loaded_models() == ["htdemucs"]
