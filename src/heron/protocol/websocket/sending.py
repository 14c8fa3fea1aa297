"""The sending half of :class:`~.connection.WebSocketConnection`: messages and
control frames as bytes to write.

Messages are sent as single frames, compressed when permessage-deflate was
agreed; nothing is fragmented on the way out. A base class of the connection;
the fields are :class:`~.state.ConnectionState`'s.
"""

from __future__ import annotations

from ..errors import LocalProtocolError
from .events import CloseReceived, Ping
from .frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RSV1, close_payload, frame, frame_header
from .state import ConnectionState


class Sender(ConnectionState):
    """``frame_message``, the ``send_*`` methods and the replies to a Ping or a Close."""

    __slots__ = ()

    def _check_can_send(self) -> None:
        if self.close_sent:
            raise LocalProtocolError("cannot send after a Close frame")

    def frame_message(self, data: str | bytes) -> tuple[bytes, bytes]:
        """One message (text for ``str``, binary otherwise) as one frame, given as
        ``(header, payload)``: the caller may write a big payload as a buffer of
        its own (``transport.writelines``) instead of copying it behind the header.
        """
        if self.close_sent:
            raise LocalProtocolError("cannot send after a Close frame")
        if isinstance(data, str):
            opcode = OP_TEXT
            try:
                payload = data.encode("utf-8")
            except UnicodeEncodeError:
                raise LocalProtocolError("text message is not valid Unicode (lone surrogate)") from None
        else:
            opcode = OP_BINARY
            payload = data
        if self._deflater is not None:
            payload = self._deflater.compress(payload)
            return frame_header(opcode, len(payload), RSV1), payload
        return frame_header(opcode, len(payload)), payload

    def send_text(self, text: str) -> bytes:
        """One text message, as one frame."""
        header, payload = self.frame_message(text)
        return header + payload

    def send_bytes(self, data: bytes) -> bytes:
        """One binary message, as one frame."""
        if isinstance(data, str):
            raise TypeError("send_bytes() takes bytes; use send_text() for str")
        header, payload = self.frame_message(data)
        return header + payload

    def _control_frame(self, opcode: int, payload: bytes) -> bytes:
        self._check_can_send()
        if len(payload) > 125:
            raise LocalProtocolError("control frame payload over 125 bytes")
        return frame(opcode, payload)

    def send_ping(self, payload: bytes = b"") -> bytes:
        """A Ping frame (payload up to 125 bytes)."""
        return self._control_frame(OP_PING, payload)

    def send_pong(self, payload: bytes) -> bytes:
        """A Pong frame (payload up to 125 bytes)."""
        return self._control_frame(OP_PONG, payload)

    def send_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """A Close frame; ``code=None`` sends one without a status code.

        The code must be one that may appear on the wire (1000-1003,
        1007-1014, 3000-4999) and the reason at most 123 bytes of UTF-8.
        """
        self._check_can_send()
        payload = close_payload(code, reason)
        self.close_sent = True
        return frame(OP_CLOSE, payload)

    def pong_reply(self, ping: Ping) -> bytes:
        """The Pong answering ``ping`` (nothing once we sent Close)."""
        if self.close_sent:
            return b""
        return frame(OP_PONG, ping.payload)

    def close_reply(self, event: CloseReceived) -> bytes:
        """The Close frame answering ``event``, echoing its code.

        1000 when the peer sent no code (1005); nothing if we already sent
        Close or the transport is gone (1006).
        """
        if self.close_sent or event.code == 1006:
            return b""
        return self.send_close(1000 if event.code == 1005 else event.code)
