"""WSGI apps (PEP 3333) through real sockets: environ, streamed bodies both ways,
errors, and the auto-detection of the interface."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from heron.asgi.wsgi import looks_like_wsgi
from heron.importer import load_app

from ..conftest import read_response, recv_until_closed, serve


def environ_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    body = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def test_environ_is_pep_3333() -> None:
    with serve(environ_app, root_path="/mnt") as srv:
        r = httpx.get(
            srv.url + "/caf%C3%A9/x?a=1&b=%20",  # as a proxy that strips /mnt forwards it
            headers=[("X-Dup", "1"), ("X-Dup", "2"), ("Content-Type", "text/plain"), ("X_Sneaky", "no")],
        )
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/mnt"
    assert env["PATH_INFO"] == "/café/x".encode().decode("latin-1")  # UTF-8 bytes as latin-1
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(srv.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_DUP"] == "1,2"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_X_SNEAKY" not in env  # names with "_" are dropped
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is True and env["wsgi.run_once"] is False


def upload_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    pieces = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        pieces += 1
        total += len(piece)
        digest.update(piece)
    body = json.dumps({"length": total, "sha256": digest.hexdigest(), "pieces": pieces}).encode()
    start_response("201 Created", [("Content-Type", "application/json")])
    return [body]


def test_request_body_is_streamed_to_the_app() -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    with serve(upload_app) as srv:
        r = httpx.post(srv.url + "/", content=body, timeout=30)
        chunked = httpx.post(srv.url + "/", content=iter([b"ab", b"c" * 100_000]), timeout=30)
    assert r.status_code == 201
    data = r.json()
    assert data["length"] == len(body) and data["sha256"] == hashlib.sha256(body).hexdigest()
    assert data["pieces"] >= 40  # read in 64 KiB pieces, as the body arrived
    assert chunked.json()["length"] == 100_002


def lines_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = list(stream)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"first=%r rest=%d" % (first, len(rest))]


def test_input_readline_and_iteration() -> None:
    with serve(lines_app) as srv:
        r = httpx.post(srv.url + "/", content=b"one\ntwo\nthree\nfour")
    assert r.text == "first=b'one\\n' rest=3"


def generator_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    for i in range(3):
        yield b"piece%d " % i
    yield b""
    yield b"end"


def test_streamed_response_with_write_and_generator() -> None:
    with serve(generator_app) as srv:
        sock = srv.connect()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body, _ = read_response(sock)
        finally:
            sock.close()
    assert status == 200
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"written piece0 piece1 piece2 end"


class Closing:
    closed = threading.Event()

    def __init__(self) -> None:
        self.items = iter([b"a", b"b"])

    def __iter__(self) -> Closing:
        return self

    def __next__(self) -> bytes:
        return next(self.items)

    def close(self) -> None:
        Closing.closed.set()


def closing_app(environ: dict[str, Any], start_response: Any) -> Closing:
    start_response("200 OK", [("Content-Length", "2")])
    return Closing()


def test_result_close_is_called() -> None:
    with serve(closing_app) as srv:
        assert httpx.get(srv.url + "/").content == b"ab"
    assert Closing.closed.wait(5)


def failing_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    if environ["PATH_INFO"] == "/early":
        raise RuntimeError("boom before the response")
    if environ["PATH_INFO"] == "/exc-info":
        start_response("200 OK", [])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            import sys

            start_response("503 Service Unavailable", [("Content-Length", "4")], sys.exc_info())
        return iter([b"busy"])
    start_response("200 OK", [])
    return _late_failure()


def _late_failure() -> Iterator[bytes]:
    yield b"partial"
    raise RuntimeError("boom after the head")


def test_app_errors() -> None:
    with serve(failing_app) as srv:
        assert httpx.get(srv.url + "/early").status_code == 500
        r = httpx.get(srv.url + "/exc-info")
        assert (r.status_code, r.content) == (503, b"busy")
        sock = srv.connect()
        try:
            sock.sendall(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")
            data = recv_until_closed(sock)
        finally:
            sock.close()
        # the head and the first piece went out; then the connection is closed, not completed
        assert data.startswith(b"HTTP/1.1 200 ") and b"partial" in data
        assert not data.endswith(b"0\r\n\r\n")
        assert httpx.get(srv.url + "/early").status_code == 500  # still serving


def test_http2_and_websocket_refusal() -> None:
    with serve(environ_app) as srv, httpx.Client(http1=False, http2=True) as client:
        env = client.get(srv.url + "/h2").json()
        assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["PATH_INFO"] == "/h2"
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            status, _, _, _ = read_response(sock)
        finally:
            sock.close()
        assert status == 403


class Asgi2:
    def __init__(self, scope: Any) -> None:
        self.scope = scope


async def asgi3(scope: Any, receive: Any, send: Any) -> None: ...


@pytest.mark.parametrize(
    "app, expected",
    [
        (environ_app, True),
        (lambda environ, start_response: [], True),
        (Asgi2, False),  # a class: ASGI 2
        (asgi3, False),
        (lambda scope: None, False),
    ],
)
def test_interface_detection(app: Any, expected: bool) -> None:
    assert looks_like_wsgi(app) is expected


def test_interface_setting_forces_wsgi() -> None:
    class Both:
        def __call__(self, environ: Any, start_response: Any, extra: Any = None) -> list[bytes]:
            start_response("200 OK", [("Content-Length", "4")])
            return [b"wsgi"]

    assert type(load_app(Both(), interface="wsgi")).__name__ == "WSGIAdapter"
    with serve(Both(), interface="wsgi") as srv:
        assert httpx.get(srv.url + "/").content == b"wsgi"


def test_response_ends_before_close_when_its_length_is_reached() -> None:
    """The piece that completes Content-Length ends the response on the wire at
    once (HTTP/2: END_STREAM): the client has it while close() still runs."""
    client_has_it = threading.Event()
    seen_in_close: list[bool] = []

    class SlowClose:
        def __init__(self, pieces: list[bytes]) -> None:
            self.items = iter(pieces)

        def __iter__(self) -> SlowClose:
            return self

        def __next__(self) -> bytes:
            return next(self.items)

        def close(self) -> None:  # waits (bounded) for the client to have the whole response
            seen_in_close.append(client_has_it.wait(5))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "6")])
        return SlowClose([b"abc", b"def"])

    with serve(app) as srv, httpx.Client(http1=False, http2=True, timeout=10) as client:
        r = client.get(srv.url + "/")  # returns once the stream has ended (END_STREAM)
        client_has_it.set()
        assert (r.status_code, r.content) == (200, b"abcdef")
    assert seen_in_close == [True]


def test_more_body_than_content_length_is_an_app_error(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        yield b"ok"
        yield b"and more"

    with serve(app) as srv:
        sock = srv.connect()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body, _ = read_response(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            second = read_response(sock)
        finally:
            sock.close()
        assert (status, body) == (200, b"ok")
        assert (second[0], second[2]) == (200, b"ok")  # the connection stayed in step
    assert "more body than its Content-Length" in caplog.text


def test_the_app_thread_runs_ahead_of_a_stalled_client_by_a_bounded_amount() -> None:
    """A million 1-byte pieces to a client that reads nothing: the thread stops
    after RUN_AHEAD bytes' worth of pieces (each counted with its overhead)."""
    from heron.asgi import wsgi

    produced = 0
    stop = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [])
        for _ in range(1_000_000):
            if stop.is_set():
                return
            produced += 1
            yield b"x"

    async def main() -> int:
        stalled = asyncio.Event()  # never set: the client reads nothing
        sent = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal sent
            if message["type"] == "http.response.body":
                sent += 1
                if sent >= 3:
                    await stalled.wait()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        adapter = wsgi.WSGIAdapter(app, threads=1)
        scope = {
            "type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [],
            "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80),
        }  # fmt: skip
        task = asyncio.ensure_future(adapter(scope, receive, send))
        for _ in range(200):  # until the thread stops producing (bounded: 2 s)
            before = produced
            await asyncio.sleep(0.01)
            if produced == before and produced > 0:
                break
        settled = produced
        stop.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return settled

    settled = asyncio.run(main())
    assert 3 < settled <= 3 + wsgi.RUN_AHEAD // wsgi._PIECE_COST + 2


def test_client_leaving_mid_response_stops_the_app() -> None:
    closed = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/small":
            yield b"ok"
            return
        try:
            for _ in range(100_000):  # 6 GiB if nobody stopped it
                yield b"z" * 65536
        finally:
            closed.set()

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        sock.close()
        assert closed.wait(10)  # the generator was closed: the thread is free again
        assert httpx.get(srv.url + "/small", timeout=10).content == b"ok"  # and the pool still serves


def test_a_thread_leaves_a_finished_response_only_once_little_of_it_is_unsent() -> None:
    """A response smaller than RUN_AHEAD is produced at once, but its thread takes
    the next request only when at most LEAVE_AT of it waits: finished responses
    to clients that read nothing cannot add up (HTTP/2: many streams each)."""
    from heron.asgi import wsgi

    started: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        started.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        for _ in range(20):
            yield b"y" * 16384  # 320 KiB in all: under RUN_AHEAD, over LEAVE_AT

    async def main() -> tuple[list[str], list[str], int]:
        client_reads = asyncio.Event()
        done: list[str] = []

        def sender(path: str) -> Any:
            async def send(message: dict[str, Any]) -> None:
                if path == "/first" and message["type"] == "http.response.body":
                    await client_reads.wait()  # the client reads nothing until told to
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    done.append(path)

            return send

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        adapter = wsgi.WSGIAdapter(app, threads=1)

        def scope(path: str) -> dict[str, Any]:
            return {
                "type": "http", "method": "GET", "path": path, "query_string": b"", "headers": [],
                "http_version": "2", "scheme": "http", "server": ("127.0.0.1", 80),
            }  # fmt: skip

        first = asyncio.ensure_future(adapter(scope("/first"), receive, sender("/first")))
        second = asyncio.ensure_future(adapter(scope("/second"), receive, sender("/second")))
        for _ in range(50):  # the one thread is held by /first (bounded: 0.5 s)
            await asyncio.sleep(0.01)
        held = list(started)
        client_reads.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        return held, done, len(started)

    held, done, total = asyncio.run(main())
    assert held == ["/first"]  # /first's app had finished, but 300 KiB of it were unsent
    assert done == ["/first", "/second"] and total == 2
