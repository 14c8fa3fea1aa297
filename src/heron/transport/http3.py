"""HTTP/3 over QUIC (RFC 9114, RFC 9000) on a UDP socket, through the same ASGI
bridge as HTTP/1.1 and HTTP/2.

QUIC and HTTP/3 framing are aioquic's (the optional ``http3`` extra; this
module is imported only when ``--quic-bind`` is set). What heron adds is the
asyncio side and the server's rules:

* :class:`QuicListener`, the ``DatagramProtocol`` of one UDP socket: it reads
  each datagram's header, answers an unknown QUIC version with Version
  Negotiation, routes a datagram by its destination connection id to its
  connection, and starts a connection for a new client Initial (at least 1200
  bytes, RFC 9000 14.1) unless the server is shutting down.
* What a new Initial may cost (the source address of a first datagram is not
  validated, so a flood may come from addresses that never answer): one that
  doesn't decrypt leaves no connection behind; the connections still in their
  handshake (per worker, :class:`QuicTally`) are at most
  ``--quic-max-handshakes``, and from half of that on a new client gets Retry
  (RFC 9000 8.1.2: a token bound to its address, with no state kept) and is
  admitted only once it comes back with it; a handshake not complete after
  ``--quic-handshake-timeout`` is dropped without a word; ``--limit-concurrency``
  bounds the QUIC connections of a worker; more than ``--http2-max-resets``
  stream resets (by the client, or provoked by it) in 10 seconds close the
  connection with H3_EXCESSIVE_LOAD.
* :class:`H3Protocol`, one QUIC connection: it feeds datagrams to aioquic's
  ``QuicConnection``, turns its events into HTTP/3 events (aioquic's
  ``H3Connection``) and those into requests on
  :class:`~heron.transport.http3_stream.H3Stream` objects; it sends what
  aioquic queued (once per loop turn for the writes of all streams), and
  keeps aioquic's timer (loss detection, idle timeout) on ``loop.call_at``.

The limits are HTTP/2's settings: ``--http2-max-concurrent-streams``
(the QUIC stream limit), ``--http2-max-header-list-size`` (advertised as
SETTINGS_MAX_FIELD_SECTION_SIZE; a larger section gets 431),
``--http2-initial-window-size`` (per stream, four times that per connection,
moved on only as apps read; see :mod:`heron.transport.http3_quic`), and
``--limit-request-body``, ``--timeout-request-body``, ``--timeout-write``.

The ASGI ``tls`` extension is made once per connection, when the handshake
completes (:func:`heron.tls.quic_tls_extension`); server push (the client's
``http.response.push``) is :meth:`heron.transport.http3_stream.H3Stream.push`.

Graceful shutdown (:meth:`H3Protocol.shutdown`): GOAWAY with the first stream
id not yet seen, the open streams finish, then CONNECTION_CLOSE H3_NO_ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (re-exported from aioquic._buffer, no __all__)
from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from ..asgi.budget import ReadBudget
from ..protocol.http2.stream import _WindowCount
from ..tls import quic_tls_extension
from .context import ServerContext, format_peer
from .http3_quic import (
    FlowControlledQuic,
    ServerH3,
    decrypted_any,
    grant_connection,
    initial_decrypts,
    negotiated_cipher_suite,
    responses_delivered,
    send_goaway,
    server_certificate,
    set_max_streams,
)
from .http3_stream import H3Carrier, H3Stream, OpenWebSocket, open_request
from .http3_websocket import H3WebSocket, open_websocket

logger = logging.getLogger("heron.error")

#: a client's first datagram is at least this large (RFC 9000 14.1)
MIN_INITIAL_SIZE = 1200

NetworkAddress = Any  # (host, port) or (host, port, flowinfo, scope_id)
#: the deadline of a connection still in its handshake (--quic-handshake-timeout)
HANDSHAKE_DEADLINE = 1
#: request streams whose reset was counted, remembered per connection (a stream counts once)
_RESET_MEMORY = 256


class QuicTally:
    """The QUIC connections of one worker (all its ``--quic-bind`` sockets)."""

    __slots__ = ("connections", "handshakes", "refused", "retries", "__weakref__")

    def __init__(self) -> None:
        #: admitted and not terminated yet (closing ones included: they still hold their state)
        self.connections = 0
        #: admitted, handshake not complete
        self.handshakes = 0
        #: new Initials dropped because a limit was reached (--quic-max-handshakes, --limit-concurrency)
        self.refused = 0
        #: new Initials answered with Retry (half of --quic-max-handshakes reached)
        self.retries = 0


_TALLIES: weakref.WeakKeyDictionary[ServerContext, QuicTally] = weakref.WeakKeyDictionary()


def quic_tally(ctx: ServerContext) -> QuicTally:
    tally = _TALLIES.get(ctx)
    if tally is None:
        tally = _TALLIES[ctx] = QuicTally()
    return tally


class QuicListener(asyncio.DatagramProtocol):
    """One ``--quic-bind`` UDP socket: routes datagrams to their connections."""

    def __init__(self, ctx: ServerContext, configuration: QuicConfiguration) -> None:
        self.ctx = ctx
        self.configuration = configuration
        self.transport: asyncio.DatagramTransport | None = None
        #: every connection id issued, to its connection
        self.routes: dict[bytes, H3Protocol] = {}
        #: new connections are refused (shutdown); the open ones go on
        self.accepting = True
        self.server: tuple[str, int | None] | None = None
        self.tally = quic_tally(ctx)
        #: Retry tokens (made when first needed: a key per socket)
        self._tokens: QuicRetryTokenHandler | None = None
        #: the certificate's PEM, for the ASGI tls extension
        self.server_cert = server_certificate(configuration)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        name = transport.get_extra_info("sockname")
        if isinstance(name, tuple):
            self.server = (str(name[0]), int(name[1]))

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        metrics = self.ctx.metrics
        if metrics is not None:
            metrics.bytes_in += len(data)
        buf = Buffer(data=data)
        try:
            header = pull_quic_header(buf, host_cid_length=self.configuration.connection_id_length)
        except ValueError:
            return  # not QUIC: dropped
        connection = self.routes.get(header.destination_cid)
        if connection is not None:
            connection.datagram_received(data, addr)
            return
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return  # (never answered: two servers could bounce them forever)
        if header.version is not None and header.version not in self.configuration.supported_versions:
            self.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        if header.packet_type != QuicPacketType.INITIAL or len(data) < MIN_INITIAL_SIZE or not self.accepting:
            return
        if not initial_decrypts(data, header, buf.tell()):
            return  # garbage (or not a first Initial): no state, and no answer
        # A new connection: what an Initial may cost is bounded here (garbage costs no state
        # at all), and under load only a client that proved its address gets one.
        tally = self.tally
        limit = self.ctx.limit_concurrency
        max_handshakes = self.ctx.config.quic_max_handshakes
        if tally.handshakes >= max_handshakes or (limit is not None and tally.connections >= limit):
            tally.refused += 1
            return
        original_cid, retry_cid = header.destination_cid, None
        if header.token:
            original = self._validate_token(header.token, header.destination_cid, addr)
            if original is not None:
                original_cid, retry_cid = original, header.destination_cid
        if retry_cid is None and tally.handshakes >= max_handshakes // 2:
            self._retry(header.version, header.source_cid, header.destination_cid, addr)
            return
        connection = H3Protocol(self, original_cid, addr, retry_cid)
        connection.datagram_received(data, addr)
        if connection.terminated:
            return
        if not decrypted_any(connection.quic):
            connection.discard()  # not a real Initial
            return
        self.route(header.destination_cid, connection)
        self.route(connection.quic.host_cid, connection)
        connection.admit()

    def _retry(self, version: int | None, client_cid: bytes, original_cid: bytes, addr: NetworkAddress) -> None:
        """Answer an Initial with Retry (RFC 9000 8.1.2): no state kept; the client comes
        back with the token, from the address it is bound to (a spoofer never does)."""
        if version is None:
            return
        handler = self._tokens
        if handler is None:
            handler = self._tokens = QuicRetryTokenHandler()
        retry_cid = os.urandom(self.configuration.connection_id_length)
        token = handler.create_token(
            address=addr,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            now=self.ctx.loop.time(),
        )
        self.tally.retries += 1
        self.sendto(encode_quic_retry(version, retry_cid, client_cid, original_cid, token), addr)

    def _validate_token(self, token: bytes, cid: bytes, addr: NetworkAddress) -> bytes | None:
        """The original connection id of a Retry token of ours for ``addr`` and ``cid``;
        None for any other token (RFC 9000 8.1.3: then as if there were none)."""
        handler = self._tokens
        if handler is None:
            return None
        try:
            original: bytes = handler.validate_token(
                address=addr, destination_cid=cid, token=token, now=self.ctx.loop.time()
            )
        except (ValueError, IndexError):  # (IndexError: aioquic's Buffer, on a short plaintext)
            return None
        return original

    def sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)
            metrics = self.ctx.metrics
            if metrics is not None:
                metrics.bytes_out += len(data)

    def error_received(self, exc: Exception) -> None:
        logger.debug("QUIC socket error: %s", exc)  # (ICMP unreachable and the like: the peer's timer handles it)

    def route(self, cid: bytes, connection: H3Protocol) -> None:
        self.routes[cid] = connection
        connection.cids.add(cid)

    def forget(self, connection: H3Protocol) -> None:
        """``connection`` is over: out of the routes (its own ids only, not a scan of all)."""
        routes = self.routes
        for cid in connection.cids:
            if routes.get(cid) is connection:
                del routes[cid]
        connection.cids.clear()

    def stop_accepting(self) -> None:
        self.accepting = False

    def close(self) -> None:
        """Drop every connection (after shutdown) and close the socket."""
        self.accepting = False
        for connection in set(self.routes.values()):
            connection.abort()
        self.routes.clear()
        if self.transport is not None:
            self.transport.close()


class H3Protocol:
    """One QUIC connection carrying HTTP/3: a member of ``ctx.connections``."""

    metrics_protocol = "h3"

    def __init__(
        self, listener: QuicListener, original_cid: bytes, addr: NetworkAddress, retry_cid: bytes | None = None
    ) -> None:
        ctx = self.ctx = listener.ctx
        self.listener = listener
        config = ctx.config
        self.quic: QuicConnection = FlowControlledQuic(
            configuration=listener.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
        )
        set_max_streams(self.quic, config.http2_max_concurrent_streams)
        self.h3: ServerH3 | None = None
        #: the connection ids routed to it (QuicListener.routes)
        self.cids: set[bytes] = set()
        #: request streams, and WebSockets (RFC 9220)
        self.streams: dict[int, H3Carrier] = {}
        self._websocket: OpenWebSocket | None = open_websocket if config.ws != "none" else None
        self.unread = 0
        self.window = 4 * config.http2_initial_window_size
        self.budget = ReadBudget(2 * self.window)  # (the windows bound it; nothing to pause)
        self.client: tuple[str, int] | None = (str(addr[0]), int(addr[1]))
        self.server = listener.server
        self.peer = format_peer(addr)
        self.closed = False  # CONNECTION_CLOSE sent or received: no more requests
        self.terminated = False  # aioquic is done with it: out of the routes
        self.going_away = False
        self.next_stream = 0  # above every request stream id seen (for GOAWAY)
        #: the request streams whose client side has not ended: what comes on them is body or trailers
        #: (as many as the QUIC stream limit lets the client open)
        self.receiving: set[int] = set()
        self.goaway_id: int | None = None
        self.deadline = 0.0  # (ServerContext.over_capacity sorts connections by it)
        self.deadline_kind = 0
        self.deadline_slot = 0
        self.admitted = False  # counted in the tally, a member of ctx.connections
        self.handshake_done = False
        #: the ASGI tls extension, shared by the connection's scopes (set once the handshake is complete)
        self.tls: dict[str, Any] | None = None
        #: push streams whose response is not complete
        self.pushed_open = 0
        self._resets = _WindowCount(config.http2_max_resets)
        self._reset_seen: dict[int, None] = {}  # request streams whose reset was counted
        self._receiving = False  # in _process: resets we send now are provoked by the client
        self._flood: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._defaults_date = b"?"
        self._defaults: list[tuple[bytes, bytes]] = []

    def admit(self) -> None:
        """The first Initial decrypted: a connection of the server (counted, and in the
        handshake until --quic-handshake-timeout)."""
        ctx = self.ctx
        self.admitted = True
        tally = self.listener.tally
        tally.connections += 1
        if not self.handshake_done:
            tally.handshakes += 1
            ctx.deadlines.arm(self, HANDSHAKE_DEADLINE, ctx.clock + ctx.config.quic_handshake_timeout)
        if not self.closed:
            ctx.connections.add(self)
        if ctx.metrics is not None:
            ctx.metrics.connections_total += 1

    def discard(self) -> None:
        """Forget a connection that was never admitted (its first datagram did not decrypt)."""
        self.closed = self.terminated = True
        self._cancel_timers()

    def on_deadline(self, kind: int) -> None:
        """--quic-handshake-timeout passed with the handshake not complete: drop the
        connection without a word (its peer may not even be at that address)."""
        if kind == HANDSHAKE_DEADLINE and not self.handshake_done and not self.terminated:
            self._terminated()

    # --- what the server calls on every connection ---------------------------------

    @property
    def transport(self) -> H3Protocol:
        """(The server aborts ``connection.transport`` at the end of shutdown.)"""
        return self

    @property
    def idle_keep_alive(self) -> bool:
        return not self.streams and not self.closed

    def close_idle(self) -> None:
        """--limit-concurrency made room: close an idle connection (H3_NO_ERROR)."""
        self.close(ErrorCode.H3_NO_ERROR, "idle")

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY; the streams in flight finish, then the connection closes."""
        if self.closed or self.going_away:
            return
        self.going_away = True
        self.goaway_id = self.next_stream
        if self.h3 is not None:
            send_goaway(self.h3, self.quic, self.next_stream)
        for stream in list(self.streams.values()):
            if type(stream) is H3WebSocket:
                stream.session.shutdown()  # Close 1001, as over HTTP/1.1 and HTTP/2
        self.transmit()
        self._close_when_done()

    def _close_when_done(self) -> None:
        """Going away: close once no stream is open and the client has every response."""
        if self.going_away and not self.streams and not self.closed and responses_delivered(self.quic):
            self.close(ErrorCode.H3_NO_ERROR, "shutdown")

    def abort(self) -> None:
        """Close now (the time for shutdown is up): the streams are lost."""
        self.close(ErrorCode.H3_NO_ERROR, "server stopped")
        self._terminated()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.ctx.connections.discard(self)
        self.quic.close(error_code=code, reason_phrase=reason)
        self.transmit()
        for stream in list(self.streams.values()):
            stream.lost()

    # --- datagrams, timers, sending ---------------------------------------------------

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if self.terminated:
            return
        self.quic.receive_datagram(data, addr, now=self.ctx.loop.time())
        self._process()
        self.transmit()
        if self.going_away:
            self._close_when_done()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.terminated:
            return
        self.quic.handle_timer(now=self.ctx.loop.time())
        self._process()
        self.transmit()

    def schedule_transmit(self) -> None:
        """Send what the streams queued once the current callbacks have run (one pass for all)."""
        if self._transmit_handle is None and not self.terminated:
            self._transmit_handle = self.ctx.loop.call_soon(self._transmit_soon)

    def _transmit_soon(self) -> None:
        self._transmit_handle = None
        self.transmit()

    def transmit(self) -> None:
        if self.terminated:
            return
        loop = self.ctx.loop
        for data, addr in self.quic.datagrams_to_send(now=loop.time()):
            self.listener.sendto(data, addr)
        when = self.quic.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = loop.call_at(when, self._on_timer) if when is not None else None
        # (acknowledged data leaves aioquic's send buffers: wake the streams waiting on them)
        for stream in list(self.streams.values()):
            if (stream._drain_waiter is not None or stream.wants_writable) and not stream.writing_paused:
                stream.wake()

    # --- events -----------------------------------------------------------------------

    def _process(self) -> None:
        quic = self.quic
        started: list[H3Carrier] = []
        while True:
            event = quic.next_event()
            if event is None:
                break
            if isinstance(event, quic_events.ConnectionTerminated):
                self._terminated()
                return
            if isinstance(event, quic_events.HandshakeCompleted):
                self._handshake_completed()
            elif isinstance(event, quic_events.ProtocolNegotiated):
                if self.h3 is None:
                    self.h3 = ServerH3(quic, self.ctx.config.http2_max_header_list_size, self._websocket is not None)
                    if self.going_away:
                        send_goaway(self.h3, quic, self.next_stream)
            elif isinstance(event, quic_events.ConnectionIdIssued):
                self.listener.route(event.connection_id, self)
            elif isinstance(event, quic_events.ConnectionIdRetired):
                self.listener.routes.pop(event.connection_id, None)
                self.cids.discard(event.connection_id)
            elif self.h3 is not None:
                if isinstance(event, (quic_events.StreamReset, quic_events.StopSendingReceived)):
                    sid = event.stream_id
                    if sid % 4 == 0:
                        self._count_reset(sid)
                    if isinstance(event, quic_events.StreamReset):
                        self.receiving.discard(sid)
                    stream = self.streams.get(sid)
                    if stream is not None:
                        stream.lost()
                self._receiving = True
                try:
                    for h3_event in self.h3.handle_event(event):
                        self._on_h3_event(h3_event, started)
                finally:
                    self._receiving = False
        if self._flood is not None and not self.closed:
            self.ctx.log_bad_request(self.peer, f"HTTP/3: {self._flood}", 400)
            self.close(ErrorCode.H3_EXCESSIVE_LOAD, self._flood)
            return
        for stream in started:
            if not stream.finished and not self.closed:
                stream.start()
        grant_connection(quic, self.unread, self.window)  # (sent by the transmit that follows)

    def _on_h3_event(self, event: Any, started: list[H3Carrier]) -> None:
        sid = event.stream_id
        stream = self.streams.get(sid)
        kind = type(event)
        if kind is not DataReceived and kind is not HeadersReceived:
            return  # (push promises and WebTransport: a server gets none)
        ended = event.stream_ended
        if sid in self.receiving:  # body data, or trailers (ASGI has no request trailers)
            if ended:
                self.receiving.discard(sid)
            if stream is not None:
                if kind is DataReceived and event.data:
                    stream.feed(event.data)
                if ended:
                    stream.end_request()
            return
        if kind is not HeadersReceived or stream is not None:
            return  # (aioquic sends nothing else on a stream without a request)
        # a request (streams may arrive out of order: GOAWAY names one above all those seen)
        self.next_stream = max(self.next_stream, sid + 4)
        if not ended:
            self.receiving.add(sid)
        if (self.goaway_id is not None and sid >= self.goaway_id) or self.closed:
            H3Stream(self, sid, ended).reset(ErrorCode.H3_REQUEST_REJECTED)
            return
        stream = open_request(self, sid, list(event.headers), ended, self.client, self._websocket)
        if stream is not None:
            started.append(stream)

    def _handshake_completed(self) -> None:
        if self.handshake_done:
            return
        self.handshake_done = True
        self.tls = quic_tls_extension(self.listener.server_cert, negotiated_cipher_suite(self.quic))
        if self.admitted:
            self.listener.tally.handshakes -= 1
            if self.deadline_kind == HANDSHAKE_DEADLINE:
                self.ctx.deadlines.clear(self)

    def _count_reset(self, sid: int) -> None:
        """A request stream was reset by the client (or because of it): more than
        --http2-max-resets in 10 seconds close the connection (rapid reset)."""
        seen = self._reset_seen
        if sid in seen:
            return  # (RESET_STREAM and STOP_SENDING for one stream count once)
        seen[sid] = None
        if len(seen) > _RESET_MEMORY:
            del seen[next(iter(seen))]
        if self._resets.hit(self.ctx.loop.time()):
            self._flood = "too many stream resets (rapid reset)"

    def stream_reset_sent(self, sid: int) -> None:
        """We reset request stream ``sid``: counted when a client's frame caused it."""
        if self._receiving:
            self._count_reset(sid)

    def _terminated(self) -> None:
        if self.terminated:
            return
        self.closed = self.terminated = True
        self.ctx.connections.discard(self)
        self.listener.forget(self)
        if self.admitted:
            self.admitted = False
            tally = self.listener.tally
            tally.connections -= 1
            if not self.handshake_done:
                tally.handshakes -= 1
        self.ctx.deadlines.drop(self)
        self._cancel_timers()
        for stream in list(self.streams.values()):
            stream.lost()
        self.streams.clear()

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None

    # --- for the streams -------------------------------------------------------------

    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """server/date/--header fields (no Alt-Svc: this is the alternative)."""
        ctx = self.ctx
        if ctx.date_line is not self._defaults_date:
            self._defaults_date = ctx.date_line
            defaults = []
            for line in (ctx.server_line + ctx.date_line + ctx.header_lines).split(b"\r\n"):
                if line:
                    name, _, value = line.partition(b":")
                    defaults.append((name.strip().lower(), value.strip()))
            self._defaults = defaults
        return self._defaults

    def body_read(self) -> None:
        if grant_connection(self.quic, self.unread, self.window):
            self.schedule_transmit()

    def stream_finished(self, stream: H3Stream) -> None:
        self.streams.pop(stream.sid, None)
        observer = self.ctx.observer
        request = stream.request
        if observer is not None and request is not None:
            stream.request = None
            cycle = stream.cycle
            peer = self.peer
            client = cycle.scope.get("client") if cycle.scope else None
            if client is not None and client != self.client:
                peer = format_peer(client)  # the forwarded client (--proxy-headers)
            observer.http(peer, request, cycle.status, cycle.bytes_sent, stream.started, None)
        self.schedule_transmit()


async def start_quic_listener(ctx: ServerContext, sock: Any, configuration: QuicConfiguration) -> QuicListener:
    """Serve HTTP/3 on the bound UDP socket ``sock``."""
    loop = ctx.loop
    _, listener = await loop.create_datagram_endpoint(lambda: QuicListener(ctx, configuration), sock=sock)
    return listener


__all__ = ["QuicListener", "QuicTally", "H3Protocol", "quic_tally", "start_quic_listener", "MIN_INITIAL_SIZE"]
