"""Jobs of `stembridge serve` (bridge.jobs, bridge.joboutput): cancel, shutdown with a
checkpoint, recovery after kill -9, checks before a job is accepted, request files,
shared memory; real servers on loopback with tiny random-weight models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.client import Client, ClientError, submit_request_file
from bridge.server import ServerConfig, StembridgeServer
from engine.config import EngineConfig
from engine.separator import Engine, SplitRequest
from protocol.errors import exit_status
from protocol.messages import Address
from tests.bridge.server_helpers import client_of, song


def _engine(models: Path, root: Path) -> Engine:
    return Engine(EngineConfig(precision="fp32", models_dir=models, cache_dir=root / "cache"))


@pytest.fixture(scope="module")
def server(test_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs-server")
    srv = StembridgeServer(ServerConfig(port=0, output_root=root / "jobs",
                                        write_discovery=False),
                           _engine(test_models_dir, root)).start()
    yield srv
    srv.stop()




def _wait_state(manifest: Path, states: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        data = json.loads(manifest.read_text())
        if data["state"] in states:
            return data
        time.sleep(0.2)
    raise AssertionError(f"{manifest} still {data['state']}")


def test_cancel_stops_job_without_final_stems(server, tmp_path):
    src = song(tmp_path / "long.wav", 90.0)
    with client_of(server) as c:
        job = c.split(src, stems=4, model="htdemucs")
        with pytest.raises(ClientError) as err:
            for kind, _data in c.events(job, timeout=120):
                if kind == "region":
                    c.send(Address.CANCEL, job)
        assert err.value.code == "cancelled"
        folder = Path(c.status(job)["folder"])
        assert c.status(job)["state"] == "cancelled"
    assert not list(folder.glob("*.wav")), "no consolidated stems for a cancelled job"
    assert json.loads((folder / "manifest.json").read_text())["state"] == "cancelled"
    assert not [p for p in folder.rglob(".*") if p.is_file()], "no temporary files left"
    assert not (folder / "regions").exists(), "a cancelled job's region files are removed"


def test_job_survives_its_client_disappearing(server, tmp_path):
    src = song(tmp_path / "orphan.wav", 12.0)
    c = client_of(server)
    job = c.split(src, stems=4, model="htdemucs")
    c.close()  # the client goes away: pushes now go to a closed port
    deadline = time.time() + 300  # a liveness bound, not a speed goal
    while time.time() < deadline and server.jobs[job].state in ("queued", "running"):
        time.sleep(0.1)
    assert server.jobs[job].state == "done"
    manifest = json.loads((server.jobs[job].folder / "manifest.json").read_text())
    assert manifest["state"] == "done"
    for rel in manifest["final"].values():
        assert (server.jobs[job].folder / rel).exists()
    with client_of(server) as later:  # picked up later, by another client
        assert later.status(job)["state"] == "done"


def test_shared_memory_plane_equals_final_files(server, tmp_path):
    from multiprocessing import shared_memory

    from protocol.shm import DONE, ShmReader

    src = song(tmp_path / "shm.wav", 20.0, 48000)
    with client_of(server) as c:
        job = c.split(src, stems=4, model="htdemucs", start_at=8.0, shm=True)
        reader = None
        seen_final: list[tuple[int, int]] = []
        for kind, data in c.events(job, timeout=120):
            if kind == "started":
                assert data["shm"] is not None and data["frames"] == 20 * 48000
                reader = ShmReader(data["shm"]["index"],
                                   [data["shm"]["blocks"][s] for s in data["stems"]])
                stems = data["stems"]
            elif kind == "region":
                assert reader is not None
                # published before (or with) the push: the region is final in the index
                assert reader.index().is_final(data["start"], data["end"])
                seen_final.append((data["start"], data["end"]))
            elif kind == "done":
                done = data
        assert reader is not None
        snap = reader.index()
        assert snap.state == DONE and snap.ranges == [(0, 20 * 48000)]
        assert (snap.samplerate, snap.channels, snap.stems) == (48000, 2, 4)
        for i, stem in enumerate(stems):
            final, _ = sf.read(done["files"][stem], dtype="float32")
            for ch in range(2):
                np.testing.assert_array_equal(reader.data[i][ch][: 20 * 48000], final[:, ch])
        names = [n for s in stems for n in server.jobs[job].shm.names[stems.index(s)]]
        try:
            import pyo  # noqa: F401  (optional: the real consumer)
        except ImportError:
            pyo = None
        if pyo is not None:
            s = pyo.Server(audio="manual").boot()
            table = pyo.SharedTable("/" + names[0], create=False, size=20 * 48000)
            got = np.asarray(table.getTable(), dtype=np.float32)
            np.testing.assert_array_equal(got, reader.data[0][0][: 20 * 48000])
            del table
            s.shutdown()
        reader.close()
        c.release(job)
        for name in names:
            with pytest.raises(FileNotFoundError):
                shared_memory.SharedMemory(name=name)


def _start_server_process(tmp_path: Path, models: Path, out: Path):
    import subprocess
    import sys

    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(tmp_path / "run"),
           "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                             "--precision", "fp32", "--models-dir", str(models),
                             "--output-root", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
            return proc, (host, int(port))
    raise AssertionError("server did not start")


def test_kill_9_mid_job_then_restart_resumes_and_equals_uninterrupted(test_models_dir,
                                                                      tmp_path):
    import signal

    src = song(tmp_path / "crash.wav", 40.0)
    out = tmp_path / "jobs"
    proc, addr = _start_server_process(tmp_path, test_models_dir, out)
    try:
        with Client(*addr, timeout=30) as c:
            job = c.split(src, stems=4, model="htdemucs", start_at=14.0)
            seen = 0
            for kind, _ in c.events(job, timeout=120):
                if kind == "region":
                    seen += 1
                    if seen == 3:
                        proc.send_signal(signal.SIGKILL)
                        break
    finally:
        proc.wait(10)
    manifest = out / job / "manifest.json"
    before = json.loads(manifest.read_text())
    assert before["state"] == "running" and len(before["regions"]) >= 3
    assert not [p for p in (out / job).glob("*.wav") if not p.name.startswith(".")], \
        "no consolidated stems from a killed run"
    proc, addr = _start_server_process(tmp_path, test_models_dir, out)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            after = json.loads(manifest.read_text())
            if after["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert after["state"] == "done", after.get("error")
        with Client(*addr, timeout=10) as c:
            status = c.status(job)
            assert status["state"] == "done"
            # a resumed job counts the regions it kept: done means all of them
            assert status["regions_done"] == status["regions_total"] > 0
    finally:
        proc.terminate()
        proc.wait(10)
    # the regions final before the kill were not recomputed: they are kept as they were
    assert after["regions"][: len(before["regions"])] == before["regions"]
    engine = Engine(EngineConfig(precision="fp32", models_dir=test_models_dir,
                                 use_cache=False))
    ref_job, ref_regions = engine.split(
        SplitRequest(src, stems=4, model="htdemucs"))
    for stem in ref_job.stem_names:
        ref = np.zeros((ref_job.frames, 2), np.float32)
        for r in ref_regions:
            ref[r.start:r.end] = r.stems[stem].T
        got, _ = sf.read(out / job / f"{stem}.wav", dtype="float32")
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_cancel_reply_reports_the_state_after_the_cancel(server, tmp_path):
    src = song(tmp_path / "cancel-me.wav", 60.0)
    with client_of(server) as c:
        job = c.split(src, stems=4, model="htdemucs")
        for kind, _ in c.events(job, timeout=120):
            if kind == "region":
                break
        reply = c.cancel(job)
        assert reply["state"] == "cancelled", reply
        assert reply["error"]["code"] == "cancelled"
        queued_first = c.split(src, stems=4, model="htdemucs", priority="batch")
        queued = c.split(src, stems=4, model="htdemucs", priority="batch")
        assert c.cancel(queued)["state"] == "cancelled"  # was queued: at once
        c.cancel(queued_first)


@pytest.mark.parametrize("options,code", [
    ({"source": "missing.wav", "stems": 2}, "input_missing"),
    ({"model": "no-such-model"}, "model_unknown"),
    ({"model": "ensemble:/etc"}, "invalid_argument"),  # a folder outside the models dir
    ({"model": "ensemble:../../etc"}, "invalid_argument"),
    ({"model": "spleeter-2stems", "stems": 6}, "stems_unsupported"),
    ({"model": "htdemucs_6s", "stems": 6, "overlap": 0.999}, None),
])
def test_impossible_splits_are_refused_before_they_are_accepted(server, tmp_path, options,
                                                                 code):
    src = song(tmp_path / "ok.wav", 1.0)
    options = dict(options)
    source = tmp_path / options.pop("source") if "source" in options else src
    before = set(server.jobs)
    with client_of(server) as c:
        if code is None:  # a valid request: accepted (then cancelled)
            job = c.split(source, **options)
            c.cancel(job)
            return
        with pytest.raises(ClientError) as err:
            c.split(source, **options)
    assert err.value.code == code
    assert set(server.jobs) == before, "no job was created"


def test_submit_without_wait_exits_with_the_codes_status(server, tmp_path, monkeypatch):
    """`stembridge submit` reports a refused split with that code's exit status."""
    from bridge import discovery
    from protocol.jobfiles import DiscoveryRecord

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    env = dict(os.environ)
    host, port = server.address
    discovery.publish(DiscoveryRecord(host=host, port=port, pid=os.getpid()))
    res = subprocess.run([sys.executable, "-m", "bridge", "submit",
                          str(tmp_path / "nothing-here.wav")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == exit_status("input_missing") == 3, res.stderr
    assert "input_missing" in res.stderr and "job " not in res.stdout


def test_request_file_carries_every_split_option(server, tmp_path, monkeypatch):
    from bridge import discovery
    from protocol.jobfiles import DiscoveryRecord

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    host, port = server.address
    discovery.publish(DiscoveryRecord(host=host, port=port, pid=os.getpid()))
    src = song(tmp_path / "req.wav", 12.0)
    request = tmp_path / "split.json"
    request.write_text(json.dumps({
        "source": str(src), "stems": 4, "model": "htdemucs", "start_at": 1,
        "section_start": 2.0, "section_length": 8.0, "format": "flac", "shm": False,
        "priority": "batch", "client": "reaper"}))
    assert submit_request_file(request) == 0
    reply = json.loads((tmp_path / "split.reply.json").read_text())
    assert reply["state"] == "accepted"
    done = _wait_state(Path(reply["manifest"]), ("done", "failed", "cancelled"))
    assert done["state"] == "done", done.get("error")
    assert done["request"] | {"request_id": 0} == {
        "request_id": 0, "source": str(src), "stems": 4, "model": "htdemucs",
        "start_at": 1.0, "section_start": 2.0, "section_length": 8.0, "priority": "batch",
        "format": "flac", "token": None}
    assert done["frames"] == 8 * 44100 and set(done["final"].values()) == {
        f"{s}.flac" for s in ("vocals", "drums", "bass", "other")}
    info = sf.info(str(Path(reply["folder"]) / "vocals.flac"))
    assert (info.format, info.subtype, info.frames) == ("FLAC", "PCM_24", 8 * 44100)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source": str(src), "format": "ogg"}))
    assert submit_request_file(bad) == exit_status("invalid_argument")
    reply = json.loads((tmp_path / "bad.reply.json").read_text())
    assert reply["state"] == "error" and reply["code"] == "invalid_argument"


def test_shutdown_checkpoints_the_running_job_and_the_next_server_resumes_it(
        test_models_dir, tmp_path, monkeypatch):
    """`shutdown`: the running job keeps every finished region and a resumable manifest,
    its shared memory is gone, the discovery record is removed; the next server finishes
    the job and counts the kept regions."""
    from multiprocessing import shared_memory

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    src = song(tmp_path / "stop.wav", 40.0)
    out = tmp_path / "jobs"

    def start() -> StembridgeServer:
        return StembridgeServer(ServerConfig(port=0, output_root=out),
                                _engine(test_models_dir, tmp_path)).start()

    first = start()
    first_address = first.address
    assert (tmp_path / "run" / "server.json").exists()
    with client_of(first) as c:
        job = c.split(src, stems=4, model="htdemucs", start_at=10.0, shm=True)
        names: list[str] = []
        with pytest.raises(ClientError) as err:
            for kind, data in c.events(job, timeout=120):
                if kind == "started":
                    names = [n for s in data["stems"] for n in data["shm"]["blocks"][s]]
                if kind == "region":
                    assert c.shutdown()["state"] == "stopping"
        assert err.value.code == "not_running"
    first._stopped.wait(30)
    assert first._stopped.is_set()
    manifest = out / job / "manifest.json"
    before = json.loads(manifest.read_text())
    assert before["state"] == "running" and len(before["regions"]) >= 1
    assert not list((out / job).glob("*.wav")), "no consolidated stems yet"
    assert not list((tmp_path / "run").rglob("*.json")), "discovery records removed"
    for name in names:
        with pytest.raises(FileNotFoundError):
            shared_memory.SharedMemory(name=name)
    with pytest.raises(ClientError), Client(*first_address) as gone:
        gone.ping(timeout=0.5)

    second = start()
    try:
        after = _wait_state(manifest, ("done", "failed", "cancelled"))
        assert after["state"] == "done", after.get("error")
        assert after["regions"][: len(before["regions"])] == before["regions"]
        summary = second.jobs[job].summary()
        assert summary.regions_done == summary.regions_total == len(after["regions"])
    finally:
        second.stop()


def test_shutdown_needs_the_token(test_models_dir, tmp_path):
    srv = StembridgeServer(ServerConfig(port=0, token="s3cret", output_root=tmp_path / "j",
                                        write_discovery=False),
                           _engine(test_models_dir, tmp_path)).start()
    try:
        with pytest.raises(ClientError) as err:
            client_of(srv).shutdown()
        assert err.value.code == "unauthorized"
        assert client_of(srv, token="s3cret").ping() < 5
        assert client_of(srv, token="s3cret").shutdown()["state"] == "stopping"
        srv._stopped.wait(20)
        assert srv._stopped.is_set()
    finally:
        srv.stop()
