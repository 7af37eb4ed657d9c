"""Building a real Ardour session for the Ardour client tests.

Ardour's headless Lua (`ardour7-lua`) creates sessions and tracks but has no way to
import audio (that is the GUI editor's `do_import`/`do_embed`). So a session is made in
two steps: `ardour-lua` creates it with its tracks and saves it; then, like Ardour's own
import with "copy files to session", each audio file is copied into the session's
`interchange/<name>/audiofiles/` and its sources and regions are written into the
session file in Ardour 7's own format (times in superclock ticks). Ardour then loads it
like any saved session.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

SUPERCLOCK = 282240000  # Ardour 7's superclock ticks per second


def ardour_lua() -> str | None:
    """The installed headless Ardour interpreter (ardour7-lua, ardour8-lua, ...)."""
    found = sorted(glob.glob("/usr/bin/ardour*-lua") + glob.glob("/usr/local/bin/ardour*-lua"))
    return found[-1] if found else None


def run_lua(binary: str, script: Path, env: dict[str, str], timeout: float = 240) -> str:
    """Run `script` in ardour-lua; returns its output, raises with it on failure."""
    proc = subprocess.run([binary, str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or "Error:" in proc.stdout:
        raise RuntimeError(f"ardour-lua failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@dataclass
class Placed:
    """One region to put on a track: `file` (frames at `file_rate`), times in seconds."""

    track: str
    file: Path
    channels: int
    file_rate: int
    position: float
    start: float
    length: float
    gain: float = 1.0


def create(binary: str, folder: Path, name: str, rate: int, tracks: list[tuple[str, int]],
           env: dict[str, str]) -> Path:
    """A new saved session with audio tracks [(name, channels)]; returns its folder."""
    script = folder.parent / f"create-{name}.lua"
    lines = [f'assert(create_session("{folder}", "{name}", {rate}))']
    for track, channels in tracks:
        lines.append(f'Session:new_audio_track({channels}, 2, nil, 1, "{track}", '
                     "ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)")
    lines += ['Session:save_state("", false, false, false)', "close_session()"]
    script.write_text("\n".join(lines) + "\n")
    run_lua(binary, script, env)
    return folder


def _ticks(seconds: float) -> int:
    return round(seconds * SUPERCLOCK)


def add_regions(folder: Path, name: str, placed: list[Placed]) -> None:
    """Copy each file into the session and put its region on its track (session file)."""
    path = folder / f"{name}.ardour"
    xml = path.read_text()
    audio = folder / "interchange" / name / "audiofiles"
    audio.mkdir(parents=True, exist_ok=True)
    sources, regions = [], []
    next_id = 900000
    for p in placed:
        shutil.copyfile(p.file, audio / p.file.name)
        ids = []
        for ch in range(p.channels):
            next_id += 1
            ids.append(next_id)
            sources.append(f'<Source name="{p.file.name}" type="audio" flags="" id="{next_id}" '
                           f'captured-for="" channel="{ch}" origin="" gain="1" '
                           'natural-position="a0"/>')
        refs = " ".join(f'source-{i}="{s}" master-source-{i}="{s}"' for i, s in enumerate(ids))
        common = ('muted="0" opaque="1" locked="0" video-locked="0" automatic="0" import="1" '
                  'external="0" sync-marked="0" left-of-split="0" right-of-split="0" '
                  'hidden="0" position-locked="0" valid-transients="0" sync-position="a0" '
                  'ancestral-start="a0" ancestral-length="a0@a0" stretch="1" shift="1" '
                  'layering-index="0" tags="" contents="0" envelope-active="0" '
                  'default-fade-in="0" default-fade-out="0" fade-in-active="1" '
                  f'fade-out-active="1" type="audio" first-edit="nothing" {refs} '
                  f'channels="{p.channels}"')
        whole_s = sf.info(str(p.file)).frames / p.file_rate
        next_id += 1
        regions.append(f'<Region name="{p.file.stem}" whole-file="1" start="a0" '
                       f'length="a{_ticks(whole_s)}@a0" scale-amplitude="1" id="{next_id}" '
                       f"{common}/>")
        next_id += 1
        region = (f'<Region name="{p.file.stem}" whole-file="0" start="a{_ticks(p.start)}" '
                  f'length="a{_ticks(p.length)}@a{_ticks(p.position)}" '
                  f'scale-amplitude="{p.gain}" id="{next_id}" {common}/>')
        pattern = re.compile(r'(<Playlist [^>]*name="' + re.escape(p.track) + r'"[^>]*?)/>')
        def filled(m: re.Match[str], r: str = region) -> str:
            return m.group(1) + ">" + r + "</Playlist>"

        xml, n = pattern.subn(filled, xml, count=1)
        assert n == 1, f"no empty playlist for track {p.track}"
    xml = xml.replace("<Sources/>", "<Sources>" + "".join(sources) + "</Sources>", 1)
    xml = xml.replace("<Regions/>", "<Regions>" + "".join(regions) + "</Regions>", 1)
    path.write_text(xml)


def lua_env(base: dict[str, str], lib: Path, engine: str) -> dict[str, str]:
    """The environment of an ardour-lua run: the library folder and the engine."""
    env = dict(base)
    env["STEMBRIDGE_ARDOUR_LIB"] = str(lib)
    env["STEMBRIDGE_ENGINE"] = engine
    env.setdefault("ARDOUR_BACKEND", "None (Dummy)")
    env.pop("DISPLAY", None)
    return dict(os.environ, **env)
