"""One open WebSocket session, whatever carries it: the frame-event loop, written once.

A WebSocket runs over an HTTP/1.1 connection after an Upgrade
(:class:`~heron.transport.websocket.WebSocketProtocol`) or over one HTTP/2
stream (:class:`~heron.transport.http2_websocket.H2WebSocket`, RFC 8441). The two differ
only in how bytes go out, how reading pauses and how the connection or stream
ends; those are the :class:`WebSocketLink` a carrier provides. Everything else
lives here, so both carriers behave the same:

* :class:`WebSocketSession` is the :class:`~heron.asgi.websocket.WebSocketStream`
  of the session's :class:`~heron.asgi.websocket.WebSocketCycle`. It moves
  frames between the link, the sans-IO
  :class:`~heron.protocol.websocket.WebSocketConnection` and the cycle, and
  negotiates permessage-deflate at accept.
* Limits: ``ws_max_size`` goes to the connection (1009 beyond). What waits
  for the app is bounded twice: ``ws_max_queue`` messages, and a
  :class:`~heron.asgi.budget.ReadBudget` of ``ws_max_size`` bytes (what the
  queued messages really cost, inflated). When either is reached the frames
  already received stay unparsed and the link stops reading; the app taking
  messages resumes both. The budget's room also bounds inflation
  (``WebSocketConnection.room``): a compressed message is not inflated past
  what the app has room for, so a session holds about ``2 * ws_max_size`` at
  most (the queue, plus a message being joined) whatever ``ws_max_queue`` is.
  Bytes that arrive before the app accepts are kept, up to
  :data:`EARLY_LIMIT` before reading pauses.
* Fairness: the frame parser stops after a bounded number of frames
  (``YIELD``); the rest of the read is parsed at the next turn of the event
  loop, with the link paused meanwhile. Frames that carry nothing (empty
  fragments, unsolicited Pongs) are counted by the parser: more than 1000
  within 10 seconds close the session with 1008.
* Pings: answered with a Pong, except while the link can't write (its
  buffer is full): then only the most recent Ping is answered, once writing
  resumes (RFC 6455 5.5.3 allows that), so a client that pings without
  reading costs one pending payload, not a growing buffer.
* Backpressure: ``send()`` waits on the link's ``drain()`` while its
  ``writing_paused`` is true (a full socket buffer; over HTTP/2 also a stream
  window at 0). Write timeouts belong to the carrier (the HTTP/1.1 protocol, or
  the HTTP/2 connection), since they are about the socket, not the session.
* Liveness: after ``ws_ping_interval`` seconds without any inbound frame a
  ping is sent; if nothing at all arrives within ``ws_ping_timeout`` after it,
  the session closes with 1011. Any inbound frame counts, not only the pong.
* Closing handshake: after we send a Close frame the peer has
  :data:`CLOSE_TIMEOUT` seconds to answer before the link is closed anyway.
* End of input (the peer's Close frame, EOF, or a protocol error that fails
  the connection): reading stops at once, but messages that arrived before it
  and still wait in the app's queue are handed to the app first, and our Close
  frame goes out only once the app has taken them all (the cycle's
  ``on_idle`` hook) or after :data:`DRAIN_TIMEOUT`. So the answers to those
  messages precede the Close frame instead of being dropped, which is what
  RFC 6455 5.5.1 permits ("MAY delay sending a Close frame until its current
  message is sent") and what Autobahn's 3.2, 4.x, 5.15 and 7.1.6 check.

Deadlines (ping, pong, closing handshake, drain) are kept in the server's
timing wheel, ``ctx.deadlines`` (see :mod:`heron.transport.deadlines`), like
those of connections and streams. Nothing here arms an asyncio timer per
session.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..asgi.budget import ReadBudget
from ..asgi.websocket import WebSocketCycle
from ..protocol.errors import WebSocketProtocolError
from ..protocol.permessage_deflate import DeflateSettings, negotiate
from ..protocol.websocket import (
    NEED_DATA,
    NO_ROOM,
    YIELD,
    BytesMessage,
    CloseReceived,
    Ping,
    TextMessage,
    WebSocketConnection,
)
from ..protocol.ws_handshake import HandshakeRequest
from .context import error_logger

if TYPE_CHECKING:
    from ..asgi.http import Scope
    from .context import ServerContext

#: Seconds the peer has to answer our Close frame before the link is closed anyway.
CLOSE_TIMEOUT = 5.0
#: How long the app gets to take the messages queued before the peer's Close
#: (or a protocol error) before our Close frame is sent anyway.
DRAIN_TIMEOUT = 1.0
#: Bytes kept from a client that sends frames before the handshake is answered;
#: beyond this, reading pauses until the app accepts.
EARLY_LIMIT = 65536
#: The session's budget is ``ws_max_size``, but at least this much (small
#: messages then still queue up to ``ws_max_queue`` with a small ``ws_max_size``).
MIN_BUDGET = 1024 * 1024
#: A message payload at least this big is written as its own buffer next to the
#: frame header (``writelines``), not joined to it: no copy of the payload.
LARGE_PAYLOAD = 16384

# why reading is paused (bits of WebSocketSession._paused_by)
_BY_QUEUE = 1  # ws_max_queue messages wait for the app
_BY_BUDGET = 2  # the queued messages cost the budget (or a message has no room to inflate)
_BY_TURN = 4  # the rest of a read is parsed at the next turn
_BY_EARLY = 8  # frames sent before the handshake was answered
_BY_END = 16  # input ended (Close, EOF, protocol error): for good
#: reasons that also stop parsing what was already received
_HOLD = _BY_QUEUE | _BY_BUDGET | _BY_END

_NO_DEADLINE = 0
_PING_DUE = 1
_PONG_DUE = 2
_CLOSE_DUE = 3
_DRAIN_DUE = 4


class WebSocketLink(Protocol):
    """What a carrier (HTTP/1.1 connection, HTTP/2 stream) provides to a session."""

    @property
    def peer(self) -> str:
        """The peer, as logs show it."""

    @property
    def writing_paused(self) -> bool:
        """True while written bytes wait (``drain()`` returns once they went out)."""

    def send_handshake(
        self,
        handshake: HandshakeRequest,
        subprotocol: str | None,
        extension_header: bytes | None,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        """Answer the opening handshake (101, or 200 over HTTP/2); raise
        LocalProtocolError, writing nothing, on bad headers."""

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        """Answer the handshake with an HTTP response instead (ends the link once complete)."""

    def deny_body(self, body: bytes, more_body: bool) -> None: ...

    def send(self, data: bytes) -> None:
        """Write frames."""

    def send_large(self, header: bytes, payload: bytes) -> None:
        """Write one frame given as its header and a big payload, without joining them."""

    def close_link(self) -> None:
        """The session is over: close the connection, or end the stream (END_STREAM,
        and RST_STREAM if the peer has not ended its side). Not earlier: after our
        Close frame the peer's answer must still be read, as TCP reads after a FIN."""

    def abort_link(self) -> None:
        """Drop the connection, or reset the stream."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def drain(self) -> None: ...


class WebSocketSession:
    """One WebSocket from its handshake to its end; the cycle's :class:`WebSocketStream`.

    The carrier calls :meth:`receive` with the bytes of the session,
    :meth:`receive_eof` when the peer ends its side (TCP EOF, END_STREAM),
    :meth:`lost` when the connection or stream is gone, and :meth:`shutdown`
    on a graceful server shutdown.
    """

    __slots__ = (
        "ctx",
        "link",
        "handshake",
        "peer",
        "cycle",
        "conn",
        "ended",
        "deadline",
        "deadline_kind",
        "deadline_slot",
        "_ping_interval",
        "_pending",
        "_early_eof",
        "_input_end",
        "budget",
        "_paused_by",
        "_turn_pending",
        "_pong_due",
    )

    def __init__(self, ctx: ServerContext, link: WebSocketLink, handshake: HandshakeRequest, scope: Scope) -> None:
        self.ctx = ctx
        self.link = link
        self.handshake = handshake
        self.peer = link.peer
        #: what the messages waiting for the app cost (charged by the cycle)
        self.budget = ReadBudget(
            max(ctx.config.ws_max_size, MIN_BUDGET), lambda: self._pause(_BY_BUDGET), lambda: self._resume(_BY_BUDGET)
        )
        self._paused_by = 0
        self._turn_pending = False
        self._pong_due: bytes | None = None  # the last Ping's payload, while the link can't write
        self.cycle = WebSocketCycle(scope, self, max_queue=ctx.config.ws_max_queue)
        self.conn: WebSocketConnection | None = None
        #: the link is closed or gone: nothing more is read, written or timed
        self.ended = False
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        self.deadline_slot = 0  # (the wheel's: see heron.transport.deadlines)
        self._ping_interval = ctx.config.ws_ping_interval or 0.0
        self._pending = bytearray()  # bytes that arrived before the handshake was answered
        self._early_eof = False
        # (close code, reason, the peer's Close or None for a protocol error):
        # set when input ended while messages still waited for the app
        self._input_end: tuple[int, str, CloseReceived | None] | None = None

    def start(self) -> None:
        """Run the app (unless the link is gone already)."""
        if self.ended or self.cycle.task is not None:
            return
        ctx = self.ctx
        self.cycle.task = task = ctx.start_session(self.cycle.run(ctx.app, ctx.tasks))
        ctx.tasks.add(task)

    # --- from the carrier -------------------------------------------------------

    def receive(self, data: bytes) -> None:
        if self.ended:
            return
        conn = self.conn
        if conn is None:
            # The client should wait for our answer; keep (a bounded amount of) what it sent early.
            self._pending += data
            if len(self._pending) > EARLY_LIMIT:
                self._pause(_BY_EARLY)
            return
        conn.receive_data(data)
        kind = self.deadline_kind
        if kind == _PING_DUE or kind == _PONG_DUE:  # any frame shows the peer is alive
            self.ctx.deadlines.arm(self, _PING_DUE, self.ctx.clock + self._ping_interval)
        self._process()

    def receive_eof(self) -> None:
        if self.ended:
            return
        conn = self.conn
        if conn is None:
            self._early_eof = True  # fed to the connection at accept; a denial goes on
            return
        conn.receive_data(b"")
        self._process()

    def lost(self) -> None:
        """The connection or stream is gone."""
        self._end()
        self._input_end = None
        self.cycle.feed_disconnect(1006)

    def shutdown(self) -> None:
        """Graceful shutdown: close 1001 (Going Away); the app gets its disconnect."""
        conn = self.conn
        if conn is None:
            return  # still in the handshake: the app decides, the shutdown timeout bounds it
        if not conn.close_sent and not self.ended:
            self.close(1001, "server shutting down")
            self.cycle.feed_disconnect(1001, "server shutting down")

    # --- frames -------------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        assert conn is not None
        cycle = self.cycle
        budget = self.budget
        inflating = conn.compressed  # (room only bounds inflation)
        while not self._paused_by & _HOLD and not self.ended:
            if inflating:
                conn.room = budget.limit - budget.held
            try:
                event = conn.next_event()
            except WebSocketProtocolError as exc:
                error_logger.info("WebSocket protocol error from %s: %s (%d)", self.peer, exc, exc.close_code)
                self._end_input(exc.close_code, str(exc), None)
                return
            kind = event.__class__
            if kind is BytesMessage:
                cycle.feed_message(event.data)  # type: ignore[union-attr]
            elif kind is TextMessage:
                cycle.feed_message(event.text)  # type: ignore[union-attr]
            elif event is NEED_DATA:
                return
            elif event is NO_ROOM:
                budget.stall()  # reading resumes once the app has taken half of what waits
                return
            elif event is YIELD:
                self._yield_turn()
                return
            elif kind is Ping:
                if self.link.writing_paused:
                    self._pong_due = event.payload  # type: ignore[union-attr]  # answered once writable
                else:
                    self.link.send(conn.pong_reply(event))  # type: ignore[arg-type]
            elif kind is CloseReceived:
                self._end_input(event.code, event.reason, event)  # type: ignore[union-attr, arg-type]
                return
            # Pong: liveness is already recorded by receive()

    def _yield_turn(self) -> None:
        self._pause(_BY_TURN)
        if not self._turn_pending:
            self._turn_pending = True
            self.ctx.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self.ended or self.conn is None:
            return
        self._process()
        if not self._turn_pending:
            self._resume(_BY_TURN)

    def _pause(self, reason: int) -> None:
        if not self._paused_by and not self.ended:
            self.link.pause_reading()
        self._paused_by |= reason

    def _resume(self, reason: int) -> None:
        """One reason to pause is gone: parse what waits (it may pause again),
        then read again if nothing else holds the link."""
        was = self._paused_by
        if not was & reason:
            return
        self._paused_by = was & ~reason
        if self.ended:
            return
        if reason & _HOLD and self.conn is not None:
            # Parse what waited at the next turn, not inside the app's receive()
            # that made the room: the app handles its message first.
            self._pause(_BY_TURN)
            if not self._turn_pending:
                self._turn_pending = True
                self.ctx.loop.call_soon(self._next_turn)
            return
        if was and not self._paused_by:
            self.link.resume_reading()

    def writable(self) -> None:
        """The link can write again: answer the last Ping held back meanwhile."""
        payload = self._pong_due
        conn = self.conn
        if payload is not None and conn is not None and not self.ended and not self.link.writing_paused:
            self._pong_due = None
            self.link.send(conn.pong_reply(Ping(payload)))

    def _end_input(self, code: int, reason: str, close: CloseReceived | None) -> None:
        """The peer's Close arrived, or its input ended or failed: finish once the app has its messages."""
        if self.ended:
            return
        # The connection object ignores anything after this point anyway.
        self._pause(_BY_END)
        self._input_end = (code, reason, close)
        cycle = self.cycle
        task = cycle.task
        if (
            not cycle.pending_messages
            or (self.conn is not None and self.conn.close_sent)
            or (task is not None and task.done())
        ):
            self._finish_input()
            return
        # Finish when the app asks for more than is queued (it has handled
        # the rest, replies included), or after DRAIN_TIMEOUT at the latest.
        cycle.on_idle = self._finish_input
        self._set_deadline(_DRAIN_DUE, DRAIN_TIMEOUT)

    def _finish_input(self) -> None:
        end = self._input_end
        self._input_end = None
        if end is None or self.ended:
            return
        code, reason, close = end
        conn = self.conn
        assert conn is not None
        if not conn.close_sent:
            if close is None:
                self.link.send(conn.send_close(code, reason[:123]))
            else:
                self.link.send(conn.close_reply(close))
        self.cycle.feed_disconnect(code, reason)
        # RFC 6455 7.1.1: the server closes the TCP connection first.
        self._close_link()

    # --- WebSocketStream (called by the cycle) ---------------------------------------

    @property
    def writing_paused(self) -> bool:
        return self.link.writing_paused

    def accept(self, subprotocol: str | None, headers: Iterable[tuple[bytes, bytes]]) -> None:
        if self.ended:
            return
        ctx = self.ctx
        config = ctx.config
        extension_header = None
        params = None
        if config.ws_per_message_deflate and self.handshake.extensions:
            agreed = negotiate(self.handshake.extensions, DeflateSettings())
            if agreed is not None:
                extension_header, params = agreed
        self.link.send_handshake(self.handshake, subprotocol, extension_header, headers)
        self.conn = conn = WebSocketConnection(max_message_size=config.ws_max_size, deflate=params, clock=ctx.loop.time)
        self._schedule_ping()
        if ctx.shutting_down:
            # accepted while the server stops: the session ends at once (1001),
            # rather than living until the graceful-shutdown timeout
            self.shutdown()
            return
        pending = self._pending
        if pending:
            self._pending = bytearray()
            conn.receive_data(bytes(pending))
        if self._early_eof:
            conn.receive_data(b"")
        if pending or self._early_eof:
            self._process()
        self._resume(_BY_EARLY)

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        if not self.ended:
            self.link.deny(status, headers, body, more_body)

    def deny_body(self, body: bytes, more_body: bool) -> None:
        if not self.ended:
            self.link.deny_body(body, more_body)

    def send_message(self, data: str | bytes) -> None:
        conn = self.conn
        if conn is None or self.ended or conn.close_sent:
            return  # the cycle already reported the disconnect
        header, payload = conn.frame_message(data)
        if len(payload) < LARGE_PAYLOAD:
            self.link.send(header + payload)
        else:
            self.link.send_large(header, payload)

    def close(self, code: int, reason: str) -> None:
        conn = self.conn
        if conn is None or self.ended or conn.close_sent:
            return
        self.link.send(conn.send_close(code, reason))
        if conn.close_received or self._input_end is not None:
            # Nothing more will be read: the peer closed, or its input ended or failed.
            self._input_end = None
            self._close_link()
        else:
            self._set_deadline(_CLOSE_DUE, CLOSE_TIMEOUT)

    def abort(self) -> None:
        if not self.ended:
            self._end()
            self.link.abort_link()

    def pause_reading(self) -> None:
        """The app's queue is full (ws_max_queue messages)."""
        self._pause(_BY_QUEUE)

    def resume_reading(self) -> None:
        self._resume(_BY_QUEUE)

    async def drain(self) -> None:
        if not self.ended:
            await self.link.drain()

    # --- deadlines ------------------------------------------------------------------

    def _set_deadline(self, kind: int, timeout: float) -> None:
        self.ctx.deadlines.arm(self, kind, self.ctx.clock + timeout)

    def _schedule_ping(self) -> None:
        interval = self._ping_interval
        if interval:
            self._set_deadline(_PING_DUE, interval)
        else:
            self.ctx.deadlines.clear(self)

    def on_deadline(self, kind: int) -> None:
        conn = self.conn
        if self.ended or conn is None:
            return
        if kind == _PING_DUE:
            if not conn.close_sent:
                self.writable()
                self.link.send(conn.send_ping(b"heron"))
                timeout = self.ctx.config.ws_ping_timeout
                if timeout:
                    self._set_deadline(_PONG_DUE, timeout)
        elif kind == _PONG_DUE:
            error_logger.info("WebSocket ping timeout for %s: closing with 1011", self.peer)
            if not conn.close_sent:
                self.link.send(conn.send_close(1011, "keepalive ping timeout"))
            self.cycle.feed_disconnect(1011, "keepalive ping timeout")
            self._close_link()
        elif kind == _DRAIN_DUE:
            self._finish_input()  # the app did not take its last messages in time
        elif kind == _CLOSE_DUE:
            error_logger.info("WebSocket closing handshake with %s timed out", self.peer)
            self.cycle.feed_disconnect(1006)
            self._close_link()

    # --- the end ----------------------------------------------------------------------

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.ctx.deadlines.drop(self)

    def _close_link(self) -> None:
        if not self.ended:
            self._end()
            self.link.close_link()


__all__ = ["WebSocketSession", "WebSocketLink", "CLOSE_TIMEOUT", "DRAIN_TIMEOUT"]
