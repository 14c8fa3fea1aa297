"""The app the hostile clients attack (bench/hostile.py, tests/hostile/).

Plain ASGI, identical for every server:

    GET  /ok       200 "ok": the normal client whose latency is measured
    ANY  /hold     does not read the request body for HOLD seconds, then answers 200
    ANY  /read     reads the whole body, answers its length
    ANY  /slow     answers 200 after 0.5 s, body unread
    WS   /hold     accepts and never calls receive() for HOLD seconds, then closes
    WS   (other)   echo
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bench.apps import _lifespan

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HOLD = 60.0


async def _answer(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_all(receive: Receive) -> int:
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return -1
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if path == "/hold":
            await asyncio.sleep(HOLD)
            await send({"type": "websocket.close", "code": 1000})
            return
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            reply = {"type": "websocket.send"}
            reply.update({k: v for k, v in message.items() if k in ("bytes", "text") and v is not None})
            await send(reply)
    if path == "/hold":
        await asyncio.sleep(HOLD)
        await _answer(send, b"held")
    elif path == "/read":
        total = await _read_all(receive)
        if total >= 0:
            await _answer(send, str(total).encode())
    elif path == "/slow":
        await asyncio.sleep(0.5)
        await _answer(send, b"slow")
    else:
        await _answer(send, b"ok")
