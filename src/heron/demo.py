"""The page heron serves when started without an APP: ASGI's idea, made visible.

One small ASGI app that shows the three things a WSGI server could not do:

- ``GET /``: the request as heron saw it (protocol, TLS, client, headers); on
  HTTP/2 its stylesheet is announced before the page with a 103 Early Hint and
  pushed (``http.response.push``; heron drops the push when the browser turned
  push off, as browsers now do);
- ``/live``: a WebSocket over which the server pushes one message a second for as
  long as the page is open: the "subscription service" ASGI was made for;
- ``GET /heron.css``: the stylesheet. Any other path is 404.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from typing import Any

from . import __version__

_TLS_NAMES = {0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
_CSS_LINK = b"</heron.css>; rel=preload; as=style"

CSS = b"""*{box-sizing:border-box}
body{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:0 auto;padding:1em;color:#1d2430;background:#fbfbf8}
h1{font-size:1.6em;margin:.2em 0;color:#2b5d8a}h2{font-size:1.15em;margin:1.4em 0 .4em}
code,pre{font:.9em/1.4 ui-monospace,monospace;background:#eef0ee;border-radius:3px}
code{padding:0 .25em;overflow-wrap:anywhere}pre{padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse;table-layout:fixed}
th,td{text-align:left;vertical-align:top;padding:.15em .4em;border-bottom:1px solid #e2e4e0;overflow-wrap:anywhere}
th{width:34%;font-weight:600}
#live{list-style:none;padding:0;margin:0}#live li{font-family:ui-monospace,monospace;padding:.1em 0}
#live li:first-child{color:#2b5d8a;font-weight:600}.state{color:#6b7280}
"""

_SCRIPT = """const list = document.getElementById("live"), state = document.getElementById("state");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live");
ws.onopen = () => { state.textContent = "connected: the server sends, the page only listens"; };
ws.onclose = (e) => { state.textContent = "closed (" + e.code + ")"; };
ws.onmessage = (e) => {
  const m = JSON.parse(e.data), li = document.createElement("li");
  li.textContent = "#" + m.n + "  " + m.time + " UTC  " + m.sessions + " page(s) open";
  list.prepend(li);
  while (list.children.length > 5) list.lastChild.remove();
};"""

_EXAMPLE = """async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello"})"""

#: WebSocket sessions of /live open in this process (their count is in each message)
_live_sessions: set[object] = set()


async def app(scope: Any, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        await _http(scope, receive, send)
    elif kind == "websocket":
        await _websocket(scope, receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    size = 0
    while True:  # read the body (a request's size is part of what the page shows)
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    path, method = scope["path"], scope["method"]
    if path not in ("/", "/heron.css"):
        await _respond(send, 404, b"text/plain; charset=utf-8", b"Not Found\n", method)
    elif method not in ("GET", "HEAD"):
        await _respond(
            send, 405, b"text/plain; charset=utf-8", b"Method Not Allowed\n", method, [(b"allow", b"GET, HEAD")]
        )
    elif path == "/heron.css":
        await _respond(send, 200, b"text/css; charset=utf-8", CSS, method, [(b"cache-control", b"max-age=60")])
    else:
        extensions = scope.get("extensions") or {}
        announced = []
        if scope["http_version"] == "2":
            if "http.response.early_hint" in extensions:
                await send({"type": "http.response.early_hint", "links": [_CSS_LINK]})
                # the hint's point is to arrive ahead of the page: let it go out in its
                # own write, as it would while a real app builds its page
                await asyncio.sleep(0)
                announced.append("a 103 Early Hint")
            if "http.response.push" in extensions:
                await send({"type": "http.response.push", "path": "/heron.css", "headers": []})
                announced.append("a server push (used if the client allows push)")
        page = _page(scope, size, announced).encode()
        await _respond(send, 200, b"text/html; charset=utf-8", page, method)


async def _respond(
    send: Any, status: int, ctype: bytes, body: bytes, method: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _page(scope: dict[str, Any], size: int, announced: list[str]) -> str:
    esc = html.escape
    query = scope["query_string"].decode("latin-1")
    target = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
    client, server = scope.get("client"), scope.get("server")
    tls = (scope.get("extensions") or {}).get("tls")
    if tls is not None:
        version = _TLS_NAMES.get(tls.get("tls_version"), "TLS")
        cipher = tls.get("cipher_suite")
        security = f"{version}" + (f", cipher suite 0x{cipher:04x}" if isinstance(cipher, int) else "")
    else:
        security = "none (plain TCP)"
    facts = [
        ("Request", f"{scope['method']} {target}"),
        ("Protocol", f"HTTP/{scope['http_version']} ({scope['scheme']})"),
        ("TLS", security),
        ("Client", f"{client[0]}:{client[1]}" if client else "unknown"),
        ("Server", f"{server[0]}:{server[1]}" if server else "unknown"),
        ("Body", f"{size} bytes"),
        (
            "Stylesheet",
            "announced with " + " and ".join(announced) if announced else "fetched after the page (HTTP/1.1)",
        ),
    ]
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    header_rows = "".join(
        f"<tr><th>{esc(k.decode('latin-1'))}</th><td>{esc(v.decode('latin-1'))}</td></tr>" for k, v in scope["headers"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>heron {__version__}</title><link rel="stylesheet" href="/heron.css"></head>
<body><h1>heron {__version__} is running</h1>
<p>This is heron's built-in welcome page, itself one small ASGI app. Serve yours with
<code>heron module:app</code>.</p>
<h2>Live, pushed by the server</h2>
<p class="state" id="state">connecting to <code>/live</code> over WebSocket&hellip;</p>
<ul id="live"></ul>
<h2>Your request, as heron saw it</h2>
<table>{fact_rows}</table>
<h2>Request headers</h2>
<table>{header_rows}</table>
<h2>An ASGI app</h2>
<pre>{esc(_EXAMPLE)}</pre>
<script>{_SCRIPT}</script>
</body></html>
"""


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    if scope["path"] != "/live":
        await send({"type": "websocket.close", "code": 1008})  # before accept: heron answers 403
        return
    await send({"type": "websocket.accept"})
    session = object()
    _live_sessions.add(session)
    # one task reads until the client leaves; the loop below only waits for it with
    # a timeout, so nothing is cancelled once a second
    gone = asyncio.ensure_future(_until_disconnect(receive))
    try:
        n = 0
        while not gone.done():
            n += 1
            now = time.strftime("%H:%M:%S", time.gmtime())
            message = json.dumps({"n": n, "time": now, "sessions": len(_live_sessions)})
            try:
                await send({"type": "websocket.send", "text": message})
            except OSError:  # the client left between two messages
                return
            await asyncio.wait((gone,), timeout=1.0)
    finally:
        _live_sessions.discard(session)
        gone.cancel()


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass  # the page sends nothing; anything a client sends is ignored
