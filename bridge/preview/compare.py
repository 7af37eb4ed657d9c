"""A/B of a master against its original: ``stembridge preview FILE --master MASTER``.

Both files are decoded with the engine's audio stage, the original brought to the
master's rate (soxr) and both to one length; their integrated loudness (BS.1770,
`engine.mastering.meter.integrated`) sets a **match gain** that turns the louder one
down to the quieter, so the listener hears the processing, not the level. The player is
the stem preview's (`PreviewPlayer`) with one "stem", the master, and the original as
its mixture: the switch is the preview's crossfade (``xf``, one ramp, sample
continuous), driven by ``/stembridge/preview/ab`` (OSC) or the ``a`` key instead of by
the stems' final ranges. Seek, play, stop and status work as in the stem preview; the
status payload gains ``ab`` (``original`` or ``master``) and ``match_gain_db``.

Units: frames at the master's rate (`int`), loudness in LUFS, gains in dB unless linear.
Nothing heavy is imported at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.preview.player import PreviewPlayer

if TYPE_CHECKING:
    import numpy as np

    from bridge.preview.report import PlayReport

#: The one "stem" of an A/B session.
MASTER_STEM = "master"


@dataclass(frozen=True)
class Match:
    """The loudness match: each side's integrated loudness (LUFS, None: silent) and the
    linear gains that play them equally loud (the louder one turned down, never up)."""

    original_lufs: float | None
    master_lufs: float | None
    original_gain: float
    master_gain: float

    @property
    def gain_db(self) -> float:
        """dB added to the master relative to the original (negative: turned down)."""
        return round(20 * math.log10(self.master_gain / self.original_gain), 3)


def match(original_lufs: float | None, master_lufs: float | None) -> Match:
    """The `Match` of two integrated loudness figures (silence on either side: 0 dB)."""
    if original_lufs is None or master_lufs is None:
        return Match(original_lufs, master_lufs, 1.0, 1.0)
    diff = master_lufs - original_lufs
    down = 10 ** (-abs(diff) / 20)
    return Match(original_lufs, master_lufs, down if diff < 0 else 1.0,
                 down if diff > 0 else 1.0)


class ArraySource:
    """The master as the player's stem source (the `StemSource` interface): always
    final, one block window at a time. `data` float32 ``(channels, frames)``."""

    def __init__(self, data: np.ndarray) -> None:
        self.frames = int(data.shape[1])
        self._data: np.ndarray | None = data

    def lead(self, pos: int, report: PlayReport) -> int:
        report.separation = "done"
        report.lead_frames = max(0, self.frames - pos)
        return report.lead_frames

    def fill(self, pos: int, n: int, bufs: Any) -> bool:
        data = self._data
        if data is None:
            return False
        for row in bufs:
            for c, buf in enumerate(row):
                m = max(0, min(n, self.frames - pos))
                buf[:m] = data[min(c, data.shape[0] - 1), pos:pos + m]
                buf[m:] = 0
        return True

    def detach(self) -> None:
        self._data = None


class ABPlayer(PreviewPlayer):
    """Plays `original` or `master` (float32 ``(channels, frames)``, same shape, at
    `samplerate`), loudness matched by `gains` (`Match`), crossfading between them on
    ``/stembridge/preview/ab``. Starts on the original unless `on_master`. Other
    arguments as `PreviewPlayer`'s."""

    def __init__(self, server: Any, original: np.ndarray, master: np.ndarray,
                 samplerate: int, gains: Match, *, on_master: bool = False,
                 start_at: float = 0.0, ramp: float = 0.02, capture: bool = False,
                 live: bool = False) -> None:
        import numpy as np

        if original.shape != master.shape:
            raise ValueError(f"original {original.shape} and master {master.shape} differ")
        self.match = gains
        super().__init__(server, original * np.float32(gains.original_gain), samplerate,
                         [MASTER_STEM], start_at=start_at, ramp=ramp, capture=capture,
                         live=live)
        self.controls.enable_ab(on_master)
        self._source = ArraySource(np.ascontiguousarray(  # type: ignore[assignment]
            master * np.float32(gains.master_gain), dtype=np.float32))

    def _target(self, pos: int) -> float:
        self._source.lead(pos, self.stats)
        return 1.0 if self.controls.ab_master else 0.0

    def status(self) -> dict[str, Any]:
        return {**super().status(), "ab": "master" if self.controls.ab_master else "original",
                "match_gain_db": self.match.gain_db}


def load_pair(original: Path, master: Path) -> tuple[np.ndarray, np.ndarray, int, Match]:
    """Decode both files, resample the original to the master's rate, cut both to the
    shorter length; returns ``(original, master, samplerate, match)``. Raises
    `InvalidArgumentError` when the channel counts differ."""
    import numpy as np

    from engine.audio import load
    from engine.errors import InvalidArgumentError
    from engine.mastering.export import resample
    from engine.mastering.meter import integrated

    a, b = load(original)[0], load(master)[0]
    if a.samples.shape[0] != b.samples.shape[0]:
        raise InvalidArgumentError(
            f"{original} has {a.samples.shape[0]} channel(s), the master {master} "
            f"{b.samples.shape[0]}: compare a master with the file it was made from.")
    x = resample(a.samples, a.samplerate, b.samplerate)
    n = min(x.shape[1], b.samples.shape[1])
    x = np.ascontiguousarray(x[:, :n], dtype=np.float32)
    y = np.ascontiguousarray(b.samples[:, :n], dtype=np.float32)
    gains = match(integrated(x, b.samplerate), integrated(y, b.samplerate))
    return x, y, int(b.samplerate), gains
