"""--proxy-protocol through real sockets: HTTP/1.1, HTTP/2, TLS and WebSocket alike.

The test is the load balancer: it connects from 127.0.0.1 (trusted by default),
writes a PROXY v1 or v2 header, then speaks as the client it names.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trustme

from heron.protocol.proxy import V2_SIGNATURE

from ..conftest import read_response, recv_until_closed, serve
from . import apps

GET = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n"


def v1(client: str = "203.0.113.7", port: int = 56324, server: str = "198.51.100.1", sport: int = 443) -> bytes:
    family = b"TCP6" if ":" in client else b"TCP4"
    return b"PROXY %s %s %s %d %d\r\n" % (family, client.encode(), server.encode(), port, sport)


def v2(
    client: str = "2001:db8::7", port: int = 1234, server: str = "2001:db8::1", sport: int = 8443, local: bool = False
) -> bytes:
    a, b = ipaddress.ip_address(client), ipaddress.ip_address(server)
    family = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", port, sport) + b"\x03\x00\x04\x00\x00\x00\x00"  # + a CRC TLV
    return V2_SIGNATURE + bytes([0x20 if local else 0x21, family]) + struct.pack("!H", len(body)) + body


def ask(port: int, data: bytes, pieces: int = 1) -> dict[str, Any]:
    """Send ``data`` (in ``pieces`` writes), read one response: the scope_json app's scope."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            sock.sendall(data[i : i + step])
            if pieces > 1:
                time.sleep(0.01)
        status, _, body, _ = read_response(sock)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def refused(port: int, data: bytes) -> bytes:
    """What the server answers before it closes (b"" when it closes without a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return recv_until_closed(sock)


@pytest.fixture
def proxied() -> Iterator[int]:
    with serve(apps.scope_json, proxy_protocol=True, timeout_request_header=1.0) as srv:
        yield srv.port


def test_v1_and_v2_set_client_and_server(proxied: int) -> None:
    scope = ask(proxied, v1() + GET)
    assert scope["client"] == ["203.0.113.7", 56324] and scope["server"] == ["198.51.100.1", 443]
    scope = ask(proxied, v2() + GET)
    assert scope["client"] == ["2001:db8::7", 1234] and scope["server"] == ["2001:db8::1", 8443]
    scope = ask(proxied, v1("2001:db8::9", 9, "2001:db8::1") + GET)
    assert scope["client"] == ["2001:db8::9", 9]


@pytest.mark.parametrize("header", [v1(), v2()], ids=["v1", "v2"])
def test_header_and_request_in_pieces(proxied: int, header: bytes) -> None:
    for pieces in (2, 7, len(header) + len(GET)):
        assert ask(proxied, header + GET, pieces)["client"][1] in (56324, 1234)


def test_keep_alive_requests_share_the_connections_client(proxied: int) -> None:
    with socket.create_connection(("127.0.0.1", proxied), timeout=5) as sock:
        sock.sendall(v1() + GET + GET)
        first = read_response(sock)
        second = read_response(sock, timeout=5) if first[3] == b"" else None
    assert json.loads(first[2])["client"] == ["203.0.113.7", 56324]
    if second is not None:
        assert json.loads(second[2])["client"] == ["203.0.113.7", 56324]


def test_local_and_unknown_keep_the_connections_own_address(proxied: int) -> None:
    for header in (v2(local=True), b"PROXY UNKNOWN\r\n"):
        scope = ask(proxied, header + GET)
        assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0


@pytest.mark.parametrize(
    "data",
    [
        GET,  # a trusted peer must send a header
        b"PROXY TCP4 203.0.113.7 198.51.100.1 99999 443\r\n" + GET,
        b"PROXY TCP4 not-an-address 198.51.100.1 1 443\r\n" + GET,
        b"PROXY " + b"x" * 200,
        V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\0" * 100,  # longer than heron accepts
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12,  # version 3
    ],
    ids=["no-header", "bad-port", "bad-address", "v1-too-long", "v2-too-long", "v2-version"],
)
def test_malformed_headers_close_the_connection_silently(proxied: int, data: bytes) -> None:
    assert refused(proxied, data) == b""
    assert ask(proxied, v1() + GET)["client"][0] == "203.0.113.7"  # and heron serves on


def test_a_header_that_never_ends_times_out(proxied: int) -> None:
    with socket.create_connection(("127.0.0.1", proxied), timeout=5) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7")
        started = time.monotonic()
        assert recv_until_closed(sock, timeout=5) == b""
        assert 0.9 <= time.monotonic() - started < 4


def test_a_connection_reading_its_header_at_shutdown_is_still_served() -> None:
    # Accepted a moment before the shutdown, its header (and request) still on the way:
    # answered (then closed) rather than cut off, which a load balancer can't tell
    # from a failure (a rolling restart under HAProxy's send-proxy-v2 lost such ones).
    with serve(apps.scope_json, proxy_protocol=True) as srv:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        fresh = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            idle.sendall(v1() + GET)
            assert read_response(idle)[0] == 200
            header = v1()
            fresh.sendall(header[:6])  # the listener is reading it
            time.sleep(0.2)
            srv.call(srv.server.shutdown)
            assert recv_until_closed(idle) == b""  # the shutdown has begun (idle keep-alive: closed)
            fresh.sendall(header[6:] + GET)
            status, headers, body, _ = read_response(fresh)
            assert status == 200 and headers[b"connection"] == b"close"
            assert json.loads(body)["client"] == ["203.0.113.7", 56324]
            assert recv_until_closed(fresh) == b""
        finally:
            idle.close()
            fresh.close()
        srv.thread.join(10)
        assert not srv.thread.is_alive()


def test_untrusted_peers_header_is_not_believed() -> None:
    with serve(apps.scope_json, proxy_protocol=True, forwarded_allow_ips="10.0.0.1") as srv:
        scope = ask(srv.port, GET)  # served as it is, its own address
        assert scope["client"][0] == "127.0.0.1"
        answer = refused(srv.port, v1() + GET)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_proxy_headers_of_the_proxied_client_are_not_trusted(proxied: int) -> None:
    spoofed = b"GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 192.0.2.66\r\n\r\n"
    assert ask(proxied, v1() + spoofed)["client"] == ["203.0.113.7", 56324]


def test_access_log_shows_the_proxied_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="heron.access"):
        with serve(apps.scope_json, proxy_protocol=True, access_log=True) as srv:
            ask(srv.port, v1() + GET)
            deadline = time.monotonic() + 5
            while not any("/x" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
                time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "heron.access"]
    assert any(line.startswith("203.0.113.7:56324 - ") for line in lines), lines


# --- TLS: the header comes before the handshake --------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], ssl.SSLContext]]:
    d: Path = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    yield {"ssl_certfile": str(d / "cert.pem"), "ssl_keyfile": str(d / "key.pem")}, context


def tls_connect(port: int, header: bytes, context: ssl.SSLContext, alpn: list[str]) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(header)
    context.set_alpn_protocols(alpn)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls_http1_and_http2(tls_files: tuple[dict[str, str], ssl.SSLContext]) -> None:
    settings, context = tls_files
    with serve(apps.scope_json, proxy_protocol=True, **settings) as srv:
        with tls_connect(srv.port, v2("192.0.2.44", 4444, "198.51.100.1", 443), context, ["http/1.1"]) as sock:
            sock.sendall(GET)
            status, _, body, _ = read_response(sock)
        scope = json.loads(body)
        assert scope["client"] == ["192.0.2.44", 4444] and scope["scheme"] == "https"
        with tls_connect(srv.port, v1("192.0.2.45", 4545), context, ["h2"]) as sock:
            assert sock.selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(
                1, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")], end_stream=True
            )
            sock.sendall(conn.data_to_send())
            data = b""
            ended = False
            while not ended:
                chunk = sock.recv(65536)
                assert chunk
                for event in conn.receive_data(chunk):
                    if isinstance(event, h2.events.DataReceived):
                        data += event.data
                    ended = ended or isinstance(event, h2.events.StreamEnded)
                sock.sendall(conn.data_to_send())
        scope = json.loads(data)
        assert scope["http_version"] == "2" and scope["client"] == ["192.0.2.45", 4545]


def test_tls_without_a_header_is_closed(tls_files: tuple[dict[str, str], ssl.SSLContext]) -> None:
    settings, context = tls_files
    with serve(apps.scope_json, proxy_protocol=True, **settings) as srv:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with tls_connect(srv.port, b"", context, ["http/1.1"]) as sock:
                sock.sendall(GET)
                assert sock.recv(100) == b""  # (closed during or right after the handshake)
                raise ConnectionError("closed")


# --- WebSocket -----------------------------------------------------------------------------


async def ws_client_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(scope["client"])})
    await send({"type": "websocket.close", "code": 1000})


def test_websocket_sees_the_proxied_client() -> None:
    key = base64.b64encode(os.urandom(16))
    handshake = (
        b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: " + key + b"\r\nsec-websocket-version: 13\r\n\r\n"
    )
    with serve(ws_client_app, proxy_protocol=True) as srv:
        data = refused(srv.port, v1("203.0.113.9", 999) + handshake)
    assert data.startswith(b"HTTP/1.1 101 "), data
    frames = data.partition(b"\r\n\r\n")[2]
    assert frames[0] == 0x81  # one text frame, unmasked, short
    assert json.loads(frames[2 : 2 + frames[1]]) == ["203.0.113.9", 999]
