"""Helpers shared by the REAPER script tests: a simulated REAPER whose scripts reach the
engine through this Python, and a song file. (lupa and soundfile are needed: import this
after the tests' `importorskip` of them.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import soundfile as sf

from tests.conftest import music_like
from tests.reaper_sim.sim import ReaperSim

SR = 44100


def scripted_reaper(tmp_path: Path, wait_s: float) -> Iterator[ReaperSim]:
    """A `ReaperSim` (resource folder and output folder under `tmp_path`) whose Settings
    name this Python as the engine; after the test its scripts are stopped and the
    processes they started get `wait_s` seconds to end. Yield from it in a fixture."""
    sim = ReaperSim(resource_path=tmp_path / "res")
    sim.ext_state[("stembridge", "engine")] = sys.executable
    sim.ext_state[("stembridge", "output_dir")] = str(tmp_path / "out")
    yield sim
    sim.terminate()
    for _argv, proc in sim.processes:
        proc.wait(wait_s)


def song(path: Path, seconds: float, seed: int = 0) -> Path:
    """A music-like stereo float WAV of `seconds` at 44.1 kHz, written to `path`."""
    sf.write(path, music_like(seconds, SR, seed=seed).T, SR, subtype="FLOAT")
    return path
