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
the transport's write buffer is empty; see :meth:`H1Protocol._send_file`.

Deadlines (see :mod:`heron.transport.context`): a complete request head
within ``timeout_request_header`` of the connection opening or of the first
byte after a keep-alive pause; ``timeout_keep_alive`` between requests;
``timeout_request_body`` while the app (or an ``Upgrade: h2c`` switch)
waits for request body bytes that don't come (408).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import Any

from ..asgi.budget import ReadBudget
from ..asgi.http import BODY_HIGH_WATER, ERROR_BODIES, HTTPCycle, http_scope
from ..asgi.proxy import ProxyTrust
from ..protocol.errors import LocalProtocolError, RemoteProtocolError
from ..protocol.http1 import (
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    H1Connection,
    Request,
    simple_response,
)
from ..tls import tls_extension
from .context import ServerContext, connection_addresses, error_logger, format_peer
from .h2c import PREFACE, UpgradeBody, upgrade_settings

#: Pipelined bytes buffered behind a request in flight before reading pauses.
MAX_PIPELINE_BUFFER = 64 * 1024
#: Unread request body the server will read and discard to keep a connection.
MAX_DRAIN = 64 * 1024
#: encrypted input a TLS transport buffers before it stops reading the socket
TLS_READ_HIGH_WATER = 64 * 1024
#: Parser events handled per turn of the event loop before the rest of a read
#: waits for the next turn (with the parser's chunk batches, about 8,000 tiny
#: chunks: a few milliseconds).
EVENTS_PER_TURN = 8

_HAVE_SENDFILE = hasattr(os, "sendfile")
#: sendfile errors that mean the client went away (any other is a file error)
_CLIENT_GONE = (ConnectionError, TimeoutError)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
#: status -> the head fields of heron's own answer in the app's place (ERROR_BODIES)
_ERROR_HEADERS = {
    status: [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    for status, body in ERROR_BODIES.items()
}

# ASGI extensions announced on HTTP/1.1 requests; trailers only to clients
# that said ``TE: trailers`` (and they are sent only on chunked responses)
_EXTENSIONS: tuple[str, ...] = ("http.response.early_hint", "http.response.pathsend")
_EXTENSIONS_TRAILERS: tuple[str, ...] = ("http.response.early_hint", "http.response.trailers", "http.response.pathsend")
_EXTENSIONS_HTTP10: tuple[str, ...] = ("http.response.pathsend",)

# what the deadline means
_NO_DEADLINE = 0
_HEADER_DEADLINE = 1
_KEEP_ALIVE_DEADLINE = 2
_WRITE_DEADLINE = 3
_BODY_DEADLINE = 4

# why reading is paused (bits of _reading_paused_by)
_PAUSED_BY_BODY = 1  # the unread body's budget is spent
_PAUSED_BY_PIPELINE = 2  # pipelined input waits behind the request in flight
_PAUSED_BY_TURN = 4  # the rest of a read is parsed at the next turn


class H1Protocol(asyncio.Protocol):
    __slots__ = (
        "ctx",
        "conn",
        "transport",
        "cycle",
        "client",
        "server",
        "scheme",
        "tls",
        "peer",
        "deadline",
        "deadline_kind",
        "writing_paused",
        "_drain_waiter",
        "_reading_paused_by",
        "_head_written",
        "_draining",
        "_drained",
        "_closed",
        "_request_start",
        "_request",
        "_response_headers",
        "_awaiting_continue",
        "_eof",
        "_h2_preface",
        "send_file",
        "proxy",
        "_log_peer",
        "_budget",
        "_turn_pending",
    )

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.conn = H1Connection(ctx.limits)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.cycle: HTTPCycle | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.tls: dict[str, Any] | None = None  # the ASGI tls extension, once per TLS connection
        self.peer = ""
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        self.writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused_by = 0  # bit 1: app body backpressure, bit 2: pipeline
        self._head_written = False
        self._draining = False
        self._drained = 0
        self._closed = False
        self._request_start = 0.0
        self._request: Request | None = None  # set only while observed (access log, metrics)
        self._response_headers: Iterable[tuple[bytes, bytes]] | None = None
        self._awaiting_continue = False
        self._eof = False
        self._h2_preface: bytes | None = b"" if ctx.config.http2 else None  # bytes held back, or None: decided
        # optional HTTPStream capability, offered in connection_made on plain
        # sockets only (TLS encrypts in user space: no sendfile there)
        self.send_file: Callable[[int, int, int], Awaitable[None]] | None = None
        self.proxy: ProxyTrust | None = None  # set when the peer is a trusted proxy (--proxy-headers)
        self._log_peer = ""  # the forwarded client as the access log shows it (proxied requests)
        self._budget: ReadBudget | None = None  # made with the first request body (see budget)
        self._turn_pending = False  # parsing goes on at the next turn (see _next_turn)

    @property
    def budget(self) -> ReadBudget:
        """What the request bodies buffered for the app are charged to (one per
        connection, made when the first body arrives: idle connections stay small)."""
        budget = self._budget
        if budget is None:
            budget = self._budget = ReadBudget(BODY_HIGH_WATER, self.pause_reading, self.resume_reading)
        return budget

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
        self.client, self.server, self.peer = connection_addresses(transport)
        if ctx.proxy is not None and ctx.proxy.trusts_peer(self.client):
            self.proxy = ctx.proxy
        if ctx.shutting_down:
            self._close()
            return
        self._set_deadline(_HEADER_DEADLINE, ctx.config.timeout_request_header)

    def _switch_to_h2(self, transport: asyncio.BaseTransport) -> None:
        """ALPN chose "h2" (offered when http2 is on, see heron.tls.alpn_protocols):
        the TLS connection belongs to an H2Protocol from the start."""
        from .http2 import H2Protocol

        self._closed = True  # this protocol never serves the connection
        protocol = H2Protocol(self.ctx)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.ctx.connections.discard(self)
        self.deadline = 0.0
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
            if self.deadline_kind == _KEEP_ALIVE_DEADLINE and not self._closed and conn.buffered:
                self._set_deadline(_HEADER_DEADLINE, self.ctx.config.timeout_request_header)
        elif not conn.request_complete or self._draining:
            self._process()
        elif conn.buffered > MAX_PIPELINE_BUFFER:
            self._pause_reading(_PAUSED_BY_PIPELINE)

    def pause_writing(self) -> None:
        self.writing_paused = True
        timeout = self.ctx.config.timeout_write
        if timeout:
            self._set_deadline(_WRITE_DEADLINE, timeout)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.deadline_kind == _WRITE_DEADLINE:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE
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
                        self._pause_reading(_PAUSED_BY_PIPELINE)
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
                    self._pause_reading(_PAUSED_BY_PIPELINE)
                return
            else:  # ConnectionClosed: the client is done with this connection
                self._close()
                return

    def _yield_turn(self) -> None:
        """Parse the rest of this read at the next turn of the loop (others go first)."""
        self._pause_reading(_PAUSED_BY_TURN)
        if not self._turn_pending:
            self._turn_pending = True
            self.ctx.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self._closed:
            return
        self._process()
        if not self._turn_pending:
            self._resume_reading(_PAUSED_BY_TURN)

    def _on_request(self, request: Request) -> None:
        ctx = self.ctx
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
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

    def _forwarded(self, request: Request) -> tuple[tuple[str, int] | None, str]:
        """(client, scheme) as the trusted proxy in front reports them."""
        assert self.proxy is not None
        client, scheme = self.proxy.resolve(request.headers, self.client, self.scheme)
        self._log_peer = self.peer if client == self.client else format_peer(client)
        return client, scheme

    def _upgrade_websocket(self, request: Request) -> None:
        """Hand the connection to a WebSocketProtocol (or refuse the handshake)."""
        from ..protocol.errors import HandshakeError
        from ..protocol.ws_handshake import validate_handshake
        from .websocket import WebSocketProtocol

        try:
            if request.has_body:
                raise HandshakeError("WebSocket handshake with a request body")
            handshake = validate_handshake(request.method, request.http_version, request.headers)
        except HandshakeError as exc:
            extra = b"".join(name + b": " + value + b"\r\n" for name, value in exc.extra_headers)
            self.ctx.log_bad_request(self.peer, str(exc), exc.status_code)
            self.transport.write(simple_response(exc.status_code, self.ctx.date_line + self.ctx.server_line + extra))
            self._close()
            return
        self._closed = True  # this protocol is done; the transport now belongs to the WebSocket
        self.deadline = 0.0
        self.ctx.connections.discard(self)
        client, scheme, peer = self.client, self.scheme, self.peer
        if request.forwarded and self.proxy is not None:
            client, scheme = self._forwarded(request)
            peer = self._log_peer
        WebSocketProtocol.take_over(
            self.ctx,
            self.transport,
            self.conn,
            request,
            handshake,
            scheme=scheme,
            client=client,
            server=self.server,
            peer=peer,
            leftover=self.conn.take_buffer(),
            tls=self.tls,
        )

    # --- HTTP/2 (see heron.transport.http2) -------------------------------------

    def _check_h2_preface(self, data: bytes) -> bool:
        """At the start of a connection: True if ``data`` was taken (held back as a
        possible start of the HTTP/2 preface, or the connection went to HTTP/2)."""
        seen = self._h2_preface + data if self._h2_preface else data
        n = min(len(seen), len(PREFACE))
        if seen[:n] != PREFACE[:n]:
            self._h2_preface = None
            if len(seen) > len(data):  # replay what was held back
                self.data_received(seen)
                return True
            return False
        if n < len(PREFACE):
            self._h2_preface = seen
            return True
        self._h2_preface = None
        self._hand_to_h2(seen, None)
        return True

    def _upgrade_h2c(self, request: Request) -> bool:
        """``Upgrade: h2c`` (cleartext only): switch once the request body is read."""
        if not self.ctx.config.http2 or self.scheme != "http":
            return False
        settings = upgrade_settings(request)
        if settings is None:
            return False
        if not request.has_body:
            self._hand_to_h2(self.conn.take_buffer(), (settings, request, []))
        else:
            if request.expect_continue:
                self.transport.write(self.conn.send_informational(100))
            self.cycle = UpgradeBody(self, request, settings)  # type: ignore[assignment]  # (a cycle's stand-in)
            self.wait_for_body(True)  # the switch waits for the body (timeout_request_body)
        return True

    # --- h2c.UpgradeOwner (called by the UpgradeBody) ---

    def switch_to_h2(self, request: Request, settings: bytes, body: bytes) -> None:
        self.cycle = None
        self.wait_for_body(False)
        self._hand_to_h2(self.conn.take_buffer(), (settings, request, body))

    def serve_over_http1(self, request: Request, body: bytes) -> None:
        """The upgrade request's body is too big to hold: serve it over HTTP/1.1."""
        request.upgrade = None
        self.cycle = None
        self.wait_for_body(False)
        self._on_request(request)
        if self.cycle is not None:
            self.cycle.feed_body(body)

    def _hand_to_h2(self, data: bytes, upgrade: object) -> None:
        from .http2 import H2Protocol

        self._closed = True  # the transport now belongs to the HTTP/2 protocol
        self.deadline = 0.0
        self.ctx.connections.discard(self)
        H2Protocol.take_over(
            self.ctx,
            self.transport,
            scheme=self.scheme,
            client=self.client,
            server=self.server,
            peer=self.peer,
            data=data,
            upgrade=upgrade,  # type: ignore[arg-type]
        )

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

    # --- HTTPStream interface (called by the cycle) ----------------------------

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        if self._closed:
            return
        if self._request is not None:  # observed: the access log may show response headers
            self._response_headers = headers
        ctx = self.ctx
        conn = self.conn
        # Close after this response when the unread body is too big to drain,
        # or when the client still waits for 100-continue (it may never send
        # the body now), or when the server is shutting down.
        close = ctx.shutting_down or (
            not conn.request_complete and (self._awaiting_continue or self._draining_needed())
        )
        if not more_body:
            # the whole response in one message: one call, one write
            self.transport.write(
                conn.send_response(
                    status,
                    headers,
                    server_line=ctx.server_line,
                    date_line=ctx.date_line,
                    extra_lines=ctx.extra_lines,
                    close=close,
                    complete_body=body,
                )
            )
            self._head_written = True
            self._response_complete()
            return
        head = conn.send_response(
            status,
            headers,
            server_line=ctx.server_line,
            date_line=ctx.date_line,
            extra_lines=ctx.extra_lines,
            close=close,
        )
        try:
            data = conn.send_data(body) if body else b""
        except LocalProtocolError:
            conn.send_failed()  # nothing written: send_server_error() can still answer
            raise
        self._head_written = True
        self.transport.write(head + data if data else head)

    def send_body(self, body: bytes, more_body: bool) -> None:
        if self._closed or self._transport_lost():
            return
        conn = self.conn
        data = conn.send_data(body) if body else b""
        if not more_body:
            data += conn.send_end()
        if data:
            self.transport.write(data)
        if not more_body:
            self._response_complete()

    def send_server_error(self, status: int = 500) -> None:
        if self._closed:
            return
        if self._head_written:
            self.abort()
            return
        body = ERROR_BODIES[status]
        if self.conn.response_started:
            # the framer was left mid-response: answer outside it, then close
            self.conn.send_failed()
            self.transport.write(simple_response(status, self.ctx.date_line + self.ctx.server_line, body))
            self._close()
            return
        self.start_response(status, _ERROR_HEADERS[status], body, False)

    def abort(self) -> None:
        self.conn.send_failed()
        cycle = self.cycle
        if cycle is not None:
            self._log_access(cycle)
            self.cycle = None
            # an app still sending (write timeout) must learn the connection is gone
            cycle.disconnect()
        self._close()

    def send_continue(self) -> None:
        if self._awaiting_continue and not self._closed and not self.conn.response_started:
            self._awaiting_continue = False
            self.transport.write(self.conn.send_informational(100))

    def refuse(self, status: int) -> None:
        """Answer ``status`` outside the framer (nothing of the response was
        written) and close: the rest of the request body is never read."""
        if self._closed:
            return
        cycle = self.cycle
        if cycle is not None and self._request is not None:
            self._log_access(cycle)
        self.conn.send_failed()
        self.transport.write(simple_response(status, self.ctx.date_line + self.ctx.server_line))
        self._close()

    def wait_for_body(self, waiting: bool) -> None:
        """Arm (True) or clear the ``timeout_request_body`` deadline (a write
        deadline, armed while the client reads slowly, is left alone)."""
        kind = self.deadline_kind
        if waiting:
            timeout = self.ctx.config.timeout_request_body
            if timeout and (kind == _NO_DEADLINE or kind == _BODY_DEADLINE) and not self._closed:
                self.deadline = self.ctx.clock + timeout
                self.deadline_kind = _BODY_DEADLINE
        elif kind == _BODY_DEADLINE:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE

    def send_early_hint(self, links: list[bytes]) -> None:
        """103 Early Hints (RFC 8297), one Link field per link."""
        if not self._closed and not self.conn.response_started:
            self.transport.write(self.conn.send_informational(103, [(b"link", link) for link in links]))

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """End a response announced with trailers; they go on the wire only
        when it is chunked (with a Content-Length there is nowhere to put them)."""
        if self._closed:
            return
        conn = self.conn
        data = conn.send_end(headers if conn.chunked_response else None)
        if data:
            self.transport.write(data)
        self._response_complete()

    def pause_reading(self) -> None:
        self._pause_reading(_PAUSED_BY_BODY)

    def resume_reading(self) -> None:
        self._resume_reading(_PAUSED_BY_BODY)

    async def drain(self) -> None:
        if not self.writing_paused or self._closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.ctx.loop.create_future()
        await waiter

    async def _send_file(self, fd: int, offset: int, count: int) -> None:
        """``send_file`` of the HTTPStream interface: ``count`` bytes of the
        open file ``fd`` from ``offset`` are the next piece of the body.

        Zero copy with ``os.sendfile``. The transport knows nothing of these
        bytes, so they go out only once everything written before them has
        left its buffer, and nothing is written through it meanwhile (the
        cycle is busy in this call). uvloop has no ``loop.sendfile`` and won't
        watch a transport's own fd, so the socket is ``dup()``'d: a second
        descriptor of the same connection that the loop polls while the
        client is slow. As for ordinary writes, a client that reads nothing
        for ``timeout_write`` seconds is disconnected; one that goes away
        aborts the connection (the cycle then sees a disconnect).

        Raises LocalProtocolError, writing nothing, when the file is longer
        than the response's Content-Length (or later, when it turns out
        shorter than ``count``), and OSError for a file error.
        """
        if self._closed or self._transport_lost():
            return
        framing = self.conn.frame_data(count)
        if framing is None:
            return  # HEAD, 204, 304: no body on the wire
        prefix, suffix = framing
        transport = self.transport
        if prefix:
            transport.write(prefix)
        if transport.get_write_buffer_size():
            # With both limits at 0 the transport pauses us at once and calls
            # resume_writing exactly when its buffer is empty (drain() waits
            # for that, bounded by timeout_write through pause_writing).
            low, high = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0, low=0)
            try:
                await self.drain()
            finally:
                if not self._closed:
                    transport.set_write_buffer_limits(high=high, low=low)
            if self._closed:
                return
        metrics = self.ctx.metrics
        out = os.dup(transport.get_extra_info("socket").fileno())
        try:
            while True:
                try:
                    sent = os.sendfile(out, fd, offset, count)
                except BlockingIOError:
                    sent = -1
                except _CLIENT_GONE as exc:
                    error_logger.debug("Client %s went away during sendfile: %s", self.peer, exc)
                    self.abort()
                    return
                except OSError as exc:
                    if exc.errno != errno.ENOTCONN:
                        raise
                    self.abort()
                    return
                if sent == 0:
                    raise LocalProtocolError(
                        f"the file ended {count} bytes short of its size when the response started"
                    )
                if sent > 0:
                    if metrics is not None:  # these bytes bypass the counting transport
                        metrics.bytes_out += sent
                    offset += sent
                    count -= sent
                    if not count:
                        break
                # The socket took what it could: wait until the client reads.
                # (After a short send this also lets other connections run.)
                if not await self._wait_writable(out):
                    return
        finally:
            os.close(out)
        if suffix:
            transport.write(suffix)

    async def _wait_writable(self, fd: int) -> bool:
        """Wait until the socket ``fd`` can take more (False: the connection
        closed meanwhile, e.g. after ``timeout_write`` without progress)."""
        loop = self.ctx.loop
        # in _drain_waiter, so connection_lost wakes it too
        waiter = self._drain_waiter = loop.create_future()
        self._set_deadline(_WRITE_DEADLINE, self.ctx.config.timeout_write)
        loop.add_writer(fd, _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            if self._drain_waiter is waiter:
                self._drain_waiter = None
            if self.deadline_kind == _WRITE_DEADLINE:
                self.deadline = 0.0
                self.deadline_kind = _NO_DEADLINE
        return not self._closed

    # --- cycle transitions -------------------------------------------------------

    def _draining_needed(self) -> bool:
        """True when the unread request body is too big to drain: close instead."""
        remaining = self.conn.body_remaining
        return remaining is not None and remaining > MAX_DRAIN

    def _write_simple(self, status: int, body: bytes, close: bool = False) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        self.start_response(status, headers, body, False)

    def _response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and self._request is not None:
            self._log_access(cycle)
        conn = self.conn
        if not conn.keep_alive:
            self.cycle = None
            self._close()
        elif conn.request_complete:
            self._next_cycle()
        else:
            # The app answered without reading the whole body: discard the
            # rest (bounded) so the connection can be reused.
            self.cycle = None
            self._draining = True
            self._drained = 0
            self._set_deadline(_HEADER_DEADLINE, self.ctx.config.timeout_request_header)
            self._resume_reading(_PAUSED_BY_BODY)
            self.ctx.loop.call_soon(self._process)

    def _next_cycle(self) -> None:
        self.cycle = None
        pipelined = self.conn.start_next_cycle()
        ctx = self.ctx
        if ctx.shutting_down:
            self._close()
            return
        if ctx.timeout_keep_alive:
            self.deadline = ctx.clock + ctx.timeout_keep_alive
            self.deadline_kind = _KEEP_ALIVE_DEADLINE
        else:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE
        if self._reading_paused_by:
            self._resume_reading(_PAUSED_BY_BODY | _PAUSED_BY_PIPELINE)
        if pipelined or self._eof:
            # pipelined requests: parse them on the next loop turn, not inside
            # the send() of the previous app
            self.ctx.loop.call_soon(self._process)

    # --- lifecycle ---------------------------------------------------------------

    def on_deadline(self) -> None:
        kind = self.deadline_kind
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        if self._closed:
            return
        if kind == _HEADER_DEADLINE and self.cycle is None and self.conn.buffered and not self._draining:
            self.ctx.log_bad_request(self.peer, "request head not received in time", 408)
            self.transport.write(simple_response(408, self.ctx.date_line + self.ctx.server_line))
            self._close()
        elif kind == _WRITE_DEADLINE:
            error_logger.info("Closing connection from %s: client stopped reading the response", self.peer)
            self.abort()
            self.transport.abort()
        elif kind == _BODY_DEADLINE and self.cycle is not None:
            self.ctx.log_bad_request(self.peer, "request body not received in time", 408)
            self.cycle.refuse_body(408)
        else:
            self._close()

    @property
    def idle_keep_alive(self) -> bool:
        """Between two requests, nothing of the next one received yet."""
        return (
            self.deadline_kind == _KEEP_ALIVE_DEADLINE and self.cycle is None and not self._closed
            and not self.conn.buffered
        )  # fmt: skip

    def close_idle(self) -> None:
        """Close an idle keep-alive connection to make room (--limit-concurrency)."""
        self._close()

    def shutdown(self) -> None:
        """Graceful shutdown: close now if idle, else after the current response."""
        if self.cycle is None and not self._draining:
            self._close()

    def _set_deadline(self, kind: int, timeout: float) -> None:
        if timeout:
            self.deadline = self.ctx.clock + timeout
            self.deadline_kind = kind
        else:
            self.deadline = 0.0
            self.deadline_kind = _NO_DEADLINE

    def _pause_reading(self, reason: int) -> None:
        if not self._reading_paused_by and not self._closed:
            self.transport.pause_reading()
        self._reading_paused_by |= reason

    def _resume_reading(self, reasons: int) -> None:
        was_paused = self._reading_paused_by
        self._reading_paused_by &= ~reasons
        if was_paused and not self._reading_paused_by and not self._closed:
            self.transport.resume_reading()

    def _transport_lost(self) -> bool:
        """True (and the cycle sees a disconnect) when a write failed, e.g. the
        peer reset: the transport is closing and ``connection_lost`` is only
        queued. Without this an app that streams without awaiting anything else
        would never yield to the loop again (its writes are silently dropped)."""
        if self.transport.is_closing():
            self._close()
            return True
        return False

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.deadline = 0.0
            self.transport.close()
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            cycle.disconnect()

    def _log_access(self, cycle: HTTPCycle) -> None:
        request = self._request
        observer = self.ctx.observer
        if request is None or observer is None:
            return
        self._request = None
        headers, self._response_headers = self._response_headers, None
        peer, self._log_peer = self._log_peer or self.peer, ""  # (set per proxied request)
        observer.http(peer, request, cycle.status, cycle.bytes_sent, self._request_start, headers)
