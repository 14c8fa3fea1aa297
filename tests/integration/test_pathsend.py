"""``http.response.pathsend`` over real sockets: ``os.sendfile`` on cleartext
HTTP/1.1 (on uvloop and on asyncio), the threaded read path elsewhere.

The server runs in this process, so a spy in place of ``os.sendfile`` shows
whether (and how much) the file went out zero copy, and when the server found
the client's socket full (a short send): tests wait on that, never on the clock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heron.asgi.http import ClientDisconnected

from ..conftest import RunningServer, read_response, serve

LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
MiB = 1024 * 1024


class SendfileSpy:
    """Calls the real ``os.sendfile``, counting calls and bytes."""

    def __init__(self, real: Callable[[int, int, int, int], int]) -> None:
        self.real = real
        self.calls = 0
        self.sent = 0
        self.socket_full = threading.Event()  # the client's socket was full at least once

    def __call__(self, out_fd: int, in_fd: int, offset: int, count: int) -> int:
        self.calls += 1
        try:
            sent = self.real(out_fd, in_fd, offset, count)
        except BlockingIOError:
            self.socket_full.set()
            raise
        self.sent += sent
        if 0 < sent < count:  # a short send: the socket took all it could
            self.socket_full.set()
        return sent


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SendfileSpy:
    s = SendfileSpy(os.sendfile)
    monkeypatch.setattr(os, "sendfile", s)
    return s


@pytest.fixture
def blob(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    data = os.urandom(16 * MiB + 7)  # well beyond the kernel's socket buffers, odd tail
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    yield str(target), data


def big_body() -> bytes:
    return bytes(range(256)) * (16 * 4096)  # 16 MiB


class App:
    """``/file`` sends the blob with pathsend, ``/big`` :func:`big_body` in one
    message; anything else answers ``ok``. What pathsend raised (if anything)
    is kept in ``outcomes``."""

    big = staticmethod(big_body)

    def __init__(self, path: str) -> None:
        self.path = path
        self.outcomes: list[BaseException | None] = []
        self.finished = threading.Event()
        self.file_started = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] == "/big":  # one write the transport must buffer for a slow client
            big = self.big()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(big))]}
            )
            await send({"type": "http.response.body", "body": big})
            return
        if scope["path"] != "/file":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        self.file_started.set()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x")]})
        try:
            await send({"type": "http.response.pathsend", "path": self.path})
        except BaseException as exc:
            self.outcomes.append(exc)
            raise
        else:
            self.outcomes.append(None)
        finally:
            self.finished.set()


def small_window_client(srv: RunningServer) -> socket.socket:
    """A client with a small receive buffer, so the server's writes block soon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", srv.port))
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a full head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def assert_serves_ok(srv: RunningServer) -> None:
    sock = srv.connect()
    try:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[::2] == (200, b"ok")
    finally:
        sock.close()


def assert_serves_ok_on(sock: socket.socket) -> None:
    sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(sock, timeout=10)[::2] == (200, b"ok")


def open_fds() -> int:
    """Sockets and regular files this process holds open (a loop's own pipes,
    created once per process by uvloop, don't matter here)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        count += target.startswith(("socket:", "/"))
    return count


def wait_until(condition: Callable[[], bool], bound: float = 10.0) -> bool:
    """Poll ``condition`` (the bound only keeps a broken server from hanging the test)."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@LOOPS
def test_large_file_goes_out_with_sendfile_then_keep_alive_and_pipelining(
    loop: str, spy: SendfileSpy, blob: tuple[str, bytes]
) -> None:
    path, data = blob
    with serve(App(path), loop=loop) as srv:
        sock = srv.connect(timeout=10)
        # pipelined: the file, then a small response that must come after it
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body, rest = read_response(sock, timeout=10)
        assert status == 200 and headers[b"content-length"] == str(len(data)).encode()
        assert b"transfer-encoding" not in headers
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert rest.startswith(b"HTTP/1.1 200") or rest == b""
        # the second response is read from what follows the file, not from a new connection
        sock.settimeout(10)
        while b"\r\n\r\nok" not in rest:
            rest += sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nok")
        sock.close()
    assert spy.sent == len(data)  # every byte of the body went through sendfile


@LOOPS
def test_head_sends_the_length_and_no_body(loop: str, spy: SendfileSpy, blob: tuple[str, bytes]) -> None:
    path, data = blob
    with serve(App(path), loop=loop) as srv:
        sock = srv.connect()
        sock.sendall(b"HEAD /file HTTP/1.1\r\nHost: t\r\n\r\nGET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\ncontent-length: %d\r\n" % len(data) in head + b"\r\n"
        # a body after the HEAD response would be read here as the next head
        while b"\r\n\r\nok" not in rest:
            rest += sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nok")
        sock.close()
    assert spy.calls == 0


@LOOPS
def test_slow_reader_gets_the_whole_file_and_others_are_served_meanwhile(
    loop: str, spy: SendfileSpy, blob: tuple[str, bytes]
) -> None:
    path, data = blob
    with serve(App(path), loop=loop) as srv:
        sock = small_window_client(srv)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        # the server filled the socket and now waits for it to drain...
        assert spy.socket_full.wait(10)
        # ...without blocking the event loop
        assert_serves_ok(srv)
        head, received = read_head(sock)
        assert b"content-length: %d" % len(data) in head
        digest = hashlib.sha256(received)
        total = len(received)
        while total < len(data):
            chunk = sock.recv(4096)  # small reads: the server resumes many times
            assert chunk, "closed mid-body"
            digest.update(chunk)
            total += len(chunk)
        assert total == len(data) and digest.digest() == hashlib.sha256(data).digest()
        assert spy.calls > 1  # it went on after the socket was full
        # the connection is still good
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[::2] == (200, b"ok")
        sock.close()
    assert spy.sent == len(data)


@LOOPS
def test_file_waits_for_the_previous_response_still_in_the_transport_buffer(
    loop: str, spy: SendfileSpy, blob: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file bytes bypass the transport, so whatever it still buffers must go first."""
    path, data = blob
    big = big_body()
    app = App(path)
    file_open = threading.Event()
    real_fstat = os.fstat

    def fstat(fd: Any) -> Any:
        result = real_fstat(fd)
        if result.st_size == len(data):
            file_open.set()
        return result

    monkeypatch.setattr(os, "fstat", fstat)
    with serve(app, loop=loop) as srv:
        sock = small_window_client(srv)
        assert_serves_ok_on(sock)
        # A high-water mark above /big: the transport keeps most of /big without
        # pausing the protocol, so the pathsend head is written straight behind
        # it and the file must wait for the buffer to empty (not just to drain
        # below the mark, which the ordinary send() path waits for).
        raised = threading.Event()

        def raise_high_water() -> None:
            for connection in srv.server._ctx.connections:
                connection.transport.set_write_buffer_limits(high=4 * len(big))
            raised.set()

        srv.call(raise_high_water)
        assert raised.wait(10)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        # nothing is read until the file is open: /big is still buffered then
        assert file_open.wait(10)
        status, _, body, rest = read_response(sock, timeout=10)
        assert status == 200 and body == big
        while b"\r\n\r\n" not in rest:
            rest += sock.recv(65536)
        head, _, received = rest.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: %d" % len(data) in head
        while len(received) < len(data):
            chunk = sock.recv(MiB)
            assert chunk, "closed mid-body"
            received += chunk
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
        assert_serves_ok_on(sock)  # and the limits are back: the connection works as before
        sock.close()
    assert spy.sent == len(data)


@LOOPS
def test_client_disconnecting_mid_file_aborts_cleanly(loop: str, spy: SendfileSpy, blob: tuple[str, bytes]) -> None:
    path, data = blob
    app = App(path)
    with serve(app, loop=loop) as srv:
        assert_serves_ok(srv)  # the server's own descriptors are open by now
        assert wait_until(lambda: not srv.server._ctx.connections)  # and that connection is closed
        before = open_fds()
        sock = small_window_client(srv)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        assert spy.socket_full.wait(10)
        sock.recv(65536)
        # reset, not a polite close: the server's next write fails at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert app.finished.wait(10)
        assert len(app.outcomes) == 1 and isinstance(app.outcomes[0], ClientDisconnected)
        assert spy.sent < len(data)
        # the dup()'d socket and the file were closed with the connection
        assert wait_until(lambda: open_fds() <= before), (open_fds(), before)
        assert_serves_ok(srv)


@LOOPS
def test_client_that_stops_reading_is_disconnected_after_timeout_write(
    loop: str, spy: SendfileSpy, blob: tuple[str, bytes]
) -> None:
    path, data = blob
    app = App(path)
    with serve(app, loop=loop, timeout_write=1) as srv:
        sock = small_window_client(srv)
        try:
            sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
            assert spy.socket_full.wait(10)
            assert app.finished.wait(10), "the server still waits for a client that reads nothing"
            assert isinstance(app.outcomes[0], ClientDisconnected)
            # the connection was closed: reading it now ends (EOF or reset) before the whole file
            total = 0
            with pytest.raises((ConnectionResetError, EOFError)):
                while total <= len(data):
                    chunk = sock.recv(MiB)
                    if not chunk:
                        raise EOFError
                    total += len(chunk)
        finally:
            sock.close()
        assert_serves_ok(srv)


@LOOPS
def test_access_log_counts_the_file(loop: str, spy: SendfileSpy, blob: tuple[str, bytes]) -> None:
    import httpx

    path, data = blob
    records: list[logging.LogRecord] = []
    logged = threading.Event()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            logged.set()

    handler = Keep()
    access = logging.getLogger("heron.access")
    level = access.level
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    try:
        with serve(App(path), loop=loop, access_log=True) as srv:
            response = httpx.get(srv.url + "/file", timeout=10)
            assert response.content == data
            assert logged.wait(10)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert records[0].bytes == len(data) and records[0].status == 200  # type: ignore[attr-defined]
    assert spy.sent == len(data)


def test_http2_and_tls_keep_the_threaded_path(spy: SendfileSpy, blob: tuple[str, bytes], tmp_path: Path) -> None:
    import httpx
    import trustme

    path, data = blob
    with serve(App(path), http2=True) as srv, httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.get(srv.url + "/file")
        assert response.http_version == "HTTP/2" and response.content == data
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = {"ssl_certfile": str(tmp_path / "server.pem"), "ssl_keyfile": str(tmp_path / "server.key")}
    with serve(App(path), **tls) as srv:
        response = httpx.get(f"https://127.0.0.1:{srv.port}/file", verify=context, timeout=10)
        assert response.content == data
    assert spy.calls == 0


@LOOPS
def test_shutdown_cancels_a_stalled_file_and_closes_everything(
    loop: str, spy: SendfileSpy, blob: tuple[str, bytes]
) -> None:
    path, _ = blob
    app = App(path)
    before = open_fds()
    with serve(app, loop=loop, timeout_graceful_shutdown=0.5, timeout_write=0) as srv:
        sock = small_window_client(srv)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: t\r\n\r\n")
        assert spy.socket_full.wait(10)
        srv.stop()  # returns once the server's thread is done (asserts it did)
        assert app.finished.is_set() and isinstance(app.outcomes[0], BaseException)
        sock.close()
    assert open_fds() <= before
