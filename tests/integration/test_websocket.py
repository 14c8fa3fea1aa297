"""WebSocket (RFC 6455 over HTTP/1.1) through real sockets on 127.0.0.1.

Clients: the ``websockets`` asyncio client, ``aiohttp``, raw sockets with
hand-built frames (for hostile input, keepalive, flow control and bad
handshakes), Starlette, FastAPI and Django Channels apps, and a headless
Chromium page.

The apps run in the server's thread; they report to the test through a
thread-safe :class:`Events` queue, so every assertion about what the app saw
is made in the test thread with a bounded wait.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect  # module level: FastAPI resolves annotations here
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from ..conftest import RunningServer, chromium_command, need_program, read_response, serve
from ..rawclients import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWS,
    close_payload,
    handshake_request,
)

pytestmark = pytest.mark.timeout(40)

WAIT = 5.0

#: heron's default loop is uvloop; serve() defaults to asyncio. Transport behaviour runs on both.
LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


# --- helpers -------------------------------------------------------------------------------------


class Events:
    """What apps (in the server thread) report to the test thread."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.seen: list[tuple[Any, ...]] = []

    def put(self, *item: Any) -> None:
        self.q.put(item)

    def get(self, kind: str, timeout: float = WAIT) -> tuple[Any, ...]:
        """The next event named ``kind`` (earlier events of other kinds are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        for item in self.seen:
            if item[0] == kind:
                self.seen.remove(item)
                return item
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the app did not report {kind!r} within {timeout}s (saw {self.seen})")
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if item[0] == kind:
                return item
            self.seen.append(item)

    def all(self, settle: float = 0.0) -> list[tuple[Any, ...]]:
        if settle:
            time.sleep(settle)
        items = list(self.seen)
        self.seen.clear()
        while True:
            try:
                items.append(self.q.get_nowait())
            except queue.Empty:
                return items


def arun(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def ws_url(srv: RunningServer, path: str = "/") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def client(srv: RunningServer, path: str = "/", **kwargs: Any) -> Any:
    kwargs.setdefault("open_timeout", WAIT)
    kwargs.setdefault("close_timeout", WAIT)
    kwargs.setdefault("ping_interval", None)
    return ws_connect(ws_url(srv, path), **kwargs)


def echo_app(events: Events | None = None) -> Callable[..., Awaitable[None]]:
    """Accept, echo every message, report the disconnect."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if events is not None:
                    events.put("disconnect", message.get("code"), message.get("reason", ""))
                return
            if events is not None:
                events.put("message", message.get("text"), message.get("bytes"))
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    return app


def server_protocols(srv: RunningServer) -> list[Any]:
    """The server's open connection protocols, read in the server's own loop."""

    async def peek() -> list[Any]:
        return list(srv.server._ctx.connections)  # type: ignore[union-attr]

    return asyncio.run_coroutine_threadsafe(peek(), srv.loop).result(WAIT)


# --- websockets client ---------------------------------------------------------------------------


@LOOPS
def test_echo_text_and_bytes(loop: str) -> None:
    events = Events()
    with serve(echo_app(events), loop=loop) as srv:

        async def talk() -> None:
            async with client(srv, "/echo", compression=None) as ws:
                await ws.send("hello ☃")
                assert await ws.recv() == "hello ☃"
                await ws.send(b"\x00\xff\x80binary")
                reply = await ws.recv()
                assert reply == b"\x00\xff\x80binary" and isinstance(reply, bytes)
                big = os.urandom(300_000)  # several reads, a 64-bit length header
                await ws.send(big)
                assert await ws.recv() == big
                await ws.send("")
                assert await ws.recv() == ""

        arun(talk())
        assert events.get("message")[1:] == ("hello ☃", None)
        assert events.get("message")[1:] == (None, b"\x00\xff\x80binary")
        assert events.get("disconnect")[1] == 1000


def test_permessage_deflate_negotiated_and_working() -> None:
    with serve(echo_app()) as srv:

        async def talk() -> str:
            async with client(srv, compression="deflate") as ws:
                text = "compress me " * 20_000  # 240 kB, compresses well
                await ws.send(text)
                assert await ws.recv() == text
                for i in range(20):  # context takeover across messages
                    await ws.send(f"message {i} " * 50)
                    assert await ws.recv() == f"message {i} " * 50
                await ws.send(os.urandom(5000))  # incompressible bytes too
                await ws.recv()
                return ws.response.headers.get("Sec-WebSocket-Extensions", "")

        header = arun(talk())
    assert header.startswith("permessage-deflate")


def test_permessage_deflate_on_the_wire() -> None:
    """A raw client offering permessage-deflate gets compressed frames (RSV1) that inflate correctly."""
    text = "a" * 10_000

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": text})
        await send({"type": "websocket.close"})

    with serve(app) as srv:
        raw, headers = RawWS.open(srv, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert headers[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
        fin, rsv, opcode, payload = raw.read_frame()
        assert fin and opcode == OP_TEXT and rsv == 0x40
        assert len(payload) < 200
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode() == text
        assert raw.read_close()[0] == 1000
        raw.close()


def test_permessage_deflate_disabled_by_option() -> None:
    with serve(echo_app(), ws_per_message_deflate=False) as srv:

        async def talk() -> tuple[Any, list[Any]]:
            async with client(srv, compression="deflate") as ws:
                await ws.send("x" * 1000)
                assert await ws.recv() == "x" * 1000
                return ws.response.headers.get("Sec-WebSocket-Extensions"), ws.protocol.extensions

        header, extensions = arun(talk())
        assert header is None and extensions == []
        # and on the wire: no RSV1 on what the server sends
        raw, headers = RawWS.open(srv, extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert b"sec-websocket-extensions" not in headers
        raw.send_frame(OP_TEXT, b"y" * 500)
        assert raw.read_frame()[1:] == (0, OP_TEXT, b"y" * 500)
        raw.close()


def test_subprotocol_selected_by_the_app() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        events.put("offered", scope["subprotocols"])
        await send({"type": "websocket.accept", "subprotocol": "b"})
        await send({"type": "websocket.close"})

    with serve(app) as srv:

        async def talk() -> str | None:
            async with client(srv, subprotocols=["a", "b"]) as ws:
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()
                assert ws.response.headers["Sec-WebSocket-Protocol"] == "b"
                return ws.subprotocol

        assert arun(talk()) == "b"
        assert events.get("offered")[1] == ["a", "b"]


def test_unoffered_subprotocol_is_an_app_error_and_a_500() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept", "subprotocol": "c"})
        except Exception as exc:
            events.put("error", type(exc).__name__, str(exc))
            raise
        events.put("accepted")

    with serve(app) as srv:

        async def talk() -> None:
            with pytest.raises(InvalidStatus) as info:
                async with client(srv, subprotocols=["a", "b"]):
                    pass
            assert info.value.response.status_code == 500

        arun(talk())
        name, message = events.get("error")[1:]
        assert name == "ValueError" and "'c'" in message
        assert all(e[0] != "accepted" for e in events.all(0.2))


def test_accept_with_extra_headers() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "headers": [(b"x-custom", b"yes"), (b"set-cookie", b"session=1; HttpOnly")],
            }
        )
        await send({"type": "websocket.send", "text": "ok"})

    with serve(app) as srv:

        async def talk() -> Any:
            async with client(srv) as ws:
                assert await ws.recv() == "ok"
                return ws.response.headers

        headers = arun(talk())
    assert headers["X-Custom"] == "yes"
    assert headers["Set-Cookie"] == "session=1; HttpOnly"
    assert headers["Upgrade"].lower() == "websocket"


def test_scope_contents_with_lifespan_state() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = "hello"
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        events.put("scope", {k: v for k, v in scope.items() if k != "state"}, dict(scope["state"]))
        scope["state"]["mutated"] = True  # a per-connection copy: the next one must not see it
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "chat"})
        await send({"type": "websocket.close"})

    with serve(app, lifespan="on") as srv:

        async def talk(path: str) -> None:
            async with client(srv, path, subprotocols=["chat", "superchat"], additional_headers={"X-Test": "1"}) as ws:
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()

        arun(talk("/caf%C3%A9/x?a=1&b=%20"))
        scope, state = events.get("scope")[1:]
        arun(talk("/second"))
        _, state2 = events.get("scope")[1:]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"a=1&b=%20"
    assert scope["root_path"] == ""
    assert (b"x-test", b"1") in [tuple(h) for h in scope["headers"]]
    assert (b"host", b"127.0.0.1:%d" % srv.port) in [tuple(h) for h in scope["headers"]]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["client"][0] == "127.0.0.1"
    assert tuple(scope["server"]) == ("127.0.0.1", srv.port)
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope
    assert state == {"greeting": "hello"}
    assert state2 == {"greeting": "hello"}


def test_close_by_app_with_code_and_reason() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "app reason"})
        await asyncio.sleep(0.5)  # the closing handshake and the TCP close are over by now
        first = await receive()
        events.put("first", first)
        try:
            second = await asyncio.wait_for(receive(), 0.3)
        except asyncio.TimeoutError:
            second = None
        events.put("second", second)
        await send({"type": "websocket.close", "code": 4003})  # a no-op now, must not raise
        events.put("done")

    with serve(app) as srv:

        async def talk() -> tuple[int, str]:
            async with client(srv) as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code, info.value.rcvd.reason

        assert arun(talk()) == (4000, "app reason")
        first = events.get("first")[1]
        assert first == {"type": "websocket.disconnect", "code": 4000, "reason": "app reason"}
        second = events.get("second")[1]
        # "once": a later receive() never brings another, different event
        assert second is None or second == first
        events.get("done")


def test_close_by_client_with_code_and_reason() -> None:
    events = Events()
    with serve(echo_app(events)) as srv:

        async def talk() -> Any:
            async with client(srv) as ws:
                await ws.send("one")
                assert await ws.recv() == "one"
                await ws.close(4001, "bye")
                return ws.close_code

        assert arun(talk()) == 4001  # the server echoed the code
        assert events.get("disconnect")[1:] == (4001, "bye")
        assert not [e for e in events.all(0.2) if e[0] == "disconnect"], "a second disconnect"


def test_close_frame_without_code_is_1005_for_the_app() -> None:
    events = Events()
    with serve(echo_app(events)) as srv:
        raw, _ = RawWS.open(srv)
        raw.send_frame(OP_CLOSE, b"")
        code, _, _ = raw.read_close()
        assert code == 1000  # 1005 may not go on the wire: the reply says 1000
        assert raw.closed_by_server()
        raw.close()
        assert events.get("disconnect")[1:] == (1005, "")


def test_app_close_with_an_unsendable_code_is_an_app_error() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for code, reason in ((1005, ""), (999, ""), (1000, "x" * 124)):
            try:
                await send({"type": "websocket.close", "code": code, "reason": reason})
            except ValueError:
                events.put("refused", code)
        await send({"type": "websocket.send", "text": "still open"})
        await send({"type": "websocket.close", "code": 4000})

    with serve(app) as srv:
        raw, _ = RawWS.open(srv)
        assert raw.read_frame()[2:] == (OP_TEXT, b"still open")
        assert raw.read_close()[0] == 4000
        raw.close()
        assert [e[1] for e in events.all(0.1)] == [1005, 999, 1000]


@pytest.mark.parametrize("how", ["fin", "reset"])
@LOOPS
def test_client_vanishes_without_close_frame(how: str, loop: str) -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        events.put("disconnect", message)
        started = time.monotonic()
        try:
            for _ in range(1000):  # never hangs: the first send after the disconnect raises
                await send({"type": "websocket.send", "text": "anyone?"})
                await asyncio.sleep(0)
        except Exception as exc:
            events.put("send_error", exc, time.monotonic() - started)
        else:
            events.put("send_ok")
        await send({"type": "websocket.close"})  # no-op
        events.put("done")

    with serve(app, loop=loop) as srv:
        raw, _ = RawWS.open(srv)
        if how == "reset":
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        message = events.get("disconnect")[1]
        assert message["type"] == "websocket.disconnect" and message["code"] == 1006
        exc, elapsed = events.get("send_error")[1:]
        assert isinstance(exc, OSError), repr(exc)
        assert elapsed < 1.0
        events.get("done")


def test_send_after_disconnect_raises_oserror_without_hanging() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        events.put("disconnect", await receive())
        try:
            await asyncio.wait_for(send({"type": "websocket.send", "bytes": b"late"}), 2.0)
        except asyncio.TimeoutError:
            events.put("outcome", "hung", None)
        except BaseException as exc:
            events.put("outcome", "raised", exc)
        else:
            events.put("outcome", "no error", None)

    with serve(app) as srv:

        async def talk() -> None:
            async with client(srv) as ws:
                await ws.close(1000)

        arun(talk())
        assert events.get("disconnect")[1]["code"] == 1000
        kind, exc = events.get("outcome", timeout=3)[1:]
        assert kind == "raised", kind
        assert isinstance(exc, OSError), repr(exc)


def test_app_exception_after_accept_is_close_1011() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "about to fail"})
        raise RuntimeError("boom")

    with serve(app) as srv:

        async def talk() -> int:
            async with client(srv) as ws:
                assert await ws.recv() == "about to fail"
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code

        assert arun(talk()) == 1011


@pytest.mark.parametrize(
    "behaviour, status",
    [("raise", 500), ("close", 403), ("return", 500)],
)
def test_handshake_refused_before_accept(behaviour: str, status: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if behaviour == "raise":
            raise RuntimeError("no accept for you")
        if behaviour == "close":
            await send({"type": "websocket.close"})

    with serve(app) as srv:

        async def talk() -> int:
            with pytest.raises(InvalidStatus) as info:
                async with client(srv):
                    pass
            return info.value.response.status_code

        assert arun(talk()) == status


def test_denial_response_extension() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b'Bearer realm="heron"')],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no token, ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"no entry"})

    with serve(app) as srv:

        async def talk() -> Any:
            with pytest.raises(InvalidStatus) as info:
                async with client(srv):
                    pass
            return info.value.response

        response = arun(talk())
        assert response.status_code == 401
        assert response.body == b"no token, no entry"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="heron"'
        # the same over a raw socket: a complete HTTP response, then the connection is closed
        sock = srv.connect()
        sock.sendall(handshake_request())
        status, headers, body, rest = read_response(sock)
        assert (status, body, rest) == (401, b"no token, no entry", b"")
        assert headers[b"connection"] == b"close"
        assert sock.recv(10) == b""
        sock.close()


@pytest.mark.parametrize("ending", ["return", "raise", "bad-header"])
def test_denial_that_never_writes_its_head_is_a_500(ending: str) -> None:
    """Like an HTTP response: a denial head not yet on the wire becomes a 500 when the app fails or returns."""
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"bad header", b"x")] if ending == "bad-header" else []
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        if ending == "raise":
            raise RuntimeError("failed before the denial body")
        if ending == "bad-header":
            try:
                await send({"type": "websocket.http.response.body", "body": b"nope"})
            except Exception as exc:
                events.put("error", exc)
                raise

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(handshake_request())
        status, _, body, _ = read_response(sock)
        assert (status, body) == (500, b"Internal Server Error\n")
        sock.close()
    if ending == "bad-header":
        assert "bad header" in str(events.get("error")[1])


def test_denial_status_must_be_a_final_status() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "websocket.http.response.start", "status": 101, "headers": []})
        except Exception as exc:
            events.put("error", exc)
        await send({"type": "websocket.close"})

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(handshake_request())
        status, _, _, _ = read_response(sock)
        sock.close()
    assert isinstance(events.get("error")[1], ValueError)
    assert status == 403


def test_app_returning_while_open_closes_1000() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "bye"})

    with serve(app) as srv:

        async def talk() -> Any:
            async with client(srv) as ws:
                assert await ws.recv() == "bye"
                with pytest.raises(ConnectionClosedOK) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code

        assert arun(talk()) == 1000


# --- aiohttp client --------------------------------------------------------------------------------


def test_aiohttp_echo_text_and_bytes() -> None:
    with serve(echo_app()) as srv:

        async def talk() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url(srv, "/aio")) as ws:
                    await ws.send_str("hello aiohttp")
                    msg = await ws.receive(timeout=WAIT)
                    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "hello aiohttp")
                    await ws.send_bytes(b"\x01\x02\x03")
                    msg = await ws.receive(timeout=WAIT)
                    assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x01\x02\x03")
                    await ws.close()
                    assert ws.close_code == 1000

        arun(talk())


def test_aiohttp_receives_server_close_code() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4002, "reason": "done here"})

    with serve(app) as srv:

        async def talk() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url(srv)) as ws:
                    msg = await ws.receive(timeout=WAIT)
                    assert msg.type == aiohttp.WSMsgType.CLOSE
                    assert (msg.data, msg.extra) == (4002, "done here")
                    assert ws.close_code == 4002

        arun(talk())


def test_aiohttp_ping_pong_both_ways() -> None:
    with serve(echo_app(), ws_ping_interval=0.3, ws_ping_timeout=2.0) as srv:

        async def talk() -> None:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url(srv), autoping=False) as ws:
                    await ws.ping(b"client-ping")
                    msg = await ws.receive(timeout=WAIT)
                    assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"client-ping")
                    # the server pings us when idle; we answer by hand
                    msg = await ws.receive(timeout=WAIT)
                    assert msg.type == aiohttp.WSMsgType.PING
                    await ws.pong(msg.data)
                    await ws.send_str("still alive")
                    msg = await ws.receive(timeout=WAIT)
                    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "still alive")

        arun(talk())


# --- keepalive --------------------------------------------------------------------------------------


@LOOPS
def test_keepalive_closes_1011_when_pings_go_unanswered(loop: str) -> None:
    events = Events()
    with serve(echo_app(events), loop=loop, ws_ping_interval=0.5, ws_ping_timeout=0.5) as srv:
        raw, _ = RawWS.open(srv)
        started = time.monotonic()
        fin, _, opcode, _ = raw.read_frame(timeout=3.0)
        assert (fin, opcode) == (True, OP_PING)
        code, reason, before = raw.read_close(timeout=3.0)
        elapsed = time.monotonic() - started
        assert code == 1011 and before == []
        assert elapsed < 3.0
        assert raw.closed_by_server()
        raw.close()
        assert events.get("disconnect")[1] == 1011


def test_keepalive_keeps_an_answering_client() -> None:
    with serve(echo_app(), ws_ping_interval=0.5, ws_ping_timeout=0.5) as srv:
        raw, _ = RawWS.open(srv)
        pings = 0
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline:
            try:
                _, _, opcode, payload = raw.read_frame(timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            assert opcode == OP_PING, (opcode, payload)
            pings += 1
            raw.send_frame(OP_PONG, payload)
        assert pings >= 2
        raw.send_frame(OP_TEXT, b"still here")
        frame = raw.read_frame()
        while frame[2] == OP_PING:
            raw.send_frame(OP_PONG, frame[3])
            frame = raw.read_frame()
        assert frame[2:] == (OP_TEXT, b"still here")
        raw.close()


# --- limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_max_size_closes_1009(compression: str | None) -> None:
    events = Events()
    with serve(echo_app(events), ws_max_size=1024) as srv:

        async def talk() -> int:
            async with client(srv, compression=compression) as ws:
                await ws.send("y" * 1024)  # exactly the limit is fine
                assert await ws.recv() == "y" * 1024
                await ws.send("x" * 2048)  # compressed, this is a few bytes on the wire
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code

        assert arun(talk()) == 1009
        assert events.get("disconnect")[1] == 1009
        assert all(e[0] != "message" or e[1] != "x" * 2048 for e in events.all(0.1))


@LOOPS
def test_max_queue_applies_backpressure_and_loses_nothing(loop: str) -> None:
    events = Events()
    go = threading.Event()
    count, size = 1000, 8192

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for _ in range(500):  # does not receive until the test says so (at most 5 s)
            if go.is_set():
                break
            await asyncio.sleep(0.01)
        received = 0
        in_order = True
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                events.put("result", received, in_order, message["code"])
                return
            data = message["bytes"]
            in_order = in_order and len(data) == size and int.from_bytes(data[:4], "big") == received
            received += 1

    with serve(app, loop=loop, ws_max_queue=2) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # small enough that the client's kernel absorbs little, big enough that a server
        # without backpressure takes all 8 MB within the second (measured: ~0.3 s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.connect(("127.0.0.1", srv.port))
        raw, _ = RawWS.open(srv, sock=sock)
        payload = b"".join(RawWS.frame(OP_BINARY, i.to_bytes(4, "big") + bytes(size - 4)) for i in range(count))
        view = memoryview(payload)
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and sent < len(payload):
            try:
                sent += sock.send(view[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.005)
        assert sent < 4 * 1024 * 1024, f"{sent} bytes accepted while the app was not reading"
        assert sent < len(payload)
        go.set()
        # a tiny send buffer makes loopback TCP crawl (delayed ACKs): enlarge it for the rest
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(view[sent:])
        raw.send_frame(OP_CLOSE, close_payload(1000))
        code, _, before = raw.read_close(timeout=10)
        assert code == 1000 and before == []
        received, in_order, disconnect_code = events.get("result", timeout=10)[1:]
        assert received == count
        assert in_order
        assert disconnect_code == 1000
        raw.close()


# --- hostile input ---------------------------------------------------------------------------------


def _len64_high_bit() -> bytes:
    return struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + os.urandom(4)


@pytest.mark.parametrize(
    "data, code",
    [
        pytest.param(RawWS.frame(OP_TEXT, b"hi", mask=False), 1002, id="unmasked"),
        pytest.param(RawWS.frame(OP_TEXT, b"hi", rsv=0x20), 1002, id="rsv2"),
        pytest.param(RawWS.frame(OP_TEXT, b"hi", rsv=0x40), 1002, id="rsv1-without-deflate"),
        pytest.param(RawWS.frame(0x3, b"hi"), 1002, id="opcode-3"),
        pytest.param(RawWS.frame(0xB, b""), 1002, id="opcode-11"),
        pytest.param(RawWS.frame(OP_TEXT, b"ok \xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            RawWS.frame(OP_TEXT, b"\xe2\x82", fin=False) + RawWS.frame(OP_CONT, b"\x28"), 1007, id="invalid-utf8-split"
        ),
        pytest.param(RawWS.frame(OP_CLOSE, close_payload(999)), 1002, id="close-999"),
        pytest.param(RawWS.frame(OP_CLOSE, close_payload(1005)), 1002, id="close-1005"),
        pytest.param(RawWS.frame(OP_CLOSE, close_payload(1006)), 1002, id="close-1006"),
        pytest.param(RawWS.frame(OP_CLOSE, b"\x03"), 1002, id="close-1-byte"),
        pytest.param(RawWS.frame(OP_CLOSE, close_payload(1000) + b"\xff"), 1007, id="close-reason-invalid-utf8"),
        pytest.param(_len64_high_bit(), 1002, id="len64-high-bit"),
        pytest.param(RawWS.frame(OP_PING, b"p" * 126), 1002, id="ping-126-bytes"),
        pytest.param(RawWS.frame(OP_PING, b"p", fin=False), 1002, id="fragmented-ping"),
        pytest.param(RawWS.frame(OP_CONT, b"x"), 1002, id="lone-continuation"),
    ],
)
def test_hostile_frames_are_refused(data: bytes, code: int) -> None:
    events = Events()
    with serve(echo_app(events)) as srv:
        raw, _ = RawWS.open(srv)
        raw.send(data)
        got, _, before = raw.read_close()
        assert got == code and before == []
        assert raw.closed_by_server()
        raw.close()
        assert events.get("disconnect")[1] == code
        assert [e for e in events.all() if e[0] == "message"] == []


def test_fragmented_message_with_an_interleaved_ping() -> None:
    events = Events()
    with serve(echo_app(events)) as srv:
        raw, _ = RawWS.open(srv)
        text = "héllo wörld".encode()
        raw.send_frame(OP_TEXT, text[:2], fin=False)  # splits the é
        raw.send_frame(OP_PING, b"in between")
        raw.send_frame(OP_CONT, text[2:7], fin=False)
        raw.send_frame(OP_CONT, text[7:])
        assert raw.read_frame()[2:] == (OP_PONG, b"in between")
        assert raw.read_frame()[2:] == (OP_TEXT, text)
        raw.close()
        assert events.get("message")[1] == "héllo wörld"


def test_fragmented_message_over_max_size_is_1009() -> None:
    events = Events()
    with serve(echo_app(events), ws_max_size=1024) as srv:
        raw, _ = RawWS.open(srv)
        for _ in range(5):
            raw.send_frame(OP_BINARY if _ == 0 else OP_CONT, bytes(300), fin=False)
        code, _, before = raw.read_close()
        assert code == 1009 and before == []
        raw.close()
        assert events.get("disconnect")[1] == 1009


@LOOPS
@pytest.mark.parametrize("frames", [3, 40], ids=["small", "over-64KiB"])
def test_frames_sent_with_the_handshake_are_kept(frames: int, loop: str) -> None:
    """A client may pipeline frames behind its request: nothing is lost while the app decides."""
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.2)
        await send({"type": "websocket.accept"})
        count = 0
        while (await receive())["type"] == "websocket.receive":
            count += 1
        events.put("count", count)

    with serve(app, loop=loop) as srv:
        sock = srv.connect()
        data = b"".join(RawWS.frame(OP_BINARY, i.to_bytes(4, "big") + bytes(4000)) for i in range(frames))
        sock.sendall(handshake_request() + data + RawWS.frame(OP_CLOSE, close_payload(1000)))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        raw = RawWS(sock)
        assert raw.read_close()[0] == 1000
        raw.close()
        assert events.get("count")[1] == frames


@LOOPS
def test_timeout_write_drops_a_client_that_never_reads(loop: str) -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        started = time.monotonic()
        try:
            for _ in range(100):
                await send({"type": "websocket.send", "bytes": bytes(1 << 20)})
        except OSError as exc:
            events.put("send_error", exc, time.monotonic() - started)
        events.put("disconnect", await receive())

    with serve(app, loop=loop, timeout_write=1) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", srv.port))
        raw, _ = RawWS.open(srv, sock=sock)
        exc, elapsed = events.get("send_error")[1:]
        assert isinstance(exc, OSError)
        assert 0.9 < elapsed < 3.0
        assert events.get("disconnect")[1]["code"] == 1006
        raw.close()


@LOOPS
def test_client_that_never_reads_blocks_the_app(loop: str) -> None:
    events = Events()
    chunk = 1024 * 1024
    progress = [0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            for _ in range(50):
                await send({"type": "websocket.send", "bytes": bytes(chunk)})
                progress[0] += chunk
        except OSError as exc:
            events.put("send_error", exc)
            return
        events.put("all sent")

    with serve(app, loop=loop) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", srv.port))
        raw, _ = RawWS.open(srv, sock=sock)
        time.sleep(1.0)
        sent = progress[0]
        assert sent < 16 * chunk, f"the app sent {sent} bytes to a client that reads nothing"
        buffered = [p.transport.get_write_buffer_size() for p in server_protocols(srv)]
        assert buffered and max(buffered) <= 2 * chunk + 65536, buffered
        time.sleep(0.3)
        assert progress[0] == sent, "the app kept making progress"
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        exc = events.get("send_error")[1]
        assert isinstance(exc, OSError)
        assert progress[0] < 16 * chunk


@LOOPS
def test_client_vanishes_mid_message(loop: str) -> None:
    events = Events()
    with serve(echo_app(events), loop=loop) as srv:
        raw, _ = RawWS.open(srv)
        whole = RawWS.frame(OP_BINARY, bytes(100))
        raw.send(whole[: len(whole) // 2])
        time.sleep(0.1)
        raw.close()
        assert events.get("disconnect")[1] == 1006
        assert [e for e in events.all() if e[0] == "message"] == []


# --- bad handshakes ----------------------------------------------------------------------------------


def _raw_request(srv: RunningServer, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    sock = srv.connect()
    sock.sendall(request)
    status, headers, body, _ = read_response(sock)
    sock.close()
    return status, headers, body


def test_handshake_without_key_is_400() -> None:
    with serve(echo_app()) as srv:
        request = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, _ = _raw_request(srv, request)
        assert status == 400


def test_handshake_version_8_is_426_naming_13() -> None:
    with serve(echo_app()) as srv:
        request = handshake_request().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
        status, headers, _ = _raw_request(srv, request)
        assert status == 426
        assert headers[b"sec-websocket-version"] == b"13"


def test_handshake_with_post_is_400() -> None:
    with serve(echo_app()) as srv:
        status, _, _ = _raw_request(srv, handshake_request(method=b"POST"))
        assert status == 400


def test_ws_none_serves_upgrade_requests_as_http() -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.put("scope", scope["type"])
        assert scope["type"] == "http"
        body = b"plain http branch"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve(app, ws="none") as srv:
        status, headers, body = _raw_request(srv, handshake_request("/ws"))
        assert (status, body) == (200, b"plain http branch")
        assert b"sec-websocket-accept" not in headers
        assert events.get("scope")[1] == "http"


# --- graceful shutdown -------------------------------------------------------------------------------


@LOOPS
def test_shutdown_closes_1001_and_the_app_sees_it(loop: str) -> None:
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        while message["type"] == "websocket.receive":
            message = await receive()
        events.put("disconnect", message)
        await asyncio.sleep(0.2)  # the server waits for the app to finish
        events.put("app finished")

    with serve(app, loop=loop, timeout_graceful_shutdown=3) as srv:
        raw, _ = RawWS.open(srv)
        raw.send_frame(OP_TEXT, b"x")  # make sure the session is fully up
        time.sleep(0.1)
        started = time.monotonic()
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        code, reason, _ = raw.read_close()
        assert code == 1001
        raw.send_frame(OP_CLOSE, close_payload(1001))
        assert raw.closed_by_server()
        raw.close()
        stopper.join(10)
        assert not stopper.is_alive()
        elapsed = time.monotonic() - started
        items = events.all()
        kinds = [e[0] for e in items]
        assert kinds == ["disconnect", "app finished"], items
        assert items[0][1]["code"] == 1001
        assert elapsed < 4.0  # no close timeout was needed
    assert srv.exit_code == 0


def test_websocket_accepted_during_shutdown_is_closed_1001() -> None:
    """A handshake still pending when shutdown starts: once accepted it must be told to go away.

    (Refusing it, e.g. with 503, would do too.) It must not sit open until the
    graceful-shutdown timeout and then be cancelled without a close frame.
    """
    events = Events()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.4)  # shutdown starts while the app decides
        try:
            await send({"type": "websocket.accept"})
        except OSError:
            events.put("accept refused")
            return
        message = await receive()
        while message["type"] == "websocket.receive":
            message = await receive()
        events.put("disconnect", message)

    with serve(app, timeout_graceful_shutdown=3) as srv:
        sock = srv.connect()
        sock.sendall(handshake_request())
        time.sleep(0.1)
        started = time.monotonic()
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(1)
            assert data, "closed without an answer to the handshake"
            head += data
        if head.startswith(b"HTTP/1.1 101 "):
            raw = RawWS(sock)
            try:
                code, _, _ = raw.read_close(timeout=1.5)
            except TimeoutError:
                pytest.fail("accepted during shutdown, but no close 1001 within 1.5 s")
            assert code == 1001
            raw.send_frame(OP_CLOSE, close_payload(1001))
            assert events.get("disconnect", timeout=1)[1]["code"] == 1001
        stopper.join(5)
        sock.close()
        assert time.monotonic() - started < 2.5, "the server waited for the graceful-shutdown timeout"


# --- access log ----------------------------------------------------------------------------------------


class AccessRecords:
    def __init__(self) -> None:
        self.records: list[Any] = []
        import logging

        class _Collect(logging.Handler):
            def emit(inner, record: logging.LogRecord) -> None:
                self.records.append(record)

        self.logger = logging.getLogger("heron.access")
        self.handler = _Collect(logging.INFO)

    def __enter__(self) -> AccessRecords:
        import logging

        self.old = (self.logger.level, self.logger.disabled)
        self.logger.setLevel(logging.INFO)
        self.logger.disabled = False
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old[0])
        self.logger.disabled = self.old[1]

    def wait(self, n: int, timeout: float = WAIT) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.records) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        return list(self.records)


def test_access_log_line_per_session() -> None:
    with AccessRecords() as log, serve(echo_app(), access_log=True) as srv:

        async def talk() -> None:
            async with client(srv, "/chat?room=1", compression=None) as ws:
                await ws.send("x" * 1000)
                await ws.recv()
                await ws.close(4001, "bye")

        arun(talk())
        records = log.wait(1)
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.request_line == "WEBSOCKET /chat?room=1"
    assert record.status == 4001
    assert record.bytes_in >= 1000 and record.bytes >= 1000
    assert '"WEBSOCKET /chat?room=1" 4001' in record.getMessage()


def test_access_log_counts_frames_sent_with_the_handshake() -> None:
    with AccessRecords() as log, serve(echo_app(), access_log=True) as srv:
        frames = RawWS.frame(OP_BINARY, bytes(5000)) + RawWS.frame(OP_CLOSE, close_payload(1000))
        sock = srv.connect()
        sock.sendall(handshake_request() + frames)
        raw = RawWS(sock)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert raw.read_frame()[2] == OP_BINARY
        assert raw.read_close()[0] == 1000
        raw.close()
        records = log.wait(1)
    assert len(records) == 1
    assert records[0].bytes_in >= len(frames), records[0].getMessage()


@pytest.mark.parametrize("behaviour, status", [("close", 403), ("raise", 500), ("deny", 401)])
def test_access_log_line_for_a_refused_handshake(behaviour: str, status: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if behaviour == "close":
            await send({"type": "websocket.close"})
        elif behaviour == "raise":
            raise RuntimeError("refused by raising")
        else:
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"no"})

    with AccessRecords() as log, serve(app, access_log=True) as srv:
        sock = srv.connect()
        sock.sendall(handshake_request("/refused"))
        assert read_response(sock)[0] == status
        sock.close()
        records = log.wait(1, timeout=2)
    assert len(records) == 1, "no access-log line for a refused WebSocket handshake"
    assert records[0].status == status
    assert "/refused" in records[0].request_line


# --- frameworks ---------------------------------------------------------------------------------------


def test_starlette_websocket_route_echo() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text("starlette:" + text)

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    with serve(app) as srv:

        async def talk() -> None:
            async with client(srv, "/ws") as ws:
                for word in ("a", "b", "ü"):
                    await ws.send(word)
                    assert await ws.recv() == "starlette:" + word

        arun(talk())

        async def missing() -> int:
            with pytest.raises(InvalidStatus) as info:
                async with client(srv, "/nope"):
                    pass
            return info.value.response.status_code

        assert arun(missing()) == 403  # Starlette closes unknown routes before accept


def test_fastapi_websocket_with_path_param() -> None:
    events = Events()
    app = FastAPI()

    @app.websocket("/rooms/{room}")
    async def room(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"{room}:{text}")
        except WebSocketDisconnect as exc:
            events.put("disconnect", exc.code)

    with serve(app) as srv:

        async def talk() -> None:
            async with client(srv, "/rooms/lobby") as ws:
                await ws.send("hi")
                assert await ws.recv() == "lobby:hi"
                await ws.send("again")
                assert await ws.recv() == "lobby:again"

        arun(talk())
        assert events.get("disconnect")[1] == 1000


def _django_settings() -> None:
    from django.conf import settings

    if not settings.configured:
        # the same settings as test_frameworks.py, so either module may configure Django first
        settings.configure(
            DEBUG=False,
            SECRET_KEY="heron-test-not-secret",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF="tests.integration.test_frameworks",
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            DATABASES={},
            USE_TZ=True,
        )
    import django

    django.setup()


def test_django_channels_consumer_echo() -> None:
    _django_settings()
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.urls import path

    events = Events()

    class Echo(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            await self.accept()

        async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            name = self.scope["url_route"]["kwargs"]["name"]
            if text_data is not None:
                await self.send(text_data=f"channels {name}:{text_data}")
            else:
                await self.send(bytes_data=bytes_data)

        async def disconnect(self, code: int) -> None:
            events.put("disconnect", code)

    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/echo/<name>/", Echo.as_asgi())])})
    with serve(application) as srv:

        async def talk() -> None:
            async with client(srv, "/ws/echo/alice/") as ws:
                await ws.send("hi")
                assert await ws.recv() == "channels alice:hi"
                await ws.send(b"\x00\x01")
                assert await ws.recv() == b"\x00\x01"

        arun(talk())
        assert events.get("disconnect")[1] == 1000


# --- a real browser -------------------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><title>waiting</title></head><body>
<script>
const ws = new WebSocket("ws://127.0.0.1:%(port)d/ws");
ws.onopen = () => ws.send("hi");
ws.onmessage = (event) => {
  document.title = "echo:" + event.data;
  fetch("/result?msg=" + encodeURIComponent(event.data)).then(() => ws.close(1000));
};
ws.onerror = () => { document.title = "error"; fetch("/result?msg=ERROR"); };
</script>
<!-- heron answers this only once the WebSocket session is over, so the page's load (and
     --dump-dom) waits for the round trip; virtual time does not wait for WebSockets -->
<script src="/gate.js"></script>
</body></html>
"""


def test_headless_chromium_page_talks_to_heron() -> None:
    need_program("chromium", "chromium-browser")  # (skips before anything starts)
    events = Events()
    port_box: list[int] = []
    session_over: dict[str, asyncio.Event] = {}  # created in the server's loop

    def over() -> asyncio.Event:
        return session_over.setdefault("event", asyncio.Event())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    events.put("ws disconnect", message["code"])
                    over().set()
                    return
                events.put("ws got", message.get("text"))
                await send({"type": "websocket.send", "text": "echo " + message["text"]})
        assert scope["type"] == "http"
        status, body, ctype = 200, b"", b"text/plain"
        if scope["path"] == "/result":
            events.put("result", scope["query_string"])
            body = b"ok"
        elif scope["path"] == "/":
            body, ctype = (PAGE % {"port": port_box[0]}).encode(), b"text/html; charset=utf-8"
        elif scope["path"] == "/gate.js":
            try:
                await asyncio.wait_for(over().wait(), 15)
            except asyncio.TimeoutError:
                events.put("gate timeout")
            body, ctype = b"/* the WebSocket session is over */", b"text/javascript"
        else:
            status = 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    with serve(app) as srv, tempfile.TemporaryDirectory() as profile:
        port_box.append(srv.port)
        proc = subprocess.Popen(
            chromium_command(profile, "--dump-dom", srv.url + "/"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            dom, stderr = proc.communicate(timeout=25)
        except subprocess.TimeoutExpired:
            proc.kill()
            dom, stderr = proc.communicate()
        log = stderr.decode(errors="replace")[-2000:]
        assert events.get("ws got", timeout=1)[1] == "hi", log
        assert events.get("result", timeout=1)[1] == b"msg=echo%20hi", log
        assert events.get("ws disconnect", timeout=1)[1] == 1000  # the page closed normally
        assert b"<title>echo:echo hi</title>" in dom, dom[-2000:]
        assert all(e[0] != "gate timeout" for e in events.all())
