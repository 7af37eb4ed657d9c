"""Discovery records (bridge.discovery): one record per server, the default server,
stale records of dead processes; `serve --detach`, SIGTERM and `stembridge stop` as
subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bridge import discovery
from bridge.client import read_discovery
from bridge.server import ServerConfig, StembridgeServer
from engine.config import EngineConfig
from engine.separator import Engine
from protocol.jobfiles import DiscoveryRecord


def _server(tmp_path: Path) -> StembridgeServer:
    return StembridgeServer(ServerConfig(port=0, output_root=tmp_path / "jobs"),
                            Engine(EngineConfig(precision="fp32"))).start()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_record_per_server_and_the_default_passes_on(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(run))
    first = _server(tmp_path)
    second = _server(tmp_path)
    try:
        p1, p2 = first.address[1], second.address[1]
        assert json.loads((run / "server.json").read_text())["port"] == p1
        assert {p.name for p in (run / "servers").iterdir()} == {f"{p1}.json", f"{p2}.json"}
        assert read_discovery()["port"] == p1 and read_discovery(p2)["port"] == p2
        second.stop()  # a foreground server on another port leaves the default alone
        assert read_discovery()["port"] == p1 and read_discovery(p2) is None
        assert json.loads((run / "server.json").read_text())["port"] == p1
        second = _server(tmp_path)
        p2 = second.address[1]
        first.stop()  # the default stops: another live server becomes the default
        assert json.loads((run / "server.json").read_text())["port"] == p2
        assert read_discovery()["port"] == p2 and read_discovery(p1) is None
    finally:
        first.stop()
        second.stop()
    assert not list(run.rglob("*.json"))


def test_records_of_dead_processes_are_ignored_and_removed(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(run))
    dead = DiscoveryRecord(host="127.0.0.1", port=47999, pid=_dead_pid())
    discovery.publish(dead)
    assert (run / "server.json").exists() and (run / "servers" / "47999.json").exists()
    assert read_discovery() is None and read_discovery(47999) is None
    assert not (run / "server.json").exists() and not (run / "servers" / "47999.json").exists()
    live = _server(tmp_path)  # a new server claims the default a dead one left
    try:
        discovery.publish(dead)
        assert read_discovery()["port"] == live.address[1]
    finally:
        live.stop()


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(tmp_path / "run"),
            "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}


def _cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_detach_ensure_running_and_sigterm(tmp_path):
    """`serve --detach` starts one server (idempotently), writes the discovery file, and
    SIGTERM shuts it down cleanly (discovery file removed)."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "STEMBRIDGE_RUNTIME_DIR": str(tmp_path / "run"),
           "STEMBRIDGE_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-m", "bridge", "serve", "--detach"], env=env,
                           capture_output=True, text=True, timeout=90)
    assert first.returncode == 0, first.stderr
    info = json.loads((tmp_path / "run" / "server.json").read_text())
    try:
        second = subprocess.run([sys.executable, "-m", "bridge", "serve", "--detach"], env=env,
                                capture_output=True, text=True, timeout=90)
        assert f"pid {info['pid']}" in second.stdout, "a second --detach reuses the server"
        ping = subprocess.run([sys.executable, "-m", "bridge", "ping"], env=env,
                              capture_output=True, text=True, timeout=30)
        assert ping.returncode == 0 and "pong" in ping.stdout
    finally:
        os.kill(info["pid"], signal.SIGTERM)
    deadline = time.time() + 20
    while (tmp_path / "run" / "server.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not (tmp_path / "run" / "server.json").exists()
    assert not list((tmp_path / "run" / "servers").glob("*.json"))
    ping = subprocess.run([sys.executable, "-m", "bridge", "ping"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode != 0


def test_stop_command_next_to_a_foreground_server(tmp_path):
    """A foreground `serve --port P` next to the detached server has its own record;
    `stembridge stop --port P` stops only it, and `stembridge stop` then the default."""
    env = _env(tmp_path)
    assert _cli(env, "serve", "--detach").returncode == 0
    detached = json.loads((tmp_path / "run" / "server.json").read_text())
    fg = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--port", "0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert fg.stdout is not None
        port = next(int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                    for line in fg.stdout if "listening on" in line)
        stopped = _cli(env, "stop", "--port", str(port))
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stdout
        assert fg.wait(30) == 0
        assert not (tmp_path / "run" / "servers" / f"{port}.json").exists()
        assert json.loads((tmp_path / "run" / "server.json").read_text()) == detached
        assert _cli(env, "ping").returncode == 0, "the detached server still runs"
        assert _cli(env, "stop").returncode == 0
        deadline = time.time() + 20
        while time.time() < deadline and discovery.pid_alive(detached["pid"]):
            time.sleep(0.1)
        assert not discovery.pid_alive(detached["pid"])
        assert not list((tmp_path / "run").rglob("*.json"))
        again = _cli(env, "stop")
        assert again.returncode == 11 and "not_running" in again.stderr
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
        if discovery.pid_alive(detached["pid"]):
            os.kill(detached["pid"], 9)


def test_ensure_running_finds_the_server_it_started(tmp_path, monkeypatch):
    from bridge.client import ensure_running

    monkeypatch.setenv("STEMBRIDGE_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("STEMBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    info = ensure_running(90.0)
    try:
        assert read_discovery()["pid"] == info["pid"]
        assert (tmp_path / "run" / "servers" / f"{info['port']}.json").exists()
        assert ensure_running(10.0)["pid"] == info["pid"], "idempotent"
    finally:
        os.kill(info["pid"], 15)
    deadline = time.time() + 20
    while time.time() < deadline and discovery.pid_alive(info["pid"]):
        time.sleep(0.1)
    assert not list((tmp_path / "run").rglob("*.json")), "SIGTERM removes the records"
