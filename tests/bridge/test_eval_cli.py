"""`stembridge eval` end to end in this process, on a folder data set of one short track,
with tiny random-weight demucs models: the files (JSON, Markdown, PNG), the estimate
cache (adding a model separates only with that model), --compare's success and failure,
and the errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import main
from tests.conftest import music_like

pytest.importorskip("museval")

RATE = 44100


@pytest.fixture(scope="module")
def data_set(tmp_path_factory):
    """``<root>/test/song/``: mixture, vocals and drums, 3 s mono (museval is slow, and
    four times slower in stereo)."""
    root = tmp_path_factory.mktemp("musdb")
    song = root / "test" / "song"
    song.mkdir(parents=True)
    vocals = music_like(3.0, channels=1, seed=1)[0]
    rng = np.random.default_rng(2)
    t = np.arange(vocals.size) / RATE
    drums = (0.3 * (np.sin(2 * np.pi * 2 * t) > 0.9) * rng.standard_normal(t.size)
             ).astype(np.float32)
    for name, x in (("mixture", vocals + drums), ("vocals", vocals), ("drums", drums)):
        sf.write(song / f"{name}.wav", x, RATE, subtype="FLOAT")
    return root


@pytest.fixture(scope="module")
def runs(data_set, test_models_dir, tmp_path_factory, one_torch_thread):
    """Two runs sharing one cache: htdemucs alone, then htdemucs and hdemucs_mmi compared
    with the first. Returns (cache, out1, out2, rc2, stdout of run 2)."""
    cache = tmp_path_factory.mktemp("eval-cache")
    base = tmp_path_factory.mktemp("eval-out")
    common = ["--musdb", str(data_set), "--models-dir", str(test_models_dir),
              "--precision", "fp32", "--cache-dir", str(cache), "-q"]
    out1, out2 = base / "one", base / "two"
    assert main(["eval", "--model", "htdemucs", "--out", str(out1), *common]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in (cache / "estimates").iterdir()}
    rc2 = main(["eval", "--model", "htdemucs,hdemucs_mmi", "--out", str(out2),
                "--compare", str(out1 / "eval.json"), *common])
    return {"cache": cache, "out1": out1, "out2": out2, "rc2": rc2, "first": first,
            "common": common}


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_eval_writes_every_figure(runs):
    doc = _load(runs["out1"] / "eval.json")
    (track,) = doc["tracks"]
    assert track["name"] == "song" and track["rate"] == RATE and track["frames"] == 3 * RATE
    assert track["references"] == ["drums", "vocals"]  # MUSDB18 order
    got = track["results"]["htdemucs"]
    assert got["cached"] is False and got["separate_seconds"] > 0
    assert set(got["stems"]) == {"vocals", "drums"}  # bass and other have no reference
    for stem, fig in got["stems"].items():
        for m in ("SDR", "SIR", "SAR", "ISR"):
            assert isinstance(fig[m], float) and len(fig["frames"][m]) == 3
            assert fig[m] == pytest.approx(float(np.median(fig["frames"][m])), abs=1e-3)
            # one track: the aggregate is its figure
            assert doc["aggregate"]["htdemucs"][stem][m] == fig[m]
        assert doc["aggregate"]["htdemucs"][stem]["tracks"] == 1
    assert doc["models"]["htdemucs"]["stems"] == ["vocals", "drums", "bass", "other"]
    assert "BSS Eval v4" in doc["standard"] and doc["data_set"]["subset"] == "test"
    md = (runs["out1"] / "eval.md").read_text(encoding="utf-8")
    sdr = doc["aggregate"]["htdemucs"]["vocals"]["SDR"]
    assert f"| vocals | {sdr:.2f} |" in md and "| song | htdemucs |" in md
    png = (runs["out1"] / "eval.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_adding_a_model_separates_only_with_it(runs):
    assert runs["rc2"] == 0  # htdemucs is unchanged against the baseline
    doc = _load(runs["out2"] / "eval.json")
    results = doc["tracks"][0]["results"]
    assert results["htdemucs"]["cached"] is True and results["htdemucs"]["separate_seconds"] is None
    assert results["hdemucs_mmi"]["cached"] is False
    first = _load(runs["out1"] / "eval.json")["aggregate"]["htdemucs"]
    assert doc["aggregate"]["htdemucs"] == first
    now = {p.name: p.stat().st_mtime_ns for p in (runs["cache"] / "estimates").iterdir()}
    assert len(now) == 2 and all(now[name] == t for name, t in runs["first"].items())


def test_cached_run_loads_no_model(runs, data_set, test_models_dir):
    """Through the engine API (as the StemMixer training calls it): every estimate comes
    from the cache, so the engine never loads a model."""
    from engine.config import EngineConfig
    from engine.evaluation import evaluate_models, iter_tracks
    from engine.separator import Engine

    engine = Engine(EngineConfig(precision="fp32", models_dir=test_models_dir,
                                 use_cache=False))
    result = evaluate_models(["htdemucs", "hdemucs_mmi"], iter_tracks(data_set),
                             engine=engine, cache_dir=runs["cache"])
    assert engine.loaded_models() == []
    assert all(r["cached"] for r in result["tracks"][0]["results"].values())
    doc = _load(runs["out2"] / "eval.json")
    for model in ("htdemucs", "hdemucs_mmi"):
        for stem, fig in result["aggregate"][model].items():
            assert round(fig["SDR"], 4) == doc["aggregate"][model][stem]["SDR"]


def test_compare_names_each_stem_that_dropped(runs, tmp_path, capsys):
    doc = _load(runs["out2"] / "eval.json")
    doc["aggregate"]["htdemucs"]["vocals"]["SDR"] += 0.5   # the run is now 0.5 dB worse
    doc["aggregate"]["hdemucs_mmi"]["drums"]["SDR"] += 0.05  # within the tolerance
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    rc = main(["eval", "--model", "htdemucs,hdemucs_mmi", "--out", str(tmp_path / "o"),
               "--compare", str(baseline), "--tolerance", "0.1", *runs["common"]])
    out, err = capsys.readouterr()
    assert rc == 13
    assert "error [quality_regression]: htdemucs vocals: SDR" in err
    assert err.count("quality_regression") == 1  # the 0.05 dB drop is tolerated
    assert "(-0.50 dB)" in err and "hdemucs_mmi drums" in out
    assert (tmp_path / "o" / "eval.json").is_file()  # the figures are written regardless
    # the same comparison with a looser tolerance passes
    assert main(["eval", "--model", "htdemucs", "--out", str(tmp_path / "o"), "--compare",
                 str(baseline), "--tolerance", "0.6", *runs["common"]]) == 0


def test_eval_errors(runs, data_set, tmp_path, capsys):
    common = runs["common"]
    assert main(["eval", "--model", "no-such-model", "--musdb", str(data_set),
                 "--out", str(tmp_path / "o"), *common[2:]]) == 7
    assert "model_unknown" in capsys.readouterr().err
    assert main(["eval", "--model", "htdemucs", "--musdb", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o"), *common[2:]]) == 3
    assert "No data set" in capsys.readouterr().err
    assert main(["eval", "--model", "htdemucs", "--compare", str(tmp_path / "nope.json"),
                 *common]) == 3
    bad = tmp_path / "bad.json"
    bad.write_text('{"tracks": []}')
    assert main(["eval", "--model", "htdemucs", "--compare", str(bad), *common]) == 2
    assert 'no "aggregate" table' in capsys.readouterr().err
    bad.write_text(json.dumps({"aggregate": {"htdemucs": {"vocals": {"SDR": "high"}}}}))
    assert main(["eval", "--model", "htdemucs", "--compare", str(bad), *common]) == 2
    assert "htdemucs vocals: 'high' is not a figure" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"aggregate": {"spleeter-2stems": {"vocals": {"SDR": 3.0}}}}))
    assert main(["eval", "--model", "htdemucs", "--out", str(tmp_path / "o"), "--compare",
                 str(other), *common]) == 2
    assert "compare runs of the same models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--model", "a,a", "--musdb", "x"])


def test_json_encoding_of_non_numbers():
    from bridge.commands.evalreport import from_json, to_json

    assert to_json({"a": [math.nan, math.inf, -math.inf, 1.234567]}) == {
        "a": [None, "inf", "-inf", 1.2346]}
    assert math.isnan(from_json(None)) and from_json("inf") == math.inf
    with pytest.raises(ValueError, match="not a figure"):
        from_json(True)
