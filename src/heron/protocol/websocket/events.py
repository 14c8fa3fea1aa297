"""What :class:`~.connection.WebSocketConnection` returns from ``next_event()``:
whole messages, control frames, and the markers that are not events."""

from __future__ import annotations

from .._sentinel import Sentinel

__all__ = [
    "TextMessage",
    "BytesMessage",
    "Ping",
    "Pong",
    "CloseReceived",
    "NEED_DATA",
    "NO_ROOM",
    "YIELD",
    "Event",
]


class _Event:
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class TextMessage(_Event):
    """A complete text message (fragments joined, UTF-8 checked and decoded)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<TextMessage {len(self.text)} chars>"


class BytesMessage(_Event):
    """A complete binary message (fragments joined)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<BytesMessage {len(self.data)} bytes>"


class Ping(_Event):
    """A Ping frame; answer with :meth:`WebSocketConnection.pong_reply`."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"<Ping {self.payload!r}>"


class Pong(_Event):
    """A Pong frame (solicited or not)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"<Pong {self.payload!r}>"


class CloseReceived(_Event):
    """The peer closed: a Close frame, or the transport's EOF.

    ``code`` is 1005 when the Close frame had no status code, and 1006 when
    the transport ended without a Close frame (``receive_data(b"")``). Answer
    with :meth:`WebSocketConnection.close_reply`.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"<CloseReceived {self.code} {self.reason!r}>"


#: More bytes are needed before another event can be produced. Also returned
#: for ever after a :class:`CloseReceived`: later bytes are discarded.
NEED_DATA = Sentinel("NEED_DATA")
#: The message in progress can't be inflated further within
#: :attr:`WebSocketConnection.room`: call again once the caller has room.
NO_ROOM = Sentinel("NO_ROOM")
#: :data:`~.connection.FRAMES_PER_CALL` frames were handled: call again (input is waiting).
YIELD = Sentinel("YIELD")

Event = TextMessage | BytesMessage | Ping | Pong | CloseReceived | Sentinel
