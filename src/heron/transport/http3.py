"""HTTP/3 over QUIC (RFC 9114, RFC 9000): one QUIC connection, through the same
ASGI bridge as HTTP/1.1 and HTTP/2.

QUIC and HTTP/3 framing are aioquic's (the optional ``http3`` extra; this
module is imported only when ``--quic-bind`` is set). The UDP socket, what a
new Initial may cost (Retry, the handshake caps) and the routing of datagrams
to connections are :mod:`heron.transport.http3_listener`'s. Here:

* :class:`H3Protocol`, one QUIC connection: it feeds datagrams to aioquic's
  ``QuicConnection``, turns its events into HTTP/3 events (aioquic's
  ``H3Connection``) and those into requests on
  :class:`~heron.transport.http3_stream.H3Stream` objects; it sends what
  aioquic queued (once per loop turn for the writes of all streams), and
  keeps aioquic's timer (loss detection, idle timeout) on ``loop.call_at``.
* A handshake not complete after ``--quic-handshake-timeout`` is dropped
  without a word; more than ``--http2-max-resets`` stream resets (by the
  client, or provoked by it) in 10 seconds close the connection with
  H3_EXCESSIVE_LOAD.

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
from typing import Any, Protocol

from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from ..asgi.budget import ReadBudget
from ..protocol.http2.stream import _WindowCount
from ..tls import quic_tls_extension
from .context import ServerContext, format_peer
from .http3_quic import (
    FlowControlledQuic,
    PushCancelled,
    ServerH3,
    grant_connection,
    negotiated_cipher_suite,
    responses_delivered,
    send_goaway,
    set_max_streams,
)
from .http3_stream import H3Carrier, H3Stream, OpenWebSocket, open_request
from .http3_websocket import H3WebSocket, open_websocket

NetworkAddress = Any  # (host, port) or (host, port, flowinfo, scope_id)
#: the deadline of a connection still in its handshake (--quic-handshake-timeout)
HANDSHAKE_DEADLINE = 1
#: streams whose reset was counted, remembered per connection (a stream counts once)
_RESET_MEMORY = 256
#: the client a handshake is counted for (an IPv4 address, an IPv6 /64: http3_listener.address_key)
AddressKey = str | bytes


class HandshakeTally(Protocol):
    """What a connection tells the QUIC connections' tally of its worker
    (:class:`~heron.transport.http3_listener.QuicTally`)."""

    connections: int

    def handshake_started(self, key: AddressKey, proven: bool) -> None: ...

    def handshake_ended(self, key: AddressKey, proven: bool) -> None: ...


class H3Listener(Protocol):
    """What a connection needs of its UDP socket (:class:`~heron.transport.http3_listener.QuicListener`)."""

    ctx: ServerContext
    configuration: QuicConfiguration
    server: tuple[str, int | None] | None
    #: the certificate's PEM, for the ASGI tls extension
    server_cert: str | None
    routes: dict[bytes, H3Protocol]
    #: the start of every connection id issued (a worker's tag; b"" alone)
    cid_tag: bytes

    @property
    def tally(self) -> HandshakeTally: ...

    def route(self, cid: bytes, connection: H3Protocol) -> None: ...

    def forget(self, connection: H3Protocol) -> None: ...

    def sendto(self, data: bytes, addr: NetworkAddress) -> None: ...


class H3Protocol:
    """One QUIC connection carrying HTTP/3: a member of ``ctx.connections``."""

    metrics_protocol = "h3"

    def __init__(
        self, listener: H3Listener, original_cid: bytes, addr: NetworkAddress, retry_cid: bytes | None = None
    ) -> None:
        ctx = self.ctx = listener.ctx
        self.listener = listener
        config = ctx.config
        self.quic: QuicConnection = FlowControlledQuic(
            configuration=listener.configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            cid_tag=listener.cid_tag,
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
        self.proven = retry_cid is not None  # came back with a Retry token: its address is real
        self.address_key: AddressKey = ""  # (set by admit: whose handshakes it counts among)
        #: the ASGI tls extension, shared by the connection's scopes (set once the handshake is complete)
        self.tls: dict[str, Any] | None = None
        #: push id -> its push stream, while the response is not complete (CANCEL_PUSH finds it here)
        self.pushes: dict[int, H3Stream] = {}
        self._resets = _WindowCount(config.http2_max_resets)
        self._reset_seen: dict[int, None] = {}  # streams whose reset was counted
        self._receiving = False  # in _process: resets we send now are provoked by the client
        self._flood: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._defaults_date = b"?"
        self._defaults: list[tuple[bytes, bytes]] = []

    def admit(self, key: AddressKey) -> None:
        """The first Initial decrypted: a connection of the server (counted, and in the
        handshake until --quic-handshake-timeout, among those of its address ``key``)."""
        ctx = self.ctx
        self.admitted = True
        self.address_key = key
        tally = self.listener.tally
        tally.connections += 1
        if not self.handshake_done:
            tally.handshake_started(key, self.proven)
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
        # once the loop's current callbacks have run, not now: the datagrams read in this
        # pass, and what their apps answer at once, share one transmit pass and its packets
        # (per request, about 0.3 transmit passes and datagrams instead of 1.6 and 1.2: half
        # the CPU). ACKs wait that long too, well within max_ack_delay (25 ms).
        self.schedule_transmit()
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
                    stream = self.streams.get(sid)
                    # a request stream, or a push stream still sending (STOP_SENDING: the client
                    # can't reset our unidirectional streams), as HTTP/2 counts its pushed streams
                    if sid % 4 == 0 or (sid % 4 == 3 and stream is not None):
                        self._count_reset(sid)
                    if isinstance(event, quic_events.StreamReset):
                        self.receiving.discard(sid)
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
        kind = type(event)
        if kind is not DataReceived and kind is not HeadersReceived:
            if kind is PushCancelled:
                self._cancel_push(event.push_id)
            return  # (push promises and WebTransport: a server gets none)
        sid = event.stream_id
        stream = self.streams.get(sid)
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
            self.listener.tally.handshake_ended(self.address_key, self.proven)
            if self.deadline_kind == HANDSHAKE_DEADLINE:
                self.ctx.deadlines.clear(self)

    def _cancel_push(self, push_id: int) -> None:
        """The client sent CANCEL_PUSH (RFC 9114 7.2.3): a push still sending is reset
        (H3_REQUEST_CANCELLED) and its app disconnected; that counts as a stream reset. (Its
        push stream opened with the promise, so there is none left to keep from opening; a
        push already complete is left alone.)"""
        stream = self.pushes.get(push_id)
        if stream is None or stream.finished:
            return
        self._count_reset(stream.sid)
        stream.reset(ErrorCode.H3_REQUEST_CANCELLED)
        stream.lost()

    def _count_reset(self, sid: int) -> None:
        """A request or push stream was reset by the client (or because of it): more than
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
        """We reset stream ``sid``: counted when a client's frame caused it."""
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
                tally.handshake_ended(self.address_key, self.proven)
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


__all__ = ["AddressKey", "H3Listener", "H3Protocol", "HANDSHAKE_DEADLINE", "HandshakeTally", "NetworkAddress"]
