"""Automation for offline renders (``--automation FILE``): control messages scheduled by
seconds of rendered output, read from a JSON-lines file, and the render loop that applies
them at block boundaries (PROTOCOL.md, "Preview control", automation file).

    {"t": 12.5, "address": "/stembridge/preview/karaoke"}
    {"t": 20, "address": "/stembridge/preview/gain", "args": ["drums", -6.0]}

Units: ``t`` is seconds of output from the start of the render (not song time: a seek
moves the song, not this clock). Reading a file imports neither pyo nor numpy.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.preview.controls import is_number
from protocol.messages import (
    PREVIEW_CONTROLS,
    Message,
    PreviewAddress,
    ProtocolError,
    decode,
    encode,
)

if TYPE_CHECKING:
    import numpy as np

    from bridge.preview.player import PreviewPlayer

#: What an automation line may send: every control but ``status`` (nobody to answer).
AUTOMATABLE = PREVIEW_CONTROLS - {PreviewAddress.STATUS}


@dataclass(frozen=True)
class Cue:
    """One automation event: `message` is applied at the first block starting at or after
    `t` seconds of rendered output; `line` is its line in the file (1-based)."""

    t: float
    message: Message
    line: int


def read_automation(path: str | os.PathLike[str]) -> list[Cue]:
    """Automation file: UTF-8 JSON lines ``{"t": seconds, "address": "/stembridge/preview/
    ...", "args": [...]}`` (blank lines and lines starting with ``#`` skipped). Each is
    encoded and decoded as an OSC datagram, so its arguments get exactly the wire types
    (JSON integer -> i, other number -> f, string -> s, true/false -> T/F). Returns the
    cues sorted by time (stable). Raises `InvalidArgumentError` naming the line."""
    from engine.errors import InvalidArgumentError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"Cannot read the automation file {path}: {exc}") from exc
    cues = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            cues.append(_cue(line, f"{path}:{number}", number))
    return sorted(cues, key=lambda c: c.t)


def _cue(line: str, where: str, number: int) -> Cue:
    from engine.errors import InvalidArgumentError

    try:
        item = json.loads(line)
    except ValueError as exc:
        raise InvalidArgumentError(f"{where}: not JSON ({exc}); each line is "
                                   '{"t": seconds, "address": ..., "args": [...]}') from exc
    if not isinstance(item, dict) or not is_number(item.get("t")) or not (
            math.isfinite(item["t"]) and item["t"] >= 0):
        raise InvalidArgumentError(f"{where}: needs \"t\", seconds >= 0")
    address, args = item.get("address"), item.get("args", [])
    if address not in AUTOMATABLE:
        raise InvalidArgumentError(f"{where}: unknown address {address!r}; use one of "
                                   f"{', '.join(sorted(AUTOMATABLE))}")
    if not isinstance(args, list):
        raise InvalidArgumentError(f"{where}: \"args\" must be a list")
    try:
        message = decode(encode(address, *args))
    except ProtocolError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from exc
    return Cue(float(item["t"]), message, number)


def due(cues: deque[Cue], seconds: float) -> list[Cue]:
    """Take from the front of `cues` (sorted by time) every cue due at a block that starts
    at `seconds` of output."""
    out = []
    while cues and cues[0].t <= seconds + 1e-9:
        out.append(cues.popleft())
    return out


def render(player: PreviewPlayer, seconds: float, cues: Sequence[Cue] = (), *,
           realtime: bool = True, stop: threading.Event | None = None) -> np.ndarray:
    """Run a ``manual`` server for `seconds` of output and return it, float32 ``(2,
    frames)`` at the player's rate. `realtime` paces the blocks at the rate they would
    play (so the separation has the time it has live: the render is what the preview
    would have played); cues are applied at block boundaries. The player must have been
    built with ``capture=True``. Raises `InvalidArgumentError` naming the cue's line when
    the player refuses one (checked before anything is rendered)."""
    import numpy as np

    from engine.errors import InvalidArgumentError

    for cue in cues:
        try:
            player.check(cue.message)
        except ProtocolError as exc:
            raise InvalidArgumentError(f"automation line {cue.line}: {exc}") from exc
    sr, n = player.samplerate, player.block
    frames = round(seconds * sr)
    blocks = math.ceil(frames / n)
    out = np.zeros((2, blocks * n), np.float32)
    pending = deque(cues)
    player.server.start()
    t0 = time.perf_counter()
    try:
        for k in range(blocks):
            for cue in due(pending, k * n / sr):
                try:
                    player.handle(cue.message)
                except ProtocolError as exc:  # e.g. the stems changed since `check`
                    raise InvalidArgumentError(f"automation line {cue.line}: {exc}") from exc
            out[:, k * n:(k + 1) * n] = player.process(1)
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if realtime:
                delay = t0 + (k + 1) * n / sr - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
    finally:
        player.server.stop()
    return out[:, :frames]
