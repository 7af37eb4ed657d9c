"""`stembridge batch --ray` on a real local Ray cluster (2 CPUs, no dashboard) with tiny
test models: the same outputs as the local executor, an actor killed mid-run, a manifest
with per-row options (and a master of each input), workers that cannot start. Skipped where Ray is not installed (CI installs it)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.batch import record as rec
from bridge.batch.local import LocalExecutor
from bridge.batch.sources import discover
from bridge.batch.task import BatchOptions
from bridge.commands.batch import BatchRun
from protocol.files import TEMP_PREFIX
from tests.conftest import music_like

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEMS4 = ("vocals.wav", "drums.wav", "bass.wav", "other.wav")


@pytest.fixture(scope="module")
def cluster():
    # a new local instance, never a cluster this machine may already run (RAY_ADDRESS)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-catalogue")
    for seed, (name, seconds, sr, ch) in enumerate((
            ("a.wav", 1.0, 44100, 2), ("b.flac", 0.8, 48000, 2), ("sub/c.wav", 0.6, 44100, 1),
            ("sub/d.ogg", 0.9, 44100, 2))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, music_like(seconds, sr, ch, seed=seed).T, sr)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root


def _options(models: Path) -> BatchOptions:
    return BatchOptions(stems=4, precision="fp32", use_cache=False, models_dir=models,
                        threads=1)


def _assert_same_stems(a: Path, b: Path, names=STEMS4) -> None:
    for stem in names:
        x, sr_x = sf.read(a / stem, dtype="float32")
        y, sr_y = sf.read(b / stem, dtype="float32")
        assert sr_x == sr_y
        np.testing.assert_array_equal(x, y)


def test_ray_equals_local_and_retries_the_files_of_a_killed_actor(
        cluster, catalogue, test_models_dir, tmp_path):
    import torch

    from bridge.batch.cluster import RayExecutor

    items, _ = discover([str(catalogue)])
    opts = _options(test_models_dir)
    local = BatchRun(tmp_path / "local", opts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        LocalExecutor(opts, tmp_path / "local").run(local.plan(items, True), local.on_start,
                                                    local.on_outcome)
    finally:
        torch.set_num_threads(threads)
        local.record.close()

    out = tmp_path / "ray"
    run = BatchRun(out, opts)
    executor = RayExecutor(opts, out, workers=2, cpus_per_worker=1)
    pids: dict[str, int] = {}
    executor.on_worker = pids.__setitem__
    submitted: dict[str, int] = {}
    killed: list[str] = []

    def on_start(item, worker, retries=0):
        run.on_start(item, worker, retries)
        submitted[worker] = submitted.get(worker, 0) + 1
        # kill the first actor as its second input is queued: it is busy with its first
        if not killed and submitted[worker] == 2:
            os.kill(pids[worker], signal.SIGKILL)
            killed.append(worker)

    try:
        executor.run(run.plan(items, True), on_start, run.on_outcome)
    finally:
        run.record.close()
    assert killed and len(pids) == 3, "the dead actor was replaced"
    lines = [rec.Entry.from_payload(json.loads(x)) for x in
             (out / rec.RECORD_NAME).read_text().splitlines()]
    retried = {e.item for e in lines if e is not None and e.attempt == 2}
    assert retried, "the killed actor's inputs were given to another actor"
    latest = rec.BatchRecord(out).load()
    for item in retried:
        assert latest[item].state == rec.DONE and latest[item].worker != killed[0]
    assert {k: e.state for k, e in latest.items()} == {
        "a": "done", "b": "done", "sub/c": "done", "sub/d": "done", "broken": "failed"}
    assert latest["broken"].error is not None
    assert latest["broken"].error["code"] == local.record.load()["broken"].error["code"]
    assert run.tally.done == 4 and run.tally.failed == 1
    for item in ("a", "b", "sub/c", "sub/d"):
        assert sorted(p.name for p in (out / item).iterdir()) == sorted(
            [*STEMS4, "stems.json"])
        _assert_same_stems(out / item, tmp_path / "local" / item)
        assert latest[item].cache_key == local.record.load()[item].cache_key
    assert not list(out.rglob(TEMP_PREFIX + "*")), "no partial file of the killed attempt"


def test_manifest_with_per_row_options_on_ray(cluster, catalogue, test_models_dir, tmp_path,
                                              capsys):
    from bridge.cli import main

    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,stems,model,format,out\n"
                        f"{catalogue / 'a.wav'},2,htdemucs,flac,\n"
                        f"{catalogue / 'sub' / 'c.wav'},,,,mono/c\n"
                        f"{catalogue / 'missing.wav'},,,,\n")
    out = tmp_path / "out"
    status = main(["batch", str(manifest), "--out", str(out), "--ray", "--workers", "1",
                   "--stems", "4", "--models-dir", str(test_models_dir), "--precision",
                   "fp32", "--no-cache", "--json", "--master", "streaming"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 3  # the missing file's exit status
    assert summary["executor"] == "ray"
    assert summary["files"] == {"total": 3, "done": 2, "done_before": 0, "failed": 1,
                                "not_run": 0}
    assert [f["code"] for f in summary["failures"]] == ["input_missing"]
    assert sorted(p.name for p in (out / "a").iterdir()) == [
        "a.master.json", "a.master.wav", "instrumental.flac", "stems.json", "vocals.flac"]
    assert summary["master"]["files"] == 2  # mastered by the actor, after the stems
    assert rec.BatchRecord(out).load()["mono/c"].master["outputs"] == [
        "c.master.wav", "c.master.json"]
    meta = json.loads((out / "a" / "stems.json").read_text())
    assert meta["model_name"] == "htdemucs" and meta["output"]["format"] == "flac"
    assert sorted(p.name for p in (out / "mono" / "c").iterdir()) == sorted(
        [*STEMS4, "stems.json", "c.master.wav", "c.master.json"])
    assert sf.info(out / "mono" / "c" / "vocals.wav").channels == 1


def test_workers_that_cannot_start_give_a_clear_error(cluster, tmp_path, monkeypatch):
    from bridge.batch import cluster as cl
    from bridge.batch.sources import BatchItem
    from engine.errors import ClusterError

    items = [BatchItem(tmp_path / "a.wav", "a")]

    def never(*args):
        raise AssertionError("no input may start without a worker")

    # an actor whose constructor raises (here: torch refuses -1 threads) dies starting
    broken = cl.RayExecutor(BatchOptions(threads=-1), tmp_path / "o", workers=1)
    with pytest.raises(ClusterError, match="died while starting") as info:
        broken.run(items, never, never)
    assert "installed on every node" in str(info.value)
    # an actor no node can hold (4 CPUs on a 2-CPU cluster) never starts
    monkeypatch.setattr(cl, "ACTOR_START_TIMEOUT", 1.0)
    big = cl.RayExecutor(BatchOptions(), tmp_path / "o", workers=1, cpus_per_worker=4)
    with pytest.raises(ClusterError, match=r"resources one asks for \(cpus=4\)"):
        big.run(items, never, never)
    assert not (tmp_path / "o").exists()
