"""Plain ASGI apps used by the benchmark, identical for every server.

No framework: each app is a bare ASGI callable so that the numbers measure the
server, not a framework. Every app answers the lifespan protocol (startup and
shutdown complete) and so also works on servers that never send lifespan.

    hello    200 text/plain, 13-byte body "Hello, world!", with content-length
    big      200, 64 KiB body, with content-length
    upload   reads the whole request body, answers its length as text
    echo     reads the whole request body, sends it back with content-length
    stream   200, 100 chunks of 1 KiB sent with more_body=True (chunked)
    ws_echo  WebSocket echo (text and binary)
    sse      200 text/event-stream, SSE_EVENTS events of 50 bytes (?events=N: N), one per
             body message, sent back to back (the app awaits only send)
    sse_tick the same, yielding to the event loop after each event, as an app whose
             tokens come from elsewhere does: every event is a socket write of its own
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HELLO_BODY = b"Hello, world!"
BIG_BODY = b"x" * (64 * 1024)
CHUNK = b"y" * 1024
N_CHUNKS = 100

_HELLO_HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(HELLO_BODY)).encode()),
]
_BIG_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(BIG_BODY)).encode()),
]
_STREAM_HEADERS = [(b"content-type", b"application/octet-stream")]

# One LLM-token-sized server-sent event (50 bytes with its framing). The count is
# fixed, not endless: an endless loop on a server whose send() returns without
# yielding once the client is gone (uvicorn's does) would never end.
SSE_EVENT = b'data: {"choices":[{"delta":{"content":" the"}}]}\n\n'
SSE_EVENTS = 1000
SSE_EVENTS_MAX = 100_000  # the most ?events=N asks for
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _drain(receive: Receive) -> int:
    """Read the whole request body; return its length."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return total
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total


async def _answer(send: Send, body: bytes, content_type: bytes) -> None:
    """200 with ``body``, its content-type and content-length."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": _HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO_BODY})


async def big(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": _BIG_HEADERS})
    await send({"type": "http.response.body", "body": BIG_BODY})


async def upload(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await _answer(send, str(await _drain(receive)).encode(), b"text/plain")


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    pieces = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        pieces.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await _answer(send, b"".join(pieces), b"application/octet-stream")


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
    for _ in range(N_CHUNKS):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _sse_count(scope: Scope) -> int:
    """SSE_EVENTS, or N from a query string "events=N" (bench/sse_client.py opens its
    connections with one-event streams)."""
    query = scope.get("query_string", b"")
    if query.startswith(b"events=") and query[7:].isdigit():
        return min(int(query[7:]), SSE_EVENTS_MAX)
    return SSE_EVENTS


async def sse(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    # No sleep between events: each waits only for the server's send (its backpressure),
    # so the rate is the server's cost per event.
    for _ in range(_sse_count(scope)):
        await send({"type": "http.response.body", "body": SSE_EVENT, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sse_tick(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    # One loop turn per event (no timer): a server that gathers a turn's writes into one
    # (heron) writes each event on its own here, as it would under a real token stream.
    for _ in range(_sse_count(scope)):
        await send({"type": "http.response.body", "body": SSE_EVENT, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def ws_echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] == "http":
        # Plain HTTP on the WebSocket app: answer like hello (readiness probe).
        return await hello(scope, receive, send)
    assert scope["type"] == "websocket"
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text", "")})
        elif kind == "websocket.disconnect":
            return
