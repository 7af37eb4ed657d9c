"""The preview's control socket: OSC over UDP on 127.0.0.1 only, received by the one UDP
loop (`bridge.udp.UdpEndpoint`) and decoded with the project's codec (PROTOCOL.md,
"Preview control").

Every malformed or refused datagram is answered with ``/stembridge/error`` (the server's
error payload: job ``""``, request_id -1, code, message), and so is one whose handling
failed with an internal error; answers themselves (``/stembridge/error``,
``.../status/reply``) are never answered, so two peers cannot ping-pong forever. A
``status`` with a reply port is answered on that port of the sender's host.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.udp import Addr, UdpEndpoint
from protocol.errors import ErrorCode, lookup
from protocol.messages import Address, Message, PreviewAddress, ProtocolError, decode, encode
from protocol.settings import DEFAULT_PREVIEW_PORT

#: The only address the control socket binds: the preview takes no token.
HOST = "127.0.0.1"

Handler = Callable[[Message], Message | None]


class PreviewOscServer:
    """The control socket, bound at construction (`port` 0: any free port, see
    `address`); `start` serves it in a daemon thread.

    Raises `OSError` when the port cannot be bound (another preview runs there)."""

    def __init__(self, port: int = DEFAULT_PREVIEW_PORT) -> None:
        self._endpoint = UdpEndpoint(HOST, port, name="preview-osc")
        self.errors = 0
        self._handler: Handler | None = None

    @property
    def address(self) -> Addr:
        return self._endpoint.address

    @property
    def received(self) -> int:
        """Datagrams received so far."""
        return self._endpoint.received

    def start(self, handler: Handler) -> PreviewOscServer:
        """Serve in a daemon thread, passing each decoded message to `handler` (usually
        `PreviewPlayer.handle`; it raises `ProtocolError` to refuse one)."""
        self._handler = handler
        self._endpoint.start(self._serve, on_error=self._internal_error)
        return self

    def stop(self) -> None:
        self._endpoint.stop()

    def _serve(self, data: bytes, addr: Addr) -> None:
        answer = self.answer(data, addr)
        if answer is not None:
            self._endpoint.send(*answer)

    def _internal_error(self, addr: Addr) -> None:
        exc = ProtocolError("The preview failed to handle this message (a bug; see its "
                            "log).", ErrorCode.INTERNAL)
        self._endpoint.send(*self._error(addr, exc))

    def answer(self, data: bytes, addr: Addr) -> tuple[bytes, Addr] | None:
        """The reply datagram and where it goes, for one received datagram (None: no
        answer)."""
        try:
            msg = decode(data)
        except ProtocolError as exc:
            return self._error(addr, exc)
        if msg.address in (Address.ERROR, PreviewAddress.STATUS_REPLY):
            return None  # never answer an answer (two peers could ping-pong forever)
        if self._handler is None:
            raise RuntimeError("PreviewOscServer.answer before start(handler)")
        try:
            reply = self._handler(msg)
        except ProtocolError as exc:
            return self._error(addr, exc)
        if reply is None:
            return None
        port = msg.args[0] if msg.address == PreviewAddress.STATUS and msg.args else addr[1]
        return encode(reply.address, *reply.args), (addr[0], int(port))

    def _error(self, addr: Addr, exc: ProtocolError) -> tuple[bytes, Addr]:
        self.errors += 1
        return encode(Address.ERROR, {"job": "", "request_id": -1,
                                      "code": lookup(exc.code).value,
                                      "message": str(exc)}), addr
