"""Output options of a split: 5 stems (guitar folded into other), the output rate (soxr),
one normalising gain (`engine.audio.output`), the recorded precision of an MDX-Net model,
and named ensembles in `models list`. Tiny random-weight models, seconds of audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio.output import OutputOptions, finish_stems
from engine.audio.writer import StemFileWriter
from engine.config import EngineConfig
from engine.errors import StembridgeError
from engine.separator import Engine, SplitRequest
from engine.stems import plan_stems
from protocol.split import NORMALIZE_CEILING_DB
from protocol.stems import FIVE
from tests.conftest import music_like

SR = 44100
SIX_SRC = ("drums", "bass", "other", "vocals", "guitar", "piano")
CEILING = 10.0 ** (NORMALIZE_CEILING_DB / 20.0)


def _assemble(job, regions) -> dict[str, np.ndarray]:
    out = {s: np.zeros((job.channels, job.frames), np.float32) for s in job.stem_names}
    for r in regions:
        for s, arr in r.stems.items():
            out[s][:, r.start:r.end] = arr
    return out


@pytest.fixture(scope="module")
def five(test_models_dir, tmp_path_factory, one_torch_thread):
    """A loud 1.5-s song (peaks far above full scale, so normalising turns it down), split
    by tiny htdemucs_6s into its 6 stems and into 5; the results cache is kept."""
    root = tmp_path_factory.mktemp("five")
    src = root / "loud.wav"
    sf.write(src, (60.0 * music_like(1.5, SR)).T, SR, subtype="FLOAT")
    engine = Engine(EngineConfig(device="cpu", precision="fp32", models_dir=test_models_dir,
                                 cache_dir=root / "cache" / "results"))
    j6, r6 = engine.split(SplitRequest(src, model="htdemucs_6s"))
    j5, r5 = engine.split(SplitRequest(src, stems=5))
    return {"src": src, "cache": root / "cache", "j5": j5, "six": _assemble(j6, r6),
            "five": _assemble(j5, r5)}


def test_five_stems_fold_guitar_into_other(five):
    plan = plan_stems("htdemucs_6s", SIX_SRC, 5)
    assert plan.names == FIVE == ("vocals", "drums", "bass", "piano", "other")
    assert plan.sources == ((3,), (0,), (1,), (5,), (2, 4))
    with pytest.raises(StembridgeError) as err:  # a 4-source model has no piano
        plan_stems("htdemucs", SIX_SRC[:4], 5)
    assert err.value.code.value == "stems_unsupported"
    j5, six, got = five["j5"], five["six"], five["five"]
    assert j5.spec.name == "htdemucs_6s" and j5.stem_names == FIVE  # the default for 5
    np.testing.assert_allclose(got["other"], six["other"] + six["guitar"], atol=1e-5)
    for s in ("vocals", "drums", "bass", "piano"):
        np.testing.assert_allclose(got[s], six[s], atol=1e-6)
    np.testing.assert_allclose(sum(got.values()), sum(six.values()), atol=1e-4)


def _writers(folder: Path, stems: dict[str, np.ndarray], sr: int) -> dict[str, StemFileWriter]:
    out = {}
    for name, x in stems.items():
        out[name] = StemFileWriter(folder, x.shape[1], x.shape[0], sr)
        out[name].write(0, x)
    return out


def _sines(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 9000 * t),
                     0.4 * np.sin(2 * np.pi * 1234.5 * t + 1.0)]).astype(np.float32)


@pytest.mark.parametrize("src_rate,dst_rate", [(44100, 48000), (48000, 44100)])
def test_resampled_stems_have_the_rate_and_length_and_come_back(tmp_path, src_rate, dst_rate):
    import soxr

    x = _sines(1.0, src_rate)[:, :-7]  # an odd length
    writers = _writers(tmp_path, {"vocals": x}, src_rate)
    res = finish_stems(writers, {"vocals": tmp_path / "vocals.wav"},
                       OutputOptions(samplerate=dst_rate))
    y, rate = sf.read(tmp_path / "vocals.wav", dtype="float32", always_2d=True)
    assert rate == res.samplerate == dst_rate
    assert y.shape[0] == res.frames == round(x.shape[1] * dst_rate / src_rate)
    whole = soxr.resample(x.T, src_rate, dst_rate, quality="VHQ")  # block-streamed == whole
    np.testing.assert_allclose(y[: whole.shape[0]], whole[: y.shape[0]], atol=1e-6)
    back = soxr.resample(y, dst_rate, src_rate, quality="VHQ").T
    edge = 200  # the filters' ramps at both ends
    n = min(back.shape[1], x.shape[1]) - edge
    assert np.abs(back[:, edge:n] - x[:, edge:n]).max() < 1e-3
    assert res.gain == 1.0 and res.peak is None


def test_normalize_one_gain_under_the_ceiling_and_the_sum_kept(tmp_path):
    rng = np.random.default_rng(3)
    mix = (4.0 * music_like(1.0, SR, seed=2)).astype(np.float32)
    share = rng.random((3, 1, 1)).astype(np.float32)
    share /= share.sum(0)
    stems = {"vocals": share[0] * mix, "drums": share[1] * mix}
    stems["other"] = mix - stems["vocals"] - stems["drums"]  # the three sum to the mix
    peak = max(float(np.abs(s).max()) for s in stems.values())
    assert peak > 1.0
    res = finish_stems(_writers(tmp_path, stems, SR),
                       {s: tmp_path / f"{s}.wav" for s in stems},
                       OutputOptions(normalize=True))
    got = {s: sf.read(tmp_path / f"{s}.wav", dtype="float32", always_2d=True)[0].T
           for s in stems}
    assert res.peak == pytest.approx(peak, rel=1e-7)
    assert res.gain == pytest.approx(CEILING / peak, rel=1e-6)
    top = max(float(np.abs(g).max()) for g in got.values())
    assert top <= CEILING and top == pytest.approx(CEILING, rel=1e-6)
    sum_mix = sum(stems.values())
    np.testing.assert_allclose(sum(got.values()), res.gain * sum_mix, atol=1e-5)
    np.testing.assert_allclose(sum(got.values()), res.gain * mix, atol=1e-5)
    for s in stems:  # one gain for all
        np.testing.assert_allclose(got[s], res.gain * stems[s], atol=1e-6)
    # quiet stems are never turned up; 16-bit keeps the ceiling within its dither
    quiet = {"vocals": 0.1 * mix}
    res = finish_stems(_writers(tmp_path, quiet, SR), {"vocals": tmp_path / "q.wav"},
                       OutputOptions(normalize=True))
    assert res.gain == 1.0 and res.peak == pytest.approx(float(np.abs(quiet["vocals"]).max()))
    finish_stems(_writers(tmp_path, stems, SR), {s: tmp_path / f"{s}16.wav" for s in stems},
                 OutputOptions(subtype="PCM_16", normalize=True))
    q = sf.read(tmp_path / "drums16.wav", dtype="int16")[0]
    assert np.abs(q.astype(np.int32)).max() <= round(CEILING * 32768) + 1


def test_cli_split_five_stems_48k_normalized(five, test_models_dir, tmp_path, monkeypatch):
    import soxr

    from bridge.cli import main

    monkeypatch.setenv("STEMBRIDGE_CACHE_DIR", str(five["cache"]))  # the fixture's results
    out = tmp_path / "out"
    assert main(["split", str(five["src"]), "--stems", "5", "--out", str(out), "-q",
                 "--device", "cpu", "--precision", "fp32", "--models-dir",
                 str(test_models_dir), "--sample-rate", "48000", "--normalize",
                 "--bit-depth", "24"]) == 0
    folder = out / "loud"
    meta = json.loads((folder / "stems.json").read_text())
    assert meta["cache_hit"] and meta["stems"] == list(FIVE)
    o = meta["output"]
    assert (o["samplerate"], o["subtype"], sorted(o["files"])) == (48000, "PCM_24",
                                                                   sorted(FIVE))
    frames = round(five["j5"].frames * 48000 / SR)
    assert o["frames"] == frames and 0 < o["gain"] < 1
    assert o["gain_db"] == pytest.approx(20 * np.log10(o["gain"]), abs=1e-4)
    total = None
    for s in FIVE:
        y, rate = sf.read(folder / f"{s}.wav", dtype="float32", always_2d=True)
        assert (rate, y.shape[0]) == (48000, frames)
        assert np.abs(y).max() <= CEILING + 2.0**-23
        ref = soxr.resample(five["five"][s].T, SR, 48000, quality="VHQ")[:frames]
        np.testing.assert_allclose(y[: ref.shape[0]], o["gain"] * ref, atol=2e-6)
        total = y if total is None else total + y
    mix = soxr.resample(sum(five["five"].values()).T, SR, 48000, quality="VHQ")[:frames]
    np.testing.assert_allclose(total[: mix.shape[0]], o["gain"] * mix, atol=1e-5)


def test_mdx_records_the_precision_it_runs_in(tmp_path):
    pytest.importorskip("onnxruntime")
    from engine.models import catalog

    mdx = catalog.get_spec("mdx-voc-ft")
    assert catalog.run_precision(mdx, "bf16") == "fp32"
    assert catalog.run_precision(catalog.get_spec("htdemucs"), "bf16") == "bf16"
    assert catalog.run_precision(catalog.get_spec("mdx-voc-ft+mdx-inst-hq3"), "bf16") == "fp32"
    assert catalog.run_precision(catalog.get_spec("mdx-voc-ft+htdemucs"), "bf16") == "bf16"
    src = tmp_path / "a.wav"
    sf.write(src, music_like(0.2, SR).T, SR, subtype="FLOAT")
    bf16 = Engine(EngineConfig(device="cpu", precision="bf16", cache_dir=tmp_path / "c"))
    fp32 = Engine(EngineConfig(device="cpu", precision="fp32", cache_dir=tmp_path / "c"))
    job, job32 = (e.prepare(SplitRequest(src, model="mdx-voc-ft")) for e in (bf16, fp32))
    assert job.precision == "fp32" and job.metadata_dict(runtime=0.0)["precision"] == "fp32"
    assert job.cache_key() == job32.cache_key()  # the same computation, the same entry
    demucs = bf16.prepare(SplitRequest(src, model="htdemucs"))
    assert demucs.precision == "bf16"
    assert demucs.cache_key() != fp32.prepare(SplitRequest(src, model="htdemucs")).cache_key()
    for j in (job, job32, demucs):
        j.close()


def test_models_list_shows_the_named_ensembles(tmp_path, capsys):
    from bridge.cli import main
    from engine.models.ensemble import ENSEMBLES

    assert main(["models", "list", "--json", "--models-dir", str(tmp_path)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, entry in ENSEMBLES.items():
        row = rows[name]
        assert row["family"] == "ensemble" and row["members"] == list(entry.members)
        assert row["algorithm"] == entry.algorithm and row["stems"] and not row["installed"]
    assert rows["ensemble-vocals"]["stems"] == ["vocals", "instrumental"]
    assert main(["models", "list", "--models-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert ("ensemble-4stems         ensemble (avg_wave) of htdemucs_ft + htdemucs, 4 stems"
            in text)
    out = tmp_path / "models.json"  # what the REAPER Settings action reads
    assert main(["models", "list", "--json", "--models-dir", str(tmp_path),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert [r["name"] for r in json.loads(out.read_text())] == list(rows)
