"""The request-body limits through real sockets: --limit-request-body (413),
--timeout-request-body (408), --limit-concurrency with idle keep-alive
connections, and the log line for a client that left before the response.

HTTP/2 is spoken with raw frames (bench/hostile.py's client), so what is on the
wire is exactly what the server sent.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.hostile import DATA, END_STREAM, H2Client, frame

from ..conftest import read_response, serve

POST_HEAD = b"POST / HTTP/1.1\r\nHost: t\r\n"


class BodyApp:
    """Reads the body and answers with its length; records what it saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[int] = []
        self.messages: list[str] = []
        self.done = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        total = 0
        try:
            while True:
                message = await receive()
                self.messages.append(message["type"])
                if message["type"] == "http.disconnect":
                    return
                total += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = str(total).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            self.seen.append(total)
            self.done.set()


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def h2_status(client: H2Client, stream_id: int, timeout: float = 5.0) -> tuple[int | None, int | None]:
    """(:status, RST_STREAM code) of a stream once either arrived."""
    wait_until(
        lambda: stream_id in client.statuses() or stream_id in client.resets() or client.closed.is_set(), timeout
    )
    return client.statuses().get(stream_id), client.resets().get(stream_id)


# --- --limit-request-body ---------------------------------------------------------


def test_declared_length_over_the_limit_gets_413_before_the_app_runs() -> None:
    app = BodyApp()
    with serve(app, limit_request_body=1000) as srv:
        with srv.connect() as sock:
            # small enough to drain: the connection is kept
            sock.sendall(POST_HEAD + b"Content-Length: 1001\r\n\r\n" + b"x" * 1001)
            status, headers, _, _ = read_response(sock)
            assert status == 413 and b"connection" not in headers
            sock.sendall(POST_HEAD + b"Content-Length: 3\r\n\r\nabc")
            assert read_response(sock)[:3:2] == (200, b"3")
        with srv.connect() as sock:
            # too big to drain: closed, and the response says so
            sock.sendall(POST_HEAD + b"Content-Length: 10000000\r\n\r\n")
            status, headers, _, _ = read_response(sock)
            assert status == 413 and headers.get(b"connection") == b"close"
            assert sock.recv(100) == b""
        with srv.connect() as sock:  # at the limit: served
            sock.sendall(POST_HEAD + b"Content-Length: 1000\r\n\r\n" + b"x" * 1000)
            status, _, body, _ = read_response(sock)
            assert (status, body) == (200, b"1000")
    assert app.calls == 2  # the two refused requests never reached it


def test_chunked_body_crossing_the_limit_gets_413_and_the_app_sees_no_more() -> None:
    app = BodyApp()
    with serve(app, limit_request_body=1000) as srv, srv.connect() as sock:
        sock.sendall(POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"190\r\n" + b"x" * 400 + b"\r\n")
        time.sleep(0.2)  # the app has 400 bytes now
        sock.sendall((b"190\r\n" + b"x" * 400 + b"\r\n") * 3 + b"0\r\n\r\n")
        status, _, _, _ = read_response(sock)
        assert status == 413
        assert app.done.wait(5)
    assert app.seen[0] <= 1000 and app.messages[-1] == "http.disconnect"


def test_http2_body_over_the_limit() -> None:
    app = BodyApp()
    with serve(app, limit_request_body=1000) as srv:
        client = H2Client(srv.port)
        try:
            # declared: 413 before the app runs
            client.send(client.headers(1, "POST", "/", end_stream=False, extra=(("content-length", "5000"),)))
            assert h2_status(client, 1)[0] == 413
            assert app.calls == 0
            # undeclared, crossing the limit: 413, the app sees at most the limit
            client.send(client.headers(3, "POST", "/", end_stream=False) + frame(DATA, 0, 3, b"x" * 600))
            assert wait_until(lambda: app.calls == 1)
            client.send(frame(DATA, 0, 3, b"x" * 600) + frame(DATA, END_STREAM, 3, b"x"))
            assert h2_status(client, 3)[0] == 413
            assert app.done.wait(5) and app.seen == [600]
            # the connection still serves
            client.send(client.headers(5, "POST", "/", end_stream=False) + frame(DATA, END_STREAM, 5, b"abc"))
            assert h2_status(client, 5)[0] == 200
            assert client.goaway() is None
        finally:
            client.close()


# --- --timeout-request-body -----------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_body_that_stops_arriving_gets_408(loop: str) -> None:
    app = BodyApp()
    with serve(app, timeout_request_body=1, loop=loop) as srv, srv.connect() as sock:
        sock.sendall(POST_HEAD + b"Content-Length: 100\r\n\r\n" + b"x" * 10)
        t0 = time.monotonic()
        status, headers, _, _ = read_response(sock, timeout=5)
        waited = time.monotonic() - t0
        assert status == 408 and headers.get(b"connection") == b"close"
        assert 1.0 <= waited < 3.0  # never early; late by at most the housekeeping tick
        assert sock.recv(100) == b""  # and the connection is freed
        assert app.done.wait(5) and app.messages[-1] == "http.disconnect"


def test_body_arriving_slowly_but_steadily_is_not_cut() -> None:
    app = BodyApp()
    with serve(app, timeout_request_body=1) as srv, srv.connect() as sock:
        sock.sendall(POST_HEAD + b"Content-Length: 5\r\n\r\n")
        for _ in range(5):  # 2.5 s in all, never 1 s without a byte
            time.sleep(0.5)
            sock.sendall(b"x")
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"5")


def test_http2_body_that_stops_arriving_gets_408_and_the_connection_lives() -> None:
    app = BodyApp()
    with serve(app, timeout_request_body=1) as srv:
        client = H2Client(srv.port)
        try:
            client.send(client.headers(1, "POST", "/", end_stream=False) + frame(DATA, 0, 1, b"x"))
            assert h2_status(client, 1, timeout=5)[0] == 408
            client.send(client.headers(3, "POST", "/", end_stream=False) + frame(DATA, END_STREAM, 3, b"ab"))
            assert h2_status(client, 3)[0] == 200
        finally:
            client.close()


# --- --limit-concurrency and idle connections --------------------------------------------


def test_idle_keep_alive_connections_make_room_for_new_requests() -> None:
    app = BodyApp()
    with serve(app, limit_concurrency=2, timeout_keep_alive=60) as srv:
        idle = [srv.connect() for _ in range(2)]
        try:
            for sock in idle:
                sock.sendall(POST_HEAD + b"Content-Length: 0\r\n\r\n")
                assert read_response(sock)[0] == 200
            with srv.connect() as fresh:
                fresh.sendall(POST_HEAD + b"Content-Length: 0\r\n\r\n")
                assert read_response(fresh)[0] == 200  # not 503
            # an idle connection was closed to make room (the longest idle one, to
            # the housekeeping clock's half second: here both are the same age)
            closed = []
            for sock in idle:
                sock.settimeout(0.5)
                try:
                    closed.append(sock.recv(100) == b"")
                except TimeoutError:
                    closed.append(False)
            assert sorted(closed) == [False, True]
            still_open = idle[closed.index(False)]
            still_open.sendall(POST_HEAD + b"Content-Length: 0\r\n\r\n")
            assert read_response(still_open)[0] == 200
        finally:
            for sock in idle:
                sock.close()


# --- logs -------------------------------------------------------------------------------


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    lg = logging.getLogger("heron.error")
    saved = lg.propagate, logging.getLogger("heron").propagate
    lg.propagate = logging.getLogger("heron").propagate = True
    caplog.set_level(logging.DEBUG, logger="heron.error")
    try:
        yield caplog
    finally:
        lg.propagate, logging.getLogger("heron").propagate = saved


def test_client_gone_before_the_response_is_not_logged_as_an_app_error(
    error_log: pytest.LogCaptureFixture,
) -> None:
    returned = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            returned.set()

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(POST_HEAD + b"Content-Length: 10\r\n\r\n")
        time.sleep(0.1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        assert returned.wait(5)
        time.sleep(0.1)
    records = [r for r in error_log.records if "returned without" in r.getMessage()]
    assert records and all(r.levelno == logging.DEBUG for r in records)
    assert "client disconnected" in records[0].getMessage()
