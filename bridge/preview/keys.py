"""Terminal keys (only when stdin is a TTY): 1-6 mute/unmute a stem, space play/stop,
left/right arrows seek -/+5 s, a switch original/master (an A/B session), q quit. Keys become the same control messages as OSC and
go to the same `Controls`, from a daemon thread that reads the terminal in cbreak mode
and restores it on `stop`.

No pyo, no numpy: `KeyControl.message` is plain Python.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from bridge.preview.controls import Controls
from protocol.messages import Message, PreviewAddress, ProtocolError

#: Seconds the arrow keys seek.
KEY_SEEK_S = 5.0
#: The arrow keys' escape sequences.
RIGHT, LEFT = b"\x1b[C", b"\x1b[D"


class KeyControl:
    """Reads keys and applies their control messages to `controls`.

    Args:
        controls: the player's controls (`PreviewPlayer.controls`).
        quit_event: set by ``q``.
        stream: the terminal (default stdin); nothing is read unless it is a TTY.
        position: the playhead in seconds, where a seek key starts from.
        news: where a refused key is told (the player's news lines), if anywhere.
    """

    def __init__(self, controls: Controls, quit_event: threading.Event, stream: Any = None,
                 *, position: Callable[[], float] = lambda: 0.0,
                 news: Any = None) -> None:
        self.controls = controls
        self.quit = quit_event
        self.stream = stream if stream is not None else sys.stdin
        self.position = position
        self.news = news
        self._saved: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KeyControl:
        """Put the terminal in cbreak mode and read it in a thread (not a TTY: nothing)."""
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
        """End the thread, then give the terminal its settings back."""
        self._stop.set()
        thread = self._thread
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
            for key in split_keys(data):
                self.press(key)

    def press(self, key: bytes) -> None:
        """Act on one key: its control message, or quitting."""
        msg = self.message(key)
        if msg is None:
            return
        try:
            self.controls.handle(msg)
        except ProtocolError as exc:
            if self.news is not None:
                self.news.append(f"key {key!r}: {exc}")

    def message(self, key: bytes) -> Message | None:
        """The control message of one key (None: not a control key; ``q`` sets the quit
        event)."""
        c = self.controls
        if key in (b"q", b"Q"):
            self.quit.set()
        elif key in (b"a", b"A") and c.is_ab:
            return Message(PreviewAddress.AB, ())
        elif key.isdigit() and 1 <= int(key) <= min(6, len(c.stems)):
            return Message(PreviewAddress.MUTE, (int(key),))
        elif key == b" ":
            return Message(PreviewAddress.STOP if c.playing else PreviewAddress.PLAY, ())
        elif key in (RIGHT, LEFT):
            step = KEY_SEEK_S if key == RIGHT else -KEY_SEEK_S
            last = (c.frames - 1) / c.samplerate
            return Message(PreviewAddress.SEEK, (min(max(0.0, self.position() + step), last),))
        return None


def split_keys(data: bytes) -> list[bytes]:
    """The keys in one read from the terminal: escape sequences ``ESC [ x`` whole, every
    other byte alone."""
    keys = []
    while data:
        key, data = (data[:3], data[3:]) if data.startswith(b"\x1b[") else (data[:1], data[1:])
        keys.append(key)
    return keys
