"""Small ASGI apps used by the integration tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def hello(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers the request body (read to the end) and a JSON summary of the scope in a header."""
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    info = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body)), (b"x-scope", json.dumps(info).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def scope_json(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    data = {k: v for k, v in scope.items() if k not in ("headers", "raw_path", "query_string", "state", "extensions")}
    data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    data["raw_path"] = scope["raw_path"].decode("latin-1")
    data["query_string"] = scope["query_string"].decode("latin-1")
    data["has_state"] = "state" in scope
    data["extensions"] = sorted(scope.get("extensions") or {})
    payload = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


async def stream(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(10):
        await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


def make_app(handler: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await handler(scope, receive, send)

    return app


async def client_info(scope: Any, receive: Any, send: Any) -> None:
    """Answers, as JSON, who heron says the client is (``client``, ``scheme``) and which
    process served it (``pid``, and ``ppid``: a worker's supervisor)."""
    import os

    while (await receive()).get("more_body"):
        pass
    info = {
        "client": scope["client"],
        "scheme": scope["scheme"],
        "pid": os.getpid(),
        "ppid": os.getppid(),
    }
    body = json.dumps(info).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def ws_ack(scope: Any, receive: Any, send: Any) -> None:
    """WebSocket: answers each text message with JSON ``{"seq": n, "echo": text, "pid": ...}``,
    ``n`` counting this session's messages from 0 (plain HTTP: ``client_info``)."""
    import os

    if scope["type"] != "websocket":
        await client_info(scope, receive, send)
        return
    message = await receive()
    assert message["type"] == "websocket.connect", message
    await send({"type": "websocket.accept"})
    seq = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        await send({"type": "websocket.send", "text": json.dumps({"seq": seq, "echo": text, "pid": os.getpid()})})
        seq += 1
