"""`stembridge split` when the output cannot be written, and when it is interrupted: exit
10 (`output_failed`) with the other files still processed, no traceback, no empty folder
left behind. Real subprocesses, a real read-only mount, a real SIGINT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
import soundfile as sf

from protocol.errors import EXIT_CODES, ErrorCode
from tests.conftest import music_like

OUTPUT_FAILED = EXIT_CODES[ErrorCode.OUTPUT_FAILED]


def _env(tmp_path):
    return {**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}


def _split(args, tmp_path, prefix=()):
    cmd = [*prefix, sys.executable, "-m", "bridge", "split", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=300)


def _song(path, seconds=2.0):
    sf.write(path, music_like(seconds).T, 44100)
    return path


def test_out_naming_a_file(test_models_dir, tmp_path):
    src = _song(tmp_path / "a.wav")
    out = tmp_path / "not a folder"
    out.write_text("x")
    res = _split([src, "--stems", "4", "--out", out, "-q", "--models-dir", test_models_dir],
                 tmp_path)
    assert res.returncode == OUTPUT_FAILED, res.stderr
    assert "output_failed" in res.stderr and "is a file, not a folder" in res.stderr
    assert "Choose a writable output folder" in res.stderr  # the CLI hint
    assert "Traceback" not in res.stderr
    assert out.read_text() == "x"


def test_one_output_folder_fails_the_others_are_still_written(test_models_dir, tmp_path):
    a, b = _song(tmp_path / "a.wav"), _song(tmp_path / "b.wav")
    out = tmp_path / "o"
    out.mkdir()
    (out / "a").write_text("a file where a's folder would go")
    res = _split([a, b, "--stems", "4", "--out", out, "-q", "--models-dir", test_models_dir],
                 tmp_path)
    assert res.returncode == OUTPUT_FAILED, res.stderr
    assert "Traceback" not in res.stderr
    assert (out / "b" / "vocals.wav").exists() and (out / "b" / "stems.json").exists()


def _read_only_prefix(folder):
    """A command prefix that runs the command with `folder` bind-mounted read-only in a
    private mount namespace (a real EROFS, which root cannot bypass); None if impossible."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    flags = "-m" if os.geteuid() == 0 else "-rm"
    prefix = [unshare, flags, "sh", "-c",
              f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"', "sh"]
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode == 0 or "Read-only" not in probe.stderr:
        (folder / "probe").unlink(missing_ok=True)
        return None
    return prefix


def test_read_only_output_folder(test_models_dir, tmp_path):
    a, b = _song(tmp_path / "a.wav"), _song(tmp_path / "b.wav")
    out = tmp_path / "ro"
    out.mkdir()
    (out / "b").mkdir()  # an existing folder on the read-only mount: writing in it fails
    prefix = _read_only_prefix(out)
    if prefix is None:
        pytest.skip("cannot make a read-only bind mount here (unshare/mount)")
    res = _split([a, b, "--stems", "4", "--out", out, "-q", "--models-dir", test_models_dir],
                 tmp_path, prefix)
    assert res.returncode == OUTPUT_FAILED, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.count("error [output_failed]") == 2, res.stderr  # both were tried
    assert "Read-only file system" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert list((out / "b").iterdir()) == []


def _default_sigint() -> None:
    """The child takes Ctrl-C as a terminal user's process does, even where the test runs
    with SIGINT ignored (a background job of a shell, some CI runners), which a child
    would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_mid_run_exits_130_and_leaves_no_folder(test_models_dir, tmp_path):
    src = _song(tmp_path / "long.wav", 120.0)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "split", str(src), "--stems", "4",
                             "--out", str(out), "--models-dir", str(test_models_dir)],
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            preexec_fn=_default_sigint)
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until separation is under way
        if "regions" in line:
            break
    assert out.exists(), "the folder exists while the stems are being written"
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(60) == EXIT_CODES[ErrorCode.CANCELLED], rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert not out.exists(), "an interrupted run leaves no empty output folder"


def test_sigint_keeps_an_earlier_runs_stems(test_models_dir, tmp_path):
    src = _song(tmp_path / "song.wav", 120.0)
    out = tmp_path / "o"
    (out / "song").mkdir(parents=True)
    (out / "song" / "vocals.wav").write_bytes(b"earlier run")
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "split", str(src), "--stems", "4",
                             "--out", str(out), "--models-dir", str(test_models_dir)],
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            preexec_fn=_default_sigint)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "regions" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.stderr.read()
    assert proc.wait(60) == 130
    assert [p.name for p in (out / "song").iterdir()] == ["vocals.wav"]
    assert (out / "song" / "vocals.wav").read_bytes() == b"earlier run"
