"""`stembridge ping | submit | status | cancel` against a real server process on loopback:
--host/--port/--token and their environment defaults, exit statuses from the one table,
client-side checks before sending, early job failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from protocol.errors import EXIT_CODES, EXIT_NO_SERVER, EXIT_SERVER_ERROR, ErrorCode
from tests.conftest import music_like

TOKEN = "s3cret-for-tests"


@pytest.fixture(scope="module")
def token_server(test_models_dir, tmp_path_factory):
    """A `stembridge serve` process with a token, on a free port; its discovery record is
    in its own runtime folder, so clients find it only through --host/--port."""
    root = tmp_path_factory.mktemp("cli-client-server")
    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(root / "run"),
           "STEMBRIDGE_CACHE_DIR": str(root / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0",
                             "--token", TOKEN, "--precision", "fp32", "--models-dir",
                             str(test_models_dir), "--output-root", str(root / "jobs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    port = None
    for line in proc.stdout:
        if "listening on" in line:
            port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
            break
    assert port is not None, "server did not start"
    yield port
    proc.terminate()
    proc.wait(20)


def _cli(args, tmp_path, **env):
    """A client command with an empty runtime folder (no discovery record)."""
    full = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(tmp_path / "no-run"),
            "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache"), **env}
    for name in ("STEMBRIDGE_HOST", "STEMBRIDGE_PORT", "STEMBRIDGE_TOKEN"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "bridge", *map(str, args)],
                          capture_output=True, text=True, env=full, timeout=120)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _song(path: Path, seconds: float = 2.0) -> Path:
    sf.write(path, music_like(seconds).T, 44100)
    return path


def test_ping_with_host_port_token_flags(token_server, tmp_path):
    res = _cli(["ping", "--host", "127.0.0.1", "--port", token_server, "--token", TOKEN],
               tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"127.0.0.1:{token_server}" in res.stdout


def test_ping_with_environment_defaults(token_server, tmp_path):
    res = _cli(["ping"], tmp_path, STEMBRIDGE_PORT=str(token_server), STEMBRIDGE_TOKEN=TOKEN)
    assert res.returncode == 0, res.stderr
    # the flag wins over the environment
    res = _cli(["ping", "--port", _free_port()], tmp_path, STEMBRIDGE_PORT=str(token_server),
               STEMBRIDGE_TOKEN=TOKEN)
    assert res.returncode == EXIT_NO_SERVER


def test_wrong_token_is_a_refusal_with_its_hint(token_server, tmp_path):
    res = _cli(["status", "--port", token_server, "--token", "wrong"], tmp_path)
    assert res.returncode == EXIT_SERVER_ERROR, res.stderr
    assert "error [unauthorized]" in res.stderr
    assert "Pass the server's token" in res.stderr  # the CLI hint from protocol.errors


def test_no_server_exits_11_with_the_hint(tmp_path):
    res = _cli(["status"], tmp_path)
    assert res.returncode == EXIT_NO_SERVER
    assert "error [not_running]" in res.stderr and "stembridge serve --detach" in res.stderr


def test_unknown_job_exits_12(token_server, tmp_path):
    for command in ("status", "cancel"):
        res = _cli([command, "no-such-job", "--port", token_server, "--token", TOKEN],
                   tmp_path)
        assert res.returncode == EXIT_SERVER_ERROR, res.stderr
        assert "error [unknown_job]" in res.stderr


def test_submit_missing_file_is_refused_before_sending(tmp_path):
    """Exit 3 at once, even though nothing listens on the port (no server is needed)."""
    res = _cli(["submit", tmp_path / "gone.wav", "--port", _free_port()], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_MISSING], res.stderr
    assert "input_missing" in res.stderr and "job" not in res.stdout
    (tmp_path / "folder.wav").mkdir()
    res = _cli(["submit", tmp_path / "folder.wav", "--port", _free_port()], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_MISSING], res.stderr


def test_submit_unknown_model_without_wait_reports_the_early_failure(token_server, tmp_path):
    src = _song(tmp_path / "a.wav")
    res = _cli(["submit", src, "--model", "htdemucz", "--port", token_server, "--token", TOKEN],
               tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.MODEL_UNKNOWN], (res.stdout, res.stderr)
    assert "model_unknown" in res.stderr
    assert "stembridge models list" in res.stderr  # the CLI hint


def test_submit_engine_error_exits_with_its_code(token_server, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    res = _cli(["submit", bad, "--wait", "--port", token_server, "--token", TOKEN], tmp_path)
    assert res.returncode == EXIT_CODES[ErrorCode.INPUT_UNREADABLE], (res.stdout, res.stderr)
    assert "input_unreadable" in res.stderr


def test_submit_relative_path_wait_and_no_wait(token_server, tmp_path):
    _song(tmp_path / "ok.wav")
    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(tmp_path / "no-run"),
           "STEMBRIDGE_PORT": str(token_server), "STEMBRIDGE_TOKEN": TOKEN}
    res = subprocess.run([sys.executable, "-m", "bridge", "submit", "ok.wav", "--stems", "4",
                          "--model", "htdemucs", "--wait"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    files = [line.split()[-1] for line in res.stdout.splitlines()[1:]]
    assert len(files) == 4 and all(Path(f).exists() for f in files)
    res = subprocess.run([sys.executable, "-m", "bridge", "submit", "ok.wav", "--stems", "4",
                          "--model", "htdemucs"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("job ")
