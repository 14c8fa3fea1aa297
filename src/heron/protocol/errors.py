"""Errors raised by the sans-IO protocol cores."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class for protocol violations."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    ``status_code`` is the HTTP status the server should answer with (when the
    framing still allows an answer); the message says what was wrong and is
    safe to log (it never contains raw peer bytes).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class LocalProtocolError(ProtocolError):
    """We (the application, through the server) tried to break the protocol.

    Raised before any byte of the offending message is produced, so the caller
    can still replace it with an error response.
    """


class HandshakeError(RemoteProtocolError):
    """A WebSocket opening handshake was refused.

    Answer with ``status_code`` and ``extra_headers`` (for example 426 with
    ``Sec-WebSocket-Version: 13``) instead of switching protocols.
    """

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message, status_code)
        self.extra_headers: list[tuple[bytes, bytes]] = extra_headers or []


class WebSocketProtocolError(ProtocolError):
    """The WebSocket peer broke the protocol (RFC 6455 7.1.7, "fail the connection").

    ``close_code`` is the status to send in our Close frame before closing:
    1002 (protocol error), 1007 (invalid payload data, e.g. bad UTF-8) or
    1009 (message too big). The message is safe to log and short enough
    (at most 123 bytes) to be the close reason.
    """

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code
