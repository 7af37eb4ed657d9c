"""`stembridge` as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

from protocol.errors import EXIT_CODES, ErrorCode
from tests.conftest import music_like


def _run(args, tmp_path, **env):
    full_env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "bridge", *map(str, args)],
                          capture_output=True, text=True, env=full_env, timeout=300)


def test_split_writes_stems_and_metadata(test_models_dir, tmp_path):
    src = tmp_path / "My Song.wav"
    sf.write(src, music_like(6.0, 48000, 2).T, 48000, subtype="PCM_16")
    before = src.read_bytes()
    out = tmp_path / "out"
    res = _run(["split", src, "--stems", "4", "--out", out, "--models-dir", test_models_dir,
                "--start-at", "3"], tmp_path)
    assert res.returncode == 0, res.stderr
    folder = out / "My Song"
    meta = json.loads((folder / "stems.json").read_text())
    assert meta["stems"] == ["vocals", "drums", "bass", "other"]
    assert meta["start_at"] == 3.0
    for name in meta["stems"]:
        data, sr = sf.read(folder / f"{name}.wav", dtype="float32")
        assert sr == 48000 and data.shape == (6 * 48000, 2)
        assert sf.info(folder / f"{name}.wav").subtype == "FLOAT"
    assert src.read_bytes() == before, "the input must never be modified"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert "regions" in res.stderr  # progress bar
    assert str(folder) in res.stdout


def test_flac_and_pcm24(test_models_dir, tmp_path):
    src = tmp_path / "a.flac"
    sf.write(src, music_like(3.0).T, 44100)
    res = _run(["split", src, "--stems", "2", "--model", "htdemucs", "--format", "flac",
                "--out", tmp_path / "o", "--models-dir", test_models_dir, "-q"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert sf.info(tmp_path / "o" / "a" / "vocals.flac").subtype == "PCM_24"
    res = _run(["split", src, "--stems", "2", "--model", "htdemucs", "--pcm24",
                "--out", tmp_path / "p", "--models-dir", test_models_dir, "-q"], tmp_path)
    assert sf.info(tmp_path / "p" / "a" / "instrumental.wav").subtype == "PCM_24"


def test_several_files_one_process_same_name(test_models_dir, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = tmp_path / "x" / "song.wav", tmp_path / "y" / "song.wav"
    sf.write(a, music_like(3.0, seed=1).T, 44100)
    sf.write(b, music_like(3.0, seed=2).T, 44100)
    res = _run(["split", a, b, "--stems", "4", "--out", tmp_path / "o", "--json", "-q",
                "--models-dir", test_models_dir], tmp_path)
    assert res.returncode == 0, res.stderr
    metas = json.loads(res.stdout)
    folders = {m["output"]["folder"] for m in metas}
    assert len(folders) == 2, "two inputs with one name must not share an output folder"
    # the second file reused the warm model
    assert metas[1]["timings"]["model_load"] < 0.05


def test_exit_codes_and_messages(tmp_path):
    res = _run(["split", tmp_path / "missing.wav"], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_MISSING]
    assert "input_missing" in res.stderr and "path" in res.stderr.lower()
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    res = _run(["split", bad], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_UNREADABLE]
    res = _run(["split", tmp_path / "x.wav", "--stems", "3"], tmp_path)
    assert res.returncode == 2  # argparse usage error


def test_missing_model_fails_fast_offline(tmp_path):
    src = tmp_path / "a.wav"
    sf.write(src, music_like(2.0).T, 44100)
    t0 = time.perf_counter()
    res = _run(["split", src, "--stems", "4", "--models-dir", tmp_path / "empty"], tmp_path,
               STEMBRIDGE_OFFLINE="1")
    assert time.perf_counter() - t0 < 30
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_NOT_INSTALLED]
    assert "stembridge models fetch htdemucs" in res.stderr
    assert not (tmp_path / "stems" / "a" / "vocals.wav").exists()


def test_models_list_and_make_test(tmp_path):
    res = _run(["models", "make-test", "htdemucs", "--dir", tmp_path / "m"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "m" / "htdemucs" / "htdemucs.yaml").exists()
    res = _run(["models", "list", "--json", "--models-dir", tmp_path / "m"], tmp_path)
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) >= {"spleeter-2stems", "htdemucs", "htdemucs_ft", "htdemucs_6s",
                         "hdemucs_mmi", "mdx_extra"}
    assert rows["htdemucs"]["installed"].endswith("htdemucs")
    assert rows["htdemucs_ft"]["installed"] is None
    assert rows["spleeter-2stems"]["embedded"] is True
    assert rows["htdemucs_6s"]["stems"] == ["drums", "bass", "other", "vocals", "guitar", "piano"]


def test_interrupt_leaves_no_partial_stems(test_models_dir, tmp_path):
    """SIGKILL mid-job: no file at a final stem path, the input untouched."""
    src = tmp_path / "long.wav"
    sf.write(src, music_like(120.0).T, 44100)
    out = tmp_path / "o"
    env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "split", str(src), "--stems", "4",
                             "--out", str(out), "--models-dir", str(test_models_dir)],
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until separation is under way
        if "regions" in line:
            break
    proc.kill()
    proc.wait()
    finals = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert finals == []
    assert np.isfinite(sf.read(src)[0]).all()
