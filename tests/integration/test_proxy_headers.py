"""--proxy-headers / --forwarded-allow-ips: X-Forwarded-For/-Proto from trusted peers.

The rules are checked on :class:`heron.asgi.proxy.ProxyTrust` directly, then
through real sockets over HTTP/1.1, WebSocket and HTTP/2 (h2c), with the
access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from heron.asgi.proxy import ProxyTrust

from ..conftest import serve
from . import apps

LOCAL = ("127.0.0.1", 40000)


def resolve(allow: str, headers: list[tuple[bytes, bytes]], scheme: str = "http") -> tuple[Any, str]:
    return ProxyTrust(allow).resolve(headers, LOCAL, scheme)


@pytest.mark.parametrize(
    "allow, host, trusted",
    [
        ("127.0.0.1,::1", "127.0.0.1", True),
        ("127.0.0.1,::1", "::1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8", "10.20.30.40", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("2001:db8::/32", "2001:db8::5", True),
        ("*", "198.51.100.1", True),
        ("*", None, True),  # UNIX-socket peer
        ("127.0.0.1", None, False),
        ("127.0.0.1", "proxy.internal", False),  # a name in X-Forwarded-For is never a trusted proxy
        ("", "127.0.0.1", False),
    ],
)
def test_trusted_hosts(allow: str, host: str | None, trusted: bool) -> None:
    assert ProxyTrust(allow).trusts(host) is trusted


def test_forwarded_for_is_read_from_the_right_skipping_trusted_hops() -> None:
    headers = [(b"x-forwarded-for", b"203.0.113.7, 10.0.0.2, 10.0.0.1")]
    assert resolve("127.0.0.1,10.0.0.0/8", headers)[0] == ("203.0.113.7", 0)
    # only 127.0.0.1 trusted: the nearest hop is the client
    assert resolve("127.0.0.1", headers)[0] == ("10.0.0.1", 0)
    # everything trusted: the leftmost address
    assert resolve("*", headers)[0] == ("203.0.113.7", 0)


def test_forwarded_for_spoofed_prefix_is_not_believed() -> None:
    # a client sends its own X-Forwarded-For; the proxy appends the real address
    headers = [(b"x-forwarded-for", b"1.1.1.1, 198.51.100.9")]
    assert resolve("127.0.0.1", headers)[0] == ("198.51.100.9", 0)


def test_forwarded_for_fields_are_joined_and_ports_kept() -> None:
    headers = [
        (b"x-forwarded-for", b"192.0.2.1:5555"),
        (b"user-agent", b"x"),
        (b"x-forwarded-for", b"[2001:db8::1]:443"),
    ]
    assert resolve("127.0.0.1", headers)[0] == ("2001:db8::1", 443)
    assert resolve("127.0.0.1,2001:db8::1", headers)[0] == ("192.0.2.1", 5555)
    assert resolve("127.0.0.1", [(b"x-forwarded-for", b"2001:db8::2")])[0] == ("2001:db8::2", 0)
    assert resolve("127.0.0.1", [(b"x-forwarded-for", b"192.0.2.1:99999")])[0] == ("192.0.2.1", 0)


def test_empty_or_missing_forwarded_for_keeps_the_peer() -> None:
    assert resolve("127.0.0.1", [(b"x-forwarded-for", b" , ")])[0] == LOCAL
    assert resolve("127.0.0.1", [])[0] == LOCAL


@pytest.mark.parametrize(
    "value, scheme, expected",
    [
        (b"https", "http", "https"),
        (b"HTTPS ", "http", "https"),
        (b"http, https", "http", "https"),  # the last hop counts
        (b"wss", "http", "https"),
        (b"https", "ws", "wss"),
        (b"http", "wss", "ws"),
        (b"ftp", "http", "http"),  # unknown: ignored
        (b"", "https", "https"),
    ],
)
def test_forwarded_proto(value: bytes, scheme: str, expected: str) -> None:
    assert resolve("127.0.0.1", [(b"x-forwarded-proto", value)], scheme)[1] == expected


# --- RFC 7239 Forwarded ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, allow, client",
    [
        (b"for=203.0.113.7", "127.0.0.1", ("203.0.113.7", 0)),
        (b'for="203.0.113.7:5555";proto=https', "127.0.0.1", ("203.0.113.7", 5555)),
        (b'For="[2001:db8:cafe::17]:4711"', "127.0.0.1", ("2001:db8:cafe::17", 4711)),
        (b'for="[2001:db8::1]"', "127.0.0.1", ("2001:db8::1", 0)),
        # read from the right, trusted hops skipped
        (b"for=203.0.113.7, for=10.0.0.2;by=10.0.0.1", "127.0.0.1,10.0.0.0/8", ("203.0.113.7", 0)),
        (b"for=203.0.113.7, for=10.0.0.2", "127.0.0.1", ("10.0.0.2", 0)),
        (b"for=1.1.1.1, for=198.51.100.9", "127.0.0.1", ("198.51.100.9", 0)),  # a spoofed prefix
        (b"for=203.0.113.7, for=10.0.0.2", "*", ("203.0.113.7", 0)),
        # nodes that are no address: never trusted, the client is unknown
        (b"for=unknown", "127.0.0.1", None),
        (b"for=_hidden, for=10.0.0.2", "127.0.0.1,10.0.0.0/8", None),
        (b"for=2001:db8::1", "127.0.0.1", None),  # IPv6 must be bracketed (and quoted)
        (b'for="[192.0.2.1]"', "127.0.0.1", None),
        # elements without for=, quoted commas, malformed pairs: skipped, not fatal
        (b'for=192.0.2.1;by="a,b", by=10.0.0.1', "127.0.0.1", ("192.0.2.1", 0)),
        (b"for=192.0.2.1, garbage, ;;", "127.0.0.1", ("192.0.2.1", 0)),
        (b"proto=https", "127.0.0.1", LOCAL),
    ],
)
def test_rfc7239_forwarded_for(value: bytes, allow: str, client: Any) -> None:
    assert resolve(allow, [(b"forwarded", value)])[0] == client


def test_rfc7239_forwarded_proto_is_the_chosen_elements() -> None:
    headers = [(b"forwarded", b"for=203.0.113.7;proto=https, for=10.0.0.2;proto=http")]
    assert resolve("127.0.0.1,10.0.0.0/8", headers) == (("203.0.113.7", 0), "https")
    assert resolve("127.0.0.1", headers) == (("10.0.0.2", 0), "http")
    assert resolve("127.0.0.1", [(b"forwarded", b"for=192.0.2.1;PROTO=HTTPS")], "ws")[1] == "wss"
    assert resolve("127.0.0.1", [(b"forwarded", b"for=192.0.2.1;proto=gopher")], "https")[1] == "https"


def test_rfc7239_forwarded_fields_are_joined_and_win_over_x_forwarded() -> None:
    headers = [
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"forwarded", b"for=192.0.2.1"),
        (b"x-forwarded-proto", b"https"),
        (b"forwarded", b"for=10.0.0.3"),
    ]
    assert resolve("127.0.0.1,10.0.0.0/8", headers) == (("192.0.2.1", 0), "http")


def test_rfc7239_through_a_real_socket() -> None:
    with serve(apps.scope_json) as srv:
        data = httpx.get(srv.url + "/", headers={"Forwarded": 'for="[2001:db8::7]:1234";proto=https'}).json()
    assert data["client"] == ["2001:db8::7", 1234]
    assert data["scheme"] == "https"


# --- through real sockets --------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def test_http1_default_trusts_localhost() -> None:
    with serve(apps.scope_json) as srv:
        data = httpx.get(srv.url + "/", headers=FORWARDED).json()
        plain = httpx.get(srv.url + "/").json()
    assert data["client"] == ["203.0.113.7", 0]
    assert data["scheme"] == "https"
    assert plain["client"][0] == "127.0.0.1" and plain["client"][1] > 0
    assert plain["scheme"] == "http"


def test_http1_untrusted_peer_and_switched_off() -> None:
    for settings in ({"forwarded_allow_ips": "10.0.0.1"}, {"proxy_headers": False}):
        with serve(apps.scope_json, **settings) as srv:
            data = httpx.get(srv.url + "/", headers=FORWARDED).json()
        assert data["client"][0] == "127.0.0.1", settings
        assert data["scheme"] == "http", settings
        # the headers still reach the app unchanged
        assert ["x-forwarded-for", "203.0.113.7"] in data["headers"]


def test_http2_streams_use_the_forwarded_client() -> None:
    with serve(apps.scope_json) as srv, httpx.Client(http1=False, http2=True) as client:
        data = client.get(srv.url + "/", headers=FORWARDED).json()
    assert data["http_version"] == "2"
    assert data["client"] == ["203.0.113.7", 0]
    assert data["scheme"] == "https"


async def _ws_scope_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"client": scope["client"], "scheme": scope["scheme"]})})
    await send({"type": "websocket.close", "code": 1000})


def test_websocket_scope_uses_the_forwarded_client() -> None:
    async def fetch(port: int) -> Any:
        url = f"ws://127.0.0.1:{port}/"
        async with ws_connect(url, additional_headers=FORWARDED, open_timeout=5, ping_interval=None) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    with serve(_ws_scope_app) as srv:
        data = asyncio.run(fetch(srv.port))
    assert data == {"client": ["203.0.113.7", 0], "scheme": "wss"}


@contextlib.contextmanager
def access_messages() -> Iterator[list[str]]:
    """The heron.access messages logged inside the block."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    access = logging.getLogger("heron.access")
    handler, level = Keep(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        access.removeHandler(handler)
        access.setLevel(level)


def test_access_log_shows_the_forwarded_client() -> None:
    with access_messages() as messages, serve(apps.hello, access_log=True) as srv:
        httpx.get(srv.url + "/forwarded", headers={"X-Forwarded-For": "198.51.100.23"})
        httpx.get(srv.url + "/direct")
    assert any("198.51.100.23" in m and "/forwarded" in m for m in messages), messages
    assert any("127.0.0.1" in m and "/direct" in m for m in messages), messages


def test_keep_alive_connection_mixing_forwarded_and_plain_requests() -> None:
    with access_messages() as messages, serve(apps.scope_json, access_log=True) as srv, httpx.Client() as client:
        first = client.get(srv.url + "/one", headers={"X-Forwarded-For": "192.0.2.50"}).json()
        second = client.get(srv.url + "/two").json()
    assert first["client"] == ["192.0.2.50", 0]
    assert second["client"][0] == "127.0.0.1"  # nothing carried over on the same connection
    assert any("192.0.2.50" in m and "/one" in m for m in messages), messages
    assert any("127.0.0.1" in m and "/two" in m for m in messages), messages


def test_parser_flags_requests_with_forwarding_fields() -> None:
    from heron.protocol.http1 import H1Connection, H1Limits, Request

    def parse(head: bytes) -> Request:
        conn = H1Connection(H1Limits())
        conn.receive_data(head)
        event = conn.next_event()
        assert isinstance(event, Request)
        return event

    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n").forwarded is True
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 1.2.3.4\r\n\r\n").forwarded is True
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=1.2.3.4\r\n\r\n").forwarded is True
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: b\r\n\r\n").forwarded is False
    assert parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").forwarded is False
