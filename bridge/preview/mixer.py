"""The pyo graph of the preview (the signal path in `bridge.preview`'s docstring): block-long
tables for each stem's channels and the mixture's, read by ``TableScan``; a ``SigTo``
gain ramp per stem, the crossfade ``xf`` and the ``master`` fade; the outputs, and
capture tables for offline rendering.

pyo and numpy are imported when a `Mixer` is built, never at import time.

Units: tables hold float32 samples, one block (``block`` frames) each; gains are linear.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from bridge.preview.device import pyo_module

if TYPE_CHECKING:
    import numpy as np


def _noop() -> None:
    """The callback left on a server after its player closed."""


class Mixer:
    """The graph on one booted pyo server.

    Args:
        server: a booted pyo ``Server`` (2 output channels); its buffer size is `block`.
        stems: how many stems.
        channels: the song's channels, 1 or 2 (a mono song plays on both outputs).
        ramp: seconds of every gain ramp.
        capture: keep each block's output (`captured`).
        live: send the output to the sound card / JACK (``.out()``).

    Attributes: ``stem_bufs[stem][channel]`` and ``mix_bufs[channel]``, numpy views of the
    tables the next block plays (write them in the server's callback); ``xf`` and
    ``master``, the two fade ramps.
    """

    def __init__(self, server: Any, stems: int, channels: int, ramp: float, *,
                 capture: bool = False, live: bool = False) -> None:
        import numpy as np

        pyo = pyo_module()
        self.server = server
        n = self.block = int(server.getBufferSize())
        self._stem_tabs = [[pyo.DataTable(size=n) for _ in range(channels)]
                           for _ in range(stems)]
        self.stem_bufs = [[np.asarray(t.getBuffer()) for t in row] for row in self._stem_tabs]
        self._mix_tabs = [pyo.DataTable(size=n) for _ in range(channels)]
        self.mix_bufs = [np.asarray(t.getBuffer()) for t in self._mix_tabs]
        self._gains = [pyo.SigTo(1.0, time=ramp, init=1.0) for _ in range(stems)]
        self._applied = [1.0] * stems
        self.xf = pyo.SigTo(0.0, time=ramp, init=0.0)
        self.master = pyo.SigTo(0.0, time=ramp, init=0.0)
        self._objects: list[Any] = []
        per_channel = []
        for c in range(channels):
            scans = [pyo.TableScan(self._stem_tabs[s][c]) * self._gains[s]
                     for s in range(stems)]
            stem_sum = pyo.Mix(scans, voices=1)
            mix = pyo.TableScan(self._mix_tabs[c])
            per_channel.append((stem_sum * self.xf + mix * (1 - self.xf)) * self.master)
            self._objects += [scans, stem_sum, mix]
        # a mono song plays on both outputs (a second object: one object has one output)
        self._outs = per_channel if channels == 2 else [per_channel[0], pyo.Sig(per_channel[0])]
        self._objects += per_channel
        if live:
            for o, sig in enumerate(self._outs):
                sig.out(o)
        self._cap_bufs: list[np.ndarray] = []
        if capture:
            caps = [pyo.DataTable(size=n) for _ in range(2)]
            self._objects += caps + [pyo.TableFill(sig, tab) for sig, tab in zip(
                self._outs, caps, strict=True)]
            self._cap_bufs = [np.asarray(t.getBuffer()) for t in caps]

    @property
    def capturing(self) -> bool:
        return bool(self._cap_bufs)

    def set_gains(self, gains: list[float]) -> None:
        """Ramp each stem to its linear gain (only those that changed)."""
        for s, g in enumerate(gains):
            if g != self._applied[s]:
                self._gains[s].value = g
                self._applied[s] = g

    def captured(self, out: np.ndarray) -> None:
        """Copy the last block's output into `out`, float32 ``(2, block)``."""
        for o in range(2):
            out[o] = self._cap_bufs[o]

    def zero_stems(self) -> None:
        for row in self.stem_bufs:
            for buf in row:
                buf[:] = 0

    def silence(self) -> None:
        """The next block plays nothing."""
        self.zero_stems()
        for buf in self.mix_bufs:
            buf[:] = 0

    def close(self) -> None:
        """Drop every pyo object, before the server's shutdown. Order matters: pyo frees a
        table's memory with the table even while a numpy view of it exists (the process
        then crashes), and pyo objects that outlive their server crash the next one."""
        with contextlib.suppress(Exception):
            self.server.setCallback(_noop)
        self.stem_bufs, self.mix_bufs, self._cap_bufs = [], [], []  # views first
        self._objects, self._outs, self._gains = [], [], []
        self._stem_tabs, self._mix_tabs = [], []
        self.xf = self.master = None
