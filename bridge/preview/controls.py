"""The listener's controls of one preview: per-stem gain, mute and solo, and the transport
requests (play, stop, seek), set by the ``/stembridge/preview/*`` messages (PROTOCOL.md,
"Preview control") from any thread and read by the audio thread once per block.

Plain Python: nothing here imports pyo, numpy or the engine, so the controls and their
message handling run (and are tested) where pyo is not installed.

    controls = Controls(("vocals", "drums", "bass", "other"), frames=441000, samplerate=44100)
    controls.handle(Message(PreviewAddress.MUTE, ("vocals", 1)))
    gains, log = controls.take_changes()   # [0.0, 1.0, 1.0, 1.0], ["mute vocals on"]

Units: gains are linear factors unless named ``_db``; positions are frames at the song's
rate (`int`); seek arguments are seconds (`float`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from protocol.errors import ErrorCode
from protocol.messages import PREVIEW_CONTROLS, Message, PreviewAddress, ProtocolError

#: Gain limits of the OSC controls: dB, and linear factors.
GAIN_DB_RANGE = (-96.0, 12.0)
GAIN_LINEAR_RANGE = (0.0, 4.0)

Reply = Message | None
Action = Callable[[], Reply]


def is_number(value: Any) -> bool:
    """An OSC number (i or f), not a flag (T/F arrive as bools)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def db_value(gain: float) -> float | None:
    """A linear gain in dB, rounded to 0.001 dB; None for 0 (-inf dB)."""
    return None if gain <= 0 else round(20 * math.log10(gain), 3)


def db_text(gain: float) -> str:
    """A linear gain as the event log writes it: ``-6.0 dB``, ``-inf dB``."""
    value = db_value(gain)
    return "-inf dB" if value is None else f"{value:+.1f} dB"


class Controls:
    """Per-stem gain, mute and solo, plus the transport requests, behind one lock.

    Args:
        stems: the job's stem names, in the order of its shared-memory blocks.
        frames: the song's length in frames (bounds `seek`).
        samplerate: Hz of the song.
        status: builds the ``status`` reply's payload (the player's `status`); default:
            `state`, the controls' part alone.

    `handle` applies a message or raises `ProtocolError` and changes nothing; the audio
    thread then calls `take_changes` and `take_transport` once per block.
    """

    def __init__(self, stems: Sequence[str], frames: int, samplerate: int, *,
                 status: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stems = list(stems)
        self.frames = int(frames)
        self.samplerate = int(samplerate)
        self._status = status if status is not None else self.state
        self._lock = threading.Lock()
        n = len(self.stems)
        self._gain = [1.0] * n
        self._mute = [False] * n
        self._solo = [False] * n
        self._dirty = False
        self._log: list[str] = []
        self._want_playing = True
        self._seek_to: int | None = None
        self._ab: bool | None = None  # an A/B session: True while the master plays

    # ------------------------------------------------------------------ messages

    def handle(self, msg: Message) -> Reply:
        """Apply one control message; returns the reply (only ``status`` has one).
        Raises `ProtocolError` with its wire code (`ErrorCode.UNKNOWN_ADDRESS`,
        ``BAD_MESSAGE``, ``INVALID_ARGUMENT``) and changes nothing then."""
        return self._parse(msg)()

    def check(self, msg: Message) -> None:
        """Raise `ProtocolError` as `handle` would, without applying anything."""
        self._parse(msg)

    def _parse(self, msg: Message) -> Action:
        a = msg.address
        if a not in PREVIEW_CONTROLS:
            raise ProtocolError(f"Unknown address {a!r}; the preview accepts "
                                f"{', '.join(sorted(PREVIEW_CONTROLS))}.",
                                ErrorCode.UNKNOWN_ADDRESS)
        if a in (PreviewAddress.GAIN, PreviewAddress.GAIN_LINEAR):
            return self._parse_gain(msg)
        if a in (PreviewAddress.MUTE, PreviewAddress.SOLO):
            return self._parse_switch(msg)
        if a == PreviewAddress.KARAOKE:
            return self._parse_karaoke(msg)
        if a == PreviewAddress.SEEK:
            return self._parse_seek(msg)
        if a == PreviewAddress.AB:
            return self._parse_ab(msg)
        if a in (PreviewAddress.PLAY, PreviewAddress.STOP, PreviewAddress.RESET):
            return self._parse_button(msg)
        return self._parse_status(msg)

    def _parse_gain(self, msg: Message) -> Action:
        _arity(msg, 2, 2)
        s = self._stem(msg.args[0])
        value = _number(msg, msg.args[1])
        in_db = msg.address == PreviewAddress.GAIN
        lo, hi = GAIN_DB_RANGE if in_db else GAIN_LINEAR_RANGE
        if not lo <= value <= hi:
            span = f"[{lo:+g} dB, {hi:+g} dB]" if in_db else f"[{lo:g}, {hi:g}] (linear)"
            raise ProtocolError(f"gain {value:g} is out of range {span}",
                                ErrorCode.INVALID_ARGUMENT)
        lin = 10 ** (value / 20) if in_db else value
        return lambda: self._set(self._gain, s, lin, f"gain {self.stems[s]} {db_text(lin)}")

    def _parse_switch(self, msg: Message) -> Action:
        _arity(msg, 1, 2)
        s = self._stem(msg.args[0])
        flag = _flag(msg, msg.args[1]) if len(msg.args) > 1 else None
        mute = msg.address == PreviewAddress.MUTE
        table, word = (self._mute, "mute") if mute else (self._solo, "solo")
        return lambda: self._set(table, s, (not table[s]) if flag is None else flag,
                                 f"{word} {self.stems[s]} {{}}")

    def _parse_karaoke(self, msg: Message) -> Action:
        _arity(msg, 0, 1)
        if "vocals" not in self.stems:
            raise ProtocolError("karaoke mutes the 'vocals' stem, which this job does not "
                                f"have (stems: {', '.join(self.stems)})",
                                ErrorCode.INVALID_ARGUMENT)
        s = self.stems.index("vocals")
        flag = _flag(msg, msg.args[0]) if msg.args else True
        return lambda: self._set(self._mute, s, flag, "karaoke {}")

    def _parse_seek(self, msg: Message) -> Action:
        _arity(msg, 1, 1)
        seconds = _number(msg, msg.args[0])
        duration = self.frames / self.samplerate
        if not 0 <= seconds < duration:
            raise ProtocolError(f"seek position {seconds:g} s is outside the song "
                                f"[0, {duration:.3f}) s", ErrorCode.INVALID_ARGUMENT)
        return lambda: self._request(seek=round(seconds * self.samplerate))

    def _parse_ab(self, msg: Message) -> Action:
        _arity(msg, 0, 1)
        if self._ab is None:
            raise ProtocolError("ab switches between an original and its master: start the "
                                "preview with a master to compare", ErrorCode.INVALID_ARGUMENT)
        flag = _flag(msg, msg.args[0]) if msg.args else None
        return lambda: self._switch_ab(flag)

    def _switch_ab(self, flag: bool | None) -> None:
        with self._lock:
            self._ab = (not self._ab) if flag is None else flag
            self._log.append("ab " + ("master" if self._ab else "original"))
            self._dirty = True

    def enable_ab(self, on_master: bool = False) -> None:
        """Make this an A/B session (`ab_master` starts at `on_master`)."""
        with self._lock:
            self._ab = bool(on_master)

    @property
    def ab_master(self) -> bool:
        """In an A/B session, whether the master plays (else the original)."""
        with self._lock:
            return bool(self._ab)

    @property
    def is_ab(self) -> bool:
        return self._ab is not None

    def _parse_button(self, msg: Message) -> Action:
        _arity(msg, 0, 1)
        if msg.args and not _flag(msg, msg.args[0]):
            return lambda: None  # a button's release (0): nothing to do
        if msg.address == PreviewAddress.RESET:
            return self._reset
        playing = msg.address == PreviewAddress.PLAY
        return lambda: self._request(playing=playing)

    def _parse_status(self, msg: Message) -> Action:
        _arity(msg, 0, 1)
        if msg.args and not (isinstance(msg.args[0], int) and not isinstance(msg.args[0], bool)
                             and 1 <= msg.args[0] <= 65535):
            raise ProtocolError("status takes an optional reply port 1..65535 (i)",
                                ErrorCode.INVALID_ARGUMENT)
        return lambda: Message(PreviewAddress.STATUS_REPLY, (self._status(),))

    def _stem(self, arg: Any) -> int:
        names = self.stems
        if isinstance(arg, str) and arg in names:
            return names.index(arg)
        if isinstance(arg, int) and not isinstance(arg, bool) and 1 <= arg <= len(names):
            return arg - 1
        raise ProtocolError(f"unknown stem {arg!r}: this job's stems are "
                            f"{', '.join(names)} (or their numbers 1..{len(names)})",
                            ErrorCode.INVALID_ARGUMENT)

    # ------------------------------------------------------------------ changes

    def _set(self, table: list[Any], s: int, value: Any, text: str) -> None:
        with self._lock:
            table[s] = value
            self._dirty = True
            self._log.append(text.format("on" if value is True else "off")
                             if value is True or value is False else text)

    def _reset(self) -> None:
        with self._lock:
            n = len(self.stems)
            self._gain[:] = [1.0] * n
            self._mute[:] = [False] * n
            self._solo[:] = [False] * n
            self._dirty = True
            self._log.append("reset")

    def _request(self, *, playing: bool | None = None, seek: int | None = None) -> None:
        with self._lock:
            if playing is not None:
                self._want_playing = playing
                self._log.append("play" if playing else "stop")
            if seek is not None:
                self._seek_to = seek
                self._log.append(f"seek {seek / self.samplerate:.3f} s")
            self._dirty = True  # the log is news at the next block, like a gain change

    def effective(self) -> list[float]:
        """Linear gain per stem as heard: 0 when muted (mute wins over solo) or when
        another stem is soloed and this one is not."""
        with self._lock:
            return self._effective()

    def _effective(self) -> list[float]:
        soloing = any(self._solo)
        return [0.0 if m or (soloing and not so) else g
                for g, m, so in zip(self._gain, self._mute, self._solo, strict=True)]

    def take_changes(self) -> tuple[list[float] | None, list[str]]:
        """What changed since the last call: the effective gains (None: no change) and
        the log lines of every control applied, in order ("mute vocals on", "seek
        12.000 s"...)."""
        with self._lock:
            if not self._dirty:
                return None, []
            self._dirty = False
            log, self._log = self._log, []
            return self._effective(), log

    # ------------------------------------------------------------------ transport

    @property
    def playing(self) -> bool:
        """Whether the listener wants playback (the player follows within a fade)."""
        with self._lock:
            return self._want_playing

    def pending(self) -> tuple[int | None, bool]:
        """The pending seek target (frames, or None) and whether playback is wanted,
        without taking the seek."""
        with self._lock:
            return self._seek_to, self._want_playing

    def take_transport(self, *, at_end: bool = False) -> tuple[int | None, bool]:
        """Take the pending seek (frames, or None) and return it with whether playback
        is wanted. `at_end`: the playhead is at the end of the song, so without a seek
        there is nothing to play and the play request is dropped."""
        with self._lock:
            seek, self._seek_to = self._seek_to, None
            if at_end and seek is None:
                self._want_playing = False
            return seek, self._want_playing

    def ended(self) -> None:
        """Playback reached the end of the song: it stops there."""
        with self._lock:
            self._want_playing = False

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The controls' part of the ``status`` payload (PROTOCOL.md): stems, gain,
        gain_db, mute, solo, playing."""
        with self._lock:
            gains, mute, solo = list(self._gain), list(self._mute), list(self._solo)
            playing = self._want_playing
        return {"playing": playing, "stems": list(self.stems), "gain": gains,
                "gain_db": [db_value(g) for g in gains], "mute": mute, "solo": solo}


def _arity(msg: Message, lo: int, hi: int) -> None:
    if not lo <= len(msg.args) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise ProtocolError(f"{msg.address} takes {want} arguments, got {len(msg.args)} "
                            "(see PROTOCOL.md, Preview control)", ErrorCode.BAD_MESSAGE)


def _number(msg: Message, arg: Any) -> float:
    if not is_number(arg) or not math.isfinite(arg):
        raise ProtocolError(f"{msg.address}: expected a finite number (f or i), got {arg!r}",
                            ErrorCode.INVALID_ARGUMENT)
    return float(arg)


def _flag(msg: Message, arg: Any) -> bool:
    if isinstance(arg, bool):
        return arg
    if is_number(arg):
        return arg != 0
    raise ProtocolError(f"{msg.address}: expected on/off as i, f, T or F, got {arg!r}",
                        ErrorCode.INVALID_ARGUMENT)
