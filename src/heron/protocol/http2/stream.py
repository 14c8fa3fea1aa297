"""What the HTTP/2 core keeps per stream: its state (RFC 9113 5.1) as a table, the
stream record, and the counter of events per time window.

The stream states and what moves a stream between them are the table
:data:`TRANSITIONS`, ``(state, event) -> new state``; :func:`next_state` looks
a move up and raises :class:`InvalidTransition`, with the error RFC 9113 5.1
gives, for one the table doesn't have. The core follows the same table: on the
per-frame paths it compares ``_Stream.state`` with the module-level aliases
below (``_OPEN``...; an enum member looked up on its class costs a metaclass
lookup each time) for the common moves and asks :func:`next_state` for the
rest.

What the table leaves out, on purpose:

* WINDOW_UPDATE and PRIORITY change no state. Both are allowed on every stream
  but an idle one (PRIORITY even there); the core checks that by stream id.
* A stream the core no longer keeps is idle or closed by its id alone
  (RFC 9113 5.1.1: ids only grow): see ``H2Core._absent_state``. Which RST_STREAM
  closed it (ours: later frames are ignored; the peer's: STREAM_CLOSED) is
  remembered apart, for the last :data:`~.frames._RESET_MEMORY` resets.
* reserved (remote) and the client-side moves: a server neither receives
  PUSH_PROMISE nor opens streams with HEADERS.
"""

from __future__ import annotations

import enum
from typing import Any

from .frames import _PROTOCOL_ERROR, _STREAM_CLOSED
from .limits import RESET_WINDOW


class StreamState(enum.Enum):
    """The states of RFC 9113 5.1 a server's stream can be in."""

    IDLE = "idle"
    RESERVED_LOCAL = "reserved (local)"
    OPEN = "open"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    CLOSED = "closed"

    # members are singletons compared by identity: hash them so (Enum's own __hash__
    # runs Python code, twice per table lookup)
    __hash__ = object.__hash__


class StreamEvent(enum.Enum):
    """What moves a stream: a frame received (``RECV_``) or sent (``SEND_``).
    END_STREAM is an event of its own, after the HEADERS or DATA that carries it."""

    RECV_HEADERS = "receive HEADERS"
    RECV_DATA = "receive DATA"
    RECV_END_STREAM = "receive END_STREAM"
    RECV_RST_STREAM = "receive RST_STREAM"
    #: on the promised stream (idle -> reserved) and on the stream it is sent on
    SEND_PUSH_PROMISE = "send PUSH_PROMISE"
    SEND_HEADERS = "send HEADERS"
    SEND_DATA = "send DATA"
    SEND_END_STREAM = "send END_STREAM"
    SEND_RST_STREAM = "send RST_STREAM"

    __hash__ = object.__hash__


_IDLE = StreamState.IDLE
_RESERVED_LOCAL = StreamState.RESERVED_LOCAL
_OPEN = StreamState.OPEN
_HALF_CLOSED_REMOTE = StreamState.HALF_CLOSED_REMOTE
_HALF_CLOSED_LOCAL = StreamState.HALF_CLOSED_LOCAL
_CLOSED = StreamState.CLOSED

_RECV_HEADERS = StreamEvent.RECV_HEADERS
_RECV_DATA = StreamEvent.RECV_DATA
_RECV_END_STREAM = StreamEvent.RECV_END_STREAM
_RECV_RST_STREAM = StreamEvent.RECV_RST_STREAM
_SEND_PUSH_PROMISE = StreamEvent.SEND_PUSH_PROMISE
_SEND_HEADERS = StreamEvent.SEND_HEADERS
_SEND_DATA = StreamEvent.SEND_DATA
_SEND_END_STREAM = StreamEvent.SEND_END_STREAM
_SEND_RST_STREAM = StreamEvent.SEND_RST_STREAM

#: RFC 9113 5.1 (figure 2), the server's side: every legal move.
TRANSITIONS: dict[tuple[StreamState, StreamEvent], StreamState] = {
    # a request opens a stream; a push reserves one
    (_IDLE, _RECV_HEADERS): _OPEN,
    (_IDLE, _SEND_PUSH_PROMISE): _RESERVED_LOCAL,
    # a promised stream: its response head, or a reset from either side
    (_RESERVED_LOCAL, _SEND_HEADERS): _HALF_CLOSED_REMOTE,
    (_RESERVED_LOCAL, _SEND_RST_STREAM): _CLOSED,
    (_RESERVED_LOCAL, _RECV_RST_STREAM): _CLOSED,
    # both ways open: request body and trailers in, response out
    (_OPEN, _RECV_HEADERS): _OPEN,
    (_OPEN, _RECV_DATA): _OPEN,
    (_OPEN, _RECV_END_STREAM): _HALF_CLOSED_REMOTE,
    (_OPEN, _SEND_PUSH_PROMISE): _OPEN,
    (_OPEN, _SEND_HEADERS): _OPEN,
    (_OPEN, _SEND_DATA): _OPEN,
    (_OPEN, _SEND_END_STREAM): _HALF_CLOSED_LOCAL,
    (_OPEN, _SEND_RST_STREAM): _CLOSED,
    (_OPEN, _RECV_RST_STREAM): _CLOSED,
    # the request is complete: only the response goes on
    (_HALF_CLOSED_REMOTE, _SEND_PUSH_PROMISE): _HALF_CLOSED_REMOTE,
    (_HALF_CLOSED_REMOTE, _SEND_HEADERS): _HALF_CLOSED_REMOTE,
    (_HALF_CLOSED_REMOTE, _SEND_DATA): _HALF_CLOSED_REMOTE,
    (_HALF_CLOSED_REMOTE, _SEND_END_STREAM): _CLOSED,
    (_HALF_CLOSED_REMOTE, _SEND_RST_STREAM): _CLOSED,
    (_HALF_CLOSED_REMOTE, _RECV_RST_STREAM): _CLOSED,
    # the response is complete: only the request goes on
    (_HALF_CLOSED_LOCAL, _RECV_HEADERS): _HALF_CLOSED_LOCAL,
    (_HALF_CLOSED_LOCAL, _RECV_DATA): _HALF_CLOSED_LOCAL,
    (_HALF_CLOSED_LOCAL, _RECV_END_STREAM): _CLOSED,
    (_HALF_CLOSED_LOCAL, _SEND_RST_STREAM): _CLOSED,
    (_HALF_CLOSED_LOCAL, _RECV_RST_STREAM): _CLOSED,
    # closed: a RST_STREAM that crossed ours or came after the end is ignored, and a frame
    # the peer sends on the stream is answered with one (RFC 9113 5.1 "closed", 5.4.2)
    (_CLOSED, _RECV_RST_STREAM): _CLOSED,
    (_CLOSED, _SEND_RST_STREAM): _CLOSED,
}


class InvalidTransition(Exception):
    """``event`` is not allowed in ``state``: ``code`` is the error RFC 9113 5.1 gives,
    a connection error when ``connection`` (else a stream error: RST_STREAM)."""

    def __init__(self, state: StreamState, event: StreamEvent, code: int, connection: bool) -> None:
        super().__init__(f"{event.value} on a stream {state.value}")
        self.state = state
        self.event = event
        self.code = code
        self.connection = connection


_RECEIVED = frozenset((_RECV_HEADERS, _RECV_DATA, _RECV_END_STREAM, _RECV_RST_STREAM))


def next_state(state: StreamState, event: StreamEvent) -> StreamState:
    """The state ``event`` moves a stream in ``state`` to; :class:`InvalidTransition` if it can't."""
    new = TRANSITIONS.get((state, event))
    if new is not None:
        return new
    received = event in _RECEIVED
    if state is _CLOSED or state is (_HALF_CLOSED_REMOTE if received else _HALF_CLOSED_LOCAL):
        # the sender's side of the stream is closed: a stream error (RFC 9113 5.1)
        raise InvalidTransition(state, event, _STREAM_CLOSED, False)
    # a frame received on an idle or reserved stream is a connection error (RFC 9113 5.1);
    # one we would send there is our own mistake (the core never sends it)
    raise InvalidTransition(state, event, _PROTOCOL_ERROR, received)


class _WindowCount:
    """How often something happened within the last ``RESET_WINDOW`` seconds
    (a fixed window that restarts once it is over); ``limit`` 0: never too often."""

    __slots__ = ("limit", "count", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.start = 0.0

    def hit(self, now: float) -> bool:
        """Count one; True when that makes more than ``limit``."""
        if not self.limit:
            return False
        if now - self.start > RESET_WINDOW:
            self.start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class _Stream:
    """One stream: its state, windows, queued output, and what the caller still wants of it.

    A stream is kept (in ``H2Core.streams``) from the frame that opens or reserves it
    until it is closed; ``state`` is never idle or closed while it is kept."""

    __slots__ = (
        "sid",
        "state",
        "live",
        "responding",
        "counted",
        "opened_in",
        "rwin",
        "rproc",
        "unacked",
        "expected",
        "received",
        "swin",
        "method",
        "scheme",
        "authority",
        "chunks",
        "size",
        "end",
        "trailers",
        "remaining",
        "no_body",
    )

    def __init__(self, sid: int, rwin: int, swin: int, state: StreamState, opened_in: int = -1) -> None:
        self.sid = sid
        self.state = state
        # Not stream states but the caller's side of it: ``live`` from the request (or the
        # push) until the caller is done with the stream (stream_done, finish_stream, reset)
        # or our END_STREAM is sent: its body and end are reported while it is set.
        # ``responding`` from the response head until then: body and trailers are taken.
        self.live = True
        self.responding = False
        #: counted against max_concurrent_streams
        self.counted = False
        #: the receive_data call whose events announce it (a reset within it drops them)
        self.opened_in = opened_in
        self.rwin = rwin  # receive window left
        self.rproc = 0  # consumed bytes not yet credited back
        self.unacked = 0  # bytes reported in DataReceived, not yet acknowledged
        self.expected: int | None = None  # declared content-length
        self.received = 0
        self.swin = swin  # send window
        self.method = b""
        self.scheme = b""
        self.authority = b""
        #: queued response body pieces (bytes or memoryviews), ``size`` bytes in all
        self.chunks: list[Any] = []
        self.size = 0
        self.end = False  # the caller has ended the body: END_STREAM once the queue is out
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: declared content-length still to send (None: not declared)
        self.remaining: int | None = None
        self.no_body = False
