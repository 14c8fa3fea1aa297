"""The ASGI lifespan protocol with real servers: state, startup failures and
timeouts (exit status 3), and shutdown only after connections have drained."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from heron.config import Config
from heron.server import STARTUP_FAILURE, Server

from ..conftest import read_response, serve
from . import apps

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


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


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "heron.error" and r.levelno == level]


def run_until_exit(app: Any, timeout: float = 10.0, **settings: Any) -> tuple[int, float]:
    """Run a server in a fresh event loop until serve() returns; (status, seconds).

    Used for start-up failures, where ``serve()`` from conftest (which waits for a
    started server) does not apply. If the server does start, it is stopped at once.
    """
    settings.setdefault("port", 0)
    settings.setdefault("log_level", "warning")
    settings.setdefault("access_log", False)
    settings.setdefault("loop", "asyncio")

    async def main() -> int:
        server = Server(Config(app=app, **settings))
        task = asyncio.ensure_future(server.serve(install_signal_handlers=False))
        started = asyncio.ensure_future(server.started.wait())
        await asyncio.wait([task, started], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not task.done():
            server.shutdown()
        return await asyncio.wait_for(task, timeout)

    start = time.monotonic()
    status = asyncio.run(main())
    return status, time.monotonic() - start


def lifespan_app(
    *,
    on_startup: Any = None,
    on_shutdown: Any = None,
    http: Any = apps.hello,
    events: list[str] | None = None,
) -> Any:
    """An app with a scripted lifespan: on_startup/on_shutdown get the scope and
    return the message to send (default: complete)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if events is not None:
                    events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    reply = on_startup(scope) if on_startup else None
                    await send(reply or {"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    reply = on_shutdown(scope) if on_shutdown else None
                    await send(reply or {"type": "lifespan.shutdown.complete"})
                    return
        else:
            await http(scope, receive, send)

    return app


def get(port: int, path: str = "/") -> tuple[int, dict[bytes, bytes], bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        status, headers, body, _ = read_response(sock)
        return status, headers, body
    finally:
        sock.close()


# --- state -------------------------------------------------------------------------------


def test_lifespan_state_is_a_shallow_copy_per_request() -> None:
    lifespan_state: dict[str, Any] = {}
    shared: list[str] = []
    seen_shared: list[bool] = []

    def startup(scope: Any) -> None:
        lifespan_state.update(scope)  # keep a handle on the scope to read its state later
        scope["state"]["counter"] = 0
        scope["state"]["shared"] = shared

    async def http(scope: Any, receive: Any, send: Any) -> None:
        state = scope["state"]
        snapshot = {k: v for k, v in state.items() if k != "shared"}
        seen_shared.append(state.get("shared") is shared)
        state["counter"] += 1  # mutations stay in this request
        state["added-by-" + scope["path"]] = True
        body = json.dumps(snapshot, sort_keys=True).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve(lifespan_app(on_startup=startup, http=http), lifespan="on") as srv:
        first = get(srv.port, "/one")
        second = get(srv.port, "/two")
    assert first[0] == second[0] == 200
    assert json.loads(first[2]) == {"counter": 0}
    assert json.loads(second[2]) == {"counter": 0}  # nothing of request one leaked into request two
    assert seen_shared == [True, True]  # shallow: the same objects as the lifespan's state
    assert lifespan_state["state"] == {"counter": 0, "shared": shared}  # the lifespan's own dict is untouched


def test_no_state_in_scope_when_lifespan_is_off() -> None:
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])
        assert "state" not in scope
        await apps.hello(scope, receive, send)

    with serve(app, lifespan="off") as srv:
        assert get(srv.port)[0] == 200
    assert called == ["http"]  # the app never saw a lifespan scope


# --- startup failures ----------------------------------------------------------------------


def test_startup_failed_message_exits_3_and_logs_it(errors: pytest.LogCaptureFixture) -> None:
    app = lifespan_app(on_startup=lambda scope: {"type": "lifespan.startup.failed", "message": "no database"})
    status, _ = run_until_exit(app, lifespan="on")
    assert status == STARTUP_FAILURE == 3
    assert any("Application startup failed" in m and "no database" in m for m in messages(errors)), messages(errors)


def test_startup_failed_message_exits_3_in_auto_mode_too() -> None:
    app = lifespan_app(on_startup=lambda scope: {"type": "lifespan.startup.failed", "message": "nope"})
    status, _ = run_until_exit(app, lifespan="auto")
    assert status == 3


def test_startup_exception_with_lifespan_on_exits_3(errors: pytest.LogCaptureFixture) -> None:
    def startup(scope: Any) -> None:
        raise RuntimeError("cannot start")

    status, _ = run_until_exit(lifespan_app(on_startup=startup), lifespan="on")
    assert status == 3
    assert any("cannot start" in m for m in messages(errors)), messages(errors)


def test_startup_exception_with_lifespan_auto_serves_without_lifespan(errors: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] != "http":
            raise ValueError("I only speak http")
        assert "state" not in scope
        await apps.hello(scope, receive, send)

    with serve(app, lifespan="auto") as srv:
        status, _, body = get(srv.port)
        assert (status, body) == (200, b"Hello, world!")
    assert srv.exit_code == 0
    assert seen == ["lifespan", "http"]  # lifespan not tried again at shutdown
    assert not messages(errors), messages(errors)  # quietly skipped: no ERROR
    assert any("unsupported" in m for m in messages(errors, logging.INFO))


def test_startup_returning_without_answer_with_lifespan_on_exits_3() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            return
        await apps.hello(scope, receive, send)

    status, _ = run_until_exit(app, lifespan="on")
    assert status == 3


def test_startup_timeout_exits_3(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await asyncio.sleep(30)  # never answers (cancelled by the server)
        await apps.hello(scope, receive, send)

    status, elapsed = run_until_exit(app, lifespan="on", timeout_lifespan=0.5)
    assert status == 3
    assert elapsed < 5, elapsed
    assert any("timed out" in m for m in messages(errors)), messages(errors)


def test_requests_wait_for_startup_to_complete() -> None:
    """The socket is bound before startup (a busy port fails fast), but no request
    reaches the app until lifespan startup has completed."""
    gate = threading.Event()
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            order.append("startup-begin")
            for _ in range(250):  # at most 5 s
                if gate.is_set():
                    break
                await asyncio.sleep(0.02)
            order.append("startup-complete")
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        order.append("request")
        await apps.hello(scope, receive, send)

    loop = asyncio.new_event_loop()
    server = Server(Config(app=app, port=0, lifespan="on", loop="asyncio", log_level="warning", access_log=False))
    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("exit", loop.run_until_complete(server.serve(install_signal_handlers=False))),
        daemon=True,
    )
    thread.start()
    sock = None
    try:
        deadline = time.monotonic() + 5
        while server.port is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.port is not None
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(GET)
        time.sleep(0.3)
        assert order == ["startup-begin"]  # the request waits in the backlog
        gate.set()
        status, _, body, _ = read_response(sock)
        assert (status, body) == (200, b"Hello, world!")
        assert order == ["startup-begin", "startup-complete", "request"]
    finally:
        gate.set()
        if sock is not None:
            sock.close()
        loop.call_soon_threadsafe(server.shutdown)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
    assert not thread.is_alive()
    assert result["exit"] == 0


# --- shutdown ------------------------------------------------------------------------------


def test_shutdown_runs_after_in_flight_request_completes() -> None:
    events: list[str] = []
    started = threading.Event()
    release = threading.Event()

    async def http(scope: Any, receive: Any, send: Any) -> None:
        events.append("request-start")
        started.set()
        for _ in range(250):  # at most 5 s
            if release.is_set():
                break
            await asyncio.sleep(0.02)
        await apps.hello(scope, receive, send)
        events.append("request-end")

    with serve(lifespan_app(http=http, events=events), lifespan="on") as srv:
        sock = srv.connect()
        try:
            sock.sendall(GET)
            assert started.wait(5)
            srv.call(srv.server.shutdown)
            time.sleep(0.4)
            assert "lifespan.shutdown" not in events  # still draining
            with pytest.raises(OSError):  # no longer accepting
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
            release.set()
            status, headers, body, _ = read_response(sock)
            assert (status, body) == (200, b"Hello, world!")
            assert headers.get(b"connection") == b"close"  # in-flight responses close the connection
        finally:
            release.set()
            sock.close()
        srv.thread.join(10)
        assert not srv.thread.is_alive()
    assert srv.exit_code == 0
    assert events == ["lifespan.startup", "request-start", "request-end", "lifespan.shutdown"]


def test_shutdown_closes_idle_keep_alive_connections_then_runs_lifespan_shutdown() -> None:
    events: list[str] = []
    with serve(lifespan_app(events=events), lifespan="on") as srv:
        sock = srv.connect()
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        srv.call(srv.server.shutdown)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # the idle connection is closed promptly
        sock.close()
        srv.thread.join(10)
    assert srv.exit_code == 0
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_shutdown_answers_a_just_accepted_connection_s_first_request() -> None:
    # A client that connected a moment before the shutdown and is sending its first
    # request is answered (then closed), not cut off: it could not tell that from a
    # failure. One that sends nothing is closed after SHUTDOWN_HEAD_GRACE.
    from heron.transport.http1 import SHUTDOWN_HEAD_GRACE

    events: list[str] = []
    with serve(lifespan_app(events=events), lifespan="on") as srv:
        fresh, silent, partial = srv.connect(), srv.connect(), srv.connect()
        try:
            partial.sendall(GET[:10])
            time.sleep(0.1)  # all three accepted
            srv.call(srv.server.shutdown)
            time.sleep(0.1)
            fresh.sendall(GET)
            partial.sendall(GET[10:])
            for sock in (fresh, partial):
                status, headers, body, _ = read_response(sock)
                assert (status, body) == (200, b"Hello, world!")
                assert headers.get(b"connection") == b"close"
            silent.settimeout(SHUTDOWN_HEAD_GRACE + 5)
            started = time.monotonic()
            assert silent.recv(100) == b""
            assert time.monotonic() - started < SHUTDOWN_HEAD_GRACE + 3
        finally:
            for sock in (fresh, silent, partial):
                sock.close()
        srv.thread.join(10)
    assert srv.exit_code == 0
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_shutdown_failed_and_shutdown_exception_still_exit_0(errors: pytest.LogCaptureFixture) -> None:
    app = lifespan_app(on_shutdown=lambda scope: {"type": "lifespan.shutdown.failed", "message": "flush failed"})
    with serve(app, lifespan="on") as srv:
        assert get(srv.port)[0] == 200
    assert srv.exit_code == 0
    assert any("flush failed" in m for m in messages(errors)), messages(errors)

    def shutdown(scope: Any) -> None:
        raise RuntimeError("shutdown exploded")

    with serve(lifespan_app(on_shutdown=shutdown), lifespan="on") as srv:
        pass
    assert srv.exit_code == 0
    assert any("Exception in 'lifespan' protocol" in m for m in messages(errors)), messages(errors)


def test_shutdown_timeout_does_not_hang_the_server(errors: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await asyncio.sleep(30)  # never answers shutdown
        await apps.hello(scope, receive, send)

    start = time.monotonic()
    with serve(app, lifespan="on", timeout_lifespan=0.5) as srv:
        pass
    assert srv.exit_code == 0
    assert time.monotonic() - start < 8
    assert any("shutdown timed out" in m for m in messages(errors)), messages(errors)


STARLETTE_FAILING_STARTUP = """
import contextlib
from starlette.applications import Starlette

@contextlib.asynccontextmanager
async def lifespan(app):
    raise RuntimeError("database unreachable")
    yield

app = Starlette(lifespan=lifespan)
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_startup_prints_its_traceback_once(tmp_path: Any, workers: int) -> None:
    """Starlette sends lifespan.startup.failed with the traceback as its message, then
    raises it again; with several workers the first one's failure stops the start."""
    import subprocess
    import sys

    (tmp_path / "failing_app.py").write_text(STARLETTE_FAILING_STARTUP)
    result = subprocess.run(
        [sys.executable, "-m", "heron", "failing_app:app", "--port", "0", "--workers", str(workers)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == STARTUP_FAILURE, result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr
    assert result.stderr.count("RuntimeError: database unreachable") == 1, result.stderr
    assert "Application startup failed" in result.stderr
