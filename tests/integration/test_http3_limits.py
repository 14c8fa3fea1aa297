"""HTTP/3 against hostile clients: Initial floods, half-open handshakes, rapid resets,
--limit-concurrency on QUIC connections. Real UDP sockets on 127.0.0.1.

Fake Initials come from a plain UDP socket: garbage (the long header of an Initial,
random bytes after it) and real ClientHellos from aioquic client connections that are
never answered (what a spoofed source address produces), or that answer the Retry
once and then nothing (a real address that abandons its handshakes).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (re-exported from aioquic._buffer, no __all__)
from aioquic.h3.connection import H3_ALPN, ErrorCode
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from heron.transport.http3_listener import QuicTally, address_key, quic_tally

from ..conftest import RunningServer
from .test_http3 import Certs, _serve, certs, h3_client, quic_port, run_client

pytestmark = pytest.mark.timeout(30)

__all__ = ["certs"]  # (the fixture, shared with test_http3)


def tally(running: RunningServer) -> QuicTally:
    ctx = running.server._ctx
    assert ctx is not None
    return quic_tally(ctx)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@contextmanager
def udp_socket(host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A UDP socket on ``host`` (any of 127.0.0.0/8: the loopback, as many client addresses as needed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def garbage_initial() -> bytes:
    """1200 bytes that parse as a QUIC v1 Initial with a new connection id, and don't decrypt."""
    dcid, scid = os.urandom(8), os.urandom(8)
    head = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid + b"\x00"
    length = 1200 - len(head) - 2
    return head + (0x4000 | length).to_bytes(2, "big") + os.urandom(length)


def hello_client(target: tuple[str, int]) -> QuicConnection:
    """A client connection to ``target`` (its datagrams: :func:`first_datagram`)."""
    client = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN))
    client.connect(target, now=time.monotonic())
    return client


def first_datagram(client: QuicConnection) -> bytes:
    """What a client sends next: its first Initial with the ClientHello (again with the token, after a Retry)."""
    datagrams = client.datagrams_to_send(now=time.monotonic())
    assert len(datagrams[0][0]) >= 1200
    return datagrams[0][0]


def retries(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """The Retry packets waiting on ``sock``: (destination connection id, datagram); the rest is dropped."""
    found: list[tuple[bytes, bytes]] = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return found
        header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        if header.packet_type == QuicPacketType.RETRY:
            found.append((header.destination_cid, data))


def drain(sock: socket.socket) -> int:
    """Datagrams waiting on ``sock`` (read and dropped)."""
    count = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return count
        count += 1


def test_garbage_initials_cost_no_state_and_a_real_client_is_served(certs: Certs) -> None:
    with _serve(certs) as running, udp_socket() as sock:
        target = ("127.0.0.1", quic_port(running))
        for _ in range(500):
            sock.sendto(garbage_initial(), target)

        async def main(port: int) -> int:
            async with h3_client(certs, port) as client:
                return (await client.response(client.request("GET", "/"))).status

        assert run_client(main(target[1])) == 200
        counts = tally(running)
        assert wait_for(lambda: counts.connections == 0)
        assert counts.handshakes == 0 and counts.refused == 0  # dropped before they became connections
        assert drain(sock) == 0  # (nothing answered to them either)


#: the worker's caps alone: all the Initials of these tests come from one address
ONE_ADDRESS = {"quic_max_handshakes": 20, "quic_max_handshakes_per_address": 20}


def test_spoofed_initials_hold_half_the_handshakes_and_retry_lets_real_clients_in(certs: Certs) -> None:
    with _serve(certs, quic_handshake_timeout=5.0, **ONE_ADDRESS) as running, udp_socket() as sock:
        target = ("127.0.0.1", quic_port(running))
        for _ in range(60):  # never answered: as from spoofed addresses
            sock.sendto(first_datagram(hello_client(target)), target)
        counts = tally(running)
        assert wait_for(lambda: counts.retries == 50)
        assert counts.handshakes == 10 and counts.connections == 10 and counts.refused == 0
        assert len(retries(sock)) == 50  # (each smaller than the Initial it answers: no amplification)

        async def main(port: int) -> int:
            async with h3_client(certs, port) as client:  # aioquic's client follows the Retry
                return (await client.response(client.request("GET", "/"))).status

        assert run_client(main(target[1])) == 200
        # served at once, not after the half-open ones timed out (5 s): they still hold their slots
        assert counts.handshakes == 10
        assert counts.retries == 51


def test_half_open_handshakes_are_bounded_and_dropped_after_the_timeout(certs: Certs) -> None:
    with _serve(certs, quic_handshake_timeout=1.0, **ONE_ADDRESS) as running, udp_socket() as sock:
        target = ("127.0.0.1", quic_port(running))
        clients = [hello_client(target) for _ in range(60)]
        started = time.monotonic()
        for client in clients:
            sock.sendto(first_datagram(client), target)
        counts = tally(running)
        assert wait_for(lambda: counts.retries == 50)
        # answer the Retries (from a real address), then never again: the cap is reached
        by_cid = {client.host_cid: client for client in clients}
        answered = retries(sock)
        assert len(answered) == 50
        for cid, retry in answered:
            client = by_cid[cid]
            client.receive_datagram(retry, target, now=time.monotonic())
            sock.sendto(first_datagram(client), target)
        assert wait_for(lambda: counts.refused == 40)
        assert counts.handshakes == 20 and counts.connections == 20
        assert running.server.connection_count == 20

        # a real client: its first Initials are dropped, a retransmission gets in once the
        # half-open connections are gone (1 s, up to a tick later)
        async def main(port: int) -> int:
            async with h3_client(certs, port) as client:
                return (await client.response(client.request("GET", "/"))).status

        assert run_client(main(target[1])) == 200
        assert time.monotonic() - started >= 1.0
        assert wait_for(lambda: counts.handshakes == 0 and counts.connections == 0)
        # silently: once dropped, nothing more goes to the address the Initials came from
        drain(sock)
        time.sleep(0.6)
        assert drain(sock) == 0


def answer_retries(sock: socket.socket, clients: list[QuicConnection], target: tuple[str, int]) -> int:
    """Follow each Retry waiting on ``sock`` (the client's Initial again, with the token): how many."""
    by_cid = {client.host_cid: client for client in clients}
    answered = retries(sock)
    for cid, retry in answered:
        client = by_cid[cid]
        client.receive_datagram(retry, target, now=time.monotonic())
        sock.sendto(first_datagram(client), target)
    return len(answered)


def test_one_address_holds_its_share_of_the_handshakes_and_no_more(certs: Certs) -> None:
    settings = {"quic_max_handshakes": 40, "quic_max_handshakes_per_address": 5, "quic_handshake_timeout": 1.0}
    with _serve(certs, **settings) as running, udp_socket("127.0.0.2") as one, udp_socket("127.0.0.3") as other:
        target = ("127.0.0.1", quic_port(running))
        counts = tally(running)
        ones = [hello_client(target) for _ in range(12)]
        for client in ones:  # never answered: half-open handshakes (the worker's Retry starts at 20)
            one.sendto(first_datagram(client), target)
        assert wait_for(lambda: counts.retries == 7)
        assert counts.handshakes == 5 and counts.by_address == {"127.0.0.2": [5, 0]}
        for _ in range(5):  # another address has its own share
            other.sendto(first_datagram(hello_client(target)), target)
        assert wait_for(lambda: counts.handshakes == 10)
        assert counts.retries == 7 and counts.by_address["127.0.0.3"] == [5, 0]

        # the first address answers its Retries: its address is real, and it gets a share of
        # those too (so a spoofer that took an address's share can't keep its real clients
        # out), then no more: the other two are dropped
        assert answer_retries(one, ones, target) == 7
        assert wait_for(lambda: counts.refused == 2)
        assert counts.handshakes == 15 and counts.by_address["127.0.0.2"] == [5, 5]
        assert counts.retries == 7  # (dropped: not sent round again)

        async def main(port: int) -> int:
            async with h3_client(certs, port) as client:  # from 127.0.0.1: admitted at once
                return (await client.response(client.request("GET", "/"))).status

        assert run_client(main(target[1])) == 200
        assert counts.retries == 7 and counts.refused == 2
        assert set(counts.by_address) == {"127.0.0.2", "127.0.0.3"}  # a completed handshake leaves it
        # the half-open ones time out: the table is empty again
        assert wait_for(lambda: counts.handshakes == 0)
        assert counts.by_address == {}


def test_an_address_share_is_a_tenth_of_the_handshake_cap_by_default(certs: Certs) -> None:
    with _serve(certs, quic_max_handshakes=30, quic_handshake_timeout=5.0) as running, udp_socket() as sock:
        target = ("127.0.0.1", quic_port(running))
        counts = tally(running)
        for _ in range(5):
            sock.sendto(first_datagram(hello_client(target)), target)
        assert wait_for(lambda: counts.retries == 2)
        assert counts.handshakes == 3 and len(retries(sock)) == 2


def test_the_address_table_is_bounded_by_the_handshake_cap(certs: Certs) -> None:
    with _serve(certs, quic_max_handshakes=20, quic_handshake_timeout=5.0) as running:
        target = ("127.0.0.1", quic_port(running))
        counts = tally(running)
        for i in range(30):  # one Initial each from 30 addresses: half the cap, then Retry for all
            with udp_socket(f"127.0.1.{i + 1}") as sock:
                sock.sendto(first_datagram(hello_client(target)), target)
        assert wait_for(lambda: counts.retries == 20)
        assert counts.handshakes == 10 and len(counts.by_address) == 10


def test_ipv6_addresses_are_counted_by_their_64(certs: Certs) -> None:
    one = address_key(("2001:db8:1:2::1", 443, 0, 0))
    assert one == address_key(("2001:db8:1:2:ffff:1:2:3", 443, 0, 0)) == bytes.fromhex("20010db800010002")
    assert one != address_key(("2001:db8:1:3::1", 443, 0, 0))
    assert address_key(("::ffff:192.0.2.7", 443, 0, 0)) == address_key(("192.0.2.7", 443)) == "192.0.2.7"
    assert address_key(("fe80::1%lo", 443, 0, 1)) == bytes.fromhex("fe80000000000000")


def test_a_completed_handshake_is_not_timed_out(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with h3_client(certs, port) as client:
            await asyncio.sleep(1.8)  # past --quic-handshake-timeout, idle
            return (await client.response(client.request("GET", "/"))).status

    with _serve(certs, quic_handshake_timeout=1.0) as running:
        assert run_client(main(quic_port(running))) == 200
        assert tally(running).handshakes == 0


def test_limit_concurrency_bounds_the_quic_connections(certs: Certs) -> None:
    async def main(port: int) -> tuple[int, bool, int]:
        async with h3_client(certs, port) as first:
            status = (await first.response(first.request("GET", "/"))).status
            try:
                async with asyncio.timeout(1.5):
                    async with h3_client(certs, port):
                        pass
                second = True
            except TimeoutError:
                second = False  # its Initials were dropped
        async with h3_client(certs, port) as third:  # (the first's connection is gone: room again)
            return status, second, (await third.response(third.request("GET", "/"))).status

    with _serve(certs, limit_concurrency=1) as running:
        status, second, third = run_client(main(quic_port(running)), timeout=15)
        assert tally(running).refused >= 1
    assert status == 200 and not second and third == 200


@pytest.mark.parametrize("how", ["reset", "malformed"])
def test_rapid_resets_close_the_connection(certs: Certs, how: str) -> None:
    malformed = [(b":method", b"GET"), (b":authority", b"localhost"), (b":path", b"/")]  # no :scheme

    async def main(port: int) -> tuple[int | None, int]:
        async with h3_client(certs, port) as client:
            for _ in range(30):
                if how == "reset":
                    sid = client.request("POST", "/echo", b"x", end=False)
                    client._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
                    client._quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
                else:
                    client.request(headers=malformed)
                client.transmit()
                if client.closed_event.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(client.closed_event.wait(), 3)
            assert client.terminated is not None
            code = client.terminated.error_code
        async with h3_client(certs, port) as other:  # other connections are served
            return code, (await other.response(other.request("GET", "/"))).status

    with _serve(certs, http2_max_resets=10) as running:
        code, status = run_client(main(quic_port(running)))
    assert code == ErrorCode.H3_EXCESSIVE_LOAD
    assert status == 200


def test_resets_within_the_limit_keep_the_connection(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with h3_client(certs, port) as client:
            for _ in range(10):  # RESET_STREAM and STOP_SENDING of one stream count once
                sid = client.request("POST", "/echo", b"x", end=False)
                client._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
                client._quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
                client.transmit()
                await asyncio.sleep(0.01)
            return (await client.response(client.request("GET", "/"))).status

    with _serve(certs, http2_max_resets=10) as running:
        assert run_client(main(quic_port(running))) == 200
