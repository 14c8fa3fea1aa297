"""HTTP/1.1 behaviour through real sockets: framing, keep-alive, pipelining, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from typing import Any

import httpx
import pytest

from ..conftest import read_response, recv_until_closed, serve
from . import apps


def test_hello_with_httpx() -> None:
    with serve(apps.hello) as srv:
        response = httpx.get(srv.url + "/")
        assert response.status_code == 200
        assert response.text == "Hello, world!"
        assert response.headers["server"] == "heron"
        assert "date" in response.headers
        assert response.http_version == "HTTP/1.1"


def test_scope_is_complete_and_exact() -> None:
    with serve(apps.scope_json, root_path="/mnt") as srv:
        r = httpx.get(srv.url + "/caf%C3%A9/a%2Fb?x=1&y=%20", headers={"X-Dup": "1"}, follow_redirects=False)
        data = r.json()
    assert data["type"] == "http"
    assert data["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert data["http_version"] == "1.1"
    assert data["method"] == "GET"
    assert data["scheme"] == "http"
    assert data["root_path"] == "/mnt"
    assert data["path"] == "/mnt/café/a/b"
    assert data["raw_path"] == "/mnt/caf%C3%A9/a%2Fb"
    assert data["query_string"] == "x=1&y=%20"
    assert data["client"][0] == "127.0.0.1" and isinstance(data["client"][1], int)
    assert data["server"] == ["127.0.0.1", srv.port]
    assert ["x-dup", "1"] in data["headers"]
    assert data["extensions"] == ["http.response.early_hint", "http.response.pathsend"]


def test_headers_keep_order_duplicates_and_are_lowercased() -> None:
    with serve(apps.scope_json) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-b: 2\r\nX-A: 3\r\n\r\n")
        status, _, body, _ = read_response(sock)
        sock.close()
    headers = json.loads(body)["headers"]
    assert headers == [["host", "x"], ["x-a", "1"], ["x-b", "2"], ["x-a", "3"]]


def test_keep_alive_many_requests_one_connection() -> None:
    with serve(apps.echo) as srv:
        sock = srv.connect()
        for i in range(50):
            payload = b"x" * i
            sock.sendall(b"POST /%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (i, len(payload), payload))
            status, headers, body, rest = read_response(sock)
            assert status == 200 and body == payload and rest == b""
            assert b"connection" not in headers
        sock.close()


def test_pipelined_requests_answered_in_order() -> None:
    with serve(apps.echo) as srv:
        sock = srv.connect()
        reqs = b"".join(b"POST /p%d HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n%02d" % (i, i) for i in range(20))
        sock.sendall(reqs)
        rest = b""
        for i in range(20):
            # re-use leftover bytes: read_response reads fresh from the socket, so feed via a pair
            status, headers, body, rest = _read_with_leftover(sock, rest)
            assert status == 200
            assert body == b"%02d" % i
            assert json.loads(headers[b"x-scope"])["path"] == f"/p{i}"
        sock.close()


def _read_with_leftover(sock: socket.socket, leftover: bytes):  # type: ignore[no-untyped-def]
    class _Replay:
        def __init__(self) -> None:
            self.pending = leftover

        def settimeout(self, t: float) -> None:
            sock.settimeout(t)

        def recv(self, n: int) -> bytes:
            if self.pending:
                data, self.pending = self.pending, b""
                return data
            return sock.recv(n)

    return read_response(_Replay())  # type: ignore[arg-type]


def test_chunked_upload_and_chunked_download() -> None:
    with serve(apps.echo) as srv:
        sock = srv.connect()
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: ok\r\n\r\n"
        )
        status, headers, body, _ = read_response(sock)
        assert status == 200 and body == b"hello world"
        sock.close()
    with serve(apps.stream) as srv:
        r = httpx.get(srv.url)
        assert r.headers["transfer-encoding"] == "chunked"
        assert r.text == "".join(f"chunk{i}\n" for i in range(10))


def test_a_body_that_piles_up_while_the_app_waits_arrives_whole_and_in_order() -> None:
    # The app reads only after the reads have piled up: receive() hands them
    # over one by one, and more_body stays true until the last.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.3)
        digest, flags = hashlib.sha256(), []
        while True:
            message = await receive()
            digest.update(message["body"])
            flags.append(message["more_body"])
            if not message["more_body"]:
                break
        body = json.dumps({"sha": digest.hexdigest(), "flags": flags}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    pieces = [bytes([65 + i]) * 65536 for i in range(4)]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest()
    for loop in ("asyncio", "uvloop"):
        with serve(app, loop=loop) as srv:
            sock = srv.connect()
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 * 65536))
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.02)
            status, _, body, _ = read_response(sock)
            sock.close()
        result = json.loads(body)
        assert status == 200 and result["sha"] == expected, loop
        assert result["flags"][-1] is False and all(result["flags"][:-1]), (loop, result["flags"])


def test_http10_close_delimited_and_keep_alive() -> None:
    with serve(apps.stream) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head.lower()
        assert body == b"".join(b"chunk%d\n" % i for i in range(10))
    with serve(apps.hello) as srv:
        sock = srv.connect()
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body, _ = read_response(sock)
            assert status == 200 and headers[b"connection"] == b"keep-alive" and body == b"Hello, world!"
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
        assert b"connection: close" in data.lower() and data.endswith(b"Hello, world!")


def test_connection_close_from_client_closes_after_response() -> None:
    with serve(apps.hello) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in data
        assert data.endswith(b"Hello, world!")


def test_head_has_no_body() -> None:
    with serve(apps.hello) as srv:
        sock = srv.connect()
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        sock.settimeout(2)
        data = sock.recv(65536)
        first, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length: 13" in first
        while rest.count(b"Hello, world!") < 1:
            rest += sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK")  # no body bytes after the HEAD response
        assert rest.endswith(b"\r\n\r\nHello, world!")
        sock.close()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
    ],
)
def test_malformed_requests_get_4xx_and_close(request_bytes: bytes, status: int) -> None:
    with serve(apps.echo) as srv:
        sock = srv.connect()
        sock.sendall(request_bytes)
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
        assert b"connection: close" in data
        # the server keeps serving other clients
        assert httpx.get(srv.url + "/ok").status_code == 200


def test_expect_100_continue_is_lazy() -> None:
    async def reads_late(scope, receive, send):  # type: ignore[no-untyped-def]
        import asyncio

        await asyncio.sleep(0.3)
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve(reads_late) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        sock.settimeout(0.15)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # nothing before the app asks for the body
        sock.settimeout(3)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ping")
        status, _, body, _ = read_response(sock)
        assert status == 200 and body == b"ping"
        sock.close()


def test_expect_100_continue_not_sent_when_app_answers_without_reading() -> None:
    with serve(apps.hello) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"100 Continue" not in data
        assert b"connection: close" in data


def test_unread_small_body_is_drained_and_connection_reused() -> None:
    with serve(apps.hello) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000)
        status, headers, body, _ = read_response(sock)
        assert status == 200 and b"connection" not in headers
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body, _ = read_response(sock)
        assert status == 200 and body == b"Hello, world!"
        sock.close()


def test_reset_contextvars_gives_each_request_an_empty_context() -> None:
    import asyncio
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": marker.get()})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = marker.get().encode()
        marker.set("set by a request")  # never seen by the next request either way
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    async def fetch(reset: bool) -> list[str]:
        from heron import Config, Server

        marker.set("set by the embedding code")
        server = Server(Config(app=app, port=0, lifespan="off", access_log=False, reset_contextvars=reset))
        task = asyncio.create_task(server.serve(install_signal_handlers=False))
        await server.started.wait()
        async with httpx.AsyncClient() as client:
            texts = [(await client.get(f"http://127.0.0.1:{server.port}/")).text for _ in range(2)]
        from websockets.asyncio.client import connect

        async with connect(f"ws://127.0.0.1:{server.port}/", ping_interval=None) as ws:
            texts.append(str(await asyncio.wait_for(ws.recv(), 5)))
        server.shutdown()
        await task
        return texts

    assert asyncio.run(fetch(False)) == ["set by the embedding code"] * 3  # two requests, one WebSocket
    assert asyncio.run(fetch(True)) == ["unset"] * 3
