"""`stembridge split`'s settled behaviours (README, "Use"): real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import soundfile as sf

from protocol.errors import EXIT_CODES, ErrorCode
from tests.conftest import music_like


def _run(args, tmp_path, cwd=None, **env):
    full_env = {**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "bridge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=300)


def test_json_is_a_list_for_one_input_too(test_models_dir, tmp_path):
    src = tmp_path / "one.wav"
    sf.write(src, music_like(2.0).T, 44100)
    res = _run(["split", src, "--stems", "4", "--out", tmp_path / "o", "--json", "-q",
                "--models-dir", test_models_dir], tmp_path)
    assert res.returncode == 0, res.stderr
    metas = json.loads(res.stdout)
    assert isinstance(metas, list) and len(metas) == 1
    assert metas[0]["stems"] == ["vocals", "drums", "bass", "other"]


def test_stems_json_holds_the_absolute_input_path(test_models_dir, tmp_path):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "rel.wav", music_like(2.0).T, 44100)
    res = _run(["split", "in/rel.wav", "--stems", "4", "--out", "o", "-q",
                "--models-dir", test_models_dir], tmp_path, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "o" / "rel" / "stems.json").read_text())
    assert meta["input"]["path"] == str(tmp_path / "in" / "rel.wav")


def test_rerun_replaces_the_folder_stems(test_models_dir, tmp_path):
    """A second run into the same folder with another stem set and format leaves exactly
    its own stems (the first run's extra stems are removed), stems.json describes them."""
    src = tmp_path / "song.wav"
    sf.write(src, music_like(2.0).T, 44100)
    out = tmp_path / "o"
    first = _run(["split", src, "--stems", "4", "--out", out, "-q",
                  "--models-dir", test_models_dir], tmp_path)
    assert first.returncode == 0, first.stderr
    folder = out / "song"
    assert {p.name for p in folder.iterdir()} == {"vocals.wav", "drums.wav", "bass.wav",
                                                  "other.wav", "stems.json"}
    (folder / "notes.txt").write_text("mine")  # a user's own file is never touched
    second = _run(["split", src, "--stems", "2", "--model", "htdemucs", "--format", "flac",
                   "--out", out, "-q", "--models-dir", test_models_dir], tmp_path)
    assert second.returncode == 0, second.stderr
    assert {p.name for p in folder.iterdir()} == {"vocals.flac", "instrumental.flac",
                                                  "stems.json", "notes.txt"}
    meta = json.loads((folder / "stems.json").read_text())
    assert meta["output"]["files"] == {"vocals": "vocals.flac",
                                       "instrumental": "instrumental.flac"}


def test_same_name_in_one_run_gets_parent_folder_names_and_a_repeat_is_split_once(
        test_models_dir, tmp_path):
    for parent, seed in (("x", 1), ("y", 2)):
        (tmp_path / parent).mkdir()
        sf.write(tmp_path / parent / "song.wav", music_like(2.0, seed=seed).T, 44100)
    a, b = tmp_path / "x" / "song.wav", tmp_path / "y" / "song.wav"
    out = tmp_path / "o"
    res = _run(["split", a, b, a, "--stems", "4", "--out", out, "--json", "-q",
                "--models-dir", test_models_dir], tmp_path)
    assert res.returncode == 0, res.stderr
    metas = json.loads(res.stdout)
    assert [m["output"]["folder"] for m in metas] == [str(out / "song (x)"),
                                                       str(out / "song (y)")]
    assert "more than once" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["song (x)", "song (y)"]
    # the same command writes the same folders again
    again = _run(["split", a, b, "--stems", "4", "--out", out, "--json", "-q",
                  "--models-dir", test_models_dir], tmp_path)
    assert [m["output"]["folder"] for m in json.loads(again.stdout)] == \
        [m["output"]["folder"] for m in metas]


def test_start_at_beyond_the_end_is_invalid_and_names_the_length(test_models_dir, tmp_path):
    src = tmp_path / "short.wav"
    sf.write(src, music_like(3.0).T, 44100)
    res = _run(["split", src, "--stems", "4", "--start-at", "10", "--out", tmp_path / "o",
                "--models-dir", test_models_dir, "-q"], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INVALID_ARGUMENT], res.stderr
    assert "invalid_argument" in res.stderr and "3.000 s" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_missing_file_is_reported_without_importing_torch(tmp_path):
    code = ("import sys; from bridge.cli import main; "
            "rc = main(['split', 'gone.wav', 'also gone.flac']); "
            "print('torch' in sys.modules, 'engine.separator' in sys.modules); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60,
                         env={**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "c")})
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_MISSING]
    assert res.stdout.split() == ["False", "False"]
    assert res.stderr.count("input_missing") == 2
    assert "Check the file name." in res.stderr  # the CLI hint follows the message
    assert not (tmp_path / "stems").exists()


def test_missing_file_among_good_ones_keeps_its_place_and_exit_status(test_models_dir,
                                                                     tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, music_like(2.0).T, 44100)
    res = _run(["split", good, tmp_path / "gone.wav", "--stems", "4", "--out", tmp_path / "o",
                "--json", "-q", "--models-dir", test_models_dir], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_MISSING]
    metas = json.loads(res.stdout)
    assert metas[0]["stems"] and metas[1]["error"]["code"] == "input_missing"
    assert (tmp_path / "o" / "good" / "vocals.wav").exists()
