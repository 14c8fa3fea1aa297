"""The UDP side of HTTP/3 (RFC 9000): one ``--quic-bind`` socket, and what a new
client's Initial may cost before it is a connection
(:class:`~heron.transport.http3.H3Protocol`).

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
  admitted only once it comes back with it; ``--limit-concurrency`` bounds the
  QUIC connections of a worker.
* One client address (:func:`address_key`: an IPv4 address, an IPv6 /64) may
  hold at most ``--quic-max-handshakes-per-address`` of those handshakes (a
  tenth of the worker's by default), so it can't take the slots of everyone
  else until ``--quic-handshake-timeout``. Those admitted without a Retry
  token and those that came back with one are counted apart: past its share,
  an Initial without a token gets Retry (a real client behind a busy NAT pays
  one round trip; a flood from a spoofed address gets stateless answers no
  larger than what it sent), and one with a token is dropped (the address is
  real and holds its share already; its retransmission gets in once a slot
  is free). So a spoofer that fills an address's unproven share can't keep
  the real clients at that address out. The table has an entry only for an
  address with a handshake open: at most ``--quic-max-handshakes`` entries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import weakref
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (re-exported from aioquic._buffer, no __all__)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from .context import ServerContext
from .http3 import AddressKey, H3Protocol, NetworkAddress
from .http3_quic import decrypted_any, initial_decrypts, server_certificate, tagged

logger = logging.getLogger("heron.error")

#: a client's first datagram is at least this large (RFC 9000 14.1)
MIN_INITIAL_SIZE = 1200


class QuicTally:
    """The QUIC connections of one worker (all its ``--quic-bind`` sockets)."""

    __slots__ = ("connections", "handshakes", "refused", "retries", "by_address", "__weakref__")

    def __init__(self) -> None:
        #: admitted and not terminated yet (closing ones included: they still hold their state)
        self.connections = 0
        #: admitted, handshake not complete
        self.handshakes = 0
        #: new Initials dropped because a limit was reached (--quic-max-handshakes, its per-address share with
        #: a Retry token, --limit-concurrency)
        self.refused = 0
        #: new Initials answered with Retry (half of --quic-max-handshakes reached, or the address's share)
        self.retries = 0
        #: address_key -> [handshakes admitted without a Retry token, with one]; only addresses with
        #: a handshake open (so no more entries than handshakes)
        self.by_address: dict[AddressKey, list[int]] = {}

    def handshake_started(self, key: AddressKey, proven: bool) -> None:
        self.handshakes += 1
        counts = self.by_address.get(key)
        if counts is None:
            counts = self.by_address[key] = [0, 0]
        counts[proven] += 1

    def handshake_ended(self, key: AddressKey, proven: bool) -> None:
        self.handshakes -= 1
        counts = self.by_address[key]
        counts[proven] -= 1
        if not counts[0] and not counts[1]:
            del self.by_address[key]

    def address_handshakes(self, key: AddressKey, proven: bool) -> int:
        counts = self.by_address.get(key)
        return counts[proven] if counts is not None else 0


def address_key(addr: NetworkAddress) -> AddressKey:
    """Whose handshakes an address's count: an IPv4 address (also when IPv4-mapped), or the
    /64 of an IPv6 one (one subscriber's prefix: a host may use any address in it)."""
    host = str(addr[0])
    if ":" not in host:
        return host
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    try:
        return socket.inet_pton(socket.AF_INET6, host.partition("%")[0])[:8]
    except OSError:  # (not an address the kernel would give; counted as it is)
        return host


_TALLIES: weakref.WeakKeyDictionary[ServerContext, QuicTally] = weakref.WeakKeyDictionary()


def quic_tally(ctx: ServerContext) -> QuicTally:
    tally = _TALLIES.get(ctx)
    if tally is None:
        tally = _TALLIES[ctx] = QuicTally()
    return tally


class QuicListener(asyncio.DatagramProtocol):
    """One ``--quic-bind`` UDP socket: routes datagrams to their connections."""

    def __init__(self, ctx: ServerContext, configuration: QuicConfiguration, cid_tag: bytes = b"") -> None:
        self.ctx = ctx
        self.configuration = configuration
        #: the start of every connection id this worker issues (see heron.quic_steering)
        self.cid_tag = cid_tag
        self.transport: asyncio.DatagramTransport | None = None
        #: every connection id issued, to its connection
        self.routes: dict[bytes, H3Protocol] = {}
        #: new connections are refused (shutdown); the open ones go on
        self.accepting = True
        self.server: tuple[str, int | None] | None = None
        self.tally = quic_tally(ctx)
        config = ctx.config
        #: half-open handshakes one address may hold (of each kind: with a Retry token, and without)
        self.per_address = config.quic_max_handshakes_per_address or max(1, config.quic_max_handshakes // 10)
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
        # one address's share: Retry while its address is unproven, then dropped (see the docstring)
        key = address_key(addr)
        proven = retry_cid is not None
        over_share = tally.address_handshakes(key, proven) >= self.per_address
        if proven and over_share:
            tally.refused += 1
            return
        if not proven and (over_share or tally.handshakes >= max_handshakes // 2):
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
        connection.admit(key)

    def _retry(self, version: int | None, client_cid: bytes, original_cid: bytes, addr: NetworkAddress) -> None:
        """Answer an Initial with Retry (RFC 9000 8.1.2): no state kept; the client comes
        back with the token, from the address it is bound to (a spoofer never does)."""
        if version is None:
            return
        handler = self._tokens
        if handler is None:
            handler = self._tokens = QuicRetryTokenHandler()
        retry_cid = os.urandom(self.configuration.connection_id_length)
        retry_cid = tagged(self.cid_tag, retry_cid)  # (the client's next Initial comes back here)
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


async def start_quic_listener(
    ctx: ServerContext, sock: Any, configuration: QuicConfiguration, cid_tag: bytes = b""
) -> QuicListener:
    """Serve HTTP/3 on the bound UDP socket ``sock`` (``cid_tag``: a worker's, see QuicListener)."""
    loop = ctx.loop
    _, listener = await loop.create_datagram_endpoint(lambda: QuicListener(ctx, configuration, cid_tag), sock=sock)
    return listener


__all__ = [
    "MIN_INITIAL_SIZE",
    "AddressKey",
    "QuicListener",
    "QuicTally",
    "address_key",
    "quic_tally",
    "start_quic_listener",
]
