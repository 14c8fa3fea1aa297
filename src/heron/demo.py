"""The page heron serves when started without an APP: proof that it works."""

from __future__ import annotations

import html
from typing import Any

from . import __version__


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    query = scope["query_string"].decode("latin-1")
    target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
    rows = "".join(
        f"<tr><th>{html.escape(k.decode('latin-1'))}</th><td>{html.escape(v.decode('latin-1'))}</td></tr>"
        for k, v in scope["headers"]
    )
    client = scope.get("client")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>heron {__version__}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}}
th{{text-align:left;padding-right:1em;font-weight:600}}code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body><h1>heron {__version__} is running</h1>
<p>This is heron's built-in welcome page. Serve your own app with <code>heron module:app</code>.</p>
<h2>Your request</h2>
<p><code>{html.escape(scope["method"])} {html.escape(target)} HTTP/{scope["http_version"]}</code>
from <code>{html.escape(f"{client[0]}:{client[1]}" if client else "unknown")}</code>, body {size} bytes.</p>
<table>{rows}</table>
</body></html>
""".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})
