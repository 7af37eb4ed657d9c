"""The pyo player: plays a job's stems from shared memory, and the original mixture where
they are not final yet, one pyo block at a time (the signal path is in `bridge.preview`'s
docstring).

The player holds its parts: the listener's `Controls`, the pyo graph (`Mixer`), a
`Fader` for its two fades, a `StemSource` for the shared memory and a `PlayReport` of
what it played. What is left here is the per-block transport: where the playhead is,
whether it plays, and what each block copies into the graph. pyo and numpy are imported
when a player is built, never at import time.

Units: positions are frames at the song's rate (`int`), times are seconds (`float`),
gains are linear factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.preview.controls import Controls
from bridge.preview.crossfade import Fader, lookahead, ramp_frames, source_target
from bridge.preview.mixer import Mixer
from bridge.preview.report import PlayReport
from bridge.preview.source import StemSource
from protocol.messages import Message

if TYPE_CHECKING:
    import numpy as np

    from protocol.shm import ShmReader


class PreviewPlayer:
    """Plays a job's stems from shared memory, with the mixture where they are not final.

    Build it on a booted pyo server (`boot_server`), before ``server.start()``; it
    registers the server's per-block callback. Thread-safe: `handle` (OSC, keys) may be
    called from any thread while the audio thread runs the callback.

    Args:
        server: a booted pyo ``Server`` with 2 output channels; its buffer size is the
            block size, its rate must be `samplerate`.
        mixture: the original song, float32 ``(channels, frames)`` at `samplerate`
            (channels 1 or 2). Its length is the song's length.
        samplerate: Hz of the mixture and of the stems.
        stems: stem names, in the order of the shared-memory blocks.
        reader: the job's attached blocks (`protocol.shm.ShmReader`), or None to play
            the mixture only (no shared memory).
        start_at: seconds; where playback starts.
        ramp: seconds of every gain ramp and crossfade.
        capture: keep each block's output for `process` (offline rendering, tests).
        live: send the output to the sound card / JACK (``.out()``).

    Attributes: `controls` (`Controls`), `stats` (`PlayReport`: counters, events,
    timeline, ``news`` lines for the terminal, ``fault``).
    """

    def __init__(self, server: Any, mixture: np.ndarray, samplerate: int,
                 stems: Sequence[str], *, reader: ShmReader | None = None,
                 start_at: float = 0.0, ramp: float = 0.02, capture: bool = False,
                 live: bool = False) -> None:
        import numpy as np

        if mixture.ndim != 2 or mixture.shape[0] not in (1, 2):
            raise ValueError(f"mixture must be (1 or 2 channels, frames), got {mixture.shape}")
        self.stems = list(stems)
        if reader is not None and len(reader.data) != len(self.stems):
            raise ValueError(f"{len(self.stems)} stem names for {len(reader.data)} stems")
        self.server = server
        self.samplerate = int(samplerate)
        self.block = int(server.getBufferSize())
        self.channels = int(mixture.shape[0])
        self.frames = int(mixture.shape[1])
        self.ramp = float(ramp)
        self._mixture = np.ascontiguousarray(mixture, dtype=np.float32)
        self._ramp_frames = ramp_frames(self.ramp, self.samplerate)
        self._lookahead = lookahead(self.block, self._ramp_frames)
        self.controls = Controls(self.stems, self.frames, self.samplerate, status=self.status)
        self.stats = PlayReport(self.samplerate, self.block, self.ramp, self.stems)
        self._source = StemSource(reader, self.frames)
        # audio-thread state
        self._pos = min(max(0, round(start_at * self.samplerate)), self.frames)
        self._playing = False
        self._out = 0
        self._mixer = Mixer(server, len(self.stems), self.channels, self.ramp,
                            capture=capture, live=live)
        self._fader = Fader(self._mixer.xf, self._mixer.master, self.ramp, self._ramp_frames)
        server.setCallback(self._on_block)

    def close(self) -> None:
        """Drop every pyo object and mapped array, before the server's shutdown."""
        self._mixer.close()
        self._fader.release()
        self._source.detach()

    # ------------------------------------------------------------------ controls and state

    def handle(self, msg: Message) -> Message | None:
        """Apply one control message (`Controls.handle`): from any thread."""
        return self.controls.handle(msg)

    def check(self, msg: Message) -> None:
        """Raise `ProtocolError` as `handle` would, without applying anything."""
        self.controls.check(msg)

    @property
    def position(self) -> float:
        """Seconds: the playhead (start of the next block)."""
        return self._pos / self.samplerate

    @property
    def playing(self) -> bool:
        return self.controls.playing

    @property
    def ended(self) -> bool:
        """The playhead reached the end of the song and playback stopped there."""
        return self._pos >= self.frames and not self._playing

    @property
    def output_frames(self) -> int:
        return self._out

    def status(self) -> dict[str, Any]:
        """What ``/stembridge/preview/status`` answers (see PROTOCOL.md)."""
        controls, played = self.controls.state(), self.stats.status()
        return {"position": self._pos / self.samplerate,
                "duration": self.frames / self.samplerate,
                "playing": controls["playing"], "mode": played["mode"],
                "separation": played["separation"], "final_ahead": played["final_ahead"],
                **{k: controls[k] for k in ("stems", "gain", "gain_db", "mute", "solo")},
                "fallback_count": played["fallback_count"],
                "fallback_seconds": played["fallback_seconds"]}

    def report(self) -> dict[str, Any]:
        """Statistics of what was played (`PlayReport.as_dict`)."""
        return self.stats.as_dict(self._out)

    # ------------------------------------------------------------------ manual mode

    def process(self, blocks: int = 1) -> np.ndarray:
        """Compute `blocks` blocks on a ``manual`` server; returns the output, float32
        ``(2, blocks * block)`` when built with ``capture=True`` (else an empty array)."""
        import numpy as np

        n, capturing = self.block, self._mixer.capturing
        out = np.zeros((2, blocks * n if capturing else 0), np.float32)
        for k in range(blocks):
            self.server.process()
            if capturing:
                self._mixer.captured(out[:, k * n:(k + 1) * n])
        return out

    # ------------------------------------------------------------------ audio thread

    def _on_block(self) -> None:
        """pyo's per-block callback (audio thread): never raises into pyo."""
        try:
            self._block()
        except Exception as exc:  # a bug must not stop the audio: play silence, report it
            self.stats.fail(exc)
            self._mixer.silence()
            self._out += self.block

    def _block(self) -> None:
        fader, n = self._fader, self.block
        fader.begin_block()
        self._apply_controls()
        self._step_transport()
        if self._playing and self._pos < self.frames:
            target = self._target(self._pos)
            if target != fader.xf_target:
                fader.crossfade(target, self._out)
            self.stats.count(target, self._out, self._pos)
            self._fill(self._pos, target)
            if self.frames - self._pos <= self._ramp_frames + n and fader.master_target:
                fader.fade(0.0, self._out)  # fade out into the end of the song
            self.stats.mark(fader.mode(self._out), self._out, self._pos)
            self._pos += n
            if self._pos >= self.frames:
                self._playing = False
                self.controls.ended()
                self.stats.event("end of the song", self._out, self._pos)
        else:
            self._mixer.silence()
            self.stats.mark("silent", self._out, None)
        self._out += n

    def _target(self, pos: int) -> float:
        lead = self._source.lead(pos, self.stats)
        return source_target(lead, self._lookahead, self.frames - pos)

    def _apply_controls(self) -> None:
        gains, log = self.controls.take_changes()
        if gains is not None:
            self._mixer.set_gains(gains)
        for text in log:
            self.stats.event(text, self._out, self._pos)

    def _step_transport(self) -> None:
        """Seeks and stops fade the output out first (one ramp), then act; a start, or the
        first block after a seek, fades in."""
        fader = self._fader
        if self._playing:
            seek, want = self.controls.pending()
            if seek is None and want:
                return
            if fader.master_target != 0.0:
                fader.fade(0.0, self._out)
            if fader.fading(self._out):
                return  # the fade-out is still playing
            seek, want = self.controls.take_transport()
        else:
            seek, want = self.controls.take_transport(at_end=self._pos >= self.frames)
            if not want and seek is None:
                return
        if seek is not None:
            self._pos = min(seek, self.frames)
        self._playing = want and self._pos < self.frames
        if self._playing:
            self.stats.restart()
            fader.crossfade(self._target(self._pos), self._out, instant=True)  # silent now
            fader.fade(1.0, self._out)

    def _fill(self, pos: int, target: float) -> None:
        n, mixer = min(self.block, self.frames - pos), self._mixer
        for c, buf in enumerate(mixer.mix_bufs):
            buf[:n] = self._mixture[c, pos:pos + n]
            buf[n:] = 0
        silent = target == 0.0 and not self._fader.crossfading(self._out)
        if silent or not self._source.fill(pos, n, mixer.stem_bufs):
            mixer.zero_stems()
