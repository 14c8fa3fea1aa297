"""State shared by every connection of one server: settings, clock, registries.

One :class:`ServerContext` per :class:`heron.server.Server`. It also runs the
housekeeping tick: every half second it refreshes the cached clock and
``Date`` header and fires the deadlines that came due (``deadlines``, the
timing wheel of :mod:`heron.transport.deadlines`: header, keep-alive, write and
body timeouts of connections and streams, WebSocket pings and closing
handshakes). One timer for the whole server is far cheaper than a timer handle
per request; the price is a timeout precision of half a second (never early,
up to half a second late).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from ..asgi.proxy import ProxyTrust
from ..protocol.http1 import H1Limits
from .deadlines import TICK, Deadlines

if TYPE_CHECKING:
    from ..accesslog import RequestObserver
    from ..asgi.http import ASGIApp
    from ..config import Config
    from ..metrics import Metrics

_EAGER = sys.version_info >= (3, 12)

error_logger = logging.getLogger("heron.error")
access_logger = logging.getLogger("heron.access")


class ServerContext:
    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.loop = loop
        self.limits = H1Limits(
            max_request_line=config.limit_request_line,
            max_header_count=config.limit_request_fields,
            max_head_size=config.limit_request_head_size,
        )
        self.root_path = config.root_path
        self.lifespan_state: dict[str, Any] | None = None
        self.connections: set[Any] = set()
        #: every deadline of the server's connections, streams and sessions
        self.deadlines = Deadlines()
        self.tasks: set[asyncio.Task[None]] = set()
        self.shutting_down = False
        self.limit_concurrency = config.limit_concurrency
        #: --limit-request-body (0: no limit)
        self.limit_request_body = config.limit_request_body or 0
        self.timeout_keep_alive = config.timeout_keep_alive
        #: --limit-max-requests: requests still to start before ``on_request_limit``
        #: is called (negative: no limit; counting down costs less than a check)
        self.requests_left = -1
        self.on_request_limit: Callable[[], None] = lambda: None
        if config.reset_contextvars:
            self.start_cycle = self._start_cycle_in_fresh_context  # type: ignore[method-assign]
        #: --proxy-headers: which peers may set the client and scheme (None: off)
        self.proxy: ProxyTrust | None = (
            ProxyTrust(config.forwarded_allow_ips or "127.0.0.1,::1") if config.proxy_headers else None
        )

        self.server_line = b"server: heron\r\n" if config.server_header else b""
        extra = []
        for name, value in config.headers:
            if name.lower() == "server":
                self.server_line = b""  # a configured Server header replaces ours
            extra.append(name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n")
        self.extra_lines = b"".join(extra)
        #: the --header lines alone (HTTP/3 responses: extra_lines may add Alt-Svc)
        self.header_lines = self.extra_lines
        self.send_date = config.date_header
        self.date_line = b""
        self.clock = loop.time()
        self._date_second = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        self._refresh_date()

        self.access_log = config.access_log
        #: Prometheus counters (--metrics-bind), or None
        self.metrics = metrics
        #: what a finished request or WebSocket session is reported to (access log,
        #: metrics; built by the server); None when neither is on, so protocols do
        #: no per-request work
        self.observer = observer
        self._bad_request_logs = 0
        self._bad_request_window = 0.0
        #: the writes waiting for the end of this loop turn (see write_at_turn_end)
        self._turn_end_writes: list[Callable[[], None]] = []

    def advertise_http3(self, ports: list[int], max_age: int) -> None:
        """--quic-bind: TCP responses name the HTTP/3 alternative (RFC 7838 Alt-Svc),
        in the precomputed default lines (no per-request work); not when
        ``max_age`` is 0 or a --header sets Alt-Svc itself."""
        if not ports or not max_age or any(name.lower() == "alt-svc" for name, _ in self.config.headers):
            return
        value = ", ".join(f'h3=":{port}"; ma={max_age}' for port in dict.fromkeys(ports))
        self.extra_lines = self.header_lines + b"alt-svc: " + value.encode("ascii") + b"\r\n"

    def write_at_turn_end(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` (a connection writing what it gathered) when this loop turn
        ends, with every other connection's asked for in the same turn: one loop
        callback per turn, not one per connection (1,000 streams each sending an event
        a turn would otherwise cost 1,000 callbacks a turn)."""
        waiting = self._turn_end_writes
        waiting.append(flush)
        if len(waiting) == 1:
            self.loop.call_soon(self._write_turn_end)

    def _write_turn_end(self) -> None:
        waiting = self._turn_end_writes
        self._turn_end_writes = []  # (a flush that asks for another lands in the next turn)
        for flush in waiting:
            try:
                flush()
            except Exception:  # one connection's failure must not hold back the others' bytes
                error_logger.exception("Error writing a connection's buffered output")

    # --- housekeeping ------------------------------------------------------

    def start(self) -> None:
        self._tick()

    def stop(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    def _refresh_date(self) -> None:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            if self.send_date:
                self.date_line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"

    def _tick(self) -> None:
        self.clock = now = self.loop.time()
        self._refresh_date()
        # Deadlines are set from the cached clock, which lags real time by up to
        # one TICK: a deadline is due a TICK after it reads, so that a timeout
        # never fires early (it fires up to half a second late instead).
        due = now - TICK
        deadlines = self.deadlines
        for owner in deadlines.expire(due):
            try:
                deadlines.fire(owner, due)
            except Exception:  # pragma: no cover - defensive: a timer must not die
                error_logger.exception("Error while timing out a connection")
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    # --- helpers for protocols --------------------------------------------

    def over_capacity(self, current: Any) -> bool:
        """--limit-concurrency: True when a new request (on connection ``current``)
        must be answered 503. Idle keep-alive connections don't hold capacity that
        a request needs: the longest idle ones are closed first to make room."""
        limit = self.limit_concurrency
        if limit is None:
            return False
        if len(self.tasks) >= limit:
            return True
        excess = len(self.connections) - limit
        if excess <= 0:
            return False
        idle = sorted(
            (c for c in self.connections if c is not current and c.idle_keep_alive),
            key=lambda c: c.deadline,
        )
        for connection in idle[:excess]:
            connection.close_idle()
            self.connections.discard(connection)  # (connection_lost comes later)
        return len(self.connections) > limit

    def start_cycle(self, cycle: Any) -> None:
        """Run the app for ``cycle`` in a task; the cycle removes it from ``tasks`` when done.

        On Python 3.12+ the task starts eagerly: the app runs at once, inside
        data_received, up to its first real wait. An app that answers without
        waiting (most do, for small requests) then costs no scheduling round
        trip at all. It is still a real Task (current_task(), cancellation and
        contextvars behave as usual).
        """
        self.requests_left -= 1
        if self.requests_left == 0:
            self.on_request_limit()
        coro = cycle.run(self.app, self.tasks)
        # asyncio.Task directly, on every version (eager_start needs it on 3.12+;
        # on 3.11 it also skips loop.create_task's keyword call, ~1% of a
        # request): a loop's task factory is not used for app tasks.
        if _EAGER:
            task = asyncio.Task(coro, loop=self.loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]  # (3.12+; typeshed for 3.11 lacks it)
            cycle.task = task
            if task.done():  # it finished already
                return
        else:
            cycle.task = task = asyncio.Task(coro, loop=self.loop)
        self.tasks.add(task)

    def start_session(self, coro: Any) -> asyncio.Task[None]:
        """The task of a WebSocket session's app (``--reset-contextvars``: in an
        empty context, as requests)."""
        if self.config.reset_contextvars:
            return contextvars.Context().run(self.loop.create_task, coro)
        return self.loop.create_task(coro)

    def _start_cycle_in_fresh_context(self, cycle: Any) -> None:
        """``--reset-contextvars``: the app's task starts from an empty
        ``contextvars.Context`` rather than a copy of the one the server runs in
        (which carries whatever the code that started the server had set)."""
        contextvars.Context().run(ServerContext.start_cycle, self, cycle)

    def log_bad_request(self, peer: str, message: str, status: int) -> None:
        """One INFO line per bad request, at most 20 per second (floods stay quiet)."""
        now = self.clock
        if now - self._bad_request_window >= 1.0:
            self._bad_request_window = now
            self._bad_request_logs = 0
        self._bad_request_logs += 1
        if self.metrics is not None:
            self.metrics.parse_error(status)
        if self._bad_request_logs <= 20:
            error_logger.info("Bad request from %s: %s (%d)", peer, message, status)


#: (client, server, peer) of a connection: the ASGI ``client`` and ``server``, the peer as logs show it
ConnectionAddresses = tuple[tuple[str, int] | None, tuple[str, int | None] | None, str]


def connection_addresses(transport: asyncio.BaseTransport) -> ConnectionAddresses:
    """(client, server, peer) of a connection: the ASGI ``client`` and ``server``
    (``[path, None]`` for a UNIX socket) and the peer as logs show it."""
    peername = transport.get_extra_info("peername")
    sockname = transport.get_extra_info("sockname")
    client: tuple[str, int] | None = None
    server: tuple[str, int | None] | None = None
    if isinstance(peername, tuple) and len(peername) >= 2:
        client = (str(peername[0]), int(peername[1]))
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        server = (str(sockname[0]), int(sockname[1]))
    elif isinstance(sockname, str) and sockname:
        server = (sockname, None)
    return client, server, format_peer(peername)


def format_peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "unix"


def write_pieces(transport: Any, pieces: Any) -> None:
    """Write several buffers without joining them into one (no copy of a big payload).

    uvloop's ``writelines`` sends them with one ``writev`` and keeps a reference
    to what the socket did not take. The standard library's selector transport
    (3.12.0 to at least 3.13.0) forgets to call ``pause_writing()`` in
    ``writelines``, so a client that reads nothing would never slow the app
    down: there each piece goes through ``write()``, which applies backpressure.
    """
    inner = getattr(transport, "_transport", transport)  # the metrics counting wrapper
    if type(inner).__module__.startswith("uvloop"):
        transport.writelines(pieces)
    else:
        for piece in pieces:
            transport.write(piece)
