"""HTTP/1.1 over an asyncio transport: moves bytes between the socket, the
sans-IO :class:`~heron.protocol.http1.H1Connection` and one
:class:`~heron.asgi.http.HTTPCycle` per request.

Flow control, both ways:

* reading pauses while the app's unread request body costs more than the
  connection's :class:`~heron.asgi.budget.ReadBudget` (``BODY_HIGH_WATER``),
  or while pipelined input beyond ``MAX_PIPELINE_BUFFER`` waits behind a
  request in flight;
* fairness: one read is parsed :data:`EVENTS_PER_TURN` events at a time (an
  event covers at most the parser's batch of chunks); beyond that reading
  pauses and parsing goes on at the next turn of the event loop, so a client
  that sends a flood of tiny chunks can't hold the loop for long;
* ``send()`` waits (``drain``) while the transport's write buffer is above
  its high-water mark; a client that reads nothing for ``timeout_write``
  seconds is disconnected.

``http.response.pathsend`` on a cleartext connection: the file goes out with
``os.sendfile`` (zero copy) on a ``dup()`` of the transport's socket, once
the transport's write buffer is empty; see
:meth:`~heron.transport.h1_response.H1ResponseWriter._send_file`.

Deadlines (see :mod:`heron.transport.context`): a complete request head
within ``timeout_request_header`` of the connection opening or of the first
byte after a keep-alive pause; ``timeout_keep_alive`` between requests;
``timeout_request_body`` while the app (or an ``Upgrade: h2c`` switch)
waits for request body bytes that don't come (408).

:class:`H1Protocol` is assembled from parts, one module each: the state and
shared helpers (:mod:`heron.transport.h1_base`), the ``HTTPStream`` side
(:mod:`heron.transport.h1_response`), the hand-overs to WebSocket and HTTP/2
(:mod:`heron.transport.h1_upgrade`), and here the asyncio callbacks, the
read loop and the connection's lifecycle.
"""

from __future__ import annotations

import asyncio
import os
from time import perf_counter

from ..asgi.http import HTTPCycle, http_scope
from ..protocol.errors import RemoteProtocolError
from ..protocol.http1 import NEED_DATA, PAUSED, Data, EndOfMessage, Request, simple_response
from ..tls import tls_extension
from .context import connection_addresses, error_logger
from .h1_base import (
    BODY_DEADLINE,
    HEADER_DEADLINE,
    KEEP_ALIVE_DEADLINE,
    MAX_DRAIN,
    PAUSED_BY_PIPELINE,
    PAUSED_BY_TURN,
    WRITE_DEADLINE,
)
from .h1_response import H1ResponseWriter
from .h1_upgrade import H1Upgrades

#: Pipelined bytes buffered behind a request in flight before reading pauses.
MAX_PIPELINE_BUFFER = 64 * 1024
#: graceful shutdown: seconds a connection has to finish sending a request head it
#: started (or, just accepted, its first one) before it is closed
SHUTDOWN_HEAD_GRACE = 1.0
#: encrypted input a TLS transport buffers before it stops reading the socket
TLS_READ_HIGH_WATER = 64 * 1024
#: Parser events handled per turn of the event loop before the rest of a read
#: waits for the next turn (with the parser's chunk batches, about 8,000 tiny
#: chunks: a few milliseconds).
EVENTS_PER_TURN = 8

_HAVE_SENDFILE = hasattr(os, "sendfile")

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}

# ASGI extensions announced on HTTP/1.1 requests; trailers only to clients
# that said ``TE: trailers`` (and they are sent only on chunked responses)
_EXTENSIONS: tuple[str, ...] = ("http.response.early_hint", "http.response.pathsend")
_EXTENSIONS_TRAILERS: tuple[str, ...] = ("http.response.early_hint", "http.response.trailers", "http.response.pathsend")
_EXTENSIONS_HTTP10: tuple[str, ...] = ("http.response.pathsend",)


class H1Protocol(H1Upgrades, H1ResponseWriter):
    """One HTTP/1.1 connection (see the module docstring)."""

    __slots__ = ()

    # --- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # Encrypted bytes the TLS layer holds while we don't read: 256 KiB by
            # default, on top of what the connection's budget counts.
            transport.set_read_buffer_limits(TLS_READ_HIGH_WATER)  # type: ignore[attr-defined]  # TLS transports have it
            if ssl_object.selected_alpn_protocol() == "h2":
                self._switch_to_h2(transport)
                return
            self.scheme = "https"
            self.tls = tls_extension(ssl_object)
            self._h2_preface = None  # over TLS, HTTP/2 is chosen by ALPN only (RFC 9113 3.3)
        elif _HAVE_SENDFILE and transport.get_extra_info("socket") is not None:
            self.send_file = self._send_file
        ctx.connections.add(self)
        self.client, self.server, self.peer = connection_addresses(transport) if self.proxied is None else self.proxied
        if ctx.proxy is not None and ctx.proxy.trusts_peer(self.client):
            self.proxy = ctx.proxy
        if ctx.shutting_down:
            # accepted a moment before the listener closed: its client is sending its
            # first request, which is answered (connection: close), as in shutdown()
            self._set_deadline(HEADER_DEADLINE, SHUTDOWN_HEAD_GRACE)
            return
        self._set_deadline(HEADER_DEADLINE, ctx.config.timeout_request_header)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        self.ctx.deadlines.drop(self)
        self._out = None
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            cycle.disconnect()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self._eof = True
        self.conn.receive_data(b"")
        # Also with a request in flight: a body cut short by the client's EOF
        # fails in the parser, so the app reading it gets http.disconnect.
        self._process()
        if self.cycle is not None and self.conn.request_complete:
            self.cycle.client_eof()
        # Keep the transport open to finish a response in flight (half-close).
        # (not over TLS: asyncio's TLS transports can't half-close, and warn when asked to)
        return not self._closed and self.cycle is not None and self.tls is None

    def data_received(self, data: bytes) -> None:
        if self._h2_preface is not None and self._check_h2_preface(data):
            return
        conn = self.conn
        conn.receive_data(data)
        if self.cycle is None:
            self._process()
            # Part of a next request's head is waiting: from now on the rest must
            # arrive in time. (Checked after parsing, not before: most reads hold
            # a whole head, and _on_request would clear the deadline right away.)
            if self.deadline_kind == KEEP_ALIVE_DEADLINE and not self._closed and conn.buffered:
                self._set_deadline(HEADER_DEADLINE, self.ctx.config.timeout_request_header)
        elif not conn.request_complete or self._draining:
            self._process()
        elif conn.buffered > MAX_PIPELINE_BUFFER:
            self._pause_reading(PAUSED_BY_PIPELINE)

    def pause_writing(self) -> None:
        self.writing_paused = True
        timeout = self.ctx.config.timeout_write
        if timeout:
            self._set_deadline(WRITE_DEADLINE, timeout)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._clear_deadline(WRITE_DEADLINE)
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- parsing -------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        turn = EVENTS_PER_TURN
        while not self._closed:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._reject(exc)
                return
            kind = event.__class__
            if kind is Request:
                self._on_request(event)  # type: ignore[arg-type]
                if not event.has_body:  # type: ignore[union-attr]
                    # complete already: the parser would only say PAUSED
                    if conn.buffered > MAX_PIPELINE_BUFFER:
                        self._pause_reading(PAUSED_BY_PIPELINE)
                    return
            elif kind is Data:
                if self._draining:
                    self._drained += len(event.data)  # type: ignore[union-attr]
                    if self._drained > MAX_DRAIN:
                        self._close()
                        return
                elif self.cycle is not None:
                    self.cycle.feed_body(event.data)  # type: ignore[union-attr]
                turn -= 1
                if not turn and conn.buffered:
                    self._yield_turn()
                    return
            elif kind is EndOfMessage:
                if self._draining:
                    self._draining = False
                    self._next_cycle()
                    return
                if self.cycle is not None:
                    self.cycle.end_body()
            elif event is NEED_DATA:
                return
            elif event is PAUSED:
                if conn.buffered > MAX_PIPELINE_BUFFER:
                    self._pause_reading(PAUSED_BY_PIPELINE)
                return
            else:  # ConnectionClosed: the client is done with this connection
                self._close()
                return

    def _yield_turn(self) -> None:
        """Parse the rest of this read at the next turn of the loop (others go first)."""
        self._pause_reading(PAUSED_BY_TURN)
        if not self._turn_pending:
            self._turn_pending = True
            self.ctx.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self._closed:
            return
        self._process()
        if not self._turn_pending:
            self._resume_reading(PAUSED_BY_TURN)

    def _on_request(self, request: Request) -> None:
        ctx = self.ctx
        ctx.deadlines.clear(self)
        self._head_written = False
        self._awaiting_continue = request.expect_continue
        method = _METHODS.get(request.method) or request.method.decode("ascii")
        if ctx.observer is not None:
            self._request_start = perf_counter()  # (microseconds: uvloop's loop.time() ticks in ms)
            self._request = request
        if request.upgrade is not None:
            if b"h2c" in request.upgrade and self._upgrade_h2c(request):
                return
            if ctx.config.ws != "none" and b"websocket" in request.upgrade:
                self._upgrade_websocket(request)
                return
        if ctx.limit_concurrency is not None and ctx.over_capacity(self):
            self.cycle = HTTPCycle({}, self, body_complete=not request.has_body)
            self.cycle.status = 503
            self._write_simple(503, b"Service Unavailable\n")
            return
        body_limit = ctx.limit_request_body
        if body_limit and request.has_body:
            declared = self.conn.body_remaining
            if declared is not None and declared > body_limit:
                # refused before the app runs; a body small enough to drain keeps the
                # connection, a bigger one closes it (and the response says so)
                ctx.log_bad_request(self.peer, f"request body of {declared} bytes over --limit-request-body", 413)
                self.cycle = HTTPCycle({}, self, body_complete=False)
                self.cycle.status = 413
                self._write_simple(413, b"Content Too Large\n", close=declared > MAX_DRAIN)
                return
        client, scheme = self.client, self.scheme
        if request.forwarded and self.proxy is not None:
            client, scheme = self._forwarded(request)
        scope = http_scope(
            method,
            request.http_version,
            scheme,
            request.path,
            request.query,
            ctx.root_path,
            request.headers,
            client,
            self.server,
            ctx.lifespan_state,
            {"tls": self.tls} if self.tls is not None else {},
        )
        if request.http_version == "1.1":
            extensions = _EXTENSIONS_TRAILERS if request.te_trailers else _EXTENSIONS
        else:
            extensions = _EXTENSIONS_HTTP10  # HTTP/1.0: no interim responses, no chunked trailers
        # (all positional: keyword arguments make this call measurably dearer)
        cycle = HTTPCycle(scope, self, not request.has_body, request.expect_continue, extensions, body_limit)
        self.cycle = cycle
        ctx.start_cycle(cycle)

    def _reject(self, exc: RemoteProtocolError) -> None:
        """Answer a malformed request (if the framing still allows it) and close."""
        self.ctx.log_bad_request(self.peer, str(exc), exc.status_code)
        if self.cycle is not None and not self.conn.response_started:
            # the body was malformed while the app was running: it sees a disconnect
            cycle, self.cycle = self.cycle, None
            cycle.disconnect()
            self.transport.write(simple_response(exc.status_code, self.ctx.date_line + self.ctx.server_line))
        elif self.cycle is None:
            self.transport.write(simple_response(exc.status_code, self.ctx.date_line + self.ctx.server_line))
        self._close()

    # --- lifecycle ---------------------------------------------------------------

    def on_deadline(self, kind: int) -> None:
        if self._closed:
            return
        if kind == HEADER_DEADLINE and self.cycle is None and self.conn.buffered and not self._draining:
            self.ctx.log_bad_request(self.peer, "request head not received in time", 408)
            self.transport.write(simple_response(408, self.ctx.date_line + self.ctx.server_line))
            self._close()
        elif kind == WRITE_DEADLINE:
            error_logger.info("Closing connection from %s: client stopped reading the response", self.peer)
            self.abort()
            self.transport.abort()
        elif kind == BODY_DEADLINE and self.cycle is not None:
            self.ctx.log_bad_request(self.peer, "request body not received in time", 408)
            self.cycle.refuse_body(408)
        else:
            self._close()

    @property
    def idle_keep_alive(self) -> bool:
        """Between two requests, nothing of the next one received yet."""
        return (
            self.deadline_kind == KEEP_ALIVE_DEADLINE and self.cycle is None and not self._closed
            and not self.conn.buffered
        )  # fmt: skip

    def close_idle(self) -> None:
        """Close an idle keep-alive connection to make room (--limit-concurrency)."""
        self._close()

    def shutdown(self) -> None:
        """Graceful shutdown: close now if idle between requests, else after the
        current response. A connection whose request head has not (all) arrived,
        typically one accepted a moment ago whose client is sending its first
        request, gets SHUTDOWN_HEAD_GRACE seconds for it: that request is then
        answered (``connection: close``), rather than the connection cut off with
        the request unanswered, which a client can't tell from a failure."""
        if self.cycle is not None or self._draining or self._closed:
            return
        if self.idle_keep_alive:
            self._close()  # (a client retries a request cut off on a reused connection)
            return
        if self.deadline_kind != HEADER_DEADLINE or self.deadline > self.ctx.clock + SHUTDOWN_HEAD_GRACE:
            self._set_deadline(HEADER_DEADLINE, SHUTDOWN_HEAD_GRACE)
