"""HTTP/2 over an asyncio transport: moves bytes between the socket, the
sans-IO :class:`~heron.protocol.http2.H2Core` and one ASGI cycle per stream
(:class:`~heron.asgi.http.HTTPCycle`, or for an RFC 8441 WebSocket a
:class:`~heron.transport.ws_session.WebSocketSession`, the same session driver
as over HTTP/1.1, with :class:`~heron.transport.http2_websocket.H2WebSocket`
as its link).

This module is the connection, :class:`H2Protocol`: reading, dispatching the
core's events to the streams, refusing requests over the limits, writing,
deadlines and closing. The stream objects the ASGI bridge talks to, and the
scopes and cycles they are opened with, are in :mod:`heron.transport.http2_stream`
(requests) and :mod:`heron.transport.http2_websocket` (extended CONNECT).

Entry points: :class:`H2Protocol` is a protocol factory taking the
:class:`ServerContext` (TLS with ALPN "h2"); :meth:`H2Protocol.take_over`
adopts a connection from :class:`~heron.transport.http1.H1Protocol` (h2c
prior knowledge, or ``Upgrade: h2c``, see :mod:`heron.transport.h2c`).

Flow control: request body credit goes back to the client only as the app
consumes it (the cycle's ``on_body_consumed``); ``send()`` waits while the
stream's data waits for the client's window, or while the socket's write
buffer is full. While the write buffer is full the connection also stops
reading (a peer that sends PINGs or SETTINGS without reading our ACKs stalls
itself). Deadlines (see :mod:`heron.transport.context`): ``timeout_write``
for a client that reads nothing, and for a stream (or the whole connection)
whose window stays at 0; ``timeout_keep_alive`` for a connection without
streams.

Application tasks for the requests of one read are started after the whole
read is processed, so a stream opened and reset in the same read (rapid
reset) never starts the app.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..asgi.budget import ReadBudget
from ..asgi.http import HTTPCycle, http_scope
from ..asgi.proxy import ProxyTrust
from ..protocol.http2 import (
    ConnectionEnded,
    DataReceived,
    ErrorCodes,
    H2Core,
    H2Limits,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from ..tls import tls_extension
from .context import ConnectionAddresses, ServerContext, connection_addresses, error_logger, format_peer, write_pieces
from .http2_stream import EXTENSIONS_PUSH, METHODS, H2RequestView, H2Stream, H2StreamBase, open_upgraded
from .http2_websocket import H2WebSocket, open_websocket
from .ws_session import WebSocketSession

if TYPE_CHECKING:
    from ..protocol.http1 import Request

_NO_DEADLINE = 0
_IDLE_DEADLINE = 1
_WRITE_DEADLINE = 2
_WINDOW_DEADLINE = 3

# why reading is paused (bits of H2Protocol._reading_paused_by)
_PAUSED_BY_WRITING = 1  # the socket's write buffer is full
_PAUSED_BY_BUDGET = 2  # the streams' unread bodies cost too much (see H2Protocol.budget)
_PAUSED_BY_TURN = 4  # frames of the last read wait for the next turn (H2Core.input_pending)


def limits_from_config(config: Any) -> H2Limits:
    return H2Limits(
        max_concurrent_streams=config.http2_max_concurrent_streams,
        max_header_list_size=config.http2_max_header_list_size,
        initial_window_size=config.http2_initial_window_size,
        max_resets=config.http2_max_resets,
        max_control_frames=config.http2_max_control_frames,
        max_empty_frames=config.http2_max_empty_frames,
        enable_connect_protocol=config.ws != "none",
    )


class H2Protocol(asyncio.Protocol):
    """HTTP/2 server connection. ``H2Protocol(ctx)`` is a protocol factory (TLS + ALPN h2)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.core = H2Core(limits_from_config(ctx.config), clock=ctx.loop.time)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, H2StreamBase] = {}
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.tls: dict[str, Any] | None = None  # the ASGI tls extension, once per TLS connection
        self.peer = ""
        self.deadline = 0.0
        self.deadline_kind = _NO_DEADLINE
        self.deadline_slot = 0  # (the wheel's: see heron.transport.deadlines)
        self.writing_paused = False
        self.closed = False
        #: the scheduled flush (streams check it before asking for one)
        self.flush_handle: asyncio.Handle | None = None
        self._deadline_stale = False
        self._reading_paused_by = 0  # bits: _PAUSED_BY_WRITING, _PAUSED_BY_BUDGET, _PAUSED_BY_TURN
        self._turn_pending = False
        #: what the request bodies of all streams cost while they wait for their apps.
        #: The windows bound the payload (credit returns only as apps read), so this
        #: pauses the socket only if per-piece overhead ever made that bound too loose.
        self.budget = ReadBudget(
            2 * self.core.limits.connection_window_size,
            lambda: self._pause_reading(_PAUSED_BY_BUDGET),
            lambda: self._resume_reading(_PAUSED_BY_BUDGET),
        )
        self._date_line = b"?"
        self._defaults: list[tuple[bytes, bytes]] = []
        self._upgrade: tuple[bytes, Request, bytes] | None = None
        self.proxy: ProxyTrust | None = None  # set when the peer is a trusted proxy (--proxy-headers)
        #: the addresses a PROXY protocol header gave (set before connection_made), or None
        self.proxied: ConnectionAddresses | None = None

    # --- entry points -----------------------------------------------------------

    @classmethod
    def take_over(
        cls,
        ctx: ServerContext,
        transport: asyncio.Transport,
        *,
        scheme: str,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        peer: str,
        data: bytes = b"",
        upgrade: tuple[bytes, Request, bytes] | None = None,
    ) -> H2Protocol:
        """Adopt a connection from the HTTP/1.1 protocol: ``data`` is what was read
        already (starting with the preface); ``upgrade`` is (HTTP2-Settings value,
        request, body chunks) for ``Upgrade: h2c``, answered with 101 first."""
        self = cls(ctx)
        self.transport = transport
        self.scheme = scheme
        self.client = client
        self.server = server
        self.peer = peer
        self._upgrade = upgrade
        transport.set_protocol(self)
        self._start()
        if data:
            self.data_received(data)
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client, self.server, self.peer = connection_addresses(transport) if self.proxied is None else self.proxied
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.tls = tls_extension(ssl_object)
        self._start()

    def client_and_scheme(self, headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, int] | None, str]:
        """A request's ``client`` and ``scheme``: the connection's, or what the
        trusted proxy in front reports (--proxy-headers)."""
        if self.proxy is None:
            return self.client, self.scheme
        return self.proxy.resolve(headers, self.client, self.scheme)

    def _start(self) -> None:
        ctx = self.ctx
        ctx.connections.add(self)
        if ctx.proxy is not None and ctx.proxy.trusts_peer(self.client):
            self.proxy = ctx.proxy
        core = self.core
        upgrade = self._upgrade
        if upgrade is not None:
            settings, request, body = upgrade
            self._upgrade = None
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n")
            core.initiate(settings)
            open_upgraded(self, request, body)
        else:
            core.initiate()
        if ctx.shutting_down:
            self.shutdown()
        self.flush()
        self._refresh_deadline()

    # --- asyncio callbacks -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        events = self.core.receive_data(data)
        started: list[Any] = []  # the cycles of the requests of this read (see _on_request)
        for event in events:
            kind = event.__class__
            if kind is RequestReceived:
                self._on_request(event, started)  # type: ignore[arg-type]
            elif kind is DataReceived:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.feed(event.data)  # type: ignore[attr-defined]
                else:
                    self.core.acknowledge(event.stream_id, len(event.data))  # type: ignore[attr-defined]
            elif kind is StreamEnded:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    stream.end_request()
            elif kind is ConnectionEnded:
                if self._connection_ended(event):  # type: ignore[arg-type]
                    return
            else:  # the other stream events: StreamReset, StreamWritable
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    if kind is StreamReset:
                        stream.lost()
                    else:
                        stream.writable()
        ctx = self.ctx
        for cycle in started:
            if cycle.task is None and not self.closed:
                stream = cycle.stream
                if type(stream) is WebSocketSession:
                    stream.start()  # not when its stream is gone already
                elif not stream._finished:
                    ctx.start_cycle(cycle)
        core = self.core
        if core.closed:
            self._terminate()
            return
        if core.has_output:
            # replies (ACKs, WINDOW_UPDATEs...) go out with the responses of this read: one write
            self.schedule_flush()
        if core.input_pending:
            self._wait_for_turn()
        self._refresh_deadline()

    def _connection_ended(self, event: ConnectionEnded) -> bool:
        """The core ended the connection (error), or the peer sent GOAWAY: True if it is over now."""
        if event.error_code:
            if not event.remote:
                self.ctx.log_bad_request(self.peer, f"HTTP/2: {event.reason}", 400)
            self._terminate()
            return True
        self.stream_finished()  # peer GOAWAY NO_ERROR: close once idle
        return False

    def _wait_for_turn(self) -> None:
        """Handle the rest of this read after other connections have had their turn."""
        self._pause_reading(_PAUSED_BY_TURN)
        if not self._turn_pending:
            self._turn_pending = True
            self.ctx.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if self.closed:
            return
        self.data_received(b"")
        if not self._turn_pending:
            self._resume_reading(_PAUSED_BY_TURN)

    def _pause_reading(self, reason: int) -> None:
        if not self._reading_paused_by and not self.closed:
            self.transport.pause_reading()
        self._reading_paused_by |= reason

    def _resume_reading(self, reason: int) -> None:
        was_paused = self._reading_paused_by
        self._reading_paused_by &= ~reason
        if was_paused and not self._reading_paused_by and not self.closed:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        self._terminate()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.deadlines.drop(self)
        self.ctx.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.lost()
        self.streams.clear()
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        # A peer that doesn't read gets nothing more from us: stop reading too
        # (a PING or SETTINGS flood then stalls the flooder, not our memory).
        self._pause_reading(_PAUSED_BY_WRITING)
        self._refresh_deadline()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume_reading(_PAUSED_BY_WRITING)
        for stream in list(self.streams.values()):
            stream.wake()
        self._refresh_deadline()

    # --- requests ----------------------------------------------------------------

    def _on_request(self, request: RequestReceived, started: list[Any]) -> None:
        """A request opened a stream: answer it at once (refused), or add its
        cycle to ``started`` (its app starts once the whole read is processed)."""
        if request.protocol is not None:
            open_websocket(self, request, started)
            return
        ctx = self.ctx
        sid = request.stream_id
        end_stream = request.end_stream
        method = METHODS.get(request.method) or request.method.decode("ascii")
        stream = H2Stream(self, sid, end_stream)
        self.streams[sid] = stream
        if method == "CONNECT":
            stream.answer_without_app(501, b"Not Implemented\n")
            return
        headers = request.headers
        if ctx.observer is not None:
            stream._start = perf_counter()
            target = request.path + (b"?" + request.query if request.query else b"")
            stream._request = H2RequestView(request.method, target, headers)
        if ctx.limit_concurrency is not None and ctx.over_capacity(self):
            stream.answer_without_app(503, b"Service Unavailable\n")
            return
        body_limit = ctx.limit_request_body
        if body_limit and request.content_length is not None and request.content_length > body_limit:
            ctx.log_bad_request(
                self.peer, f"request body of {request.content_length} bytes over --limit-request-body", 413
            )
            stream.answer_without_app(413, b"Content Too Large\n")
            return
        # client_and_scheme, inlined
        proxy = self.proxy
        if proxy is None or not request.forwarded:
            client, scheme = self.client, self.scheme
        else:
            client, scheme = proxy.resolve(headers, self.client, self.scheme)
        # http_cycle, inlined (the one call per request it saves is ~2% of one)
        scope = http_scope(
            method,
            "2",
            scheme,
            request.path,
            request.query,
            ctx.root_path,
            headers,
            client,
            self.server,
            ctx.lifespan_state,
            {"tls": self.tls} if self.tls is not None else {},
        )
        stream.cycle = cycle = HTTPCycle(
            scope, stream, end_stream, False, EXTENSIONS_PUSH, body_limit, None if end_stream else stream.body_consumed
        )
        started.append(cycle)

    # --- output --------------------------------------------------------------------

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """server/date/--header fields, parsed from the context's cached lines."""
        ctx = self.ctx
        if ctx.date_line is not self._date_line:
            self._date_line = ctx.date_line
            lines = ctx.server_line + ctx.date_line + ctx.extra_lines
            defaults = []
            for line in lines.split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b":")
                    defaults.append((name.strip().lower(), value.strip()))
            self._defaults = defaults
        return self._defaults

    def schedule_flush(self) -> None:
        """Write what the core queued once the current callbacks (the app tasks of
        this read) have run: one ``transport.write`` for all of them."""
        if self.flush_handle is None and not self.closed:
            self.flush_handle = self.ctx.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_handle = None
        self.flush()

    def flush(self) -> None:
        handle = self.flush_handle
        if handle is not None:
            self.flush_handle = None
            handle.cancel()
        if self.closed:
            return
        core = self.core
        large = core.large_output
        out = core.take_output()
        if out:
            transport = self.transport
            if len(out) == 1:
                transport.write(out[0])
            elif large:
                write_pieces(transport, out)  # big bodies: no copy into one buffer
            else:
                transport.write(b"".join(out))
            if not transport.get_write_buffer_size():
                core.output_flushed()
        if self._deadline_stale or core.blocked or self.deadline_kind == _WINDOW_DEADLINE:
            self._deadline_stale = False
            self._refresh_deadline()

    # --- lifecycle -------------------------------------------------------------------

    def stream_finished(self) -> None:
        if not self.streams and self.core.going_away and not self.closed:
            self.flush()
            self._close()
        elif not self.closed:
            if self.flush_handle is not None:
                self._deadline_stale = True  # refreshed by the flush, once for all the streams it ends
            else:
                self._refresh_deadline()

    def _refresh_deadline(self) -> None:
        if self.closed:
            return
        if not self.writing_paused and not self.core.blocked:
            # the usual cases (twice per request): streams in flight, or none
            if self.streams:
                if self.deadline_kind != _NO_DEADLINE:
                    self.ctx.deadlines.clear(self)
                return
            if self.deadline_kind == _IDLE_DEADLINE:
                return
        ctx = self.ctx
        timeout = ctx.config.timeout_write
        if self.writing_paused and timeout:
            if self.deadline_kind != _WRITE_DEADLINE:
                ctx.deadlines.arm(self, _WRITE_DEADLINE, ctx.clock + timeout)
        elif self.core.blocked and timeout:
            ctx.deadlines.arm(self, _WINDOW_DEADLINE, min(self.core.blocked.values()) + timeout)
        elif not self.streams and ctx.timeout_keep_alive:
            if self.deadline_kind != _IDLE_DEADLINE:
                ctx.deadlines.arm(self, _IDLE_DEADLINE, ctx.clock + ctx.timeout_keep_alive)
        else:
            ctx.deadlines.clear(self)

    def on_deadline(self, kind: int) -> None:
        if self.closed:
            return
        if kind == _WRITE_DEADLINE:
            error_logger.info("Closing HTTP/2 connection from %s: client stopped reading", self.peer)
            self._abort_all()
            self.transport.abort()
            return
        if kind == _WINDOW_DEADLINE:
            core = self.core
            timeout = self.ctx.config.timeout_write
            now = self.ctx.loop.time()
            stalled = [sid for sid, since in core.blocked.items() if now - since >= timeout - 0.01]
            if stalled and core.window_blocked_on_connection():
                error_logger.info("Closing HTTP/2 connection from %s: connection window stayed at 0", self.peer)
                core.close(ErrorCodes.ENHANCE_YOUR_CALM)
                self._terminate()
                return
            for sid in stalled:
                error_logger.info("Resetting HTTP/2 stream %d from %s: its window stayed at 0", sid, self.peer)
                core.reset(sid, ErrorCodes.CANCEL)
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.lost()
            self.flush()
            self._refresh_deadline()
            return
        if kind == _IDLE_DEADLINE and not self.streams:
            self.core.close(ErrorCodes.NO_ERROR)
            self.flush()
            self._close()
            return
        self._refresh_deadline()

    @property
    def idle_keep_alive(self) -> bool:
        """No streams, waiting for the next request."""
        return not self.streams and self.deadline_kind == _IDLE_DEADLINE and not self.closed

    def close_idle(self) -> None:
        """Close an idle connection to make room (--limit-concurrency): GOAWAY NO_ERROR."""
        self.core.close(ErrorCodes.NO_ERROR)
        self.flush()
        self._close()

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream id; finish the streams in flight, then close."""
        if self.closed:
            return
        self.core.start_shutdown()
        for stream in list(self.streams.values()):
            if type(stream) is H2WebSocket:
                stream.session.shutdown()  # Close 1001, as over HTTP/1.1
        self.flush()
        if not self.streams:
            self._close()

    def _abort_all(self) -> None:
        for stream in list(self.streams.values()):
            stream.lost()

    def _terminate(self) -> None:
        """The connection is over: flush the GOAWAY, tell every stream, close."""
        if self.closed:
            return
        self.flush()
        self._close()
        self._abort_all()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ctx.deadlines.clear(self)
            self.transport.close()

    def log_access(self, stream: H2StreamBase, status: int, size: int) -> None:
        """Report a finished request to the access log and metrics (once)."""
        observer = self.ctx.observer
        request = stream._request
        if observer is None or request is None:
            return
        stream._request = None
        peer = self.peer
        if self.proxy is not None:  # the forwarded client, as on HTTP/1.1
            client = stream.cycle.scope.get("client")
            if client is not None and client != self.client:
                peer = format_peer(client)
        observer.http(peer, request, status, size, stream._start, None)
