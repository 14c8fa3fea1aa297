"""A listener that reads the PROXY protocol header before the connection is served.

With ``--proxy-protocol``, a TCP load balancer opens every connection with a
header naming the client (heron.protocol.proxy); with TLS that header comes
before the handshake. So heron accepts these connections itself, reads the
header straight from the socket, consuming exactly its bytes and not one more
(the first byte after it may be a TLS ClientHello), and only then hands the
socket to the event loop as ``create_server`` would: same protocol, same TLS,
the header's addresses in place of the proxy's.

- A peer outside ``--forwarded-allow-ips`` is handed over at once, unread: a
  header from it reaches the HTTP parser (400 and close) or the TLS layer
  (handshake failure), so it is never believed.
- A trusted peer must send a valid header within ``--timeout-request-header``;
  anything else closes the connection (logged at DEBUG: a misconfigured proxy
  shows up in its own logs, and a flood of them stays quiet here).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..asgi.proxy import ProxyTrust
from ..protocol.proxy import MAX_V1, ProxyProtocolError, parse_proxy_header
from .context import ConnectionAddresses, format_peer
from .http1 import SHUTDOWN_HEAD_GRACE

__all__ = ["ProxyProtocolListener"]

logger = logging.getLogger("heron.error")

#: connections accepted per wake-up of the listening socket (then other work runs)
ACCEPTS_PER_TURN = 64

ProtocolMaker = Callable[[ConnectionAddresses | None], asyncio.Protocol]


class ProxyProtocolListener:
    """Serves one listening socket; ``close()`` stops accepting (as ``Server.close()``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        make_protocol: ProtocolMaker,
        trust: ProxyTrust,
        tls: dict[str, Any],
        header_timeout: float | None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._make_protocol = make_protocol
        self._trust = trust
        self._tls = tls
        self._timeout = header_timeout
        self._readers: set[_HeaderReader] = set()
        self._handovers: set[asyncio.Task[Any]] = set()
        self._closed = False
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting. A connection still sending its PROXY header (accepted a
        moment ago: the request follows) gets SHUTDOWN_HEAD_GRACE seconds more to
        finish it, and is then served as any connection accepted before the
        shutdown; a second call drops what is left."""
        if self._closed:
            for reader in list(self._readers):
                reader.close()
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        for reader in list(self._readers):
            reader.hurry(SHUTDOWN_HEAD_GRACE)

    @property
    def pending(self) -> int:
        """Accepted connections not handed to their protocol yet (a graceful
        shutdown waits for them as for the others)."""
        return len(self._readers) + len(self._handovers)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                conn, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS...: the kernel keeps the connection queued
                logger.warning("Could not accept a connection: %s", exc)
                return
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = (str(address[0]), int(address[1])) if isinstance(address, tuple) else None
            if self._trust.trusts(peer[0] if peer is not None else None):
                self._readers.add(_HeaderReader(self, conn, peer))
            else:
                self.hand_over(conn, None)

    def hand_over(self, conn: socket.socket, addresses: ConnectionAddresses | None) -> None:
        """Serve ``conn`` from here on as any connection (TLS handshake included)."""
        task = self._loop.create_task(self._connect(conn, addresses))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _connect(self, conn: socket.socket, addresses: ConnectionAddresses | None) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: self._make_protocol(addresses), conn, **self._tls)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:  # a failed TLS handshake, a vanished peer
            logger.debug("Connection from %s closed before it was served: %s", _peer(addresses, conn), exc)
            conn.close()


class _HeaderReader:
    """Reads one connection's PROXY header without reading past it."""

    def __init__(self, listener: ProxyProtocolListener, conn: socket.socket, peer: tuple[str, int] | None) -> None:
        self._listener = listener
        self._conn = conn
        self._peer = peer
        self._buffer = b""
        loop = listener._loop
        self._timer = (
            loop.call_later(listener._timeout, self._fail, "no PROXY protocol header in time")
            if listener._timeout
            else None
        )
        loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = self._conn.recv(self._safe_size())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(str(exc))
            return
        if not chunk:
            self._fail("closed before its PROXY protocol header ended")
            return
        self._buffer += chunk
        try:
            header = parse_proxy_header(self._buffer)
        except ProxyProtocolError as exc:
            self._fail(str(exc))
            return
        if header is None:
            return
        self._finish()
        client = header.client
        if client is None:  # LOCAL / UNKNOWN: the proxy's own connection, as it is
            addresses = None
        else:
            assert header.server is not None
            addresses = (client, header.server, format_peer(client))
        self._listener.hand_over(self._conn, addresses)

    def _safe_size(self) -> int:
        """How much may be read without taking a byte that follows the header."""
        buffer = self._buffer
        if not buffer:
            return 15  # no header of either version is shorter ("PROXY UNKNOWN\r\n" is 15 bytes)
        if buffer[:1] == b"\r":  # v2: 16 fixed bytes, then as many as they announce
            if len(buffer) < 16:
                return 16 - len(buffer)
            return 16 + int.from_bytes(buffer[14:16], "big") - len(buffer)
        if buffer[:1] == b"P":  # v1: up to its first LF (every byte before it is the header's)
            try:
                ahead = self._conn.recv(MAX_V1, socket.MSG_PEEK)
            except OSError:
                return 1
            end = ahead.find(b"\n")
            return end + 1 if end >= 0 else max(1, len(ahead))
        return 1  # not a header: the parser says so

    def _fail(self, reason: str) -> None:
        logger.debug("PROXY protocol from %s: %s; connection closed", format_peer(self._peer), reason)
        self._finish()
        self._conn.close()

    def hurry(self, grace: float) -> None:
        """At most ``grace`` seconds more for the header (the listener is closing)."""
        loop = self._listener._loop
        timer = self._timer
        if timer is None or timer.when() > loop.time() + grace:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_later(grace, self._fail, "no PROXY protocol header before the shutdown")

    def close(self) -> None:
        self._finish()
        self._conn.close()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self._listener._loop.remove_reader(self._conn.fileno())
        except (ValueError, OSError):
            pass  # already closed
        self._listener._readers.discard(self)


def _peer(addresses: ConnectionAddresses | None, conn: socket.socket) -> str:
    if addresses is not None:
        return addresses[2]
    try:
        return format_peer(conn.getpeername())
    except OSError:
        return "a client"
