"""Real-time stem preview: hear a song as stems while the engine is still separating it.

    stembridge preview song.wav --stems 4 --start-at 60        # sound card (PortAudio)
    stembridge preview song.wav --audio jack                    # a running JACK server
    stembridge preview song.wav --render out.wav --dur 20 --automation cues.jsonl

The job goes to the warm server (`bridge.client`, started if needed) with ``shm: true``;
the preview maps the stems' shared-memory blocks (`protocol.shm`, no copy of the stems)
and plays their mix through pyo from ``--start-at``. The engine separates in playback
order from there. Where the playhead reaches audio whose stems are not final yet (the
index block's final ranges), the preview plays the original mixture, decoded with
`engine.audio.load` at the source rate, and crossfades into the stems once they are
final, so there is never silence and never a click. Controls arrive as OSC over UDP on
127.0.0.1 (`protocol.messages.PreviewAddress`, PROTOCOL.md "Preview control") and, on a
terminal, as keys.

Signal path (pyo, at the source sample rate; every gain is a linear ``SigTo`` ramp of
``ramp`` seconds, default 20 ms)::

    out[o] = master * (xf * sum_s(g_s * stem_s[c]) + (1 - xf) * mixture[c])
             o = output channel 0, 1;  c = min(o, channels - 1) (a mono song plays on both)

``g_s`` is a stem's gain (0 when muted or not soloed), ``xf`` is 1 where the stems are
final from the playhead through ``block + ramp + block`` frames ahead (so a fade back to
the mixture is complete before the stems run out), ``master`` fades out and in around
seeks, stops and starts. Each pyo block (``block`` frames), a `Server.setCallback`
callback copies the block's window of every stem and of the mixture from the mapped
arrays into block-long pyo tables read by ``TableScan``: pyo's table readers index with
float32 positions, exact only below 2**24 frames (6.3 min at 44.1 kHz), so reading the
whole mapped stems through them would misplace samples in long songs; the block copy is
sample exact at any length and costs ``stems x channels x block`` floats per block.

Units: positions are frames at the source rate (`int`), times are seconds (`float`),
gains are linear factors unless named ``_db``. Nothing here imports pyo, numpy or the
engine at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.messages import (
    DEFAULT_PREVIEW_PORT,
    MAX_DATAGRAM,
    PREVIEW_CONTROLS,
    Address,
    Message,
    PreviewAddress,
    ProtocolError,
    decode,
    encode,
)

if TYPE_CHECKING:
    import numpy as np

    from bridge.client import Client
    from protocol.shm import ShmReader

#: Gain limits of the OSC controls.
GAIN_DB_RANGE = (-96.0, 12.0)
GAIN_LINEAR_RANGE = (0.0, 4.0)
#: Seconds the arrow keys seek.
KEY_SEEK_S = 5.0

NO_DEVICE_HELP = (
    "Use JACK instead (`--audio jack`, with a JACK server running, e.g. `jackd -d alsa` for "
    "a sound card or `jackd -d dummy` for none), or render offline without a sound card: "
    "`stembridge preview FILE --render out.wav --dur 30`.")


# --------------------------------------------------------------------------- pyo and devices


def _pyo() -> Any:
    """pyo, imported on first use (quietly: without wxPython it prints a banner)."""
    os.environ.setdefault("PYO_GUI_WX", "0")
    try:
        import pyo
    except ImportError as exc:
        from engine.errors import DeviceError

        raise DeviceError("The preview plays through pyo, which is not installed: "
                          "`pip install 'stembridge[preview]'` (or `pip install pyo`).") from exc
    return pyo


_COUNT_SCRIPT = ("import os; os.environ.setdefault('PYO_GUI_WX', '0'); import pyo; "
                 "print('stembridge-output-devices', len(pyo.pa_get_output_devices()[0]))")


def output_device_count(timeout: float = 30.0) -> int:
    """Number of audio output devices PortAudio sees, counted in a child process: pyo's
    PortAudio start crashes the whole process (SIGSEGV) when there is no device, so the
    preview asks first. A child that crashes or hangs counts as no device."""
    try:
        res = subprocess.run([sys.executable, "-c", _COUNT_SCRIPT], capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 0
    for line in res.stdout.splitlines():
        if line.startswith("stembridge-output-devices "):
            return int(line.split()[1])
    return 0


def check_audio_device(audio: str) -> None:
    """Raise `DeviceError` (exit status 9) naming the alternatives when `audio` cannot
    play here. ``portaudio``: at least one output device; ``jack``: checked when the pyo
    server boots (a missing JACK server fails cleanly there); ``manual``: always fine."""
    from engine.errors import DeviceError, InvalidArgumentError

    if audio not in ("portaudio", "jack", "manual"):
        raise InvalidArgumentError(f"Unknown audio back end {audio!r}: use portaudio or jack.")
    _pyo()  # not installed: say so, rather than "no device"
    if audio == "portaudio" and output_device_count() == 0:
        raise DeviceError("No audio output device found (PortAudio sees none), so the "
                          "preview cannot play here. " + NO_DEVICE_HELP)


def boot_server(audio: str, samplerate: int, block: int = 512) -> Any:
    """A booted pyo `Server` (stereo out, no input) at `samplerate` Hz, `block` frames per
    buffer. `audio`: ``portaudio``, ``jack`` or ``manual`` (no device: the caller calls
    ``server.process()`` per block). Raises `DeviceError` when it cannot boot or runs at
    another rate than the song's (the preview does not resample)."""
    from engine.errors import DeviceError

    pyo = _pyo()
    kwargs: dict[str, Any] = {"jackname": "stembridge-preview"} if audio == "jack" else {}
    server = pyo.Server(sr=samplerate, nchnls=2, buffersize=block, duplex=0, audio=audio,
                        **kwargs)
    server.setVerbosity(1)  # errors only
    server.boot()
    if not server.getIsBooted():
        if audio == "jack":
            raise DeviceError("Cannot start audio: no JACK server answers. Start one "
                              "(`jackd -d alsa` for a sound card, `jackd -d dummy` for none) "
                              "or render offline without a sound card: `stembridge preview "
                              "FILE --render out.wav --dur 30`.")
        raise DeviceError(f"Cannot start audio: the {audio} back end failed. " + NO_DEVICE_HELP)
    rate = int(round(server.getSamplingRate()))
    if rate != samplerate:
        server.shutdown()
        raise DeviceError(f"The audio device runs at {rate} Hz but the song is at "
                          f"{samplerate} Hz and the preview does not resample: run "
                          f"{'JACK' if audio == 'jack' else 'the device'} at {samplerate} "
                          "Hz, or render offline with --render.")
    return server


# --------------------------------------------------------------------------- the player


def _noop() -> None:
    """The callback left on a server after its player closed."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    """

    def __init__(self, server: Any, mixture: np.ndarray, samplerate: int,
                 stems: Sequence[str], *, reader: ShmReader | None = None,
                 start_at: float = 0.0, ramp: float = 0.02, capture: bool = False,
                 live: bool = False) -> None:
        import numpy as np

        if mixture.ndim != 2 or mixture.shape[0] not in (1, 2):
            raise ValueError(f"mixture must be (1 or 2 channels, frames), got {mixture.shape}")
        self.server = server
        self.samplerate = int(samplerate)
        self.block = int(server.getBufferSize())
        self.channels = int(mixture.shape[0])
        self.frames = int(mixture.shape[1])
        self.ramp = float(ramp)
        self._mixture = np.ascontiguousarray(mixture, dtype=np.float32)
        self._ramp_frames = math.ceil(self.ramp * self.samplerate) + 1
        self._lookahead = 2 * self.block + self._ramp_frames
        self.stems = list(stems)
        self.slots = len(self.stems)
        if reader is not None and len(reader.data) != self.slots:
            raise ValueError(f"{self.slots} stem names for {len(reader.data)} stems")
        self._lock = threading.Lock()
        # controls (any thread, under the lock)
        self._gain = [1.0] * self.slots
        self._mute = [False] * self.slots
        self._solo = [False] * self.slots
        self._dirty = False
        self._log: list[str] = []
        self._want_playing = True
        self._seek_to: int | None = None
        self._reader = reader
        self._data: list[list[np.ndarray]] | None = None if reader is None else reader.data
        # audio-thread state
        self._pos = min(max(0, round(start_at * self.samplerate)), self.frames)
        self._playing = False
        self._out = 0
        self._xf_target = 0.0
        self._xf_since = -(10 ** 12)
        self._xf_restore = False
        self._master_target = 0.0
        self._master_since = 0
        self._applied: list[float] = [1.0] * self.slots
        self._prev_target: float | None = None
        # statistics (written by the audio thread, read by anyone)
        self.fallback_count = 0
        self.fallback_frames = 0
        self.stems_frames = 0
        self.played_frames = 0
        self.first_stems_out: int | None = None
        self.first_stems_wall: float | None = None
        self.lead_frames = 0
        self.mode = "silent"
        self.separation = "waiting"
        self.fault: str | None = None
        self.events: list[dict[str, Any]] = []
        self.news: deque[str] = deque(maxlen=200)
        self.timeline: list[dict[str, Any]] = []
        self._build(capture, live)
        server.setCallback(self._on_block)

    # ------------------------------------------------------------------ pyo graph

    def _build(self, capture: bool, live: bool) -> None:
        import numpy as np

        pyo = _pyo()
        n = self.block
        self._stem_tabs = [[pyo.DataTable(size=n) for _ in range(self.channels)]
                           for _ in range(self.slots)]
        self._stem_bufs = [[np.asarray(t.getBuffer()) for t in row] for row in self._stem_tabs]
        self._mix_tabs = [pyo.DataTable(size=n) for _ in range(self.channels)]
        self._mix_bufs = [np.asarray(t.getBuffer()) for t in self._mix_tabs]
        self._gains = [pyo.SigTo(1.0, time=self.ramp, init=1.0) for _ in range(self.slots)]
        self._xf = pyo.SigTo(0.0, time=self.ramp, init=0.0)
        self._master = pyo.SigTo(0.0, time=self.ramp, init=0.0)
        self._objects: list[Any] = []
        per_channel = []
        for c in range(self.channels):
            stems = [pyo.TableScan(self._stem_tabs[s][c]) * self._gains[s]
                     for s in range(self.slots)]
            stem_sum = pyo.Mix(stems, voices=1)
            mix = pyo.TableScan(self._mix_tabs[c])
            per_channel.append((stem_sum * self._xf + mix * (1 - self._xf)) * self._master)
            self._objects += [stems, stem_sum, mix]
        # a mono song plays on both outputs (a second object: one object has one output)
        self._outs = per_channel if self.channels == 2 else [per_channel[0],
                                                             pyo.Sig(per_channel[0])]
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

    def close(self) -> None:
        """Drop every pyo object and mapped array, before the server's shutdown. Order
        matters: pyo frees a table's memory with the table even while a numpy view of it
        exists (the process then crashes), and pyo objects that outlive their server
        crash the next one."""
        with contextlib.suppress(Exception):
            self.server.setCallback(_noop)
        self._stem_bufs, self._mix_bufs, self._cap_bufs = [], [], []  # views first
        self._objects, self._outs, self._gains = [], [], []
        self._stem_tabs, self._mix_tabs = [], []
        self._xf = self._master = None
        with self._lock:
            self._reader, self._data = None, None

    # ------------------------------------------------------------------ controls

    def handle(self, msg: Message) -> Message | None:
        """Apply one control message (PROTOCOL.md, "Preview control"); returns the reply
        (only ``status`` has one). Raises `ProtocolError` with the wire error code
        (``unknown_address``, ``bad_message``, ``invalid_argument``) and changes nothing
        then."""
        return self._parse(msg)()

    def check(self, msg: Message) -> None:
        """Raise `ProtocolError` as `handle` would, without applying anything."""
        self._parse(msg)

    def _parse(self, msg: Message) -> Callable[[], Message | None]:
        a, args = msg.address, msg.args
        if a not in PREVIEW_CONTROLS:
            raise ProtocolError(f"Unknown address {a!r}; the preview accepts "
                                f"{', '.join(sorted(PREVIEW_CONTROLS))}.", "unknown_address")
        if a in (PreviewAddress.GAIN, PreviewAddress.GAIN_LINEAR):
            self._arity(msg, 2, 2)
            s = self._stem(args[0])
            value = self._number(msg, args[1])
            lo, hi = GAIN_DB_RANGE if a == PreviewAddress.GAIN else GAIN_LINEAR_RANGE
            if not lo <= value <= hi:
                span = (f"[{lo:+g} dB, {hi:+g} dB]" if a == PreviewAddress.GAIN
                        else f"[{lo:g}, {hi:g}] (linear)")
                raise ProtocolError(f"gain {value:g} is out of range {span}",
                                    "invalid_argument")
            lin = 10 ** (value / 20) if a == PreviewAddress.GAIN else value
            return lambda: self._set(self._gain, s, lin, f"gain {self.stems[s]} "
                                     f"{_db(lin)}")
        if a in (PreviewAddress.MUTE, PreviewAddress.SOLO):
            self._arity(msg, 1, 2)
            s = self._stem(args[0])
            flag = self._flag(msg, args[1]) if len(args) > 1 else None
            table = self._mute if a == PreviewAddress.MUTE else self._solo
            word = "mute" if a == PreviewAddress.MUTE else "solo"
            return lambda: self._set(table, s, (not table[s]) if flag is None else flag,
                                     f"{word} {self.stems[s]} {{}}")
        if a == PreviewAddress.KARAOKE:
            self._arity(msg, 0, 1)
            if "vocals" not in self.stems:
                raise ProtocolError("karaoke mutes the 'vocals' stem, which this job does "
                                    f"not have (stems: {', '.join(self.stems)})",
                                    "invalid_argument")
            s = self.stems.index("vocals")
            flag = self._flag(msg, args[0]) if args else True
            return lambda: self._set(self._mute, s, flag, "karaoke {}")
        if a == PreviewAddress.SEEK:
            self._arity(msg, 1, 1)
            seconds = self._number(msg, args[0])
            duration = self.frames / self.samplerate
            if not 0 <= seconds < duration:
                raise ProtocolError(f"seek position {seconds:g} s is outside the song "
                                    f"[0, {duration:.3f}) s", "invalid_argument")
            return lambda: self._transport(seek=round(seconds * self.samplerate))
        if a in (PreviewAddress.PLAY, PreviewAddress.STOP, PreviewAddress.RESET):
            self._arity(msg, 0, 1)
            if args and not self._flag(msg, args[0]):
                return lambda: None  # a button's release (0): nothing to do
            if a == PreviewAddress.RESET:
                return self._reset
            return lambda: self._transport(playing=a == PreviewAddress.PLAY)
        # STATUS
        self._arity(msg, 0, 1)
        if args and not (isinstance(args[0], int) and not isinstance(args[0], bool)
                         and 1 <= args[0] <= 65535):
            raise ProtocolError("status takes an optional reply port 1..65535 (i)",
                                "invalid_argument")
        return lambda: Message(PreviewAddress.STATUS_REPLY, (self.status(),))

    @staticmethod
    def _arity(msg: Message, lo: int, hi: int) -> None:
        if not lo <= len(msg.args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ProtocolError(f"{msg.address} takes {want} arguments, got "
                                f"{len(msg.args)} (see PROTOCOL.md, Preview control)")

    def _stem(self, arg: Any) -> int:
        names = self.stems
        if isinstance(arg, str) and arg in names:
            return names.index(arg)
        if isinstance(arg, int) and not isinstance(arg, bool) and 1 <= arg <= len(names):
            return arg - 1
        raise ProtocolError(f"unknown stem {arg!r}: this job's stems are "
                            f"{', '.join(names)} (or their numbers 1..{len(names)})",
                            "invalid_argument")

    @staticmethod
    def _number(msg: Message, arg: Any) -> float:
        if not _is_number(arg) or not math.isfinite(arg):
            raise ProtocolError(f"{msg.address}: expected a finite number (f or i), got "
                                f"{arg!r}", "invalid_argument")
        return float(arg)

    @staticmethod
    def _flag(msg: Message, arg: Any) -> bool:
        if isinstance(arg, bool):
            return arg
        if _is_number(arg):
            return arg != 0
        raise ProtocolError(f"{msg.address}: expected on/off as i, f, T or F, got {arg!r}",
                            "invalid_argument")

    def _set(self, table: list[Any], s: int, value: Any, text: str) -> None:
        with self._lock:
            table[s] = value
            self._dirty = True
            self._log.append(text.format("on" if value is True else "off")
                             if value is True or value is False else text)

    def _reset(self) -> None:
        with self._lock:
            n = self.slots
            self._gain[:] = [1.0] * n
            self._mute[:] = [False] * n
            self._solo[:] = [False] * n
            self._dirty = True
            self._log.append("reset")

    def _transport(self, *, playing: bool | None = None, seek: int | None = None) -> None:
        with self._lock:
            if playing is not None:
                self._want_playing = playing
                self._log.append("play" if playing else "stop")
            if seek is not None:
                self._seek_to = seek
                self._log.append(f"seek {seek / self.samplerate:.3f} s")

    def _effective(self) -> list[float]:
        """Linear gain per slot: 0 when muted (mute wins over solo) or when another stem is
        soloed and this one is not."""
        soloing = any(self._solo)
        return [0.0 if m or (soloing and not so) else g
                for g, m, so in zip(self._gain, self._mute, self._solo, strict=True)]

    # ------------------------------------------------------------------ state

    @property
    def position(self) -> float:
        """Seconds: the playhead (start of the next block)."""
        return self._pos / self.samplerate

    @property
    def playing(self) -> bool:
        with self._lock:
            return self._want_playing

    @property
    def ended(self) -> bool:
        """The playhead reached the end of the song and playback stopped there."""
        return self._pos >= self.frames and not self._playing

    @property
    def output_frames(self) -> int:
        return self._out

    def status(self) -> dict[str, Any]:
        """What ``/stembridge/preview/status`` answers (see PROTOCOL.md)."""
        with self._lock:
            gains, mute, solo = list(self._gain), list(self._mute), list(self._solo)
            playing = self._want_playing
        return {
            "position": self._pos / self.samplerate,
            "duration": self.frames / self.samplerate,
            "playing": playing, "mode": self.mode, "separation": self.separation,
            "final_ahead": self.lead_frames / self.samplerate,
            "stems": list(self.stems), "gain": gains,
            "gain_db": [_db_value(g) for g in gains], "mute": mute, "solo": solo,
            "fallback_count": self.fallback_count,
            "fallback_seconds": self.fallback_frames / self.samplerate,
        }

    def report(self) -> dict[str, Any]:
        """Statistics of what was played: frames and seconds at the source rate."""
        sr = self.samplerate
        return {
            "samplerate": sr, "block": self.block, "ramp_s": self.ramp,
            "stems": list(self.stems), "output_s": self._out / sr,
            "played_s": self.played_frames / sr, "stems_s": self.stems_frames / sr,
            "fallback": {"count": self.fallback_count,
                         "seconds": self.fallback_frames / sr},
            "first_stems_s": None if self.first_stems_out is None
            else self.first_stems_out / sr,
            "separation": self.separation, "fault": self.fault,
            "timeline": list(self.timeline), "events": list(self.events),
        }

    # ------------------------------------------------------------------ manual mode

    def process(self, blocks: int = 1) -> np.ndarray:
        """Compute `blocks` blocks on a ``manual`` server; returns the output, float32
        ``(2, blocks * block)`` when built with ``capture=True`` (else an empty array)."""
        import numpy as np

        out = np.zeros((2, blocks * self.block if self._cap_bufs else 0), np.float32)
        for k in range(blocks):
            self.server.process()
            if self._cap_bufs:
                for o in range(2):
                    out[o, k * self.block:(k + 1) * self.block] = self._cap_bufs[o]
        return out

    # ------------------------------------------------------------------ audio thread

    def _on_block(self) -> None:
        """pyo's per-block callback (audio thread): never raises into pyo."""
        try:
            self._block()
        except Exception as exc:  # a bug must not stop the audio: play silence, report it
            if self.fault is None:
                self.fault = f"{type(exc).__name__}: {exc}"
                self.news.append(f"internal error in the audio callback: {self.fault}")
            self._silence()
            self._out += self.block

    def _block(self) -> None:
        if self._xf_restore:
            self._xf.time = self.ramp
            self._xf_restore = False
        self._apply_controls()
        self._step_transport()
        n = self.block
        if self._playing and self._pos < self.frames:
            lead = self._lead(self._pos)
            target = 1.0 if lead >= min(self._lookahead, self.frames - self._pos) else 0.0
            if target != self._xf_target:
                self._set_xf(target)
            self._count(target)
            self._fill(self._pos, target)
            if self.frames - self._pos <= self._ramp_frames + n and self._master_target:
                self._set_master(0.0)  # fade out into the end of the song
            self._mark(self._mode(), self._pos)
            self._pos += n
            self.played_frames += n
            if self._pos >= self.frames:
                self._playing = False
                with self._lock:
                    self._want_playing = False
                self._event("end of the song")
        else:
            self._silence()
            self._mark("silent", None)
        self._out += n

    def _apply_controls(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            eff = self._effective()
            self._dirty = False
            log, self._log = self._log, []
        for s, g in enumerate(eff):
            if g != self._applied[s]:
                self._gains[s].value = g
                self._applied[s] = g
        for text in log:
            self._event(text)

    def _step_transport(self) -> None:
        """Seeks and stops fade the output out first (one ramp), then act; a start, or the
        first block after a seek, fades in."""
        with self._lock:
            seek, want = self._seek_to, self._want_playing
        if self._playing:
            if seek is None and want:
                return
            if self._master_target != 0.0:
                self._set_master(0.0)
            if self._out < self._master_since + self._ramp_frames:
                return  # the fade-out is still playing
            with self._lock:
                seek, want, self._seek_to = self._seek_to, self._want_playing, None
        else:
            with self._lock:
                seek, self._seek_to = self._seek_to, None
                if self._pos >= self.frames and seek is None:
                    self._want_playing = False  # at the end: nothing to play
                want = self._want_playing
            if not want and seek is None:
                return
        if seek is not None:
            self._pos = min(seek, self.frames)
        self._playing = want and self._pos < self.frames
        if self._playing:
            self._prev_target = None
            lead = self._lead(self._pos)
            target = 1.0 if lead >= min(self._lookahead, self.frames - self._pos) else 0.0
            self._set_xf(target, instant=True)  # the output is silent: no ramp needed
            self._set_master(1.0)

    def _lead(self, pos: int) -> int:
        """Frames of final stems from `pos` on (0 when `pos` is not final)."""
        with self._lock:
            reader = self._reader
        if reader is None:
            self.lead_frames = 0
            return 0
        try:
            snap = reader.index()
        except (TimeoutError, ValueError):
            return 0
        self.separation = {0: "running", 1: "done", 2: "failed"}.get(snap.state, "running")
        end = min(self.frames, snap.frames)
        lead = 0
        for a, b in snap.ranges:
            if a <= pos < b:
                lead = min(b, end) - pos
                break
        self.lead_frames = max(0, lead)
        return self.lead_frames

    def _set_xf(self, target: float, instant: bool = False) -> None:
        if instant:
            self._xf.time = 0.0
            self._xf_restore = True
            self._xf_since = -(10 ** 12)
        else:
            self._xf_since = self._out
        self._xf.value = target
        self._xf_target = target

    def _set_master(self, target: float) -> None:
        self._master.value = target
        self._master_target = target
        self._master_since = self._out

    def _count(self, target: float) -> None:
        n = self.block
        if target == 0.0:
            self.fallback_frames += n
            if self._prev_target != 0.0:
                self.fallback_count += 1
                self._event("mixture (the stems are not final here yet)")
        else:
            self.stems_frames += n
            if self._prev_target != 1.0:
                self._event("stems")
            if self.first_stems_out is None:
                self.first_stems_out = self._out
                self.first_stems_wall = time.perf_counter()
        self._prev_target = target

    def _mode(self) -> str:
        settled = self._out >= self._ramp_frames + max(self._xf_since, self._master_since)
        if not settled or self._master_target != 1.0:
            return "fade"
        return "stems" if self._xf_target == 1.0 else "mixture"

    def _fill(self, pos: int, target: float) -> None:
        n = min(self.block, self.frames - pos)
        for c, buf in enumerate(self._mix_bufs):
            buf[:n] = self._mixture[c, pos:pos + n]
            buf[n:] = 0
        with self._lock:
            data = self._data
        fading = self._out < self._xf_since + self._ramp_frames
        if data is None or (target == 0.0 and not fading):
            for row in self._stem_bufs:
                for buf in row:
                    buf[:] = 0
            return
        for s, row in enumerate(self._stem_bufs):
            for c, buf in enumerate(row):
                src = data[s][min(c, len(data[s]) - 1)]
                m = max(0, min(n, src.shape[0] - 1 - pos))
                buf[:m] = src[pos:pos + m]
                buf[m:] = 0

    def _silence(self) -> None:
        for row in self._stem_bufs:
            for buf in row:
                buf[:] = 0
        for buf in self._mix_bufs:
            buf[:] = 0

    def _event(self, what: str) -> None:
        self.events.append({"out": self._out, "pos": self._pos, "what": what})
        self.news.append(f"{_clock(self._pos / self.samplerate)}  {what}")

    def _mark(self, mode: str, src: int | None) -> None:
        """Extend the timeline: runs of blocks with one mode and contiguous positions."""
        n, last = self.block, self.timeline[-1] if self.timeline else None
        self.mode = mode
        if last is not None and last["mode"] == mode and last["out_end"] == self._out and (
                src is None or last["src_start"] + (last["out_end"] - last["out_start"])
                == src):
            last["out_end"] += n
            return
        self.timeline.append({"mode": mode, "out_start": self._out, "out_end": self._out + n,
                              "src_start": src})


def _db_value(gain: float) -> float | None:
    return None if gain <= 0 else round(20 * math.log10(gain), 3)


def _db(gain: float) -> str:
    value = _db_value(gain)
    return "-inf dB" if value is None else f"{value:+.1f} dB"


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:06.3f}"


# --------------------------------------------------------------------------- OSC control


class PreviewOscServer:
    """The preview's control socket: OSC over UDP on 127.0.0.1 only, decoded with the
    project's codec; every malformed or refused datagram is answered with
    ``/stembridge/error`` (payload as the server's: job, request_id, code, message)."""

    def __init__(self, port: int = DEFAULT_PREVIEW_PORT) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(("127.0.0.1", port))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.2)
        self.received = 0
        self.errors = 0
        self._handler: Callable[[Message], Message | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self, handler: Callable[[Message], Message | None]) -> PreviewOscServer:
        """Serve in a daemon thread, passing each decoded message to `handler` (usually
        `PreviewPlayer.handle`)."""
        self._handler = handler
        self._thread = threading.Thread(target=self._loop, name="preview-osc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self.answer(data, addr)
            if answer is not None:
                with contextlib.suppress(OSError):
                    self.sock.sendto(*answer)

    def answer(self, data: bytes, addr: tuple[str, int]) -> tuple[bytes, tuple[str, int]] | None:
        """The reply datagram and where it goes, for one received datagram."""
        self.received += 1
        try:
            msg = decode(data)
        except ProtocolError as exc:
            return self._error(addr, exc)
        if msg.address in (Address.ERROR, PreviewAddress.STATUS_REPLY):
            return None  # never answer an answer (two peers could ping-pong forever)
        assert self._handler is not None
        try:
            reply = self._handler(msg)
        except ProtocolError as exc:
            return self._error(addr, exc)
        if reply is None:
            return None
        port = msg.args[0] if msg.address == PreviewAddress.STATUS and msg.args else addr[1]
        return encode(reply.address, *reply.args), (addr[0], int(port))

    def _error(self, addr: tuple[str, int], exc: ProtocolError) -> tuple[bytes, tuple[str, int]]:
        self.errors += 1
        return encode(Address.ERROR, {"job": "", "request_id": -1, "code": exc.code,
                                      "message": str(exc)}), addr


# --------------------------------------------------------------------------- automation


@dataclass(frozen=True)
class Cue:
    """One automation event: `message` is applied at the first block starting at or after
    `t` seconds of rendered output."""

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
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InvalidArgumentError(f"{where}: not JSON ({exc}); each line is "
                                       '{"t": seconds, "address": ..., "args": [...]}') from exc
        if not isinstance(item, dict) or not _is_number(item.get("t")) or not (
                math.isfinite(item["t"]) and item["t"] >= 0):
            raise InvalidArgumentError(f"{where}: needs \"t\", seconds >= 0")
        address, args = item.get("address"), item.get("args", [])
        if address not in PREVIEW_CONTROLS or address == PreviewAddress.STATUS:
            raise InvalidArgumentError(f"{where}: unknown address {address!r}; use one of "
                                       f"{', '.join(sorted(PREVIEW_CONTROLS - {PreviewAddress.STATUS}))}")
        if not isinstance(args, list):
            raise InvalidArgumentError(f"{where}: \"args\" must be a list")
        try:
            message = decode(encode(address, *args))
        except ProtocolError as exc:
            raise InvalidArgumentError(f"{where}: {exc}") from exc
        cues.append(Cue(float(item["t"]), message, number))
    return sorted(cues, key=lambda c: c.t)


def render(player: PreviewPlayer, seconds: float, cues: Sequence[Cue] = (), *,
           realtime: bool = True, stop: threading.Event | None = None) -> np.ndarray:
    """Run a ``manual`` server for `seconds` of output and return it, float32 ``(2,
    frames)`` at the player's rate. `realtime` paces the blocks at the rate they would
    play (so the separation has the time it has live: the render is what the preview
    would have played); cues are applied at block boundaries. The player must have been
    built with ``capture=True``."""
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
            while pending and pending[0].t <= k * n / sr + 1e-9:
                cue = pending.popleft()
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


# --------------------------------------------------------------------------- terminal keys


class KeyControl:
    """Keys on a terminal (only when stdin is a TTY): 1-6 mute/unmute a stem, space
    play/stop, left/right arrows seek -/+5 s, q quit. Keys become the same control
    messages as OSC."""

    def __init__(self, player: PreviewPlayer, quit_event: threading.Event,
                 stream: Any = None) -> None:
        self.player = player
        self.quit = quit_event
        self.stream = stream if stream is not None else sys.stdin
        self._saved: Any = None
        self._stop = threading.Event()

    def start(self) -> KeyControl:
        try:
            if not self.stream.isatty():
                return self
            import termios
            import tty

            fd = self.stream.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (ImportError, OSError, ValueError, AttributeError):
            return self
        self._thread = threading.Thread(target=self._loop, args=(fd,), name="preview-keys",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)  # before the caller closes the terminal it reads
        if self._saved is not None:
            import termios

            with contextlib.suppress(OSError, ValueError):
                termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def _loop(self, fd: int) -> None:
        import select

        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(fd, 16)
            except (OSError, ValueError):  # the terminal went away
                return
            while data:
                key, data = (data[:3], data[3:]) if data.startswith(b"\x1b[") else (
                    data[:1], data[1:])
                msg = self.message(key)
                if msg is not None:
                    try:
                        self.player.handle(msg)
                    except ProtocolError as exc:
                        self.player.news.append(f"key {key!r}: {exc}")

    def message(self, key: bytes) -> Message | None:
        """The control message of one key (None: not a control key)."""
        p = self.player
        if key in (b"q", b"Q"):
            self.quit.set()
        elif key.isdigit() and 1 <= int(key) <= min(6, len(p.stems)):
            return Message(PreviewAddress.MUTE, (int(key),))
        elif key == b" ":
            return Message(PreviewAddress.STOP if p.playing else PreviewAddress.PLAY, ())
        elif key in (b"\x1b[C", b"\x1b[D"):
            step = KEY_SEEK_S if key == b"\x1b[C" else -KEY_SEEK_S
            last = (p.frames - 1) / p.samplerate
            return Message(PreviewAddress.SEEK, (min(max(0.0, p.position + step), last),))
        return None


# --------------------------------------------------------------------------- the job


class _JobFollower(threading.Thread):
    """Reads the job's pushes on the client's socket; attaches to the shared memory that
    ``job/started`` names."""

    def __init__(self, client: Client, job: str) -> None:
        super().__init__(name="preview-job", daemon=True)
        self.client, self.job = client, job
        self.state = "queued"
        self.error: Exception | None = None
        self.started: dict[str, Any] | None = None
        self.reader: ShmReader | None = None
        self.news: deque[str] = deque(maxlen=50)
        self._halt = threading.Event()

    def run(self) -> None:
        from bridge.client import ClientError

        while not self._halt.is_set():
            try:  # short waits, so that `stop` is noticed; no push is lost in between
                for kind, data in self.client.events(self.job, timeout=0.25):
                    if kind == "started":
                        self._on_started(data)
                    elif kind == "done":
                        self.state = "done"
                        self.news.append("separation done")
                return
            except ClientError as err:
                if err.code == "timeout":
                    continue
                self.state, self.error = "failed", err
                self.news.append(f"the job failed [{err.code}]: {err}; playing the mixture "
                                 "where the stems are missing")
                return
            except OSError:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(2.0)

    def _on_started(self, data: dict[str, Any]) -> None:
        from protocol.shm import ShmReader

        self.state = "running"
        shm = data.get("shm")
        reader = None
        if not shm:
            self.news.append("the server gave no shared memory (is it older than the "
                             "client?); playing the mixture only")
        else:
            try:
                reader = ShmReader(shm["index"], [shm["blocks"][s] for s in data["stems"]])
            except (OSError, KeyError, ValueError) as exc:
                self.news.append(f"cannot attach the shared memory ({exc}); playing the "
                                 "mixture only")
        self.reader = reader
        self.started = data  # last: the main thread waits for it

    def wait_started(self) -> dict[str, Any]:
        """The ``job/started`` payload, once it came; a job that failed before raises
        its error (`StembridgeError` with the wire code, or `ClientError`)."""
        from bridge.client import ClientError
        from engine.errors import StembridgeError
        from protocol.errors import ErrorCode

        t0 = time.monotonic()
        told = False
        while self.started is None:
            if self.error is not None:
                err = self.error
                if isinstance(err, ClientError) and err.code in {c.value for c in ErrorCode}:
                    raise StembridgeError(str(err), code=ErrorCode(err.code)) from err
                raise err
            if not self.is_alive():
                raise ClientError("timeout", "The server stopped sending news of the job.")
            if not told and time.monotonic() - t0 > 2.0:
                print("stembridge preview: waiting for the engine to start the job (it "
                      "runs one job at a time)...", file=sys.stderr)
                told = True
            time.sleep(0.005)
        return self.started


def _finish_job(server: tuple[str, int], token: str | None, job: str) -> str:
    """Cancel the job if it still runs (its finished regions stay on disk), then release
    its shared memory. Returns the job's last state."""
    from bridge.client import Client, ClientError

    try:
        with Client(*server, token=token, timeout=5.0) as c:
            state = str(c.status(job).get("state", "unknown"))
            if state in ("queued", "running"):
                c.cancel(job)
                state = "cancelled"
            c.release(job)
            return state
    except ClientError as err:
        print(f"stembridge preview: could not release job {job}: {err}", file=sys.stderr)
        return "unknown"


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``stembridge preview`` on the CLI's subparsers; returns the parser."""
    p = subparsers.add_parser(
        "preview", help="play a song as stems while it is being separated (needs pyo)",
        description="Play FILE as stems in real time while the warm engine separates it "
        "(the original mix fills in where the stems are not ready yet). Control it over "
        f"OSC on 127.0.0.1 (default port {DEFAULT_PREVIEW_PORT}, see PROTOCOL.md) or, on "
        "a terminal, with keys: 1-6 mute/unmute a stem, space play/stop, left/right seek "
        "5 s, q quit.",
        epilog="examples:\n  stembridge preview song.wav --stems 4 --start-at 60\n"
        "  stembridge preview song.wav --render out.wav --dur 20 --automation cues.jsonl\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the song (never modified)")
    p.add_argument("--stems", type=int, choices=(2, 4, 6), default=None)
    p.add_argument("--model", default=None, help="model name (default: the server's)")
    p.add_argument("--start-at", type=float, default=0.0, metavar="SEC",
                   help="start playing (and separating) here")
    p.add_argument("--audio", choices=("portaudio", "jack"), default="portaudio",
                   help="audio back end (default portaudio: the sound card)")
    p.add_argument("--osc-port", type=int, default=None, metavar="N",
                   help=f"UDP control port on 127.0.0.1 (default {DEFAULT_PREVIEW_PORT}; "
                   "0 = any free port; with --render only when given)")
    p.add_argument("--render", type=Path, default=None, metavar="OUT.wav",
                   help="render to this file instead of playing (no sound card needed); "
                   "a JSON report goes next to it")
    p.add_argument("--dur", type=float, default=None, metavar="SEC",
                   help="seconds to render (with --render)")
    p.add_argument("--automation", type=Path, default=None, metavar="FILE",
                   help="JSON-lines control events to apply while rendering")
    p.add_argument("--buffer-size", type=int, default=512, metavar="FRAMES",
                   help="frames per audio block (power of two, default 512)")
    p.add_argument("--ramp-ms", type=float, default=20.0,
                   help="gain ramps and crossfades, ms (default 20)")
    return p


def run(args: argparse.Namespace) -> int:
    """``stembridge preview``: returns the exit status (README, "Exit codes")."""
    from bridge.client import ClientError
    from engine.errors import StembridgeError

    try:
        return _run(args)
    except StembridgeError as err:
        print(f"stembridge preview: error [{err.code.value}]: {err}", file=sys.stderr)
        return err.exit_code
    except ClientError as err:
        print(f"stembridge preview: error [{err.code}]: {err}", file=sys.stderr)
        return 11 if err.code in ("timeout", "not_running", "start_failed") else 12
    except KeyboardInterrupt:
        print("stembridge preview: interrupted.", file=sys.stderr)
        return 130


def _check_args(args: argparse.Namespace) -> None:
    from engine.errors import InvalidArgumentError

    if args.render is None and (args.dur is not None or args.automation is not None):
        raise InvalidArgumentError("--dur and --automation go with --render OUT.wav.")
    if args.render is not None and not (args.dur is not None and math.isfinite(args.dur)
                                        and args.dur > 0):
        raise InvalidArgumentError("--render needs --dur SEC, a duration > 0.")
    n = args.buffer_size
    if not 32 <= n <= 8192 or n & (n - 1):
        raise InvalidArgumentError(f"--buffer-size {n}: use a power of two, 32..8192.")
    if not (math.isfinite(args.start_at) and args.start_at >= 0):
        raise InvalidArgumentError("--start-at must be >= 0 seconds.")
    if not 1.0 <= args.ramp_ms <= 1000.0:
        raise InvalidArgumentError("--ramp-ms must be in [1, 1000].")
    if args.osc_port is not None and not 0 <= args.osc_port <= 65535:
        raise InvalidArgumentError("--osc-port must be 0..65535.")
    if args.render is not None and args.render.resolve() == args.file.resolve():
        raise InvalidArgumentError("--render would overwrite the input; choose another file.")


def _run(args: argparse.Namespace) -> int:
    from engine.audio import probe
    from engine.errors import InvalidArgumentError, OutputError

    _check_args(args)
    info = probe(args.file)  # header only: a missing or unreadable file fails here
    if info.duration and args.start_at >= info.duration:
        raise InvalidArgumentError(f"--start-at {args.start_at:g} s is past the end of "
                                   f"{args.file} ({info.duration:.1f} s).")
    cues = read_automation(args.automation) if args.automation is not None else []
    live = args.render is None
    if live:
        check_audio_device(args.audio)
    osc = None
    if live or args.osc_port is not None:
        port = DEFAULT_PREVIEW_PORT if args.osc_port is None else args.osc_port
        try:
            osc = PreviewOscServer(port)
        except OSError as exc:
            raise OutputError(f"Cannot listen for OSC on 127.0.0.1:{port}: {exc}. Is "
                              "another preview running? Use --osc-port N (0 = any free "
                              "port).") from exc
    try:
        server = boot_server(args.audio if live else "manual", info.samplerate,
                             args.buffer_size)
    except BaseException:
        if osc is not None:
            osc.stop()
        raise
    try:
        return _session(args, info.samplerate, server, osc, cues)
    finally:
        if osc is not None:
            osc.stop()
        server.shutdown()


def _session(args: argparse.Namespace, samplerate: int, server: Any,
             osc: PreviewOscServer | None, cues: list[Cue]) -> int:
    from bridge.client import Client
    from engine.audio import load
    from engine.errors import InvalidArgumentError

    print("stembridge preview: connecting to the stembridge server (starting it if "
          "needed)...", file=sys.stderr)
    client = Client.connect(start=True)
    t_submit = time.perf_counter()
    try:
        job = client.split(args.file, stems=args.stems, model=args.model,
                           start_at=args.start_at, shm=True)
    except BaseException:
        client.close()
        raise
    follower = _JobFollower(client, job)
    follower.start()
    player = None
    try:
        mixture = load(args.file)[0].samples  # decoded while the engine starts the job
        started = follower.wait_started()
        if (started["samplerate"], started["channels"]) != (samplerate, mixture.shape[0]):
            raise InvalidArgumentError(
                f"The server decoded {args.file} as {started['channels']} channel(s) at "
                f"{started['samplerate']} Hz, this process as {mixture.shape[0]} at "
                f"{samplerate} Hz: is the server running elsewhere with other decoders?")
        player = PreviewPlayer(server, mixture, samplerate, started["stems"],
                               reader=follower.reader, start_at=args.start_at,
                               ramp=args.ramp_ms / 1000, capture=args.render is not None,
                               live=args.render is None)
        if osc is not None:
            osc.start(player.handle)
        if args.render is not None:
            return _render_to_file(args, player, cues, follower, job, t_submit)
        return _play_live(args, player, osc, follower, t_submit)
    finally:
        try:
            if player is not None:
                player.close()
            follower.stop()
            client.close()
            if follower.reader is not None:
                follower.reader.close()
        finally:
            _finish_job(client.server, client.token, job)


def _summary(player: PreviewPlayer, t_submit: float) -> dict[str, Any]:
    rep = player.report()
    rep["submit_to_stems_s"] = (None if player.first_stems_wall is None
                                else player.first_stems_wall - t_submit)
    return rep


def _print_summary(rep: dict[str, Any]) -> None:
    first = rep["submit_to_stems_s"]
    print(f"played {rep['played_s']:.1f} s: stems {rep['stems_s']:.1f} s, mixture fallback "
          f"{rep['fallback']['count']} time(s), {rep['fallback']['seconds']:.1f} s; stems "
          + ("never final at the playhead" if first is None
             else f"audible {first:.2f} s after the request"))


def _render_to_file(args: argparse.Namespace, player: PreviewPlayer, cues: list[Cue],
                    follower: _JobFollower, job: str, t_submit: float) -> int:
    from engine.audio import write_audio
    from engine.errors import OutputError
    from protocol.files import write_json_atomic

    audio = render(player, args.dur, cues, realtime=True)
    for line in [*player.news, *follower.news]:
        print(f"  {line}")
    target: Path = args.render
    fmt = "flac" if target.suffix.lower() == ".flac" else "wav"
    write_audio(target, audio, player.samplerate, fmt=fmt)
    rep = _summary(player, t_submit)
    rep.update({"output": str(target.resolve()), "source": str(args.file.resolve()),
                "job": job, "job_folder": (follower.started or {}).get("folder"),
                "job_state": follower.state,
                "job_error": None if follower.error is None else str(follower.error),
                "start_at": args.start_at,
                "automation": [{"t": c.t, "address": c.message.address,
                                "line": c.line} for c in cues]})
    try:
        write_json_atomic(target.with_suffix(".json"), rep)
    except OSError as exc:
        raise OutputError(f"Cannot write {target.with_suffix('.json')}: {exc}") from exc
    _print_summary(rep)
    print(f"wrote {target} and {target.with_suffix('.json')}")
    return 0


def _play_live(args: argparse.Namespace, player: PreviewPlayer, osc: PreviewOscServer | None,
               follower: _JobFollower, t_submit: float) -> int:
    import signal

    quit_event = threading.Event()
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: no signal handler
        previous = signal.signal(signal.SIGTERM, lambda *_: quit_event.set())
    keys = KeyControl(player, quit_event).start()
    where = f"OSC on 127.0.0.1:{osc.address[1]}" if osc is not None else "no OSC"
    print(f"playing {args.file.name} from {_clock(args.start_at)} ({where}; keys: 1-6 "
          "mute, space play/stop, arrows seek, q quit; Ctrl-C stops)")
    player.server.start()
    try:
        while not quit_event.is_set() and not player.ended:
            time.sleep(0.05)
            for queue in (player.news, follower.news):
                while queue:
                    print(f"  {queue.popleft()}")
    except KeyboardInterrupt:  # Ctrl-C is the ordinary way to quit a player
        pass
    finally:
        keys.stop()
        player.server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _print_summary(_summary(player, t_submit))
    return 0
