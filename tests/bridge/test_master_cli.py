"""`stembridge master` and `stembridge analyze` end to end in this process: files out,
report, exit codes, the input untouched, the cache, --json and --plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import main
from tests.bridge.server_helpers import song
from tests.conftest import music_like


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    return song(tmp_path_factory.mktemp("mix") / "mix.wav", 4.0)


def test_master_writes_audio_and_report(mix, tmp_path, capsys):
    before = mix.read_bytes()
    out = tmp_path / "out"
    assert main(["master", str(mix), "--platform", "apple", "--bit-depth", "16",
                 "--sample-rate", "48000", "--out", str(out), "-q"]) == 0
    assert mix.read_bytes() == before
    audio = out / "mix.master.wav"
    info = sf.info(str(audio))
    assert info.samplerate == 48000 and info.subtype == "PCM_16" and info.channels == 2
    report = json.loads((out / "mix.master.json").read_text())
    assert report["output_analysis"]["loudness"]["integrated_lufs"] == pytest.approx(-16, abs=0.3)
    assert report["intent"]["platform"] == "apple" and report["passes"]
    assert report["engine"]["name"] == "stembridge" and report["settings"]["limiter"]
    assert "-16.0 LUFS" in capsys.readouterr().out
    # the same call again comes from the cache
    assert main(["master", str(mix), "--platform", "apple", "--bit-depth", "16",
                 "--sample-rate", "48000", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cache"] is True


def test_master_float_mp3_and_reference(mix, tmp_path, capsys):
    ref = song(tmp_path / "ref.wav", 4.0, seed=3)
    assert main(["master", str(mix), "--reference", str(ref), "--format", "mp3",
                 "--out", str(tmp_path), "-q", "--json", "--no-cache"]) == 0
    rep = json.loads(capsys.readouterr().out)[0]
    assert rep["intent"]["name"] == "reference" and rep["reference"]["analysis"]
    assert (tmp_path / "mix.master.mp3").stat().st_size > 10_000


def test_master_errors(tmp_path, capsys):
    assert main(["master", str(tmp_path / "missing.wav")]) == 3
    assert "input_missing" in capsys.readouterr().err
    eight = tmp_path / "eight.wav"
    sf.write(eight, np.zeros((44100, 8), np.float32), 44100)
    assert main(["master", str(eight), "--out", str(tmp_path / "o"), "-q"]) == 5
    assert "input_channels" in capsys.readouterr().err
    nan = tmp_path / "nan.wav"
    x = music_like(1.0).T.copy()
    x[100, 0] = np.nan
    sf.write(nan, x, 44100, subtype="FLOAT")
    assert main(["master", str(nan), "--out", str(tmp_path / "o"), "-q"]) == 5
    assert "input_not_finite" in capsys.readouterr().err
    mix = song(tmp_path / "m.wav", 4.0)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((5 * 44100, 2), np.float32), 44100)
    short = song(tmp_path / "short.wav", 1.0)
    for ref in (silent, short):
        assert main(["master", str(mix), "--reference", str(ref), "--out",
                     str(tmp_path / "o"), "-q"]) == 5
        assert "reference_unusable" in capsys.readouterr().err
    assert main(["master", str(mix), "--format", "flac", "--bit-depth", "32f", "-q"]) == 2
    assert main(["master", str(mix), "--amount", "1.5", "-q"]) == 2
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.master.*"))


def test_analyze_table_json_and_plot(mix, tmp_path, capsys):
    png = tmp_path / "plot.png"
    assert main(["analyze", str(mix), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "integrated" in table and "true peak" in table and "LUFS" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["analyze", str(mix), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["schema"] == "stembridge.analysis/1"
    assert len(data[0]["curves"]["momentary"]) >= 30
