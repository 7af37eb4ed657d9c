"""`stembridge batch` with URLs (`bridge.batch.storage`): inputs and outputs on fsspec's
in-process ``memory://`` store (no network here, so no S3: the same code paths, another
fsspec file system), ``file://`` URLs as local paths, and the errors for stores whose
package is missing or for inputs over the size limit."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.batch import record as rec
from protocol.errors import EXIT_CODES, ErrorCode
from protocol.files import TEMP_PREFIX
from tests.conftest import music_like

fsspec = pytest.importorskip("fsspec")
STEMS = ("vocals.wav", "drums.wav", "bass.wav", "other.wav")


@pytest.fixture
def bucket():
    """A fresh top folder on the memory store, removed afterwards."""
    fs = fsspec.filesystem("memory")
    name = f"b{uuid.uuid4().hex[:8]}"
    yield fs, name
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"/{name}", recursive=True)


def _wav(seconds: float, sr: int, ch: int, seed: int, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * music_like(seconds, sr, ch, seed=seed).T, sr, format=fmt)
    return buf.getvalue()


def _batch(models: Path, *argv: str) -> tuple[int, dict]:
    from bridge.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["batch", *argv, "--stems", "4", "--models-dir", str(models),
                       "--precision", "fp32", "--no-cache", "--json", "-q"])
    return status, json.loads(buf.getvalue())


def _staged() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("stembridge-stage-*")}


def test_batch_from_and_to_a_remote_store_equals_a_local_batch(
        bucket, test_models_dir, tmp_path, one_torch_thread):
    fs, b = bucket
    files = {"cat/a.wav": _wav(1.0, 44100, 2, 1), "cat/sub/b.flac": _wav(0.8, 48000, 1, 2,
                                                                          "FLAC"),
             "cat/broken.wav": b"RIFF\x00\x00\x00\x00WAVEjunk",
             "cat/.hidden.wav": _wav(0.5, 44100, 2, 3), "cat/notes.txt": b"skipped"}
    local = tmp_path / "local"
    for name, data in files.items():
        fs.pipe(f"/{b}/{name}", data)
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    fs.pipe(f"/{b}/out/a/{TEMP_PREFIX}dead-vocals.wav", b"a killed upload")
    staged = _staged()
    work = tmp_path / "work"
    argv = [f"memory://{b}/cat", "--out", f"memory://{b}/out", "--work", str(work),
            "--master", "streaming"]

    status, summary = _batch(test_models_dir, *argv)
    assert status == EXIT_CODES[ErrorCode.INPUT_CORRUPT]
    assert summary["out"] == f"memory://{b}/out"
    assert summary["files"]["done"] == 2 and summary["files"]["failed"] == 1
    assert [(f["input"], f["code"]) for f in summary["failures"]] == [
        (fs.unstrip_protocol(f"/{b}/cat/broken.wav"), "input_corrupt")]  # memory:///b/...
    remote = sorted(p[len(f"/{b}/out/"):] for p in fs.find(f"/{b}/out"))
    assert remote == sorted(
        [f"a/{s}" for s in (*STEMS, "stems.json", "a.master.wav", "a.master.json")]
        + [f"sub/b/{s}" for s in (*STEMS, "stems.json", "b.master.wav", "b.master.json")]
        + ["stembridge-batch-summary.json"]), "the killed upload's temp object is gone"
    assert json.loads(fs.cat(f"/{b}/out/stembridge-batch-summary.json")) == summary
    # the work folder keeps only the record and the summary; staged copies are removed
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [rec.RECORD_NAME, "stembridge-batch-summary.json"])
    assert _staged() == staged
    latest = rec.BatchRecord(work).load()
    source = fs.unstrip_protocol(f"/{b}/cat/a.wav")
    assert latest["a"].input == source and latest["a"].master
    # the published metadata names the input and the outputs where they are, not the
    # staged copy or the work folder
    meta = json.loads(fs.cat(f"/{b}/out/a/stems.json"))
    assert meta["input"]["path"] == source
    assert meta["output"]["folder"] == f"memory://{b}/out/a"
    report = json.loads(fs.cat(f"/{b}/out/a/a.master.json"))
    assert report["input"]["path"] == source
    assert report["output"]["path"] == f"memory://{b}/out/a/a.master.wav"

    # the same catalogue as file:// URL to a local folder: the same stems and master
    status, local_summary = _batch(test_models_dir, f"file://{local}/cat", "--out",
                                   str(tmp_path / "lo"), "--master", "streaming")
    assert local_summary["files"]["done"] == 2
    for item, name in (("a", "a"), ("sub/b", "b")):
        for f in (*STEMS, f"{name}.master.wav"):
            x, sr_x = sf.read(io.BytesIO(fs.cat(f"/{b}/out/{item}/{f}")), dtype="float32")
            y, sr_y = sf.read(tmp_path / "lo" / item / f, dtype="float32")
            assert sr_x == sr_y
            np.testing.assert_array_equal(x, y)

    # resumed: the record and the store say all is done; then one remote input changes
    lines = len((work / rec.RECORD_NAME).read_text().splitlines())
    status, summary = _batch(test_models_dir, *argv)
    assert summary["files"]["done"] == 0 and summary["files"]["done_before"] == 2
    assert len((work / rec.RECORD_NAME).read_text().splitlines()) == lines + 2  # broken
    fs.pipe(f"/{b}/cat/a.wav", _wav(1.3, 44100, 2, 9))
    fs.rm(f"/{b}/out/sub/b/stems.json")  # a store that lost a done marker: done again
    status, summary = _batch(test_models_dir, *argv)
    assert summary["files"]["done"] == 2 and summary["files"]["done_before"] == 0
    meta = json.loads(fs.cat(f"/{b}/out/a/stems.json"))
    assert meta["input"]["duration"] == pytest.approx(1.3)
    assert not [p for p in fs.find(f"/{b}/out") if TEMP_PREFIX in p]


def test_store_errors_say_what_to_install_and_inputs_are_bounded(
        bucket, tmp_path, capsys, monkeypatch):
    from bridge.batch import storage
    from bridge.cli import main
    from engine.errors import InputError, StorageError

    fs, b = bucket
    if importlib.util.find_spec("s3fs") is None:
        status = main(["batch", "s3://bucket/music", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert status == EXIT_CODES[ErrorCode.PACKAGE_MISSING] == 6
        assert "[package_missing]" in err and "s3fs" in err
        status = main(["batch", str(tmp_path), "--out", "s3://bucket/stems"])
        assert status == 6 and "s3fs" in capsys.readouterr().err
    with pytest.raises(StorageError, match="knows no protocol 'nosuchstore://'"):
        storage.filesystem("nosuchstore://x/y")
    status = main(["batch", "nosuchstore://x/y", "--out", str(tmp_path / "o")])
    assert status == EXIT_CODES[ErrorCode.STORAGE_UNAVAILABLE] == 15
    assert "[storage_unavailable]" in capsys.readouterr().err
    fs.pipe(f"/{b}/big.wav", _wav(1.0, 44100, 2, 1))
    with pytest.raises(InputError, match="largest source file") as info:
        storage.stage(f"memory://{b}/big.wav", tmp_path, max_bytes=1000, timeout=60)
    assert info.value.code is ErrorCode.INPUT_TOO_LONG
    assert not (tmp_path / "big.wav").exists()
    with pytest.raises(InputError) as info:
        storage.stage(f"memory://{b}/gone.wav", tmp_path, max_bytes=10**9, timeout=60)
    assert info.value.code is ErrorCode.INPUT_MISSING
    # an object deleted after the batch found it fails as missing, with nothing staged
    from bridge.batch import task
    from bridge.batch.sources import BatchItem

    staged = _staged()
    gone = BatchItem(Path(f"{b}/gone.wav"), "gone", url=f"memory://{b}/gone.wav")
    prep = task.prepare(None, gone, task.BatchOptions())
    assert prep.failure is not None and prep.failure.error is not None
    assert prep.failure.error["code"] == "input_missing" and _staged() == staged
    # through a batch: the limit is the engine's (STEMBRIDGE_MAX_SOURCE_MB)
    monkeypatch.setenv("STEMBRIDGE_MAX_SOURCE_MB", "0.01")
    status = main(["batch", f"memory://{b}/big.wav", "--out", str(tmp_path / "o"), "--json",
                   "-q"])
    summary = json.loads(capsys.readouterr().out)
    assert status == EXIT_CODES[ErrorCode.INPUT_TOO_LONG]
    assert [f["code"] for f in summary["failures"]] == ["input_too_long"]
    assert _staged() == staged


def test_staged_copies_of_a_dead_batch_process_are_swept(tmp_path):
    import subprocess
    import sys

    from bridge.batch.task import STAGE_PREFIX, sweep_stale_stages

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    left = tmp_path / f"{STAGE_PREFIX}{int(dead.stdout)}-abc"  # a killed batch's copy
    (left / "x").mkdir(parents=True)
    (left / "x" / "song.wav").write_bytes(b"RIFF")
    mine = tmp_path / f"{STAGE_PREFIX}{os.getpid()}-def"  # a running process's: kept
    mine.mkdir()
    other = tmp_path / "stembridge-stage-notapid"
    other.mkdir()
    assert sweep_stale_stages(tmp_path) == [left]
    assert not left.exists() and mine.is_dir() and other.is_dir()
    assert sweep_stale_stages(tmp_path) == []  # once per process


def test_batch_from_and_to_s3_through_a_local_s3_server(test_models_dir, tmp_path,
                                                        monkeypatch, one_torch_thread):
    """s3:// itself (s3fs, botocore), against moto's S3 server on 127.0.0.1."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for var, value in (("AWS_ENDPOINT_URL", f"http://{host}:{port}"),
                           ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                           ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(var, value)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("label")
        fs.pipe("label/cat/a.wav", _wav(0.6, 44100, 2, 1))
        fsspec.filesystem("s3").invalidate_cache()
        status, summary = _batch(test_models_dir, "s3://label/cat", "--out",
                                 "s3://label/stems", "--work", str(tmp_path / "work"))
        assert status == 0 and summary["files"]["done"] == 1, summary
        fs.invalidate_cache()
        assert sorted(p.split("/", 2)[2] for p in fs.find("label/stems")) == sorted(
            [f"a/{s}" for s in (*STEMS, "stems.json")] + ["stembridge-batch-summary.json"])
        meta = json.loads(fs.cat("label/stems/a/stems.json"))
        assert meta["input"]["path"] == "s3://label/cat/a.wav"
        status, summary = _batch(test_models_dir, "s3://label/cat", "--out",
                                 "s3://label/stems", "--work", str(tmp_path / "work"))
        assert summary["files"]["done_before"] == 1  # resumed from the store
    finally:
        server.stop()
