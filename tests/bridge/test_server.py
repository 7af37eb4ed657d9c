"""`stembridge serve` over real UDP sockets on loopback, with tiny random-weight models."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.client import ClientError
from bridge.server import ServerConfig, StembridgeServer
from engine.config import EngineConfig
from engine.separator import Engine
from protocol.messages import Address, encode, pack
from tests.bridge.server_helpers import client_of, song, start_server


@pytest.fixture(scope="module")
def server(test_models_dir, tmp_path_factory):
    srv = start_server(test_models_dir, tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()




def test_hello_and_ping(server):
    with client_of(server) as c:
        hello = c.hello()
        assert hello["protocol_version"] == 1
        assert "spleeter-2stems" in hello["models_available"]
        assert hello["device"] == "cpu"
        assert c.ping() < 1.0


def test_split_streams_regions_and_files(server, tmp_path):
    src = song(tmp_path / "song.wav", 20.0, 48000)
    with client_of(server) as c:
        job = c.split(src, stems=4, model="htdemucs", start_at=10.0)
        progress, regions, done = [], [], None
        for kind, data in c.events(job, timeout=120):
            if kind == "progress":
                progress.append(data)
            elif kind == "region":
                regions.append(data)
                for path in data["files"].values():
                    assert Path(path).exists(), "a pushed region's file exists when pushed"
            else:
                done = data
        assert done is not None and progress and regions
        assert progress[-1][0] == progress[-1][1]
        # regions cover the file once, and the first one is not at the start (start_at=10s)
        cover = np.zeros(20 * 48000, int)
        for r in regions:
            cover[r["start"]:r["end"]] += 1
        assert (cover == 1).all()
        assert regions[0]["start"] > 0
        # region files hold exactly the final audio
        for stem, final in done["files"].items():
            full, sr = sf.read(final, dtype="float32")
            assert sr == 48000 and full.shape == (20 * 48000, 2)
            for r in regions:
                part, _ = sf.read(r["files"][stem], dtype="float32")
                np.testing.assert_array_equal(part, full[r["start"]:r["end"]])
        manifest = json.loads(Path(done["manifest"]).read_text())
        assert manifest["state"] == "done" and manifest["stems"] == list(done["files"])
        assert len(manifest["regions"]) == len(regions)
        assert done["metadata"]["model_name"] == "htdemucs"
        assert c.status(job)["state"] == "done"
        assert any(j["job"] == job for j in c.jobs())


def test_errors_are_answered(server, tmp_path):
    with client_of(server) as c:
        with pytest.raises(ClientError) as err:
            job = c.split(tmp_path / "missing.wav", stems=2)
            list(c.events(job))
        assert err.value.code == "input_missing"
        c.send(Address.SPLIT, {"request_id": 7, "source": "relative.wav"})
        with pytest.raises(ClientError) as err:
            c._expect({Address.PONG})
        assert err.value.code == "invalid_argument"
    with client_of(server) as c:
        with pytest.raises(ClientError) as err:
            c.split(song(tmp_path / "a.wav", 1.0), stems=2, output_root="../../etc")
        assert err.value.code == "invalid_argument"
        c.sock.sendto(encode("/stembridge/rm-rf", "x"), c.server)
        with pytest.raises(ClientError) as err:
            c._expect({Address.PONG})
        assert err.value.code == "unknown_address"
        c.sock.sendto(b"\x00garbage!", c.server)
        with pytest.raises(ClientError) as err:
            c._expect({Address.PONG})
        assert err.value.code == "bad_message"
        with pytest.raises(ClientError) as err:
            c.status("no-such-job")
        assert err.value.code == "unknown_job"


def test_source_changed_during_job_is_detected(server, tmp_path):
    src = song(tmp_path / "moving.wav", 40.0)
    with client_of(server) as c:
        job = c.split(src, stems=4, model="htdemucs")
        with pytest.raises(ClientError) as err:
            for kind, _ in c.events(job, timeout=120):
                if kind == "region" and src.exists():
                    song(src, 40.0, seed=9)
        assert "changed" in str(err.value)


def test_non_loopback_needs_token(tmp_path):
    with pytest.raises(ValueError, match="token"):
        StembridgeServer(ServerConfig(host="0.0.0.0", port=0, output_root=tmp_path,
                                      write_discovery=False), engine=object())


def test_token_is_enforced(test_models_dir, tmp_path):
    engine = Engine(EngineConfig(precision="fp32", models_dir=test_models_dir,
                                 cache_dir=tmp_path / "cache"))
    srv = StembridgeServer(ServerConfig(port=0, token="s3cret", output_root=tmp_path / "j",
                                        write_discovery=False), engine).start()
    try:
        with client_of(srv) as c:
            with pytest.raises(ClientError) as err:
                c.ping(timeout=5)
            assert err.value.code == "unauthorized"
        with client_of(srv, token="wrong") as c, pytest.raises(ClientError):
            c.hello()
        with client_of(srv, token="s3cret") as c:
            assert c.hello()["protocol_version"] == 1
            c.ping()
            job = c.split(song(tmp_path / "t.wav", 2.0), stems=4, model="htdemucs")
            assert [k for k, _ in c.events(job, timeout=60)][-1] == "done"
        assert srv.stats["unauthorized"] >= 2
    finally:
        srv.stop()


def _fuzz_packets(n: int, rng: random.Random) -> list[bytes]:
    good = [encode(Address.PING, 1), encode(Address.STATUS, ""),
            encode(Address.SPLIT, {"request_id": 1, "source": "/x.wav"}),
            encode(Address.HELLO, {"protocol": 1})]
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(rng.randbytes(rng.randint(0, 200)))
        elif kind == 1:
            g = rng.choice(good)
            out.append(g[: rng.randint(0, len(g) - 1)])
        elif kind == 2:
            g = bytearray(rng.choice(good))
            for _ in range(rng.randint(1, 4)):
                g[rng.randrange(len(g))] = rng.randrange(256)
            out.append(bytes(g))
        elif kind == 3:
            out.append(encode(f"/stembridge/{rng.randint(0, 9999)}", rng.randint(0, 9)))
        elif kind == 4:
            out.append(encode(Address.SPLIT, rng.randbytes(rng.randint(0, 64))))
        else:
            out.append(encode(Address.SPLIT, {"request_id": "x", "source": 5, "stems": 3})
                       if rng.random() < 0.5 else rng.randbytes(60000))
    return out


def test_fuzz_10000_packets_server_stays_up(server):
    rng = random.Random(1234)
    packets = _fuzz_packets(10_000, rng)
    before = dict(server.stats)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        unacked = 0
        for i, p in enumerate(packets):
            sock.sendto(p, server.address)
            unacked += len(p)
            if unacked > 64_000:  # flow control: UDP drops what overflows the receive buffer
                deadline = time.time() + 5
                while (server.stats["received"] - before["received"] < i + 1
                       and time.time() < deadline):
                    time.sleep(0.0005)
                unacked = 0
    finally:
        sock.close()
    with client_of(server) as c:
        deadline = time.time() + 30
        while server.stats["received"] - before["received"] < 10_000 and time.time() < deadline:
            time.sleep(0.05)
        assert c.ping(timeout=5) < 1.0
        assert c.hello()["protocol_version"] == 1
    got = {k: server.stats[k] - before[k] for k in before}
    assert got["received"] >= 10_000 + 2  # every packet arrived (plus ping and hello)
    assert got["internal"] == 0
    assert got["malformed"] + got["unknown"] + got["handled"] >= got["received"] - 2
    assert not any(r.request.source == "/x.wav" and r.state == "running"
                   for r in server.jobs.values())


def test_load_8_clients_5_jobs_each(server, tmp_path):
    sources = [song(tmp_path / f"c{i}.wav", 3.0, seed=i) for i in range(8)]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with client_of(server) as c:
                jobs = [c.split(sources[i], stems=2, start_at=0.5 * k) for k in range(5)]
                done = {}
                pending = set(jobs)
                while pending:
                    msg = c.receive(120)
                    if msg.address in (Address.REGION, Address.DONE, Address.ERROR):
                        from protocol.messages import unpack

                        body = unpack(msg.args[0])
                        assert body["job"] in jobs, "a client got another client's push"
                        assert msg.address != Address.ERROR, body
                        if msg.address == Address.DONE:
                            done[body["job"]] = body
                            pending.discard(body["job"])
                    elif msg.address == Address.PROGRESS:
                        assert msg.args[0] in jobs
                results[i] = [done[j] for j in jobs]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    folders = set()
    for i, dones in results.items():
        assert len(dones) == 5
        for d in dones:
            assert d["metadata"]["input"]["path"] == str(sources[i])
            folder = Path(d["manifest"]).parent
            folders.add(folder)
            vocals, _ = sf.read(d["files"]["vocals"])
            assert vocals.shape == (3 * 44100, 2)
    assert len(folders) == 40, "two jobs never share an output folder"


def test_too_many_jobs_per_client(test_models_dir, tmp_path):
    engine = Engine(EngineConfig(precision="fp32", models_dir=test_models_dir,
                                 cache_dir=tmp_path / "cache"))
    srv = StembridgeServer(ServerConfig(port=0, output_root=tmp_path / "j",
                                        max_jobs_per_client=2, write_discovery=False),
                           engine).start()
    try:
        src = song(tmp_path / "x.wav", 30.0)
        with client_of(srv) as c:
            c.split(src, stems=4, model="htdemucs")
            c.split(src, stems=4, model="htdemucs", priority="batch")
            with pytest.raises(ClientError) as err:
                c.split(src, stems=4, model="htdemucs")
            assert err.value.code == "too_many_jobs"
    finally:
        srv.stop()


def test_ping_cli_is_fast_and_light(server, tmp_path):
    """`stembridge ping` answers in well under a second and never imports torch."""
    import subprocess
    import sys

    host, port = server.address
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "server.json").write_text(json.dumps({"host": host, "port": port, "pid": 0}))
    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(runtime)}
    code = ("import sys, time; t=time.perf_counter(); from bridge.cli import main; "
            "rc = main(['ping']); print('torch' in sys.modules, time.perf_counter()-t); "
            "sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert "pong" in res.stdout
    torch_loaded, seconds = res.stdout.strip().splitlines()[-1].split()
    assert torch_loaded == "False"
    assert float(seconds) < 1.0


def test_pack_is_deterministic():
    assert pack({"a": 1, "b": [1, 2]}) == pack({"a": 1, "b": [1, 2]})


@pytest.mark.skipif(not __import__("shutil").which("oscsend"), reason="liblo-tools missing")
def test_liblo_oscsend_and_oscdump_drive_the_server(server, tmp_path):
    """A third-party OSC implementation (liblo) submits a split with plain arguments and
    receives the pushes: accepted, progress, region, done."""
    import subprocess

    src = song(tmp_path / "liblo song.wav", 4.0)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    log_path = tmp_path / "oscdump.txt"
    with open(log_path, "w") as log_file:
        dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        time.sleep(0.3)
        host, srv_port = server.address
        subprocess.run(["oscsend", host, str(srv_port), "/stembridge/split", "sifi", str(src),
                        "4", "0.0", str(port)], check=True, timeout=10)
        deadline = time.time() + 60
        text = ""
        while time.time() < deadline:
            text = log_path.read_text()
            if "/stembridge/job/done" in text or "/stembridge/error" in text:
                break
            time.sleep(0.1)
    finally:
        dump.terminate()
        dump.wait(5)
    # oscdump prints: <timetag> <address> <types> <values...>
    for address in ("/stembridge/job/accepted", "/stembridge/job/progress",
                    "/stembridge/job/region", "/stembridge/job/done"):
        assert address in text, text[-2000:]
    progress = next(line.split() for line in text.splitlines()
                    if "/stembridge/job/progress" in line)
    assert progress[2] == "siif"  # plain arguments, as PROTOCOL.md says
