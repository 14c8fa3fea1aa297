"""How :class:`~heron.transport.http1.H1Protocol` gives its connection away:
to a :class:`~heron.transport.websocket.WebSocketProtocol` after an
``Upgrade: websocket`` handshake, or to an
:class:`~heron.transport.http2.H2Protocol` (ALPN ``h2`` over TLS, the HTTP/2
preface in cleartext, or an ``Upgrade: h2c`` request once its body is read,
see :mod:`heron.transport.h2c`). Each is once per connection at most, so none
of this is on the per-request path.
"""

from __future__ import annotations

import asyncio

from ..protocol.http1 import Request, simple_response
from .h1_base import H1ProtocolBase
from .h2c import PREFACE, UpgradeBody, upgrade_settings


class H1Upgrades(H1ProtocolBase):
    """Part of H1Protocol: the hand-overs to WebSocket and HTTP/2."""

    __slots__ = ()

    def _switch_to_h2(self, transport: asyncio.BaseTransport) -> None:
        """ALPN chose "h2" (offered when http2 is on, see heron.tls.alpn_protocols):
        the TLS connection belongs to an H2Protocol from the start."""
        from .http2 import H2Protocol

        self._closed = True  # this protocol never serves the connection
        protocol = H2Protocol(self.ctx)
        protocol.proxied = self.proxied
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

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
        self.ctx.deadlines.drop(self)
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
        self.ctx.deadlines.drop(self)
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
