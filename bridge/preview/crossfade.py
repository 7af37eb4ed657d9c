"""When the preview plays the stems and when the mixture, and the bookkeeping of its two
fades: the crossfade ``xf`` between them and the ``master`` fade around seeks, stops and
starts (the signal path is in `bridge.preview`'s docstring).

The stems take over only where they are final from the playhead through `lookahead`
frames (one block being played, one ramp, one more block), so a fade back to the mixture
is complete before the final stems run out. The ramps are duck-typed: anything with a
``value`` (target, linear) and a ``time`` (seconds to reach it), i.e. a pyo ``SigTo``;
nothing here imports pyo.

Units: frames at the song's rate (`int`); ``out`` counts output frames since the player
was built; ramps in seconds.
"""

from __future__ import annotations

import math
from typing import Any

#: A moment long before any output: "no fade in progress".
_LONG_AGO = -(10 ** 12)


def ramp_frames(ramp: float, samplerate: int) -> int:
    """Frames within which a ramp of `ramp` seconds has surely reached its target."""
    return math.ceil(ramp * samplerate) + 1


def lookahead(block: int, ramp_frames: int) -> int:
    """Frames that must be final ahead of the playhead before the stems play."""
    return 2 * block + ramp_frames


def source_target(lead: int, ahead: int, remaining: int) -> float:
    """1.0 (the stems) when `lead` final frames cover `ahead` frames, or everything up to
    the end of the song (`remaining` frames); else 0.0 (the mixture)."""
    return 1.0 if lead >= min(ahead, remaining) else 0.0


class Fader:
    """The crossfade and master ramps, and when each last moved.

    Args:
        xf: the stems/mixture crossfade ramp (1: stems, 0: mixture), starting at 0.
        master: the output's fade ramp, starting at 0 (silent).
        ramp: seconds of every fade.
        frames: `ramp_frames` of `ramp` at the song's rate.
    """

    def __init__(self, xf: Any, master: Any, ramp: float, frames: int) -> None:
        self.xf, self.master = xf, master
        self.ramp = ramp
        self.frames = frames
        self.xf_target = 0.0
        self.master_target = 0.0
        self._xf_since = _LONG_AGO
        self._master_since = 0
        self._restore = False

    def begin_block(self) -> None:
        """At the start of a block: after an instant jump, ramps take `ramp` again."""
        if self._restore:
            self.xf.time = self.ramp
            self._restore = False

    def crossfade(self, target: float, out: int, *, instant: bool = False) -> None:
        """Move the crossfade to `target` from output frame `out`; `instant` jumps there
        (only while the output is silent)."""
        if instant:
            self.xf.time = 0.0
            self._restore = True
            self._xf_since = _LONG_AGO
        else:
            self._xf_since = out
        self.xf.value = target
        self.xf_target = target

    def fade(self, target: float, out: int) -> None:
        """Fade the output to `target` (0 or 1) from output frame `out`."""
        self.master.value = target
        self.master_target = target
        self._master_since = out

    def crossfading(self, out: int) -> bool:
        """The crossfade is still moving at output frame `out`."""
        return out < self._xf_since + self.frames

    def fading(self, out: int) -> bool:
        """The master fade is still moving at output frame `out`."""
        return out < self._master_since + self.frames

    def mode(self, out: int) -> str:
        """What a block at `out` plays: ``fade`` while either ramp moves or the output is
        faded out, else ``stems`` or ``mixture``."""
        settled = out >= self.frames + max(self._xf_since, self._master_since)
        if not settled or self.master_target != 1.0:
            return "fade"
        return "stems" if self.xf_target == 1.0 else "mixture"

    def release(self) -> None:
        """Drop the ramps (before their pyo server shuts down)."""
        self.xf = self.master = None
