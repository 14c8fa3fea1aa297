"""The carriers of HTTP/2 streams: what the ASGI bridge and the WebSocket
session talk to, one object per stream of an
:class:`~heron.transport.http2.H2Protocol`.

:class:`H2StreamBase` holds what every stream shares (its id, the drain waiter,
the request body credit not yet given back, the access-log record) and
:class:`H2Stream` is a request/response stream, the
:class:`~heron.asgi.http.HTTPStream` of its :class:`~heron.asgi.http.HTTPCycle`.
The WebSocket carrier (RFC 8441) is :class:`~heron.transport.http2_websocket.H2WebSocket`.

:func:`http_cycle` builds the ``http`` scope and the cycle of a stream, for the
three kinds of request: a client's (``H2Protocol``, once it passed the
connection's limits), the ``Upgrade: h2c`` one (:func:`open_upgraded`) and a
pushed one (:func:`open_pushed`).

A stream reaches its connection through :class:`H2StreamOwner`, the part of
``H2Protocol`` it uses, declared here so that this module does not import the
connection's (which imports this one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from ..asgi.budget import ReadBudget
from ..asgi.http import ERROR_BODIES, HTTPCycle, http_scope
from ..protocol.errors import LocalProtocolError
from ..protocol.http2 import ErrorCodes, H2Core
from .context import ServerContext

if TYPE_CHECKING:
    from ..asgi.websocket import WebSocketCycle
    from ..protocol.http1 import Request

METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")}
EXTENSIONS = ("http.response.trailers", "http.response.early_hint", "http.response.pathsend")
# Push is announced on every client-initiated stream (a pushed stream can't push);
# a push message is ignored when the client disabled push (SETTINGS_ENABLE_PUSH = 0).
EXTENSIONS_PUSH = EXTENSIONS + ("http.response.push",)
TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
_REASONS = {408: b"Request Timeout", 413: b"Content Too Large"}
#: a stream's only deadline: timeout_request_body with the app waiting for body bytes
BODY_DEADLINE = 1


class H2StreamOwner(Protocol):
    """What a stream, and opening one, uses of its connection
    (:class:`~heron.transport.http2.H2Protocol`)."""

    ctx: ServerContext
    core: H2Core
    client: tuple[str, int] | None
    server: tuple[str, int | None] | None
    scheme: str
    #: the ASGI ``tls`` extension of a TLS connection
    tls: dict[str, Any] | None
    #: the open streams by id; a stream removes itself when it is finished or lost
    streams: dict[int, H2StreamBase]
    #: what the unread request bodies of all streams are charged to
    budget: ReadBudget
    peer: str
    closed: bool
    #: the socket's write buffer is full
    writing_paused: bool
    #: a flush is scheduled already (read only: a stream checks it to skip a call)
    flush_handle: asyncio.Handle | None

    def schedule_flush(self) -> None: ...

    def default_headers(self) -> list[tuple[bytes, bytes]]: ...

    def stream_finished(self) -> None: ...

    def log_access(self, stream: H2StreamBase, status: int, size: int) -> None: ...

    def client_and_scheme(self, headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, int] | None, str]: ...


class H2StreamBase:
    """State shared by HTTP and WebSocket streams: flow control and drain.

    The connection (same package) reads ``_finished`` and sets ``_request`` and
    ``_start`` directly: they are on the per-request path, where a property or
    a method would cost a call.
    """

    __slots__ = ("proto", "sid", "_drain_waiter", "_finished", "_unacked", "_request", "_start")

    if TYPE_CHECKING:
        # an attribute of H2Stream, a property of H2WebSocket (for log_access)
        @property
        def cycle(self) -> HTTPCycle | WebSocketCycle: ...

    def __init__(self, proto: H2StreamOwner, sid: int) -> None:
        self.proto = proto
        self.sid = sid
        self._drain_waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._unacked = 0  # body bytes received but not consumed
        self._request: H2RequestView | None = None  # kept only while access is observed
        self._start = 0.0

    @property
    def writing_paused(self) -> bool:
        proto = self.proto
        return not self._finished and (proto.writing_paused or proto.core.pending(self.sid) > 0)

    @writing_paused.setter
    def writing_paused(self, value: bool) -> None:  # pragma: no cover - derived, never set
        raise AttributeError("writing_paused is derived from the connection and the stream's window")

    async def drain(self) -> None:
        while self.writing_paused and not self.proto.closed:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.proto.ctx.loop.create_future()
            await waiter

    def wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def feed(self, data: bytes) -> None:
        raise NotImplementedError

    def end_request(self) -> None:
        raise NotImplementedError

    def lost(self) -> None:
        """The stream was reset or the connection is gone."""
        raise NotImplementedError

    def writable(self) -> None:
        """The stream's window opened again (its queued data went out)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Our side is done: give back unconsumed credit, forget the stream."""
        if self._finished:
            return
        self._finished = True
        proto = self.proto
        proto.core.finish_stream(self.sid, self._unacked)
        self._unacked = 0
        proto.streams.pop(self.sid, None)
        if self._drain_waiter is not None:
            self.wake()
        proto.stream_finished()


class H2Stream(H2StreamBase):
    """One request/response stream: the :class:`~heron.asgi.http.HTTPStream` of its cycle."""

    __slots__ = ("cycle", "_head_sent", "_request_complete", "budget", "deadline", "deadline_kind", "deadline_slot")

    #: no zero-copy file sending on HTTP/2 (pathsend reads the file in a thread)
    send_file: Callable[[int, int, int], Awaitable[None]] | None = None

    def __init__(self, proto: H2StreamOwner, sid: int, request_complete: bool) -> None:
        # H2StreamBase.__init__, inlined (one of these per request)
        self.proto = proto
        self.sid = sid
        self._drain_waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._unacked = 0
        self._request: H2RequestView | None = None  # kept only while access is observed
        self._start = 0.0
        self.cycle: HTTPCycle = None  # type: ignore[assignment]
        self._head_sent = False
        self._request_complete = request_complete
        #: the connection's: every stream's unread body is charged to it
        self.budget = proto.budget
        #: timeout_request_body while the app waits for body (in ctx.deadlines then)
        self.deadline = 0.0
        self.deadline_kind = 0
        self.deadline_slot = 0

    def answer_without_app(self, status: int, body: bytes, extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Answer ``status`` with a text/plain ``body`` and run no app (a request
        refused before it has a cycle: the stream gets an empty one)."""
        self.cycle = cycle = HTTPCycle({}, self, self._request_complete)
        cycle.status = status
        headers = [*TEXT_HEADERS, (b"content-length", b"%d" % len(body)), *extra_headers]
        self.start_response(status, headers, body, False)

    # --- from the connection ---------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._finished:
            self.proto.core.acknowledge(self.sid, len(data))
            return
        self._unacked += len(data)
        self.cycle.feed_body(data)

    def end_request(self) -> None:
        if self._request_complete:
            return  # END_STREAM on the HEADERS: the cycle knows already
        self._request_complete = True
        self.cycle.end_body()

    def lost(self) -> None:
        if not self._finished:
            self._finished = True
            self.proto.streams.pop(self.sid, None)
            self.proto.core.stream_done(self.sid)
            self.proto.log_access(self, self.cycle.status, self.cycle.bytes_sent)
        if self.deadline:
            self.wait_for_body(False)
        self.cycle.disconnect()
        self.wake()

    def finish(self) -> None:
        if self.deadline:
            self.wait_for_body(False)
        H2StreamBase.finish(self)

    def body_consumed(self, size: int) -> None:
        if not self._finished and size:
            self._unacked -= size
            self.proto.core.acknowledge(self.sid, size)
            self.proto.schedule_flush()

    # --- HTTPStream ------------------------------------------------------------

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        core = proto.core
        sid = self.sid
        end = not more_body and not body
        core.send_headers(sid, status, headers, end, proto.default_headers())
        self._head_sent = True
        if not end:
            core.send_data(sid, body, not more_body)
        if proto.flush_handle is None:
            proto.schedule_flush()
        if not more_body and not core.pending(sid):
            self.complete()

    def send_body(self, body: bytes, more_body: bool) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        proto.core.send_data(self.sid, body, not more_body)
        proto.schedule_flush()
        if not more_body:
            self._maybe_complete()

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        proto.core.send_trailers(self.sid, headers)
        proto.schedule_flush()
        self._maybe_complete()

    def send_early_hint(self, links: list[bytes]) -> None:
        proto = self.proto
        if self._finished or proto.closed or self._head_sent:
            return
        proto.core.send_informational(self.sid, 103, [(b"link", link) for link in links])
        proto.schedule_flush()

    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        proto = self.proto
        if self._finished or proto.closed:
            return
        try:
            raw = path.encode("ascii")
        except UnicodeEncodeError:
            raise LocalProtocolError(f"invalid push path {path!r:.60}") from None
        promised = proto.core.push(self.sid, raw, headers)
        if promised is not None:
            open_pushed(proto, promised, raw, self.cycle.scope, headers)

    def send_server_error(self, status: int = 500) -> None:
        if self._finished or self.proto.closed:
            return
        if self._head_sent:
            self.abort()
            return
        body = ERROR_BODIES[status]
        self.start_response(status, TEXT_HEADERS + [(b"content-length", b"%d" % len(body))], body, False)

    def abort(self) -> None:
        proto = self.proto
        if not self._finished:
            proto.core.reset(self.sid, ErrorCodes.INTERNAL_ERROR)
            proto.schedule_flush()
            self.lost()

    def send_continue(self) -> None:
        pass  # HTTP/2 clients don't wait for 100-continue before sending (RFC 9113 8.1)

    def refuse(self, status: int) -> None:
        """Answer ``status``; finishing the stream then resets its request side
        (RST_STREAM NO_ERROR: stop sending, RFC 9113 8.1)."""
        if self._finished or self.proto.closed or self._head_sent:
            return
        body = b"%d %s\n" % (status, _REASONS.get(status, b""))
        self.start_response(status, TEXT_HEADERS + [(b"content-length", b"%d" % len(body))], body, False)

    def wait_for_body(self, waiting: bool) -> None:
        ctx = self.proto.ctx
        if waiting:
            timeout = ctx.config.timeout_request_body
            if timeout and not self._finished:
                ctx.deadlines.arm(self, BODY_DEADLINE, ctx.clock + timeout)
        elif self.deadline:
            ctx.deadlines.drop(self)  # (streams are short-lived: out of the wheel at once)

    def on_deadline(self, kind: int) -> None:
        """timeout_request_body passed with the app waiting for body bytes."""
        if not self._finished:
            self.proto.ctx.log_bad_request(self.proto.peer, "HTTP/2 request body not received in time", 408)
            self.cycle.refuse_body(408)

    # --- completion -------------------------------------------------------------

    def _maybe_complete(self) -> None:
        if self.proto.core.pending(self.sid) == 0:
            self.complete()

    def complete(self) -> None:
        """Everything of the response was handed to the connection."""
        if self._finished:
            return
        if self._request is not None:
            self.proto.log_access(self, self.cycle.status, self.cycle.bytes_sent)
        if self.deadline:
            self.wait_for_body(False)
        H2StreamBase.finish(self)  # (self.finish, with its one check inlined: once per response)

    def writable(self) -> None:
        if self.cycle.response_complete:
            self.complete()
        self.wake()


class H2RequestView:
    """What the access log and metrics need of an HTTP/2 request (the same
    attributes as an HTTP/1.1 :class:`~heron.protocol.http1.Request`)."""

    __slots__ = ("method", "target", "headers")
    http_version = "2"

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.target = target
        self.headers = headers


def http_cycle(
    proto: Any,
    stream: Any,
    request_complete: bool,
    method: str,
    scheme: str,
    path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    extensions: tuple[str, ...],
    body_limit: int = 0,
    on_body_consumed: Callable[[int], None] | None = None,
    http_version: str = "2",
) -> HTTPCycle:
    """The ``http`` scope and the cycle of ``stream``'s request (a client's,
    the ``Upgrade: h2c`` one or a pushed one), over HTTP/2 or, with
    ``http_version`` "3", HTTP/3: ``proto`` has ``ctx``, ``server`` and ``tls``."""
    ctx = proto.ctx
    scope = http_scope(
        method,
        http_version,
        scheme,
        path,
        query,
        ctx.root_path,
        headers,
        client,
        proto.server,
        ctx.lifespan_state,
        {"tls": proto.tls} if proto.tls is not None else {},
    )
    cycle = HTTPCycle(scope, stream, request_complete, False, extensions, body_limit, on_body_consumed)
    stream.cycle = cycle
    return cycle


def open_upgraded(proto: H2StreamOwner, request: Request, body: bytes) -> None:
    """Stream 1 is the HTTP/1.1 request that asked for ``Upgrade: h2c`` (complete): run its app."""
    ctx = proto.ctx
    method = METHODS.get(request.method) or request.method.decode("ascii")
    authority = b""
    for name, value in request.headers:
        if name == b"host":
            authority = value
    proto.core.adopt_upgraded_request(request.method, proto.scheme.encode(), authority)
    stream = H2Stream(proto, 1, True)
    proto.streams[1] = stream
    if ctx.observer is not None:
        stream._start = perf_counter()
        stream._request = H2RequestView(request.method, request.target, request.headers)
    headers = [
        (name, value)
        for name, value in request.headers
        if name not in (b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"te")
    ]
    client, scheme = proto.client_and_scheme(headers)
    cycle = http_cycle(
        proto, stream, True, method, scheme, request.path, request.query, headers, client, EXTENSIONS_PUSH
    )
    if body:
        cycle.feed_body(body)
    ctx.start_cycle(cycle)


def open_pushed(proto: H2StreamOwner, sid: int, path: bytes, parent: Any, headers: list[tuple[bytes, bytes]]) -> None:
    """Run the app for a pushed GET on stream ``sid`` (its own scope, like a request;
    ``parent`` is the scope of the request that pushed it)."""
    ctx = proto.ctx
    target, _, query = path.partition(b"?")
    stream = H2Stream(proto, sid, True)
    proto.streams[sid] = stream
    if ctx.observer is not None:
        stream._start = perf_counter()
        stream._request = H2RequestView(b"GET", path, list(headers))
    request_headers = [h for h in parent["headers"] if h[0] == b"host"]
    request_headers.extend((name.lower(), value) for name, value in headers if name.lower() != b"host")
    # a pushed response is for the same user as the request that pushed it
    scheme = parent.get("scheme", proto.scheme)
    client = parent.get("client", proto.client)
    ctx.start_cycle(http_cycle(proto, stream, True, "GET", scheme, target, query, request_headers, client, EXTENSIONS))
