"""Shared test helpers: a real heron server on 127.0.0.1, in a thread, always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from heron.config import Config
from heron.server import Server, _new_loop

#: program -> the Debian package that has it (what .ci/run installs)
PACKAGES = {"curl": "curl", "h2load": "nghttp2-client", "chromium": "chromium"}


def need_program(name: str, *aliases: str) -> str:
    """The path of a program a test needs. Missing: the test is skipped with one line
    naming it, except under CI (``CI`` set, as .ci/run is run), where it fails: CI
    installs every program the tests use, so a skip there would hide a failure."""
    for candidate in (name, *aliases):
        path = shutil.which(candidate)
        if path is not None:
            return path
    package = PACKAGES.get(name, name)
    message = f"needs {name} (apt-get install {package}; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message + ": missing under CI")
    pytest.skip(message)


#: how the tests run headless Chromium: no sandbox (root in CI), no QUIC, nothing in the background
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_command(profile: str, *args: str) -> list[str]:
    """A headless Chromium command line with its own profile directory (skips or fails as need_program)."""
    return [need_program("chromium", "chromium-browser"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]


@pytest.fixture
def curl_path() -> str:
    return need_program("curl")


@pytest.fixture
def h2load_path() -> str:
    return need_program("h2load")


class RunningServer:
    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.server = server
        self.loop = loop
        self.thread = thread
        self.exit_code: int | None = None
        port = server.port
        assert port is not None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return sock

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 15.0) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.shutdown)
            self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not stop"


@contextlib.contextmanager
def serve(app: Any, **settings: Any) -> Iterator[RunningServer]:
    """Run ``app`` with heron on a free port in a background thread."""
    settings.setdefault("port", 0)
    settings.setdefault("log_level", "warning")
    settings.setdefault("access_log", False)
    settings.setdefault("lifespan", "off")
    settings.setdefault("loop", "asyncio")
    config = Config(app=app, **settings)
    loop = _new_loop(config.loop)  # honour loop= (uvloop or asyncio)
    server_box: dict[str, Any] = {}
    ready = threading.Event()

    def target() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> int:
            server = Server(config)
            server_box["server"] = server
            waiter = loop.create_task(server.started.wait())
            waiter.add_done_callback(lambda _: ready.set())
            try:
                return await server.serve(install_signal_handlers=False)
            finally:
                ready.set()
                waiter.cancel()

        try:
            server_box["exit"] = loop.run_until_complete(main())
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(15), "server did not start"
    server = server_box.get("server")
    assert server is not None and server.started.is_set(), f"server failed to start: {server_box.get('exit')}"
    running = RunningServer(server, loop, thread)
    try:
        yield running
    finally:
        running.stop()
        running.exit_code = server_box.get("exit")


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes the connection (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[bytes, bytes], bytes, bytes]:
    """Read one response (Content-Length or chunked framing) from a raw socket.

    Returns (status, headers (last wins), body, leftover bytes).
    """
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if status in (100, 103):
        return status, headers, b"", rest
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed mid-body")
            rest += data
        return status, headers, rest[:length], rest[length:]
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed mid-chunk")
                rest += data
            if size == 0:
                # no trailers in our tests
                return status, headers, body, rest[2:]
            body += rest[:size]
            rest = rest[size + 2 :]
    return status, headers, b"", rest


@pytest.fixture
def server_factory() -> Any:
    return serve
