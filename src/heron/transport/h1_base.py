"""What every part of :class:`~heron.transport.http1.H1Protocol` shares: the
connection's state (one ``__slots__`` for the whole class), its deadline and
the reasons reading is paused, closing, and the access-log hand-off.

:class:`H1ProtocolBase` is not a protocol on its own: ``H1Protocol`` is
assembled from it, :class:`~heron.transport.h1_response.H1ResponseWriter` (the
``HTTPStream`` side: response writing and the cycle's end) and
:class:`~heron.transport.h1_upgrade.H1Upgrades` (WebSocket and HTTP/2
hand-overs), with the read loop in :mod:`heron.transport.http1` itself. The
parts are classes, not helpers, so a call on the per-request path is still
one method call (found through the MRO, which CPython caches).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..asgi.budget import ReadBudget
from ..asgi.http import BODY_HIGH_WATER, HTTPCycle
from ..asgi.proxy import ProxyTrust
from ..protocol.http1 import H1Connection, Request
from .context import ConnectionAddresses, ServerContext, format_peer

#: Unread request body the server will read and discard to keep a connection.
MAX_DRAIN = 64 * 1024

# what the deadline means
NO_DEADLINE = 0
HEADER_DEADLINE = 1
KEEP_ALIVE_DEADLINE = 2
WRITE_DEADLINE = 3
BODY_DEADLINE = 4

# why reading is paused (bits of _reading_paused_by)
PAUSED_BY_BODY = 1  # the unread body's budget is spent
PAUSED_BY_PIPELINE = 2  # pipelined input waits behind the request in flight
PAUSED_BY_TURN = 4  # the rest of a read is parsed at the next turn


class H1ProtocolBase(asyncio.Protocol):
    """The state of one HTTP/1.1 connection and the helpers every part uses."""

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
        "deadline_slot",
        "_out",
        "_out_size",
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
        "proxied",
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
        #: the addresses a PROXY protocol header gave (set before connection_made), or None
        self.proxied: ConnectionAddresses | None = None
        self.deadline = 0.0
        self.deadline_kind = NO_DEADLINE
        self.deadline_slot = 0  # (the wheel's: see heron.transport.deadlines)
        #: small pieces of a streamed response waiting for one write (see H1ResponseWriter)
        self._out: list[bytes] | None = None
        self._out_size = 0
        self.writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused_by = 0  # PAUSED_BY_* bits: why reading is paused
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

    if TYPE_CHECKING:
        # Defined by the other parts of H1Protocol and called across them (refuse:
        # for h2c.UpgradeOwner, which the upgrade part hands itself to).

        def _process(self) -> None: ...  # the read loop (heron.transport.http1)

        def _on_request(self, request: Request) -> None: ...  # (heron.transport.http1)

        def wait_for_body(self, waiting: bool) -> None: ...  # (heron.transport.h1_response)

        def refuse(self, status: int) -> None: ...  # (heron.transport.h1_response)

        def on_deadline(self, kind: int) -> None: ...  # (heron.transport.http1)

        def _flush_out(self) -> None: ...  # (heron.transport.h1_response)

    # --- deadline, reading paused, closing ----------------------------------------

    def _set_deadline(self, kind: int, timeout: float) -> None:
        """A deadline ``timeout`` seconds from now (0: no deadline)."""
        if timeout:
            self.ctx.deadlines.arm(self, kind, self.ctx.clock + timeout)
        else:
            self.ctx.deadlines.clear(self)

    def _clear_deadline(self, kind: int) -> None:
        """No more deadline, if the one set is of ``kind``."""
        if self.deadline_kind == kind:
            self.ctx.deadlines.clear(self)

    def _pause_reading(self, reason: int) -> None:
        if not self._reading_paused_by and not self._closed:
            self.transport.pause_reading()
        self._reading_paused_by |= reason

    def _resume_reading(self, reasons: int) -> None:
        was_paused = self._reading_paused_by
        self._reading_paused_by &= ~reasons
        if was_paused and not self._reading_paused_by and not self._closed:
            self.transport.resume_reading()

    def pause_reading(self) -> None:
        self._pause_reading(PAUSED_BY_BODY)

    def resume_reading(self) -> None:
        self._resume_reading(PAUSED_BY_BODY)

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
            if self._out is not None:
                self._flush_out()  # what the app sent goes out before the end
            self._closed = True
            self.ctx.deadlines.clear(self)
            self.transport.close()
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            cycle.disconnect()

    def _forwarded(self, request: Request) -> tuple[tuple[str, int] | None, str]:
        """(client, scheme) as the trusted proxy in front reports them."""
        assert self.proxy is not None
        client, scheme = self.proxy.resolve(request.headers, self.client, self.scheme)
        self._log_peer = self.peer if client == self.client else format_peer(client)
        return client, scheme

    def _log_access(self, cycle: HTTPCycle) -> None:
        request = self._request
        observer = self.ctx.observer
        if request is None or observer is None:
            return
        self._request = None
        headers, self._response_headers = self._response_headers, None
        peer, self._log_peer = self._log_peer or self.peer, ""  # (set per proxied request)
        observer.http(peer, request, cycle.status, cycle.bytes_sent, self._request_start, headers)
