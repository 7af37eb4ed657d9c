"""The server running two jobs at once (`ServerConfig.jobs`) through the engine's batcher,
over real UDP on loopback, with the tiny MDX-Net model (windows of a few ms)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import _build_parser
from bridge.commands.server import detached_args
from bridge.server import ServerConfig, StembridgeServer
from engine.config import EngineConfig
from engine.errors import InvalidArgumentError
from engine.separator import Engine, SplitRequest
from tests.bridge.server_helpers import client_of, song

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mdx_models(tiny_mdx_dir: Path) -> Path:
    return tiny_mdx_dir


def test_two_jobs_at_once_share_passes_and_both_finish(mdx_models, tmp_path):
    engine = Engine(EngineConfig(precision="fp32", models_dir=mdx_models, use_cache=False,
                                 batcher="on"))
    batcher = engine.batcher()
    batcher.pause()  # both jobs' first windows queue up: they share the first pass
    srv = StembridgeServer(ServerConfig(port=0, output_root=tmp_path / "jobs", jobs=2,
                                        write_discovery=False), engine).start()
    sources = [song(tmp_path / f"s{i}.wav", 2.0, seed=i) for i in range(2)]
    done: dict[int, dict] = {}
    errors: list[BaseException] = []

    def follow(i: int, job: str, client) -> None:
        try:
            with client:
                done[i] = [d for kind, d in client.events(job, timeout=120)
                           if kind == "done"][0]
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        assert srv.job_slots() == 2 and len(srv._workers) == 2
        clients = [client_of(srv) for _ in sources]
        jobs = [c.split(src, model="mdx-voc-ft", stems=2) for c, src in zip(
            clients, sources, strict=True)]
        threads = [threading.Thread(target=follow, args=(i, job, c))
                   for i, (job, c) in enumerate(zip(jobs, clients, strict=True))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60  # a liveness bound, not a speed goal
        while batcher.queued < 2:  # two workers: both jobs are running
            assert time.monotonic() < deadline, "the second job did not start"
            time.sleep(0.01)
        batcher.resume()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert set(batcher.stats.jobs[0]) == set(jobs), "the first pass held both jobs"
        assert set(batcher.stats.per_job) == set(jobs)
    finally:
        srv.stop()
    assert batcher.closed, "stopping the server closes the batcher"
    solo = Engine(EngineConfig(precision="fp32", models_dir=mdx_models, use_cache=False))
    for i, src in enumerate(sources):
        manifest = json.loads(Path(done[i]["manifest"]).read_text())
        assert manifest["state"] == "done" and manifest["frames"] == 2 * 44100
        job, regions = solo.split(SplitRequest(str(src), model="mdx-voc-ft", stems=2))
        for stem in job.stem_names:
            ref = np.zeros((job.frames, 2), np.float32)
            for r in regions:
                ref[r.start:r.end] = r.stems[stem].T
            got, _ = sf.read(done[i]["files"][stem], dtype="float32")
            np.testing.assert_allclose(got, ref, atol=1e-5)


def test_serve_flags_reach_a_detached_server():
    args = _build_parser().parse_args(["serve", "--detach", "--jobs", "3", "--batcher", "on",
                                       "--batch-windows", "8"])
    got = detached_args(args)
    assert dict(zip(got[::2], got[1::2], strict=True)) == {
        "--jobs": "3", "--batcher": "on", "--batch-windows": "8"}


def test_the_cpu_default_is_one_job_and_no_batcher(tmp_path):
    engine = Engine(EngineConfig(device="cpu"))
    assert engine.batcher() is None
    srv = StembridgeServer(ServerConfig(port=0, output_root=tmp_path, write_discovery=False),
                           engine)
    assert srv.job_slots() == 1
    with pytest.raises(InvalidArgumentError, match="batcher setting"):
        Engine(EngineConfig(device="cpu", batcher="sometimes")).batcher()
