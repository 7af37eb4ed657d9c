"""`stembridge batch` with the local executor: real files of mixed formats (broken ones
too), real subprocesses killed and interrupted mid-batch, outputs compared with
`stembridge split`'s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.batch import record as rec
from bridge.batch.sources import SourceError, discover
from protocol.errors import EXIT_CODES, ErrorCode
from protocol.files import TEMP_PREFIX
from tests.conftest import music_like

GOOD = ("a_stereo.wav", "b_pcm16.wav", "g_22k.wav", "albums/x/c.flac", "albums/x/d.ogg",
        "albums/y/e.aiff", "albums/y/f.mp3", "h/song.wav", "h/song.flac")
BROKEN = {"trunc.wav": "input_corrupt", "garbage.mp3": "input_unreadable",
          "empty.flac": "input_empty"}
#: Output folder of each good input (the tree mirrored; two inputs named `song`).
FOLDERS = {"a_stereo.wav": "a_stereo", "b_pcm16.wav": "b_pcm16", "g_22k.wav": "g_22k",
           "albums/x/c.flac": "albums/x/c", "albums/x/d.ogg": "albums/x/d",
           "albums/y/e.aiff": "albums/y/e", "albums/y/f.mp3": "albums/y/f",
           "h/song.flac": "h/song", "h/song.wav": "h/song (wav)"}
STEMS = ("vocals.wav", "drums.wav", "bass.wav", "other.wav", "stems.json")


def _catalogue(root: Path) -> Path:
    """12 short audio inputs (9 good in 6 formats, 3 broken) plus files a batch skips."""
    specs = {  # name: (seconds, rate, channels, soundfile options)
        "a_stereo.wav": (1.0, 44100, 2, {"subtype": "FLOAT"}),
        "b_pcm16.wav": (0.8, 44100, 2, {"subtype": "PCM_16"}),
        "g_22k.wav": (0.9, 22050, 2, {}),
        "albums/x/c.flac": (1.0, 44100, 2, {}),
        "albums/x/d.ogg": (1.0, 44100, 2, {"format": "OGG", "subtype": "VORBIS"}),
        "albums/y/e.aiff": (0.7, 48000, 1, {}),
        "albums/y/f.mp3": (1.0, 44100, 2, {"format": "MP3"}),
        "h/song.wav": (0.6, 44100, 2, {}),
        "h/song.flac": (0.6, 44100, 2, {}),
        ".hidden.wav": (0.5, 44100, 2, {}),
        ".cache/z.wav": (0.5, 44100, 2, {}),
    }
    for seed, (name, (seconds, sr, ch, kw)) in enumerate(specs.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, music_like(seconds, sr, ch, seed=seed).T, sr, **kw)
    sf.write(root / "trunc.wav", music_like(1.0).T, 44100, subtype="PCM_16")
    data = (root / "trunc.wav").read_bytes()
    (root / "trunc.wav").write_bytes(data[: len(data) // 3])
    (root / "garbage.mp3").write_bytes(b"this is not audio\n" * 40)
    (root / "empty.flac").write_bytes(b"")
    (root / "notes.txt").write_text("not audio: skipped")
    return root


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _catalogue(tmp_path_factory.mktemp("catalogue"))


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
            "OMP_NUM_THREADS": "1"}


def _batch_argv(sources: list[Path], out: Path, models: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bridge", "batch", *map(str, sources), "--out", str(out),
            "--stems", "4", "--models-dir", str(models), "--precision", "fp32",
            "--threads", "1", "--no-cache", *extra]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _done(out: Path) -> set[str]:
    latest = rec.BatchRecord(out).load()
    return {k for k, e in latest.items() if e.state == rec.DONE}


def _run_until(argv: list[str], env: dict[str, str], out: Path, done_at_least: int,
               sig: int) -> subprocess.Popen[str]:
    """Start a batch, send `sig` once the record holds `done_at_least` finished inputs."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 240
    while len(_done(out)) < done_at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.05)
    assert proc.poll() is None, "the batch finished before it could be interrupted"
    proc.send_signal(sig)
    return proc


def _mtimes(out: Path) -> dict[str, int]:
    return {f: (out / f / "stems.json").stat().st_mtime_ns for f in FOLDERS.values()
            if (out / f / "stems.json").exists()}


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob(TEMP_PREFIX + "*")]


def test_killed_interrupted_resumed_batch_equals_split(catalogue, test_models_dir, tmp_path):
    out = tmp_path / "out"
    env = _env(tmp_path)
    argv = _batch_argv([catalogue], out, test_models_dir)

    # 1. killed (SIGKILL) mid-batch: what finished is recorded as done
    proc = _run_until(argv, env, out, 3, signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    first = _done(out)
    assert 3 <= len(first) < len(GOOD) + len(BROKEN)
    kept = _mtimes(out)

    # 2. resumed, then Ctrl-C: exits 130 cleanly, nothing finished lost, no partial file
    proc = _run_until([*argv, "-q"], env, out, len(first) + 1, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    second = _done(out)
    assert first < second
    assert not _temp_files(out)

    # 3. one input finished in run 1 changes; resumed to the end: only the unfinished
    #    inputs and the changed one are done again
    changed_folder = sorted(first)[0]
    changed = catalogue / next(p for p, f in FOLDERS.items() if f == changed_folder)
    original = changed.read_bytes()
    try:
        info = sf.info(changed)
        sf.write(changed, music_like(1.2, info.samplerate, info.channels, seed=99).T,
                 info.samplerate, format=info.format, subtype=info.subtype)
        res = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True,
                             timeout=300)
        summary = json.loads(res.stdout)
        assert summary["files"] == {"total": 12, "done": len(GOOD) - len(second) + 1,
                                    "done_before": len(second) - 1, "failed": 3,
                                    "not_run": 0}
        assert {Path(f["input"]).name: f["code"] for f in summary["failures"]} == BROKEN
        # the exit status is the first failure's (as for split)
        assert res.returncode == EXIT_CODES[ErrorCode(summary["failures"][0]["code"])]
        meta = json.loads((out / changed_folder / "stems.json").read_text())
        assert meta["input"]["duration"] == pytest.approx(1.2)
    finally:
        changed.write_bytes(original)
    for folder, mtime in kept.items():  # done in run 1 and unchanged: not touched since
        if folder != changed_folder:
            assert (out / folder / "stems.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a_stereo", "b_pcm16", "g_22k", "albums", "h", rec.RECORD_NAME,
         "stembridge-batch-summary.json"])
    for folder in FOLDERS.values():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(STEMS)
    assert not _temp_files(out)
    assert json.loads((out / "stembridge-batch-summary.json").read_text()) == summary

    # 4. the outputs equal `stembridge split`'s of the same files (four formats here)
    import torch

    from bridge.cli import main

    picked = [p for p in ("albums/y/e.aiff", "g_22k.wav", "albums/x/d.ogg", "h/song.flac",
                          "b_pcm16.wav") if FOLDERS[p] != changed_folder][:4]
    split_out = tmp_path / "split"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["split", *(str(catalogue / p) for p in picked), "--stems", "4", "--out",
                     str(split_out), "--models-dir", str(test_models_dir), "--precision",
                     "fp32", "--no-cache", "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    for p in picked:
        split_folder = split_out / Path(p).stem
        batch_folder = out / FOLDERS[p]
        for stem in STEMS[:-1]:
            a, sr_a = sf.read(batch_folder / stem, dtype="float32")
            b, sr_b = sf.read(split_folder / stem, dtype="float32")
            assert sr_a == sr_b and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        meta_a = json.loads((batch_folder / "stems.json").read_text())
        meta_b = json.loads((split_folder / "stems.json").read_text())
        for key in ("model_name", "stems", "input", "warnings"):
            assert meta_a[key] == meta_b[key]


def test_discovery_mirrors_the_tree_skips_hidden_and_names_clashes(catalogue):
    items, problems = discover([str(catalogue), str(catalogue / "a_stereo.wav"),
                                str(catalogue / "nothing-here.wav")])
    assert {i.rel for i in items} == set(FOLDERS.values()) | {"trunc", "garbage", "empty"}
    assert len(items) == 12  # the file named twice is taken once
    assert [(p.code.value, p.source) for p in problems] == [
        ("input_missing", str(catalogue / "nothing-here.wav"))]
    items, _ = discover([str(catalogue / "albums" / "**" / "*.flac")])
    assert [(i.rel, i.path) for i in items] == [("x/c", catalogue / "albums/x/c.flac")]
    again, _ = discover([str(catalogue)])
    assert [i.rel for i in again] == [i.rel for i in discover([str(catalogue)])[0]]


def test_manifest_rows_options_and_errors(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.csv").write_text("path,stems,format,out\na.wav,2,flac,\n"
                                          "sub/b.wav,,,../../escape\n")
    items, _ = discover([str(tmp_path / "m" / "x.csv")])
    assert [(i.path, i.rel, i.options) for i in items] == [
        (tmp_path / "m" / "a.wav", "a", {"stems": 2, "format": "flac"}),
        (tmp_path / "m" / "sub" / "b.wav", "audio/audio/escape", {})]
    (tmp_path / "y.jsonl").write_text('{"path": "/abs/c.wav", "model": "htdemucs"}\n\n')
    items, _ = discover([str(tmp_path / "y.jsonl")])
    assert [(str(i.path), i.rel, i.options) for i in items] == [
        ("/abs/c.wav", "c", {"model": "htdemucs"})]
    for text, expected in (("file,stems\na.wav,2\n", "a 'path' column"),
                           ("path,speed\na.wav,2\n", "Unknown column(s) speed in line 2"),
                           ("path,stems\na.wav,two\n", "not a int"),
                           ("path,format\na.wav,ogg\n", "use wav, flac or mp3"),
                           ("path,bit_depth\na.wav,8\n", "use 16, 24 or 32f"),
                           ("path,sample_rate\na.wav,96000\n", "use 44100 or 48000")):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(SourceError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            discover([str(tmp_path / "bad.csv")])


def test_record_ignores_a_partial_last_line_and_decides_what_to_redo(tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(b"x" * 10)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "stems.json").write_text("{}")
    record = rec.BatchRecord(tmp_path)
    fp = rec.fingerprint(src)
    record.append(rec.Entry("a", str(src), rec.DONE, fingerprint=fp, config="c"))
    record.append(rec.Entry("b", str(src), rec.FAILED, fingerprint=fp, config="c", attempt=3,
                            error={"code": "input_corrupt", "message": "bad"}))
    record.close()
    with open(record.path, "ab") as fh:
        fh.write(b'{"v":1,"item":"a","state":"runn')  # a writer killed mid-line
    latest = rec.BatchRecord(tmp_path).load()
    assert latest["a"].state == rec.DONE
    assert rec.decide(latest["a"], src, "c", tmp_path / "a", 3) == ("done", 1)
    assert rec.decide(latest["a"], src, "other options", tmp_path / "a", 3) == ("run", 1)
    assert rec.decide(latest["b"], src, "c", tmp_path / "b", 3) == ("failed", 3)
    assert rec.decide(latest["b"], src, "c", tmp_path / "b", 4) == ("run", 4)
    src.write_bytes(b"y" * 11)  # changed input: done again, attempts counted afresh
    assert rec.decide(latest["a"], src, "c", tmp_path / "a", 3) == ("run", 1)
    assert rec.decide(latest["b"], src, "c", tmp_path / "b", 3) == ("run", 1)
    again = rec.BatchRecord(tmp_path)  # appending after the partial line starts a new one
    again.load()
    again.append(rec.Entry("c", str(src), rec.RUNNING))
    again.close()
    assert set(rec.BatchRecord(tmp_path).load()) == {"a", "b", "c"}


def test_ray_option_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from bridge.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    sf.write(tmp_path / "a.wav", music_like(0.5).T, 44100)
    status = main(["batch", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o"), "--ray"])
    err = capsys.readouterr().err
    assert status == EXIT_CODES[ErrorCode.PACKAGE_MISSING] == 6
    assert "[package_missing]" in err and "pip install 'stembridge[ray]'" in err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_ray_address_fails_at_once_saying_what_to_do(tmp_path, capsys):
    import socket

    from bridge.batch.cluster import check_reachable
    from bridge.cli import main
    from engine.errors import ClusterError

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sf.write(tmp_path / "a.wav", music_like(0.5).T, 44100)
    t0 = time.monotonic()
    status = main(["batch", str(tmp_path / "a.wav"), "--out", str(tmp_path / "o"), "--ray",
                   f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert time.monotonic() - t0 < 30, "Ray's own retries would take minutes"
    assert status == EXIT_CODES[ErrorCode.CLUSTER_UNAVAILABLE] == 14
    assert "[cluster_unavailable]" in err
    assert f"No Ray cluster answers at 127.0.0.1:{port}" in err
    assert "ray start --head" in err and "ray status" in err  # the message, then the hint
    assert not (tmp_path / "o" / rec.RECORD_NAME).exists()
    with pytest.raises(ClusterError, match="not a Ray cluster address"):
        check_reachable("head:port")
