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
