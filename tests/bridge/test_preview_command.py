"""``stembridge preview`` as a command (`bridge.preview.command`): arguments, the check for
a sound card before any job, the server named by ``--host``/``--port``/``--token``, and
renders through a real `stembridge serve` with a tiny model (`--render`, automation,
the JSON report, the shared memory released on exit)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge import preview
from engine.errors import DeviceError
from protocol.errors import EXIT_NO_SERVER, EXIT_SERVER_ERROR
from tests.conftest import music_like


def _args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stembridge")
    preview.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["preview", *map(str, argv)])


def _song(tmp_path: Path) -> Path:
    src = tmp_path / "song.wav"
    sf.write(src, music_like(1.0, 44100, 2).T, 44100)
    return src


def test_arguments_are_checked(tmp_path):
    src = _song(tmp_path)
    for argv in ((src, "--render", tmp_path / "o.wav"),  # no --dur
                 (src, "--dur", "3"),  # no --render
                 (src, "--render", src, "--dur", "1"),  # would overwrite the input
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--buffer-size", "300"),
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--start-at", "5"),
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--port", "0"),
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--port", "70000"),
                 (src, "--render", tmp_path / "o.wav", "--dur", "1", "--osc-port", "-1")):
        assert preview.run(_args(*argv)) == 2, argv
    assert preview.run(_args(tmp_path / "missing.wav", "--render", tmp_path / "o.wav",
                             "--dur", "1")) == 3


def test_no_sound_card_is_a_clear_error_before_any_job(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyo")
    if preview.output_device_count() > 0:
        pytest.skip("this machine has an audio output device")
    with pytest.raises(DeviceError) as info:
        preview.check_audio_device("portaudio")
    assert info.value.exit_code == 9
    assert "--audio jack" in str(info.value) and "--render" in str(info.value)
    preview.check_audio_device("manual")  # rendering needs no device
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    assert preview.run(_args(_song(tmp_path))) == 9
    assert "--render" in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "no server was started or asked"


def test_a_server_named_by_address_must_answer_and_is_never_started(tmp_path, monkeypatch,
                                                                     capsys):
    pytest.importorskip("pyo")  # the render boots pyo's manual server before connecting
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nobody listens there once closed
    for argv, env in ((("--port", port), None), ((), str(port))):
        if env is None:
            monkeypatch.delenv("STEMBRIDGE_PORT", raising=False)
        else:
            monkeypatch.setenv("STEMBRIDGE_PORT", env)
        status = preview.run(_args(_song(tmp_path), "--render", tmp_path / "o.wav", "--dur",
                                   "1", *argv))
        err = capsys.readouterr().err
        assert status == EXIT_NO_SERVER, err
        assert f"127.0.0.1:{port}" in err and "[timeout]" in err
        assert "stembridge ping" in err  # the table's hint for the code
    assert not (tmp_path / "run").exists(), "no server was started, no discovery read"
    assert not (tmp_path / "o.wav").exists()


def test_the_token_goes_to_the_named_server(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyo")
    from bridge.client import ClientError
    from bridge.preview.job import connect
    from bridge.server import ServerConfig, StembridgeServer
    from engine.config import EngineConfig
    from engine.separator import Engine

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("STEMBRIDGE_TOKEN", raising=False)
    engine = Engine(EngineConfig(use_cache=False, models_dir=tmp_path / "models"))
    server = StembridgeServer(ServerConfig(port=0, token="s3cret", output_root=tmp_path / "jobs",
                                           write_discovery=False), engine).start()
    port = server.address[1]
    try:
        connect(None, port, "s3cret").close()  # answers the ping
        with pytest.raises(ClientError) as info:
            connect(None, port, None)
        assert info.value.code == "unauthorized"
        monkeypatch.setenv("STEMBRIDGE_TOKEN", "s3cret")  # the default, read at call time
        connect(None, port, None).close()
        status = preview.run(_args(_song(tmp_path), "--render", tmp_path / "o.wav", "--dur",
                                   "1", "--port", port, "--token", "wrong"))
        err = capsys.readouterr().err
        assert status == EXIT_SERVER_ERROR and "[unauthorized]" in err, err
        assert "--token" in err  # the table's hint
    finally:
        server.stop()
    assert not (tmp_path / "run").exists()


def _check_render(out: Path, mixture: np.ndarray, sr: int, mute_at_s: float) -> dict:
    """The render `out` plays exactly the stems' mix (vocals muted from `mute_at_s` on)
    where they were final and the mixture elsewhere; returns its report."""
    from multiprocessing import shared_memory

    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    audio = audio.T
    assert rate == sr and audio.shape == (2, round(2.5 * sr))
    folder = Path(report["job_folder"])
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    stems = {s: np.zeros((2, mixture.shape[1]), np.float32) for s in report["stems"]}
    final = np.zeros(mixture.shape[1], bool)
    for region in manifest["regions"]:
        for stem, rel in region["files"].items():
            stems[stem][:, region["start"]:region["end"]] = sf.read(
                folder / rel, dtype="float32", always_2d=True)[0].T
        final[region["start"]:region["end"]] = True
    mute_at = next(e["out"] for e in report["events"] if e["what"] == "mute vocals on")
    assert abs(mute_at - mute_at_s * sr) <= 256
    checked = {"stems": 0, "mixture": 0}
    for run in report["timeline"]:
        a, b, src_at = run["out_start"], min(run["out_end"], audio.shape[1]), run["src_start"]
        for lo, hi, gains in ((a, min(b, mute_at), (1, 1, 1, 1)),
                              (max(a, mute_at + int(0.02 * sr) + 2), b, (0, 1, 1, 1))):
            if hi <= lo or run["mode"] not in checked:
                continue
            at = src_at + lo - a
            if run["mode"] == "stems":
                assert final[at:at + hi - lo].all()
                want = sum(np.float32(g) * stems[s][:, at:at + hi - lo]
                           for g, s in zip(gains, report["stems"], strict=True))
            else:
                want = mixture[:, at:at + hi - lo]
            np.testing.assert_allclose(audio[:, lo:hi], want, atol=2e-6)
            checked[run["mode"]] += hi - lo
    assert checked["stems"] > 1.0 * sr, report["timeline"]
    assert report["fallback"]["seconds"] * sr == pytest.approx(
        sum(r["out_end"] - r["out_start"] for r in report["timeline"]
            if r["mode"] == "mixture"), abs=8 * 256)
    with pytest.raises(FileNotFoundError):  # released (or dropped) on exit
        shared_memory.SharedMemory(name=f"sb{report['job'][-8:]}_ix")
    return report


def test_render_through_a_real_server_plays_the_stems_mix_where_final(test_models_dir,
                                                                       tmp_path,
                                                                       monkeypatch):
    pytest.importorskip("pyo")
    run_dir = tmp_path / "run"
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(run_dir))
    monkeypatch.delenv("STEMBRIDGE_HOST", raising=False)
    monkeypatch.delenv("STEMBRIDGE_PORT", raising=False)
    with open(tmp_path / "server.log", "wb") as log:  # not a pipe: unread, it would block
        server = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", "0", "--precision", "fp32",
             "--models-dir", str(test_models_dir),
             "--output-root", str(tmp_path / "jobs")],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "server.json").exists():  # written once it listens
            assert server.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        sr = 44100
        src = tmp_path / "song.wav"
        mixture = music_like(5.0, sr, 2, seed=3)
        sf.write(src, mixture.T, sr, subtype="FLOAT")
        cues = tmp_path / "cues.jsonl"
        cues.write_text('{"t": 1.5, "address": "/stembridge/preview/mute", '
                        '"args": ["vocals", 1]}\n', encoding="utf-8")
        # On 2 CPU cores the tiny model separates at about real time, so a cold job would
        # leave a short render all mixture (the fallback is tested above): a first job
        # warms the model and the server's result cache, the preview's jobs then stream
        # the cached regions through the shared memory like any other job.
        from bridge.client import Client, read_discovery

        info = read_discovery()
        assert info is not None
        port = int(info["port"])
        with Client(info["host"], port, timeout=30) as c:
            warm = c.split(src, stems=4, model="htdemucs")
            assert [kind for kind, _ in c.events(warm, timeout=120)][-1] == "done"
        before = src.read_bytes()
        common = ("--stems", "4", "--model", "htdemucs", "--start-at", "1.0", "--dur", "2.5",
                  "--automation", cues, "--buffer-size", "256")
        # 1. the running server from its discovery record
        out = tmp_path / "preview.wav"
        t0 = time.perf_counter()
        assert preview.run(_args(src, "--render", out, *common)) == 0
        assert time.perf_counter() - t0 >= 2.5  # rendered at the pace it would play
        _check_render(out, mixture, sr, 1.5)
        # 2. the server named by --host/--port, with no discovery record to find
        elsewhere = tmp_path / "elsewhere"
        monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(elsewhere))
        out = tmp_path / "named.wav"
        assert preview.run(_args(src, "--render", out, *common, "--host", "127.0.0.1",
                                 "--port", port)) == 0
        assert _check_render(out, mixture, sr, 1.5)["job_state"] in ("running", "done")
        assert not elsewhere.exists(), "neither discovery nor a new server was used"
        assert src.read_bytes() == before
    finally:
        server.terminate()
        server.wait(20)
