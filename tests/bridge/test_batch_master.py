"""`stembridge batch --master PRESET`: each input's stems, then its master, in its folder;
resume skips a done master; another preset masters again without separating again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.batch import record as rec
from bridge.batch.task import BatchOptions
from bridge.commands.batch import BatchRun
from tests.conftest import music_like

STEMS = ("vocals.wav", "drums.wav", "bass.wav", "other.wav", "stems.json")


def _batch(src: Path, out: Path, models: Path, *extra: str) -> tuple[int, dict]:
    import contextlib
    import io

    from bridge.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["batch", str(src), "--out", str(out), "--stems", "4", "--models-dir",
                       str(models), "--precision", "fp32", "--no-cache", "--json", "-q",
                       *extra])
    return status, json.loads(buf.getvalue())


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_batch_masters_each_mix_resumes_and_remasters_only(
        test_models_dir, tmp_path, one_torch_thread):
    from bridge.commands.masterrequest import loudness_figures
    from engine.mastering.job import MasterOptions, master_file

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", 0.3 * music_like(1.5, 44100, 2, seed=1).T, 44100)
    sf.write(src / "sub" / "b.flac", 0.1 * music_like(1.0, 48000, 1, seed=2).T, 48000)
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "out"

    # 1. stems and master of each good input; the broken one fails with its code
    status, summary = _batch(src, out, test_models_dir, "--master", "streaming")
    assert status != 0 and summary["files"]["done"] == 2 and summary["files"]["failed"] == 1
    assert [f["code"] for f in summary["failures"]] == ["input_corrupt"]
    latest = rec.BatchRecord(out).load()
    for item, name in (("a", "a"), ("sub/b", "b")):
        assert sorted(p.name for p in (out / item).iterdir()) == sorted(
            [*STEMS, f"{name}.master.wav", f"{name}.master.json"])
        m = latest[item].master
        assert m is not None and m["preset"] == "streaming"
        assert m["outputs"] == [f"{name}.master.wav", f"{name}.master.json"]
        report = json.loads((out / item / f"{name}.master.json").read_text())
        assert m["before"] == loudness_figures(report["input_analysis"])
        assert m["after"] == loudness_figures(report["output_analysis"])
        assert m["before"]["lufs"] < m["after"]["lufs"]  # quiet inputs, raised to -14
        assert m["after"]["true_peak"] <= -0.9
        assert sf.info(out / item / f"{name}.master.wav").subtype == "PCM_24"
    ms = summary["master"]
    assert ms["preset"] == "streaming" and ms["files"] == 2
    assert ms["lufs_before"]["max"] < ms["lufs_after"]["min"]
    assert ms["true_peak_after_max"] == pytest.approx(max(
        latest[i].master["after"]["true_peak"] for i in ("a", "sub/b")), abs=0.01)
    first = {item: _mtimes(out / item) for item in ("a", "sub/b")}
    streaming_lufs = latest["a"].master["after"]["lufs"]

    # 2. resumed with the same preset: nothing is done again, nothing touched
    status, summary = _batch(src, out, test_models_dir, "--master", "streaming")
    assert summary["files"]["done"] == 0 and summary["files"]["done_before"] == 2
    assert summary["master"]["files"] == 0
    assert {item: _mtimes(out / item) for item in ("a", "sub/b")} == first

    # 3. another preset (and one master file deleted): only the masters are made again,
    #    the stems are not separated again (their files are untouched)
    (out / "sub" / "b" / "b.master.wav").unlink()
    status, summary = _batch(src, out, test_models_dir, "--master", "loud")
    assert summary["files"]["done"] == 2 and summary["master"]["files"] == 2
    latest = rec.BatchRecord(out).load()
    for item, name in (("a", "a"), ("sub/b", "b")):
        now = _mtimes(out / item)
        for stem in STEMS:
            assert now[stem] == first[item][stem], f"{item}/{stem} was written again"
        assert now[f"{name}.master.json"] != first[item][f"{name}.master.json"]
        assert latest[item].master is not None and latest[item].master["preset"] == "loud"
        assert latest[item].cache_key and latest[item].outputs == sorted(STEMS[:-1]) + [
            "stems.json"]
    assert latest["a"].master["after"]["lufs"] > streaming_lufs + 2  # louder

    # 4. the batch's master equals `stembridge master`'s of the same file and preset
    single = master_file(src / "a.wav", MasterOptions(preset="loud", out_dir=tmp_path / "m",
                                                      use_cache=False))
    a, sr_a = sf.read(out / "a" / "a.master.wav", dtype="float32")
    b, sr_b = sf.read(single.output, dtype="float32")
    assert sr_a == sr_b
    np.testing.assert_array_equal(a, b)


def test_a_failed_master_keeps_the_stems_and_is_mastered_again_alone(tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(b"x" * 10)
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "stems.json").write_text("{}")
    (folder / "a.master.wav").write_bytes(b"m")
    fp = rec.fingerprint(src)
    master = {"config": "m1", "preset": "streaming", "outputs": ["a.master.wav"]}
    done = rec.Entry("a", str(src), rec.DONE, fingerprint=fp, config="c", cache_key="k",
                     outputs=["vocals.wav"], master=master)
    assert rec.decide(done, src, "c", folder, 3, "m1") == ("done", 1)
    assert rec.decide(done, src, "c", folder, 3, None) == ("done", 1)
    assert rec.decide(done, src, "c", folder, 3, "m2") == ("master", 1)
    assert rec.decide(done, src, "other", folder, 3, "m1") == ("run", 1)
    (folder / "a.master.wav").unlink()
    assert rec.decide(done, src, "c", folder, 3, "m1") == ("master", 1)
    failed = rec.Entry("a", str(src), rec.FAILED, fingerprint=fp, config="c", cache_key="k",
                       error={"code": "internal", "message": "x"})
    assert rec.decide(failed, src, "c", folder, 3, "m1") == ("master", 2)
    assert rec.decide(failed, src, "c", folder, 1, "m1") == ("failed", 1)
    no_stems = rec.Entry("a", str(src), rec.FAILED, fingerprint=fp, config="c",
                         error={"code": "input_corrupt", "message": "x"})
    assert rec.decide(no_stems, src, "c", folder, 3, "m1") == ("run", 2)
    # the plan hands such an input over with the stems' record, to be mastered alone
    run = BatchRun(tmp_path, BatchOptions(master="streaming"))
    run.record.append(rec.Entry("a", str(src), rec.DONE, fingerprint=fp,
                                config=run.config(_item(src)), cache_key="k",
                                outputs=["vocals.wav", "stems.json"], duration=1.5))
    run.record.close()
    (todo,) = BatchRun(tmp_path, BatchOptions(master="streaming")).plan([_item(src)], True)
    assert todo.reuse == {"cache_key": "k", "outputs": ["vocals.wav", "stems.json"],
                          "duration": 1.5}


def _item(src: Path):
    from bridge.batch.sources import BatchItem

    return BatchItem(src, "a")


def test_batch_writes_the_output_options_split_has(test_models_dir, tmp_path,
                                                   one_torch_thread):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", 0.9 * music_like(1.0, 44100, 2, seed=3).T, 44100)
    out = tmp_path / "out"
    status, summary = _batch(src, out, test_models_dir, "--format", "flac", "--bit-depth",
                             "16", "--sample-rate", "48000", "--normalize")
    assert status == 0 and summary["files"]["done"] == 1
    meta = json.loads((out / "a" / "stems.json").read_text())
    peak = meta["output"]["peak_before_gain"]  # measured: --normalize reached the writer
    assert meta["output"]["gain"] == pytest.approx(min(1.0, 10 ** (-0.1 / 20) / peak))
    assert meta["output"]["samplerate"] == 48000
    for stem in ("vocals", "drums", "bass", "other"):
        info = sf.info(out / "a" / f"{stem}.flac")
        assert (info.samplerate, info.subtype) == (48000, "PCM_16")
        assert info.frames == round(44100 * 1.0 * 48000 / 44100)
    # the same output options again: done, nothing redone; other options: done again
    before = (out / "a" / "stems.json").stat().st_mtime_ns
    status, summary = _batch(src, out, test_models_dir, "--format", "flac", "--bit-depth",
                             "16", "--sample-rate", "48000", "--normalize")
    assert status == 0 and (out / "a" / "stems.json").stat().st_mtime_ns == before
    status, summary = _batch(src, out, test_models_dir, "--format", "mp3")
    assert status == 0 and (out / "a" / "vocals.mp3").is_file()
    assert not (out / "a" / "vocals.flac").exists()
