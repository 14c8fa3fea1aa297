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

Graceful shutdown (:meth:`H3Protocol.shutdown`): GOAWAY with the first stream
id not yet seen, the open streams finish, then CONNECTION_CLOSE H3_NO_ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (re-exported from aioquic._buffer, no __all__)
from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header

from ..asgi.budget import ReadBudget
from .context import ServerContext, format_peer
from .http3_quic import (
    FlowControlledQuic,
    ServerH3,
    grant_connection,
    responses_delivered,
    send_goaway,
    set_max_streams,
)
from .http3_stream import H3Stream, open_request

logger = logging.getLogger("heron.error")

#: a client's first datagram is at least this large (RFC 9000 14.1)
MIN_INITIAL_SIZE = 1200

NetworkAddress = Any  # (host, port) or (host, port, flowinfo, scope_id)


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
        connection = H3Protocol(self, header.destination_cid, addr)
        self.routes[header.destination_cid] = connection
        self.routes[connection.quic.host_cid] = connection
        connection.datagram_received(data, addr)

    def sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)
            metrics = self.ctx.metrics
            if metrics is not None:
                metrics.bytes_out += len(data)

    def error_received(self, exc: Exception) -> None:
        logger.debug("QUIC socket error: %s", exc)  # (ICMP unreachable and the like: the peer's timer handles it)

    def forget(self, connection: H3Protocol) -> None:
        for cid in [cid for cid, owner in self.routes.items() if owner is connection]:
            del self.routes[cid]

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

    def __init__(self, listener: QuicListener, original_cid: bytes, addr: NetworkAddress) -> None:
        ctx = self.ctx = listener.ctx
        self.listener = listener
        config = ctx.config
        self.quic: QuicConnection = FlowControlledQuic(
            configuration=listener.configuration, original_destination_connection_id=original_cid
        )
        set_max_streams(self.quic, config.http2_max_concurrent_streams)
        self.h3: ServerH3 | None = None
        self.streams: dict[int, H3Stream] = {}
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
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._defaults_date = b"?"
        self._defaults: list[tuple[bytes, bytes]] = []
        ctx.connections.add(self)
        if ctx.metrics is not None:
            ctx.metrics.connections_total += 1

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
            if stream._drain_waiter is not None and not stream.writing_paused:
                stream.wake()

    # --- events -----------------------------------------------------------------------

    def _process(self) -> None:
        quic = self.quic
        started: list[H3Stream] = []
        while True:
            event = quic.next_event()
            if event is None:
                break
            if isinstance(event, quic_events.ConnectionTerminated):
                self._terminated()
                return
            if isinstance(event, quic_events.ProtocolNegotiated):
                if self.h3 is None:
                    self.h3 = ServerH3(quic, self.ctx.config.http2_max_header_list_size)
                    if self.going_away:
                        send_goaway(self.h3, quic, self.next_stream)
            elif isinstance(event, quic_events.ConnectionIdIssued):
                self.listener.routes[event.connection_id] = self
            elif isinstance(event, quic_events.ConnectionIdRetired):
                self.listener.routes.pop(event.connection_id, None)
            elif self.h3 is not None:
                if isinstance(event, (quic_events.StreamReset, quic_events.StopSendingReceived)):
                    if isinstance(event, quic_events.StreamReset):
                        self.receiving.discard(event.stream_id)
                    stream = self.streams.get(event.stream_id)
                    if stream is not None:
                        stream.lost()
                for h3_event in self.h3.handle_event(event):
                    self._on_h3_event(h3_event, started)
        for stream in started:
            if not stream.finished and not self.closed:
                self.ctx.start_cycle(stream.cycle)
        grant_connection(quic, self.unread, self.window)  # (sent by the transmit that follows)

    def _on_h3_event(self, event: Any, started: list[H3Stream]) -> None:
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
        stream = open_request(self, sid, list(event.headers), ended, self.client)
        if stream is not None:
            started.append(stream)

    def _terminated(self) -> None:
        if self.terminated:
            return
        self.closed = self.terminated = True
        self.ctx.connections.discard(self)
        self.listener.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transmit_handle is not None:
            self._transmit_handle.cancel()
            self._transmit_handle = None
        for stream in list(self.streams.values()):
            stream.lost()
        self.streams.clear()

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


__all__ = ["QuicListener", "H3Protocol", "start_quic_listener", "MIN_INITIAL_SIZE"]
