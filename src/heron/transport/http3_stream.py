"""HTTP/3 request streams: the :class:`~heron.asgi.http.HTTPStream` each
request's :class:`~heron.asgi.http.HTTPCycle` writes to, and the building of
a request's scope from its header section.

A request's header section is checked by the same function as an HTTP/2
request's (:func:`heron.protocol.http2.fields.validate_request`: RFC 9114 4.3
has the pseudo-header rules of RFC 9113 8.3), after aioquic's own checks; a
malformed request is a stream error H3_MESSAGE_ERROR (RFC 9114 4.1.2). The
response's fields are checked as HTTP/2 checks them (token names, no control
characters, connection-specific fields dropped).

Flow control: the body bytes a stream holds for its app are ``unread``; as the
app reads them the stream asks its connection to move the QUIC windows on
(:func:`heron.transport.http3_quic.grant`). ``send()`` waits while more than
:data:`SEND_HIGH_WATER` bytes of the stream are unacknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import Any, Protocol

from aioquic.h3.connection import ErrorCode
from aioquic.h3.exceptions import NoAvailablePushIDError
from aioquic.quic.connection import QuicConnection

from ..asgi.budget import ReadBudget
from ..asgi.http import ERROR_BODIES, HTTPCycle
from ..protocol.errors import LocalProtocolError
from ..protocol.http2.fields import (
    RequestFields,
    _Malformed,
    push_request_fields,
    response_fields,
    trailer_fields,
    validate_request,
)
from .context import ServerContext
from .http2_stream import H2RequestView, http_cycle
from .http3_quic import ServerH3, grant, push_possible, push_stream_available, unsent

#: unacknowledged response bytes of one stream before ``send()`` waits
SEND_HIGH_WATER = 256 * 1024
EXTENSIONS = ("http.response.trailers", "http.response.early_hint", "http.response.pathsend")
#: announced on a client's request when the client allows a push (MAX_PUSH_ID); a pushed response can't push
EXTENSIONS_PUSH = EXTENSIONS + ("http.response.push",)
TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large", 431: b"Request Header Fields Too Large"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
# deadlines of a stream (in ctx.deadlines)
BODY_DEADLINE = 1  # timeout_request_body, the app waiting for body bytes
WRITE_DEADLINE = 2  # timeout_write, the app waiting for the client to acknowledge


class H3Carrier(Protocol):
    """What the connection needs of a request stream: an :class:`H3Stream`, or a
    WebSocket's (:class:`~heron.transport.http3_websocket.H3WebSocket`)."""

    sid: int
    finished: bool
    _drain_waiter: asyncio.Future[None] | None
    #: wake() whenever aioquic may have sent more (not only while drain() waits)
    wants_writable: bool

    @property
    def writing_paused(self) -> bool: ...

    def feed(self, data: bytes) -> None: ...

    def end_request(self) -> None: ...

    def lost(self) -> None: ...

    def wake(self) -> None: ...

    def start(self) -> None:
        """Run the app (the whole datagram is processed)."""


async def drain(carrier: Any) -> None:
    """Wait while ``carrier`` (a request stream or a WebSocket) has too much
    unacknowledged, under --timeout-write (its WRITE_DEADLINE)."""
    proto = carrier.proto
    ctx = proto.ctx
    timeout = ctx.config.timeout_write
    while carrier.writing_paused and not proto.closed:
        waiter = carrier._drain_waiter
        if waiter is None:
            waiter = carrier._drain_waiter = ctx.loop.create_future()
        if timeout and not carrier.deadline:
            ctx.deadlines.arm(carrier, WRITE_DEADLINE, ctx.clock + timeout)
        try:
            await waiter
        finally:
            if carrier.deadline_kind == WRITE_DEADLINE:
                ctx.deadlines.clear(carrier)


class H3StreamOwner(Protocol):
    """What a stream needs of its connection (:class:`~heron.transport.http3.H3Protocol`)."""

    ctx: ServerContext
    quic: QuicConnection
    h3: ServerH3 | None
    streams: dict[int, H3Carrier]
    client: tuple[str, int] | None
    budget: ReadBudget
    peer: str
    closed: bool
    going_away: bool
    server: tuple[str, int | None] | None
    #: body bytes all streams hold for their apps
    unread: int
    #: the ASGI tls extension (set once the handshake is complete)
    tls: dict[str, Any] | None
    #: push id -> its push stream, while the response is not complete
    pushes: dict[int, H3Stream]

    def schedule_transmit(self) -> None: ...

    def default_headers(self) -> list[tuple[bytes, bytes]]: ...

    def stream_finished(self, stream: H3Stream) -> None: ...

    def body_read(self) -> None: ...

    def stream_reset_sent(self, sid: int) -> None: ...


class H3RequestView(H2RequestView):
    """What the access log and metrics read of an HTTP/3 request."""

    __slots__ = ()
    http_version = "3"


class H3Stream:
    """One request/response exchange on a QUIC bidirectional stream."""

    __slots__ = (
        "proto", "sid", "cycle", "budget", "unread", "request", "started", "finished", "_head_sent",
        "_request_complete", "_remaining", "_no_body", "head_request", "_drain_waiter", "deadline", "deadline_kind", "deadline_slot",
        "authority", "push_id",
    )  # fmt: skip

    #: no zero-copy file sending (pathsend reads the file in a thread)
    send_file: Callable[[int, int, int], Awaitable[None]] | None = None
    wants_writable = False

    def __init__(self, proto: H3StreamOwner, sid: int, request_complete: bool) -> None:
        self.proto = proto
        self.sid = sid
        self.cycle: HTTPCycle = None  # type: ignore[assignment]  # (set right after, by open_request)
        self.budget = proto.budget
        self.unread = 0  # body bytes received, not yet taken by the app
        self.request: H3RequestView | None = None  # kept only while access is observed
        self.started = 0.0
        self.finished = False
        self._head_sent = False
        self._request_complete = request_complete
        self._remaining: int | None = None  # the response's content-length still to send
        self.head_request = False  # a HEAD request: the response has no body
        self._no_body = False  # this response has none (HEAD, 204, 304): body bytes are dropped
        self._drain_waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.deadline_kind = 0
        self.deadline_slot = 0
        self.authority = b""  # the request's :authority (or host): a push promise's
        self.push_id: int | None = None  # a push stream's (RFC 9114 4.6): its response can't push

    # --- from the connection ---------------------------------------------------

    def start(self) -> None:
        self.proto.ctx.start_cycle(self.cycle)

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self.unread += len(data)
        self.proto.unread += len(data)
        self.cycle.feed_body(data)

    def end_request(self) -> None:
        if not self._request_complete:
            self._request_complete = True
            self.cycle.end_body()

    def lost(self) -> None:
        """The client reset the stream (or stopped reading it), or the connection is gone."""
        if not self.finished:
            self._finish()
        self.cycle.disconnect()
        self.wake()

    def body_consumed(self, size: int) -> None:
        if self.finished or not size:
            return
        self.unread -= size
        proto = self.proto
        proto.unread -= size
        if grant(proto.quic, self.sid, self.unread, proto.ctx.config.http2_initial_window_size):
            proto.schedule_transmit()
        proto.body_read()

    # --- HTTPStream --------------------------------------------------------------

    @property
    def writing_paused(self) -> bool:
        return not self.finished and unsent(self.proto.quic, self.sid) >= SEND_HIGH_WATER

    @writing_paused.setter
    def writing_paused(self, value: bool) -> None:  # pragma: no cover - derived, never set
        raise AttributeError("writing_paused is derived from what the client has not acknowledged")

    async def drain(self) -> None:
        await drain(self)

    def wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None:
            return
        fields, self._remaining = response_fields(status, headers)
        fields.extend(proto.default_headers())
        if self.head_request or status == 204 or status == 304:
            self._no_body = True
            self._remaining = None
            body = b""
        end = not more_body and not body
        self._check_length(body, not more_body)
        proto.h3.send_headers(self.sid, fields, end)
        self._head_sent = True
        if not end:
            proto.h3.send_data(self.sid, body, not more_body)
        proto.schedule_transmit()
        if not more_body:
            self.complete()

    def send_body(self, body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None:
            return
        if self._no_body:
            body = b""
        self._check_length(body, not more_body)
        proto.h3.send_data(self.sid, body, not more_body)
        proto.schedule_transmit()
        if not more_body:
            self.complete()

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None:
            return
        fields = trailer_fields(headers)
        if self._remaining:
            raise LocalProtocolError("response body shorter than its content-length")
        proto.h3.send_headers(self.sid, fields, True)
        proto.schedule_transmit()
        self.complete()

    def send_early_hint(self, links: list[bytes]) -> None:
        proto = self.proto
        if self.finished or proto.closed or proto.h3 is None or self._head_sent:
            return
        proto.h3.send_headers(self.sid, [(b":status", b"103"), *((b"link", link) for link in links)])
        proto.schedule_transmit()

    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        """``http.response.push``: a PUSH_PROMISE on this stream and the app run for the
        promised GET on a push stream (RFC 9114 4.6). Skipped, as over HTTP/2, when the
        client allows no further push (MAX_PUSH_ID), when --http2-max-concurrent-streams
        pushes are open or the client's stream limit is reached, and when going away."""
        proto = self.proto
        h3 = proto.h3
        if self.finished or self.push_id is not None or proto.closed or proto.going_away or h3 is None:
            return
        try:
            raw = path.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"invalid push path {path!r:.60}") from None
        fields = push_request_fields(b"https", self.authority, raw, headers)
        if (
            not push_possible(h3)
            or len(proto.pushes) >= proto.ctx.config.http2_max_concurrent_streams
            or not push_stream_available(proto.quic)
        ):
            return
        try:
            push_id, push_sid = h3.promise_push(self.sid, fields)
        except NoAvailablePushIDError:
            return
        open_pushed(proto, push_id, push_sid, raw, self.cycle.scope, headers)
        proto.schedule_transmit()

    def send_server_error(self, status: int = 500) -> None:
        if self.finished or self.proto.closed:
            return
        if self._head_sent:
            self.abort()
            return
        body = ERROR_BODIES[status]
        self.start_response(status, [*TEXT_HEADERS, (b"content-length", b"%d" % len(body))], body, False)

    def abort(self) -> None:
        """The response can't be completed: reset the stream (H3_INTERNAL_ERROR)."""
        if not self.finished:
            self.reset(ErrorCode.H3_INTERNAL_ERROR)
            self.lost()

    def send_continue(self) -> None:
        pass  # HTTP/3 clients don't wait for 100-continue (RFC 9114 4.1: no Expect handshake needed)

    def refuse(self, status: int) -> None:
        """Answer ``status``; completing the response then stops the request side."""
        if self.finished or self.proto.closed or self._head_sent:
            return
        body = b"%d %s\n" % (status, _REASONS.get(status, b""))
        self.start_response(status, [*TEXT_HEADERS, (b"content-length", b"%d" % len(body))], body, False)

    def answer_without_app(self, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Answer a request refused before it has an app (it gets an empty cycle)."""
        self.cycle = cycle = HTTPCycle({}, self, self._request_complete)
        cycle.status = status
        cycle.bytes_sent = len(body)
        headers = [*TEXT_HEADERS, (b"content-length", b"%d" % len(body)), *extra]
        self.start_response(status, headers, body, False)

    def wait_for_body(self, waiting: bool) -> None:
        ctx = self.proto.ctx
        if waiting:
            timeout = ctx.config.timeout_request_body
            if timeout and not self.finished:
                ctx.deadlines.arm(self, BODY_DEADLINE, ctx.clock + timeout)
        elif self.deadline_kind == BODY_DEADLINE:
            ctx.deadlines.clear(self)

    def on_deadline(self, kind: int) -> None:
        if self.finished:
            return
        proto = self.proto
        if kind == BODY_DEADLINE:
            proto.ctx.log_bad_request(proto.peer, "HTTP/3 request body not received in time", 408)
            self.cycle.refuse_body(408)
        else:  # WRITE_DEADLINE: the client acknowledges nothing of the response
            self.abort()

    # --- completion ----------------------------------------------------------------

    def _check_length(self, body: bytes, last: bool) -> None:
        remaining = self._remaining
        if remaining is not None:
            remaining -= len(body)
            if remaining < 0:
                raise LocalProtocolError("response body longer than its content-length")
            self._remaining = remaining
            if last and remaining:
                raise LocalProtocolError("response body shorter than its content-length")

    def reset(self, code: int) -> None:
        """Reset both directions of the stream with ``code``."""
        quic = self.proto.quic
        try:
            quic.reset_stream(self.sid, code)
            if not self._request_complete:
                quic.stop_stream(self.sid, code)
        except ValueError:
            pass  # (aioquic discarded the stream already)
        self.proto.stream_reset_sent(self.sid)
        self.proto.schedule_transmit()

    def complete(self) -> None:
        """The whole response went to aioquic: the request side stops (H3_NO_ERROR, RFC 9114
        4.1) if the client is still sending, and the stream is done."""
        if self.finished:
            return
        if not self._request_complete:
            try:
                self.proto.quic.stop_stream(self.sid, ErrorCode.H3_NO_ERROR)
            except ValueError:
                pass
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        if self.push_id is not None:
            self.proto.pushes.pop(self.push_id, None)
        ctx = self.proto.ctx
        if self.deadline:
            ctx.deadlines.drop(self)
        proto = self.proto
        proto.unread -= self.unread
        self.unread = 0
        proto.stream_finished(self)
        if self._drain_waiter is not None:
            self.wake()


def header_list_size(headers: list[tuple[bytes, bytes]]) -> int:
    """RFC 9114 4.2.2: names and values, plus 32 bytes per field."""
    return sum(len(name) + len(value) + 32 for name, value in headers)


#: opens an extended CONNECT (RFC 9220) stream: the WebSocket's carrier, or None (answered already)
OpenWebSocket = Callable[[H3StreamOwner, int, RequestFields, bool], "H3Carrier | None"]


def open_request(
    proto: H3StreamOwner,
    sid: int,
    headers: list[tuple[bytes, bytes]],
    end_stream: bool,
    client: tuple[str, int] | None,
    websocket: OpenWebSocket | None = None,
) -> H3Carrier | None:
    """A request's header section arrived on ``sid``: its stream with a cycle
    ready to run (the caller starts it), or None when the request was answered
    without the app (refused, or a stream error). ``websocket``: extended CONNECT
    is advertised, and opens its streams."""
    ctx = proto.ctx
    config = ctx.config
    if header_list_size(headers) > config.http2_max_header_list_size:
        ctx.log_bad_request(proto.peer, "HTTP/3 header section over --http2-max-header-list-size", 431)
        _answer(proto, sid, end_stream, 431, b"Request Header Fields Too Large\n")
        return None
    try:
        request = validate_request(headers, websocket is not None)
    except _Malformed as exc:
        ctx.log_bad_request(proto.peer, f"HTTP/3: {exc}", 400)
        stream = H3Stream(proto, sid, end_stream)
        stream.reset(ErrorCode.H3_MESSAGE_ERROR)
        return None
    if request.protocol is not None and websocket is not None:
        return websocket(proto, sid, request, end_stream)
    method = _METHODS.get(request.method) or request.method.decode("ascii")
    stream = H3Stream(proto, sid, end_stream)
    stream.head_request = method == "HEAD"
    proto.streams[sid] = stream
    regular = list(request.regular)
    if ctx.observer is not None:
        stream.started = perf_counter()
        target = request.target + (b"?" + request.query if request.query else b"")
        stream.request = H3RequestView(request.method, target, regular)
    if method == "CONNECT":
        stream.answer_without_app(501, b"Not Implemented\n")
        return None
    if ctx.limit_concurrency is not None and ctx.over_capacity(proto):
        stream.answer_without_app(503, b"Service Unavailable\n")
        return None
    body_limit = ctx.limit_request_body
    if body_limit and request.expected is not None and request.expected > body_limit:
        ctx.log_bad_request(proto.peer, f"request body of {request.expected} bytes over --limit-request-body", 413)
        stream.answer_without_app(413, b"Content Too Large\n")
        return None
    scheme = "https"
    if ctx.proxy is not None and request.forwarded and ctx.proxy.trusts_peer(client):
        client, scheme = ctx.proxy.resolve(regular, client, scheme)
    stream.authority = request.host
    h3 = proto.h3
    extensions = EXTENSIONS_PUSH if h3 is not None and push_possible(h3) else EXTENSIONS
    http_cycle(
        proto,
        stream,
        end_stream,
        method,
        scheme,
        request.target,
        request.query,
        regular,
        client,
        extensions,
        body_limit,
        None if end_stream else stream.body_consumed,
        "3",
    )
    return stream


def open_pushed(
    proto: H3StreamOwner, push_id: int, sid: int, path: bytes, parent: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    """Run the app for a pushed GET on push stream ``sid`` (its own scope, like a
    request; ``parent`` is the scope of the request that pushed it)."""
    ctx = proto.ctx
    target, _, query = path.partition(b"?")
    stream = H3Stream(proto, sid, True)
    stream.push_id = push_id
    proto.pushes[push_id] = stream
    proto.streams[sid] = stream
    if ctx.observer is not None:
        stream.started = perf_counter()
        stream.request = H3RequestView(b"GET", path, list(headers))
    request_headers = [h for h in parent["headers"] if h[0] == b"host"]
    request_headers.extend((name.lower(), value) for name, value in headers if name.lower() != b"host")
    # a pushed response is for the same user as the request that pushed it
    scheme = parent.get("scheme", "https")
    client = parent.get("client", proto.client)
    ctx.start_cycle(
        http_cycle(proto, stream, True, "GET", scheme, target, query, request_headers, client, EXTENSIONS, 0, None, "3")
    )


def _answer(proto: H3StreamOwner, sid: int, end_stream: bool, status: int, body: bytes) -> None:
    stream = H3Stream(proto, sid, end_stream)
    proto.streams[sid] = stream
    stream.answer_without_app(status, body)


__all__ = [
    "H3Carrier",
    "H3Stream",
    "H3StreamOwner",
    "H3RequestView",
    "OpenWebSocket",
    "http_cycle",
    "open_pushed",
    "open_request",
]
