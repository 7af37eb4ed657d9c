"""The one UDP receive loop, shared by the server and the preview's control socket.

`UdpEndpoint` binds a datagram socket, runs a daemon thread that reads datagrams of at
most `protocol.messages.MAX_DATAGRAM` + 1 bytes (a longer one arrives truncated and is
refused by the decoder) and passes each to a handler; `send` is thread-safe and never
raises for a peer that went away. A handler's exception never ends the loop: it is
logged and reported to `on_error`, if given.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable

from protocol.messages import MAX_DATAGRAM

log = logging.getLogger("stembridge.udp")

Addr = tuple[str, int]
Handler = Callable[[bytes, Addr], None]


class UdpEndpoint:
    """A bound UDP socket with a receive thread.

    Args:
        host: bind address (``"127.0.0.1"``, ``"::1"``, ``"0.0.0.0"``...).
        port: UDP port; 0 picks a free one (see `address`).
        name: thread name suffix, for logs and debuggers.
        receive_buffer: SO_RCVBUF in bytes, to absorb bursts (best effort).
    """

    def __init__(self, host: str, port: int, *, name: str = "udp",
                 receive_buffer: int = 1 << 20) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(0.2)
        self.name = name
        self.received = 0
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> Addr:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self, handler: Handler,
              on_error: Callable[[Addr], None] | None = None) -> UdpEndpoint:
        """Call ``handler(data, (host, port))`` for every datagram, in one daemon thread.
        When the handler raises, the exception is logged and ``on_error(addr)`` called."""
        self._thread = threading.Thread(target=self._loop, args=(handler, on_error),
                                        name=f"stembridge-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self, handler: Handler, on_error: Callable[[Addr], None] | None) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.received += 1
            peer = (addr[0], addr[1])
            try:
                handler(data, peer)
            except Exception:  # a bug must never end the loop
                log.exception("%s: internal error handling a datagram from %s", self.name, peer)
                if on_error is not None:
                    with contextlib.suppress(Exception):
                        on_error(peer)

    def send(self, data: bytes, addr: Addr) -> bool:
        """Send one datagram; False when it could not be sent (the peer went away)."""
        with self._send_lock:
            try:
                self.sock.sendto(data, addr)
                return True
            except OSError as exc:
                log.debug("%s: send to %s failed: %s", self.name, addr, exc)
                return False

    def stop(self, timeout: float = 2.0) -> None:
        """End the receive thread and close the socket."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.sock.close()
