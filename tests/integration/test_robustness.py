"""Robustness through real sockets: failing apps, disconnects, backpressure,
timeouts, concurrency limits, abrupt clients and leaks.

Every server runs in a thread of this process (``serve()`` from conftest), so
log records from ``heron.error`` reach pytest's ``caplog`` (the fixture below
makes sure they propagate even if a previous test configured heron's logging).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from heron.asgi.http import ClientDisconnected
from heron.server import Server
from heron.transport.http1 import H1Protocol

from ..conftest import RunningServer, read_response, serve
from . import apps

MiB = 1024 * 1024
GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


# --- helpers -------------------------------------------------------------------


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, capturing heron.error at DEBUG even if heron's loggers don't propagate."""
    touched = [logging.getLogger("heron"), logging.getLogger("heron.error")]
    saved = [(lg, lg.propagate) for lg in touched]
    for lg in touched:
        lg.propagate = True
    caplog.set_level(logging.DEBUG, logger="heron.error")
    try:
        yield caplog
    finally:
        for lg, propagate in saved:
            lg.propagate = propagate


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def error_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "heron.error" and r.levelno == logging.ERROR and text in r.getMessage()
    ]


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the server closes; (data, closed) where closed is False on timeout."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), True
        except TimeoutError:
            return b"".join(chunks), False
        if not data:
            return b"".join(chunks), True
        chunks.append(data)
    return b"".join(chunks), False


def with_ok(app: Any) -> Any:
    """``app``, except that ``/ok`` answers 200 "ok" (to prove the server still serves)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/ok":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await app(scope, receive, send)

    return wrapped


def assert_still_serving(srv: RunningServer) -> None:
    sock = srv.connect()
    try:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"ok")
    finally:
        sock.close()


def request(srv: RunningServer, raw: bytes = GET) -> bytes:
    """Send ``raw`` on a new connection, return everything until the server closes."""
    sock = srv.connect()
    try:
        sock.sendall(raw)
        data, closed = read_to_eof(sock)
        assert closed, f"connection not closed: {data[:200]!r}"
        return data
    finally:
        sock.close()


def is_heron_type(cls: type) -> bool:
    module = cls.__dict__.get("__module__")  # some libraries' classes make it a descriptor
    return isinstance(module, str) and module.startswith("heron.")


def count_heron_objects() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        cls = type(obj)
        # (issubclass of type(), not isinstance: isinstance asks a lazy proxy, Django's
        # unconfigured settings among them, for its __class__, and that raises)
        if is_heron_type(cls) or issubclass(cls, (asyncio.Task, asyncio.BaseTransport)):
            counts[cls.__qualname__] = counts.get(cls.__qualname__, 0) + 1
    return counts


def live_protocols(port: int) -> list[H1Protocol]:
    """This server's open HTTP/1.1 connections, from the server's own registry
    (searching gc.get_objects() also finds other tests' dead servers that
    happened to use the same port)."""
    for o in gc.get_objects():
        if not isinstance(o, Server) or o._ctx is None:
            continue
        try:
            if o.port != port:
                continue
        except OSError:  # a stopped server: its sockets are closed
            continue
        return [c for c in list(o._ctx.connections) if isinstance(c, H1Protocol) and not c.transport.is_closing()]
    return []


def rst_close(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- app exceptions ----------------------------------------------------------------


def test_exception_before_start_is_500_logged_and_connection_reusable(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom before start")

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, headers, body, _ = read_response(sock)
        assert status == 500 and body == b"Internal Server Error\n"
        assert headers[b"content-length"] == b"22"
        # a complete 500: the connection is still usable
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[:3:2] == (200, b"ok")
        sock.close()
        assert wait_for(lambda: error_records(errors, "Exception in ASGI application"))
        record = error_records(errors, "Exception in ASGI application")[0]
        assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
        assert str(record.exc_info[1]) == "boom before start"
        assert_still_serving(srv)


def test_exception_after_start_before_body_is_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"1")]})
        raise ValueError("boom between start and body")

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, headers, body, _ = read_response(sock)
        sock.close()
        assert status == 500 and b"x-app" not in headers and body == b"Internal Server Error\n"
        assert_still_serving(srv)


def test_exception_mid_chunked_body_closes_without_last_chunk(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0.05)
        raise ValueError("boom mid body")

    with serve(with_ok(app)) as srv:
        data = request(srv)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
        assert body == b"7\r\npartial\r\n", body  # no terminating 0-chunk: the client sees a broken body
        assert wait_for(lambda: error_records(errors, "Exception in ASGI application"))
        assert_still_serving(srv)


def test_exception_mid_content_length_body_closes_early() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        await asyncio.sleep(0.05)
        raise ValueError("boom mid body")

    with serve(with_ok(app)) as srv:
        data = request(srv)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"content-length: 100" in head
        assert body == b"0123456789"  # closed before the declared length
        assert_still_serving(srv)


def test_return_without_response_is_500(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, _, body, _ = read_response(sock)
        sock.close()
        assert status == 500 and body == b"Internal Server Error\n"
        assert wait_for(lambda: error_records(errors, "returned without completing"))
        assert_still_serving(srv)


def test_return_after_start_without_body_is_500(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, headers, _, _ = read_response(sock)
        sock.close()
        assert status == 500 and b"x-app" not in headers
        assert wait_for(lambda: error_records(errors, "returned without completing"))
        assert_still_serving(srv)


def test_return_with_incomplete_body_closes_connection(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"abc", "more_body": True})

    with serve(with_ok(app)) as srv:
        data = request(srv)
        assert data.endswith(b"\r\n\r\n3\r\nabc\r\n")
        assert wait_for(lambda: error_records(errors, "body incomplete"))
        assert_still_serving(srv)


def test_stream_ending_because_its_client_left_logs_no_error(errors: pytest.LogCaptureFixture) -> None:
    """An event stream whose client goes away: the app sees http.disconnect and returns
    mid-body, as it should; that is not an application error."""
    returned: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        returned.append("after disconnect")

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        received = b""
        while b"data: 1" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        sock.close()
        assert wait_for(lambda: returned)
        assert_still_serving(srv)
    assert not error_records(errors, "body incomplete")


@pytest.mark.parametrize(
    "header, named, forbidden",
    [
        ((b"x-test", b"ok\r\nInjected: evil"), "x-test", b"Injected"),
        ((b"x-test", b"ok\nInjected: evil"), "x-test", b"Injected"),
        ((b"x-test", b"ok\x00nul"), "x-test", b"nul"),
        ((b"bad name", b"value"), "bad name", b"bad name"),
        ((b"x-colon:injected", b"value"), "x-colon:injected", b"injected"),
        ((b"", b"empty-name"), "b''", b"empty-name"),
        (("x-str-name", b"value"), "x-str-name", b"x-str-name"),
        ((b"x-str-value", "value"), "x-str-value", b"x-str-value"),
    ],
    ids=["crlf-value", "lf-value", "nul-value", "space-name", "colon-name", "empty-name", "str-name", "str-value"],
)
def test_invalid_response_header_is_500_named_in_log_and_not_on_wire(
    errors: pytest.LogCaptureFixture, header: tuple[Any, Any], named: str, forbidden: bytes
) -> None:
    """CVE-2020-7695: an app-supplied header can't inject lines into the response."""
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-fine", b"1"), header]})
        try:
            await send({"type": "http.response.body", "body": b"app body"})
        except BaseException as exc:
            raised.append(exc)
            raise

    with serve(with_ok(app)) as srv:
        data = request(srv, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 500 "), data
        assert forbidden not in data and b"x-fine" not in data and b"app body" not in data
        assert data.endswith(b"Internal Server Error\n")
        assert len(raised) == 1  # the app's send() failed (and says why)
        assert wait_for(lambda: error_records(errors, "Invalid response from ASGI app"))
        messages = [r.getMessage() for r in error_records(errors, "Invalid response from ASGI app")]
        assert len(messages) == 1 and named in messages[0], messages
        assert "\n" not in messages[0] and "\r" not in messages[0]
        assert_still_serving(srv)


def test_invalid_status_from_app_raises_and_becomes_500() -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for status in (99, 600, "200", None):
            try:
                await send({"type": "http.response.start", "status": status, "headers": []})
            except (TypeError, ValueError) as exc:
                raised.append(exc)
        raise RuntimeError("give up")

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        assert read_response(sock)[0] == 500
        sock.close()
        assert len(raised) == 4
        assert_still_serving(srv)


def test_messages_out_of_order_raise_runtime_error_in_app() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.body", "body": b"too early"})
        except RuntimeError as exc:
            seen.append(f"body-first: {exc}")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        try:
            await send({"type": "http.response.start", "status": 404, "headers": []})
        except RuntimeError as exc:
            seen.append(f"start-twice: {exc}")
        try:
            await send({"type": "http.bogus"})
        except RuntimeError as exc:
            seen.append(f"bogus: {exc}")
        await send({"type": "http.response.body", "body": b"ok"})
        # after the response is complete further messages are ignored
        await send({"type": "http.response.body", "body": b"ignored"})
        await send({"type": "http.response.start", "status": 500, "headers": []})

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, _, body, rest = read_response(sock)
        assert (status, body) == (200, b"ok") and rest == b""
        time.sleep(0.2)  # the ignored messages come after the response: nothing of them may follow it
        sock.sendall(GET)
        sock.settimeout(5)
        data = b""
        while len(data) < 12:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data  # the connection is still in sync
        sock.close()
    assert len(seen) == 6, seen
    assert seen[0].startswith("body-first:") and "http.response.start" in seen[0]
    assert seen[1].startswith("start-twice:") and "twice" in seen[1]
    assert seen[2].startswith("bogus:") and "http.bogus" in seen[2]


def test_body_longer_than_content_length_closes_connection(errors: pytest.LogCaptureFixture) -> None:
    raised: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        try:
            await send({"type": "http.response.body", "body": b"x" * 20})
        except Exception as exc:
            raised.append(exc)

    with serve(with_ok(app)) as srv:
        data = request(srv)  # asserts that the server closes the connection
        assert b"x" * 11 not in data
        assert not data.startswith(b"HTTP/1.1 200"), data  # never a 200 with a wrong length
        assert len(raised) == 1
        assert wait_for(lambda: error_records(errors, "longer than its Content-Length"))
        assert_still_serving(srv)


def test_body_longer_than_content_length_in_later_piece_truncates_and_closes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"6789012345"})

    with serve(with_ok(app)) as srv:
        data = request(srv)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b"12345"
        assert_still_serving(srv)


def test_body_shorter_than_content_length_closes_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with serve(with_ok(app)) as srv:
        data = request(srv)  # the client must not wait forever for the 5 missing bytes
        head, _, body = data.partition(b"\r\n\r\n")
        assert body == b"12345"
        assert_still_serving(srv)


# --- ASGI disconnect semantics --------------------------------------------------------


def test_receive_after_response_complete_returns_disconnect() -> None:
    messages: list[Any] = []
    done = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        messages.append(first)
        messages.append(await asyncio.wait_for(receive(), 3))
        done.set()

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        assert read_response(sock)[0] == 200
        assert done.wait(5)
        sock.close()
    assert messages == [
        {"type": "http.request", "body": b"abc", "more_body": False},
        {"type": "http.disconnect"},
    ]


def test_receive_waiting_during_response_returns_disconnect_when_complete() -> None:
    """A task listening for disconnect while the app streams is released when the response ends."""
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

        async def listen() -> None:
            message = await receive()
            order.append(message["type"])

        listener = asyncio.ensure_future(listen())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
            await asyncio.sleep(0.05)
            order.append(f"sent{i}")
        await send({"type": "http.response.body", "body": b""})
        await asyncio.wait_for(listener, 3)

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"012")
        assert wait_for(lambda: len(order) == 4)
        sock.close()
    assert order == ["sent0", "sent1", "sent2", "http.disconnect"]


def test_long_poll_gets_disconnect_when_client_closes() -> None:
    got: list[Any] = []
    started = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the (empty) request body
        started.set()
        got.append(await asyncio.wait_for(receive(), 10))

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        assert started.wait(5)
        time.sleep(0.1)
        assert got == []  # still waiting while the client is there
        sock.close()
        assert wait_for(lambda: got, 5), "the app never learnt that the client left"
        assert got == [{"type": "http.disconnect"}]


def test_long_poll_gets_disconnect_when_client_resets() -> None:
    got: list[Any] = []
    started = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        started.set()
        got.append(await asyncio.wait_for(receive(), 10))

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        assert started.wait(5)
        rst_close(sock)
        assert wait_for(lambda: got, 5)
        assert got == [{"type": "http.disconnect"}]


@pytest.mark.parametrize("how", ["fin", "half-close", "rst"])
def test_client_leaving_mid_body_gives_reading_app_disconnect(how: str) -> None:
    """An app reading a request body that will never be complete gets http.disconnect (it doesn't hang)."""
    got: list[Any] = []
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while True:
                message = await asyncio.wait_for(receive(), 10)
                got.append(message)
                if message["type"] != "http.request" or not message["more_body"]:
                    break
        finally:
            finished.set()

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"b" * 1000)
        assert wait_for(lambda: got, 5)  # the first half reached the app
        if how == "fin":
            sock.close()
        elif how == "half-close":
            sock.shutdown(socket.SHUT_WR)
        else:
            rst_close(sock)
        assert finished.wait(5), "the app still waits for a body the client will never send"
        sock.close()
        assert got[-1] == {"type": "http.disconnect"}, got
        assert b"".join(m.get("body", b"") for m in got) == b"b" * 1000
        assert wait_for(lambda: srv.server.connection_count == 0, 3)
        assert_still_serving(srv)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_streaming_send_after_client_closed_raises_oserror(loop: str) -> None:
    """An app streaming forever must get ClientDisconnected, not spin (or hang the loop)."""
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            while sent < 10_000_000:  # bounded: 10 GB would take far longer than the test
                await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
                sent += 1
        except BaseException as exc:
            outcome["exc"] = exc
            raise
        finally:
            outcome["sent"] = sent
            finished.set()

    with serve(with_ok(app), loop=loop) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        sock.recv(4096)  # the head and first chunk(s)
        sock.close()
        assert finished.wait(5), "send() kept going after the client closed"
        assert isinstance(outcome.get("exc"), OSError), outcome
        assert isinstance(outcome["exc"], ClientDisconnected)
        assert_still_serving(srv)


def test_send_after_client_reset_while_app_sleeps_raises_client_disconnected() -> None:
    outcome: dict[str, Any] = {}
    started = threading.Event()
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        started.set()
        await asyncio.sleep(0.5)
        try:
            await send({"type": "http.response.body", "body": b"second", "more_body": True})
            outcome["result"] = "sent"
        except BaseException as exc:
            outcome["exc"] = exc
        finished.set()

    with serve(with_ok(app)) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        assert started.wait(5)
        rst_close(sock)
        assert finished.wait(5)
        assert isinstance(outcome.get("exc"), ClientDisconnected), outcome
        assert_still_serving(srv)


# --- backpressure ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_reader_makes_send_wait_then_resumes(loop: str) -> None:
    total = 50 * MiB
    chunk = b"\xab" * (64 * 1024)
    progress = {"sent": 0, "done": False}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % total)]})
        while progress["sent"] < total:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress["sent"] += len(chunk)
        await send({"type": "http.response.body", "body": b""})
        progress["done"] = True

    with serve(app, loop=loop) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.port))
        sock.sendall(GET)
        time.sleep(1.0)
        stalled_at = progress["sent"]
        assert 0 < stalled_at < 8 * MiB, f"send() did not wait for the client: {stalled_at} bytes sent"
        time.sleep(0.3)
        assert progress["sent"] - stalled_at < 1 * MiB  # really stalled, not just slow
        received = 0
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        received = len(rest)
        view = bytearray(1024 * 1024)
        while received < total:
            n = sock.recv_into(view)
            assert n, "connection closed early"
            received += n
        assert received == total
        assert wait_for(lambda: progress["done"], 5)
        sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_slow_app_reader_pauses_reading_and_body_arrives_intact(loop: str) -> None:
    total = 20 * MiB
    payload = bytes(range(256)) * (total // 256)
    reading = threading.Event()
    result: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while not reading.is_set():  # read nothing until the test says so (bounded by the test)
            await asyncio.sleep(0.02)
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        result["size"] = size
        body = digest.hexdigest().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve(app, loop=loop) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.connect(("127.0.0.1", srv.port))
        try:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
            sock.setblocking(False)
            pushed = 0
            view = memoryview(payload)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and pushed < total:
                try:
                    pushed += sock.send(view[pushed : pushed + 256 * 1024])
                except BlockingIOError:
                    select.select([], [sock], [], 0.05)
            assert pushed < 8 * MiB, f"the server kept reading a body nobody reads: {pushed} bytes accepted"
            protocols = live_protocols(srv.port)
            assert len(protocols) == 1
            assert protocols[0].transport.is_reading() is False  # the server paused reading
            reading.set()
            sock.setblocking(True)
            sock.settimeout(10)
            sock.sendall(view[pushed:])
            status, _, body, _ = read_response(sock, timeout=10)
        finally:
            reading.set()
            sock.close()
    assert status == 200
    assert result["size"] == total
    assert body == hashlib.sha256(payload).hexdigest().encode()


# --- timeouts ----------------------------------------------------------------------------


def test_slowloris_head_is_cut_off() -> None:
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"a" * 40 + b"\r\n\r\n"
    with serve(apps.hello, timeout_request_header=1) as srv:
        sock = srv.connect()
        start = time.monotonic()
        received = b""
        closed = False
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                readable, _, _ = select.select([sock], [], [], 0.3)
                if readable:
                    data = sock.recv(65536)
                    received += data
                    if not data:
                        closed = True
                        break
                if time.monotonic() - start > 6:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            rest, closed = read_to_eof(sock, 1)
            received += rest
        elapsed = time.monotonic() - start
        sock.close()
        assert closed and sent < len(head)
        assert elapsed < 3.5, elapsed
        assert received == b"" or received.startswith(b"HTTP/1.1 408 "), received


def test_idle_keep_alive_connection_is_closed() -> None:
    with serve(apps.hello, timeout_keep_alive=1) as srv:
        sock = srv.connect()
        sock.sendall(GET)
        status, headers, _, _ = read_response(sock)
        assert status == 200 and b"connection" not in headers
        start = time.monotonic()
        data, closed = read_to_eof(sock, 4)
        elapsed = time.monotonic() - start
        sock.close()
        assert closed and data == b""
        assert 0.25 <= elapsed <= 2.6, elapsed  # not at once (the tick makes it up to ~0.5 s early)


def test_keep_alive_connection_used_before_timeout_stays_open() -> None:
    with serve(apps.hello, timeout_keep_alive=1) as srv:
        sock = srv.connect()
        for _ in range(4):  # ~1.6 s in total, each pause shorter than the timeout
            sock.sendall(GET)
            assert read_response(sock)[0] == 200
            time.sleep(0.4)
        sock.close()


def test_silent_connection_is_closed_after_header_timeout() -> None:
    with serve(apps.hello, timeout_request_header=1) as srv:
        sock = srv.connect()
        start = time.monotonic()
        data, closed = read_to_eof(sock, 4)
        elapsed = time.monotonic() - start
        sock.close()
        assert closed and data == b""  # nothing was asked: nothing answered
        assert 0.25 <= elapsed <= 2.6, elapsed  # not at once (the tick makes it up to ~0.5 s early)
        assert_still_serving_plain(srv)


def assert_still_serving_plain(srv: RunningServer) -> None:
    sock = srv.connect()
    sock.sendall(GET)
    assert read_response(sock)[0] == 200
    sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_write_timeout_aborts_client_that_never_reads(loop: str) -> None:
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            while sent < 1_000_000:
                await send({"type": "http.response.body", "body": b"w" * 65536, "more_body": True})
                sent += 1
        except BaseException as exc:
            outcome["exc"] = exc
        finally:
            outcome["sent"] = sent
            finished.set()

    with serve(with_ok(app), timeout_write=1, loop=loop) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", srv.port))
        try:
            sock.sendall(GET)
            start = time.monotonic()
            assert finished.wait(6), f"the app is still sending after {time.monotonic() - start:.1f}s"
            assert time.monotonic() - start < 5
            assert isinstance(outcome.get("exc"), ClientDisconnected), outcome
            # the connection was aborted: reading it now ends (EOF or reset) instead of streaming forever
            sock.settimeout(5)
            total = 0
            with pytest.raises((ConnectionResetError, EOFError)):
                while total < 100 * MiB:
                    data = sock.recv(1024 * 1024)
                    if not data:
                        raise EOFError
                    total += len(data)
        finally:
            sock.close()
        assert_still_serving(srv)


# --- concurrency limit ------------------------------------------------------------------


def test_limit_concurrency_answers_503_while_busy() -> None:
    started = threading.Event()
    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            started.set()
            for _ in range(250):  # at most 5 s
                if release.is_set():
                    break
                await asyncio.sleep(0.02)
        await apps.hello(scope, receive, send)

    with serve(app, limit_concurrency=1) as srv:
        slow = srv.connect()
        try:
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            assert started.wait(5)
            other = srv.connect()
            other.sendall(GET)
            status, headers, body, _ = read_response(other)
            other.close()
            assert status == 503 and body == b"Service Unavailable\n"
            release.set()
            status, _, body, _ = read_response(slow)
            assert (status, body) == (200, b"Hello, world!")
        finally:
            release.set()
            slow.close()
        # capacity is back once the slow connection is gone
        assert wait_for(lambda: srv.server.connection_count == 0, 3)
        assert_still_serving_plain(srv)


# --- abrupt clients and connection bookkeeping -------------------------------------------


def test_abrupt_clients_leave_no_connections_behind() -> None:
    in_app = {"now": 0, "max": 0, "total": 0}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        in_app["now"] += 1
        in_app["total"] += 1
        in_app["max"] = max(in_app["max"], in_app["now"])
        try:
            await apps.echo(scope, receive, send)
        finally:
            in_app["now"] -= 1

    with serve(app) as srv:
        # 1000 connections opened and closed at once (in batches, to stay under the backlog)
        for _ in range(10):
            socks = [srv.connect() for _ in range(100)]
            for s in socks:
                s.close()
        # 200 that send half a request head, then reset
        for i in range(200):
            s = srv.connect()
            s.sendall(b"GET /half-%d HTTP/1.1\r\nHost: t\r\nX-Part" % i)
            rst_close(s)
        # 200 that send a POST head and half the body, then reset
        for i in range(200):
            s = srv.connect()
            s.sendall(b"POST /body-%d HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" % i + b"b" * 1000)
            if i % 20 == 0:
                time.sleep(0.01)  # let some reach the app before the reset
            rst_close(s)
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        status, _, body, _ = read_response(sock)
        sock.close()
        assert (status, body) == (200, b"hello")
        assert wait_for(lambda: srv.server.connection_count == 0, 5), srv.server.connection_count
        assert wait_for(lambda: in_app["now"] == 0, 5), in_app
        assert in_app["total"] >= 1


def test_connection_count_tracks_open_connections() -> None:
    with serve(apps.hello) as srv:
        assert srv.server.connection_count == 0
        socks = [srv.connect() for _ in range(5)]
        try:
            assert wait_for(lambda: srv.server.connection_count == 5, 3), srv.server.connection_count
        finally:
            for s in socks:
                s.close()
        assert wait_for(lambda: srv.server.connection_count == 0, 3), srv.server.connection_count


# --- leaks ---------------------------------------------------------------------------------


def _one_short_connection(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"Hello, world!"), data
    finally:
        sock.close()


def test_many_short_connections_do_not_leak_objects() -> None:
    with serve(apps.hello) as srv:
        for _ in range(200):  # warm-up: caches, lazily created objects
            _one_short_connection(srv.port)
        assert wait_for(lambda: srv.server.connection_count == 0, 3)
        gc.collect()
        before = count_heron_objects()
        deadline = time.monotonic() + 60  # a safety bound; normally ~10 s
        done = 0
        while done < 20_000 and time.monotonic() < deadline:
            _one_short_connection(srv.port)
            done += 1
        assert done >= 2_000, "too few connections to judge"
        assert wait_for(lambda: srv.server.connection_count == 0, 5), srv.server.connection_count
        time.sleep(0.1)
        gc.collect()
        after = count_heron_objects()
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0) > 3}
    assert not grown, f"objects left behind after {done} connections: {grown}"
    assert after.get("H1Protocol", 0) <= before.get("H1Protocol", 0) + 1
    assert after.get("HTTPCycle", 0) <= before.get("HTTPCycle", 0) + 1


def test_keep_alive_request_path_creates_no_reference_cycles() -> None:
    with serve(apps.echo) as srv:
        sock = srv.connect()
        try:
            for _ in range(20):  # warm-up
                sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
                read_response(sock)
            gc.collect()
            gc.disable()
            try:
                for i in range(1000):
                    sock.sendall(b"POST /%d HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi" % i)
                    status, _, body, _ = read_response(sock)
                    assert (status, body) == (200, b"hi")
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                garbage = list(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        finally:
            sock.close()
    in_cycles: dict[str, int] = {}
    for obj in garbage:
        cls = type(obj)
        if is_heron_type(cls) or isinstance(obj, (asyncio.Task, asyncio.Future)):
            in_cycles[cls.__qualname__] = in_cycles.get(cls.__qualname__, 0) + 1
    del garbage
    # a handful at most (e.g. from the warm-up or the server thread's own start-up), never one per request
    assert sum(in_cycles.values()) <= 5, in_cycles
    assert in_cycles.get("HTTPCycle", 0) <= 1, in_cycles
