"""Helpers shared by the server tests: a client of an in-process server, a song file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import soundfile as sf

from bridge.client import Client
from tests.conftest import music_like


def client_of(srv: Any, **kw: Any) -> Client:
    """A client of the in-process server `srv` (10 s per answer)."""
    host, port = srv.address
    return Client(host, port, timeout=10.0, **kw)


def song(path: Path, seconds: float, sr: int = 44100, seed: int = 0) -> Path:
    """A music-like stereo float WAV of `seconds` at `sr` Hz, written to `path`."""
    sf.write(path, music_like(seconds, sr, 2, seed).T, sr, subtype="FLOAT")
    return path
