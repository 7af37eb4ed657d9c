"""Helpers shared by the server tests: an in-process server, a client of it, a song file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import soundfile as sf

from bridge.client import Client
from tests.conftest import music_like


def start_server(models_dir: Path, root: Path) -> Any:
    """An in-process fp32 server on a free loopback port: jobs under `root`/jobs, cache
    under `root`/cache, no discovery record. Stop it with `.stop()`."""
    from bridge.server import ServerConfig, StembridgeServer
    from engine.config import EngineConfig
    from engine.separator import Engine

    engine = Engine(EngineConfig(precision="fp32", models_dir=models_dir,
                                 cache_dir=root / "cache"))
    return StembridgeServer(ServerConfig(port=0, output_root=root / "jobs",
                                         write_discovery=False), engine).start()


def client_of(srv: Any, **kw: Any) -> Client:
    """A client of the in-process server `srv` (10 s per answer)."""
    host, port = srv.address
    return Client(host, port, timeout=10.0, **kw)


def song(path: Path, seconds: float, sr: int = 44100, seed: int = 0) -> Path:
    """A music-like stereo float WAV of `seconds` at `sr` Hz, written to `path`."""
    sf.write(path, music_like(seconds, sr, 2, seed).T, sr, subtype="FLOAT")
    return path
