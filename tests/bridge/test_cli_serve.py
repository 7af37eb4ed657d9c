"""`stembridge serve --detach` passes every option on to the detached server: a real
detached process on a chosen port, output root, models folder, device, preload and token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import soundfile as sf

from bridge.cli import _build_parser
from bridge.client import Client
from bridge.commands.server import detached_args
from protocol.errors import EXIT_SERVER_ERROR
from tests.conftest import music_like


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_detached_args_carry_every_option_but_the_token(tmp_path):
    args = _build_parser().parse_args([
        "serve", "--detach", "--host", "127.0.0.1", "--port", "4711", "--token", "t",
        "--device", "cpu", "--precision", "fp32", "--preload", "htdemucs",
        "--output-root", "rel/jobs", "--models-dir", str(tmp_path), "--model-memory-mb", "64"])
    got = detached_args(args)
    pairs = dict(zip(got[::2], got[1::2], strict=True))
    assert pairs == {"--host": "127.0.0.1", "--port": "4711", "--device": "cpu",
                     "--precision": "fp32", "--preload": "htdemucs",
                     "--output-root": os.path.abspath("rel/jobs"),
                     "--models-dir": str(tmp_path), "--model-memory-mb": "64.0"}
    assert "t" not in got, "the token never goes on the detached process's command line"
    assert detached_args(_build_parser().parse_args(["serve", "--detach"])) == ()


def test_detach_uses_port_output_root_models_device_preload_and_token(test_models_dir,
                                                                      tmp_path):
    port = _free_port()
    out = tmp_path / "my jobs"
    run = tmp_path / "run"
    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(run),
           "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}
    for name in ("STEMBRIDGE_HOST", "STEMBRIDGE_PORT", "STEMBRIDGE_TOKEN"):
        env.pop(name, None)
    res = subprocess.run([sys.executable, "-m", "bridge", "serve", "--detach", "--port",
                          str(port), "--output-root", str(out), "--models-dir",
                          str(test_models_dir), "--device", "cpu", "--precision", "fp32",
                          "--preload", "htdemucs", "--token", "tok"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads((run / "server.json").read_text())
    try:
        assert info["port"] == port and f":{port}" in res.stdout
        assert info["output_root"] == str(out) and info["token_required"] is True
        with Client("127.0.0.1", port, token="tok", timeout=10) as c:
            welcome = c.hello()
            assert welcome["device"] == "cpu" and welcome["precision"] == "fp32"
            assert welcome["models_loaded"] == ["htdemucs"]  # preloaded from --models-dir
            src = tmp_path / "song.wav"
            sf.write(src, music_like(2.0).T, 44100)
            accepted = c.submit(src, stems=4, model="htdemucs")
            assert str(accepted["folder"]).startswith(str(out))
        no_token = subprocess.run([sys.executable, "-m", "bridge", "ping", "--port", str(port)],
                                  env=env, capture_output=True, text=True, timeout=30)
        assert no_token.returncode == EXIT_SERVER_ERROR, no_token.stderr
        # a second --detach with other options reuses the server and says what differs
        other = subprocess.run([sys.executable, "-m", "bridge", "serve", "--detach",
                                "--output-root", str(tmp_path / "elsewhere")],
                               env={**env, "STEMBRIDGE_TOKEN": "tok"},
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        assert f"pid {info['pid']}" in other.stdout
        assert "--output-root" in other.stderr and "warning" in other.stderr
    finally:
        os.kill(info["pid"], signal.SIGTERM)
        deadline = time.time() + 20
        while (run / "server.json").exists() and time.time() < deadline:
            time.sleep(0.1)
