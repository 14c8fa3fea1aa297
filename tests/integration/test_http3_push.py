"""HTTP/3 server push (RFC 9114 4.6, ASGI ``http.response.push``) and the ASGI
``tls`` extension over QUIC, through real UDP sockets on 127.0.0.1 with
aioquic's client (which sends MAX_PUSH_ID 8 unless told otherwise)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, PushPromiseReceived
from aioquic.quic.configuration import QuicConfiguration

from ..conftest import RunningServer, serve
from .test_http3 import Certs, Client, certs, quic_port, run_client

__all__ = ["certs"]  # (the fixture, imported for its tests)

pytestmark = pytest.mark.timeout(30)

SEEN: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        SEEN["ws_tls"] = scope["extensions"].get("tls")
        await receive()
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    extensions = scope["extensions"]
    SEEN.setdefault("extensions", {})[path] = sorted(extensions)
    SEEN.setdefault("tls", {})[path] = extensions.get("tls")
    if path == "/page":
        if "http.response.push" in extensions:
            await send({"type": "http.response.push", "path": "/style.css", "headers": [(b"accept", b"text/css")]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<link rel=stylesheet href=/style.css>page"})
    elif path == "/many":  # more pushes than --http2-max-concurrent-streams lets be open
        for i in range(5):
            await send({"type": "http.response.push", "path": f"/slow.css?{i}", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"many"})
    elif path == "/style.css":
        SEEN["pushed_headers"] = list(scope["headers"])
        if "http.response.push" in extensions:  # (never: a pushed response can't push)
            await send({"type": "http.response.push", "path": "/nested.css", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"body { color: teal }"})
    elif path == "/slow.css":
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _serve(certs: Certs, **settings: Any) -> Iterator[RunningServer]:
    SEEN.clear()
    settings.setdefault("timeout_graceful_shutdown", 5)
    with serve(
        app, quic_bind=("127.0.0.1:0",), ssl_certfile=certs.certfile, ssl_keyfile=certs.keyfile, **settings
    ) as running:
        yield running


class PushClient(Client):
    """The test client, also recording push promises and pushed responses by push id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.promises: list[PushPromiseReceived] = []
        self.pushed: dict[int, dict[str, Any]] = {}

    def _on_h3(self, event: H3Event) -> None:
        if isinstance(event, PushPromiseReceived):
            self.promises.append(event)
        elif isinstance(event, (HeadersReceived, DataReceived)) and event.push_id is not None:
            pushed = self.pushed.setdefault(event.push_id, {"headers": [], "body": b"", "ended": False})
            if isinstance(event, HeadersReceived):
                pushed["headers"] = list(event.headers)
            else:
                pushed["body"] += event.data
            pushed["ended"] = event.stream_ended
        else:
            super()._on_h3(event)


class _NoPushH3(H3Connection):
    """A client that sends no MAX_PUSH_ID: the server may not push (RFC 9114 4.6)."""

    def _init_connection(self) -> None:
        self._max_push_id = None
        super()._init_connection()


class NoPushClient(PushClient):
    h3_class = _NoPushH3


@asynccontextmanager
async def client_of(certs: Certs, port: int, protocol: type[PushClient] = PushClient) -> AsyncIterator[PushClient]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    configuration.load_verify_locations(cadata=certs.ca_pem.encode())
    async with connect("127.0.0.1", port, configuration=configuration, create_protocol=protocol) as client:
        yield client  # type: ignore[misc]  # (create_protocol: it is one)


async def until(condition: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_page_pushes_its_stylesheet(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port) as client:
            page = await client.response(client.request("GET", "/page"))
            await until(lambda: any(p["ended"] for p in client.pushed.values()))
            return page, client.promises, client.pushed

    with _serve(certs) as running:
        page, promises, pushed = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body.endswith(b"page")
    assert len(promises) == 1
    promise = dict(promises[0].headers)
    assert (promise[b":method"], promise[b":scheme"], promise[b":path"]) == (b"GET", b"https", b"/style.css")
    assert promise[b":authority"] == b"localhost" and promise[b"accept"] == b"text/css"
    response = pushed[promises[0].push_id]
    assert dict(response["headers"])[b":status"] == b"200"
    assert dict(response["headers"])[b"content-type"] == b"text/css"
    assert response["body"] == b"body { color: teal }" and response["ended"]
    assert "http.response.push" in SEEN["extensions"]["/page"]
    assert "http.response.push" not in SEEN["extensions"]["/style.css"]  # a pushed response can't push
    assert SEEN["pushed_headers"] == [(b"host", b"localhost"), (b"accept", b"text/css")]
    assert set(pushed) == {promises[0].push_id}  # nothing nested


def test_a_client_that_allows_no_push_gets_the_page_and_nothing_else(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port, NoPushClient) as client:
            page = await client.response(client.request("GET", "/page"))
            again = await client.response(client.request("GET", "/other"))
            return page, again, client.promises, client.pushed, client.terminated

    with _serve(certs) as running:
        page, again, promises, pushed, terminated = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body.endswith(b"page") and again.status == 200
    assert promises == [] and pushed == {} and terminated is None
    assert "http.response.push" not in SEEN["extensions"]["/page"]


def test_pushes_beyond_the_concurrent_stream_limit_are_skipped(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port) as client:
            page = await client.response(client.request("GET", "/many"))
            await until(lambda: len(client.pushed) == 2 and all(p["ended"] for p in client.pushed.values()))
            return page, client.promises, client.pushed

    with _serve(certs, http2_max_concurrent_streams=2) as running:
        page, promises, pushed = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body == b"many"
    assert [dict(p.headers)[b":path"] for p in promises] == [b"/slow.css?0", b"/slow.css?1"]
    assert all(p["body"] == b"slow" for p in pushed.values())


def _server_pem(certs: Certs) -> str:
    with open(certs.certfile) as f:
        return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(f.read()))


def test_the_tls_extension_over_http3(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with client_of(certs, port) as client:
            await client.response(client.request("GET", "/a"))
            await client.response(client.request("GET", "/b"))
            schedule = client._quic.tls.key_schedule
            assert schedule is not None
            return int(schedule.cipher_suite)

    with _serve(certs) as running:
        cipher = run_client(main(quic_port(running)))
    tls = SEEN["tls"]["/a"]
    assert tls == {
        "server_cert": _server_pem(certs),
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": cipher,
    }
    assert cipher in (0x1301, 0x1302, 0x1303)
    assert SEEN["tls"]["/b"] is tls  # computed once per connection


def test_the_tls_extension_on_a_websocket_over_http3(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with client_of(certs, port) as client:
            await until(lambda: client.h3.received_settings is not None)
            sid = client.request(
                headers=[
                    (b":method", b"CONNECT"),
                    (b":protocol", b"websocket"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/ws"),
                    (b"sec-websocket-version", b"13"),
                ],
                end=False,
            )
            return (await client.response(sid)).status  # (the app closes before accepting: 403)

    with _serve(certs) as running:
        status = run_client(main(quic_port(running)))
    assert status == 403
    tls = SEEN["ws_tls"]
    assert tls is not None and tls["tls_version"] == 0x0304 and tls["server_cert"] == _server_pem(certs)
