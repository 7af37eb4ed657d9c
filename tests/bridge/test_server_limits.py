"""The server attacked as a hostile local client would: limits per sender and overall, a
fair queue, bounded replies with the largest legal values, wrong input refused up front,
non-ASCII tokens, jobs in sub-folders recovered, slow sources, bad request files. Real
UDP on loopback, real files and FIFOs, tiny random-weight models."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from bridge.client import ClientError, reply_path, submit_request_file
from bridge.jobs import INDEX, JobQueue, JobRecord
from bridge.server import ServerConfig, StembridgeServer
from engine.config import EngineConfig, Limits
from engine.separator import Engine
from protocol import settings
from protocol.messages import MAX_PATH_BYTES, Address, ErrorMsg, SplitRequest, decode
from tests.bridge.server_helpers import client_of, song


def _server(models: Path, root: Path, **config) -> StembridgeServer:
    limits = config.pop("limits", None) or Limits()
    engine = Engine(EngineConfig(precision="fp32", models_dir=models,
                                 cache_dir=root / "cache", limits=limits))
    return StembridgeServer(ServerConfig(port=0, output_root=root / "jobs",
                                         write_discovery=False, **config), engine).start()


@pytest.fixture(scope="module")
def server(test_models_dir, tmp_path_factory):
    srv = _server(test_models_dir, tmp_path_factory.mktemp("limits-server"))
    yield srv
    srv.stop()


def _refused(c, payload: dict) -> ErrorMsg:
    """Send a raw split payload; the error it is answered with."""
    c.send(Address.SPLIT, {"request_id": 99, **payload})
    deadline = time.time() + 10
    while time.time() < deadline:
        msg = c.receive(10)
        if msg.address == Address.ERROR:
            return ErrorMsg.from_message(msg)
        assert msg.address != Address.ACCEPTED, f"accepted: {payload}"
    raise AssertionError("no answer")


def test_wrong_input_is_invalid_argument_at_submission(server, tmp_path):
    src = song(tmp_path / "ok.wav", 0.5)
    (server.config.output_root / "a-file").write_text("not a folder")
    long_name = "n" * 300
    cases = [
        {"source": str(src), "output_root": "al\0bum"},
        {"source": str(src), "output_root": long_name},
        {"source": str(src), "output_root": "a-file"},
        {"source": str(src) + "\0.wav"},
        {"source": str(src), "start_at": 1e308},
        {"source": "/" + "x" * 30_333},
    ]
    with client_of(server) as c:
        for payload in cases:
            err = _refused(c, payload)
            assert err.code.value == "invalid_argument", (payload, err)
            assert err.message and len(err.message) < 2000
    assert server.stats["internal"] == 0


def test_output_root_inside_a_job_folder_is_refused(server, tmp_path):
    src = song(tmp_path / "a.wav", 0.5)
    job_folder = server.config.output_root / "20260101-000000-deadbeef"
    job_folder.mkdir(parents=True)
    (job_folder / "manifest.json").write_text("{}")
    with client_of(server) as c:
        for inside in (job_folder.name, f"{job_folder.name}/deeper", INDEX):
            err = _refused(c, {"source": str(src), "output_root": inside})
            assert err.code.value == "invalid_argument" and "job folder" in err.message


def test_non_ascii_tokens_are_compared_as_bytes(test_models_dir, tmp_path):
    srv = _server(test_models_dir, tmp_path, token="pässwort")
    try:
        with client_of(srv, token="pässwort") as c:
            assert c.hello()["protocol_version"] == 1
            c.ping()
        for wrong in ("passwort", "pässwört", "🔑"):
            with client_of(srv, token=wrong) as c, pytest.raises(ClientError) as err:
                c.ping(timeout=5)
            assert err.value.code == "unauthorized"
        assert srv.stats["internal"] == 0
    finally:
        srv.stop()


def test_token_from_a_file(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text("s3cret-ä\n")
    monkeypatch.delenv("STEMBRIDGE_TOKEN", raising=False)
    monkeypatch.setenv("STEMBRIDGE_TOKEN_FILE", str(path))
    assert settings.token() == "s3cret-ä"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(settings.SettingError, match="not a regular file"):
        settings.read_token_file(fifo)


def _receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def _first_answer(sock: socket.socket) -> str:
    data, _ = sock.recvfrom(70000)
    return decode(data).address


def test_limits_are_per_sender_and_global(test_models_dir, tmp_path):
    """One socket naming 4 reply ports still counts as one client; the server as a whole
    stops accepting at its own cap, with `too_many_jobs`."""
    srv = _server(test_models_dir, tmp_path, max_jobs_per_client=2, max_active_jobs=3)
    src = song(tmp_path / "long.wav", 30.0)
    receivers = [_receiver() for _ in range(4)]
    try:
        with client_of(srv) as c:
            answers = []
            for k, r in enumerate(receivers):
                c.send(Address.SPLIT, SplitRequest(source=str(src), request_id=k + 1,
                                                   reply_port=r.getsockname()[1],
                                                   priority="batch").to_payload())
                answers.append(_first_answer(r))
        assert answers[:2] == [Address.ACCEPTED, Address.ACCEPTED], answers
        assert answers[2:] == [Address.ERROR, Address.ERROR], answers
        with client_of(srv) as other:
            other.split(src, priority="batch")
            with pytest.raises(ClientError) as err:
                other.split(src, priority="batch")
            assert err.value.code == "too_many_jobs" and "server" in str(err.value)
    finally:
        for r in receivers:
            r.close()
        srv.stop()


def _rec(job: str, client: tuple[str, int], priority: int = 1) -> JobRecord:
    return JobRecord(job, SplitRequest(source="/x.wav"), client, Path("/tmp"), priority,
                     client=client)


def test_queue_is_round_robin_between_clients_within_a_priority():
    queue = JobQueue()
    a, b, c = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
    records = {}
    for rec in [_rec(f"a{i}", a) for i in range(4)] + [_rec("b0", b), _rec("b1", b),
                                                        _rec("c0", c, priority=0)]:
        records[rec.id] = rec
        queue.put(rec)
    records["a1"].state = "cancelled"  # a cancelled job is skipped
    order = [queue.get(records).id for _ in range(6)]
    assert order == ["c0", "a0", "b0", "a2", "b1", "a3"]


def test_finished_records_are_forgotten_beyond_the_limit(tmp_path):
    srv = StembridgeServer(ServerConfig(port=0, output_root=tmp_path, max_records=3,
                                        write_discovery=False), engine=object())
    for i in range(6):
        rec = _rec(f"j{i}", ("127.0.0.1", 1))
        rec.created = float(i)
        rec.state = "done" if i < 5 else "running"
        srv.jobs[rec.id] = rec
    srv._forget_old()
    assert sorted(srv.jobs) == ["j2", "j3", "j4", "j5"]


def _deep(path: Path, total: int) -> Path:
    """A file at a path of exactly `total` bytes (folders of 200-byte names)."""
    folder = path
    while len(str(folder)) + 1 + 200 + 1 + 10 < total:
        folder = folder / ("d" * 200)
    folder.mkdir(parents=True, exist_ok=True)
    name = "f" * (total - len(str(folder)) - 1 - 4) + ".wav"
    return folder / name


def test_replies_fit_a_datagram_with_the_largest_legal_values(test_models_dir, tmp_path):
    """A source path of the largest legal length: the job's pushes, `status` and `jobs`
    are all answered; `jobs` over 50 such jobs leaves the oldest out and says so."""
    srv = _server(test_models_dir, tmp_path, max_jobs_per_client=100, max_active_jobs=100)
    try:
        longest = _deep(tmp_path / "deep", MAX_PATH_BYTES)
        assert len(str(longest).encode()) == MAX_PATH_BYTES
        song(tmp_path / "short.wav", 0.5).rename(longest)  # libsndfile cannot write there
        junk = _deep(tmp_path / "junk", MAX_PATH_BYTES)
        junk.write_bytes(b"")  # refused at once (empty), the message names the path
        with client_of(srv) as c:
            job = c.split(longest, stems=4, model="htdemucs")
            kinds = [k for k, _ in c.events(job, timeout=300)]
            assert kinds[-1] == "done"
            assert c.status(job)["source"] == str(longest)
            for _ in range(50):  # fail at once, each with a long message
                bad = c.split(junk)
                with pytest.raises(ClientError):
                    list(c.events(bad, timeout=60))
            summary = c.status(bad)
            assert summary["state"] == "failed" and summary["error"]["message"]
            c.send(Address.JOBS)
            reply = c._expect({Address.JOBS_REPLY})
        from protocol.messages import JobsReply

        listed = JobsReply.from_message(reply)
        assert listed.left_out > 0 and len(listed.jobs) + listed.left_out == 50
        assert listed.jobs[-1].job == bad
        assert srv.stats["internal"] == 0
    finally:
        srv.stop()


def test_jobs_in_sub_folders_are_recovered(test_models_dir, tmp_path):
    """A job with ``output_root: "album"`` left unfinished is found by the next server
    (through the index), and finishing it removes its index entry."""
    src = song(tmp_path / "album song.wav", 0.5)
    first = _server(test_models_dir, tmp_path, max_active_jobs=8)
    with client_of(first) as c:
        job = c.split(src, stems=4, model="htdemucs", output_root="album", priority="batch")
    first.stop()  # graceful: like a crash, the job's manifest stays resumable
    folder = tmp_path / "jobs" / "album" / job
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["state"] == "done":
        pytest.skip("the job finished before the stop")
    indexed = (tmp_path / "jobs" / INDEX / job).exists()
    second = _server(test_models_dir, tmp_path)
    try:
        assert job in second.jobs, "the next server did not find the job"
        assert indexed
        with client_of(second) as c:
            assert c.status(job)["state"] in ("queued", "running", "done")
            deadline = time.time() + 300  # a liveness bound, not a speed goal
            while c.status(job)["state"] in ("queued", "running") and time.time() < deadline:
                time.sleep(0.2)
            assert c.status(job)["state"] == "done"
        assert not (tmp_path / "jobs" / INDEX / job).exists()
    finally:
        second.stop()


def test_a_slow_source_never_blocks_the_worker(test_models_dir, tmp_path):
    """Reading a source past the read timeout fails that job with a clear message; the
    worker goes on to the next client's job."""
    import numpy as np
    import soundfile as sf

    src = tmp_path / "slow.flac"
    sf.write(src, np.random.default_rng(0).uniform(-0.5, 0.5, (60 * 44100, 2)), 44100)
    srv = _server(test_models_dir, tmp_path, limits=Limits(read_timeout=0.0))
    try:
        errors = []
        for _ in range(2):
            with client_of(srv) as c:
                job = c.split(src, stems=4, model="htdemucs")
                with pytest.raises(ClientError) as err:
                    list(c.events(job, timeout=60))
                errors.append(err.value)
        for err in errors:
            assert err.code == "input_unreadable" and "longer than" in str(err)
        with client_of(srv) as c:
            assert c.ping(timeout=5) < 1.0
    finally:
        srv.stop()


def _request(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["nul", "long", "deep", "relative", "fifo"])
def test_bad_request_files_always_get_a_final_reply(tmp_path, case):
    if case == "fifo":
        path = tmp_path / "fifo.json"
        os.mkfifo(path)
    else:
        text = {"nul": json.dumps({"source": "/tmp/a\0.wav"}),
                "long": json.dumps({"source": "/" + "x" * 66_000}),
                "deep": "[" * 100_000 + "]" * 100_000,
                "relative": json.dumps({"source": "song.wav"})}[case]
        path = _request(tmp_path, case, text)
    status = submit_request_file(path)
    reply = json.loads(reply_path(path).read_text())
    assert reply["state"] == "error" and reply["code"] == "invalid_argument", reply
    assert status == 2


def _finished(folder: Path, job: str, state: str, finished: float, size: int) -> JobRecord:
    rec = _rec(job, ("127.0.0.1", 1))
    rec.folder = folder / job
    (rec.folder / "regions" / "vocals").mkdir(parents=True)
    (rec.folder / "regions" / "vocals" / "0-10.wav").write_bytes(b"r" * size)
    (rec.folder / "vocals.wav").write_bytes(b"s" * size)
    rec.state, rec.finished, rec.created = state, finished, finished
    return rec


def test_job_folders_keep_within_their_budget(tmp_path):
    """Done jobs lose their region files after the grace time; over the budget the
    oldest finished folders go whole; unfinished jobs are never touched."""
    from bridge.housekeeping import Housekeeper

    now = 10_000.0
    old = _finished(tmp_path, "old", "done", now - 700, 1000)
    recent = _finished(tmp_path, "recent", "done", now - 10, 1000)
    running = _finished(tmp_path, "running", "running", now - 900, 1000)
    running.finished = None
    keeper = Housekeeper(max_bytes=0, regions_grace_s=600)
    assert keeper.sweep([old, recent, running], now) == []
    assert not (old.folder / "regions").exists() and (old.folder / "vocals.wav").exists()
    assert (recent.folder / "regions").exists() and (running.folder / "regions").exists()
    third = _finished(tmp_path, "third", "failed", now - 5, 500)
    removed = Housekeeper(max_bytes=3000).sweep([old, recent, running, third], now)
    assert [r.id for r in removed] == ["old"]
    assert not old.folder.exists() and recent.folder.exists() and running.folder.exists()


def test_cache_command_reports_and_prunes(tmp_path, capsys):
    from bridge.cli import main
    from engine.cache import ResultCache

    cache = ResultCache(tmp_path / "results")
    for key in ("a" * 64, "b" * 64):
        staging = cache.staging()
        (staging / "vocals.wav").write_bytes(b"x" * 4096)
        cache.commit(key, staging, {"vocals": "vocals.wav"}, {})
    assert main(["cache", "info", "--json", "--cache-dir", str(tmp_path / "results")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 2 and info["bytes"] > 8192
    assert main(["cache", "prune", "--max-mb", "0.005", "--cache-dir",
                 str(tmp_path / "results")]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert len(cache.usage()) == 1


def test_recovery_removes_a_killed_region_write(tmp_path):
    """A server killed while writing a region file leaves a temporary file in
    ``regions/<stem>/``; the next server's recovery removes it (and keeps the job)."""
    from bridge.jobs import recover
    from protocol.files import TEMP_PREFIX, write_json_atomic
    from protocol.jobfiles import Manifest

    folder = tmp_path / "album" / "20260101-000000-0a1b2c3d"
    (folder / "regions" / "vocals").mkdir(parents=True)
    request = SplitRequest(source="/x.wav")
    write_json_atomic(folder / "manifest.json",
                      Manifest(job=folder.name, source="/x.wav", request=request,
                               state="running").to_payload())
    (tmp_path / INDEX).mkdir()
    (tmp_path / INDEX / folder.name).write_text(f"album/{folder.name}")
    stale = folder / "regions" / "vocals" / f"{TEMP_PREFIX}abc.wav"
    stale.write_bytes(b"half a region")
    assert [r.id for r in recover(tmp_path)] == [folder.name]
    assert not stale.exists()
