"""WSGI applications (PEP 3333) served through the ASGI bridge.

``--interface wsgi`` (or ``auto`` for a plain callable of two arguments,
``app(environ, start_response)``) wraps the app in :class:`WSGIAdapter`, an
ASGI app like any other: every protocol heron speaks reaches it unchanged.

The WSGI app runs in a thread pool (``--wsgi-threads``, default 10), one
request per thread. The two sides meet only through the event loop:

* ``wsgi.input`` pulls the request body from ``receive()`` as the app reads
  it, one ASGI message at a time: a large upload is never buffered whole, and
  a body the app does not read is never read at all.
* Each body piece the app yields (or passes to ``write()``) is handed to
  ``send()`` and the thread waits until it is sent, so a slow client slows
  the app down instead of filling memory.
* The response head goes out with the first non-empty body piece (PEP 3333),
  so an app that fails before that still gets a clean 500.

``environ`` follows PEP 3333: ``SCRIPT_NAME`` is ``--root-path``, ``PATH_INFO``
the decoded path (its UTF-8 bytes as latin-1, as the PEP requires), and each
request header becomes ``HTTP_<NAME>`` (repeated fields joined with ``,``).
Header names containing ``_`` are left out: ``X-Forwarded_For`` would
otherwise arrive as ``HTTP_X_FORWARDED_FOR``, indistinguishable from the
real one (the same rule as nginx's default).

Lifespan events are answered at once (WSGI has no lifespan); WebSocket
connections are refused (403).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .http import Message, Scope

#: how many bytes ``wsgi.input.read()`` without a size may return (a whole body
#: read into memory by the app itself); beyond it the read raises
MAX_READ_ALL = 64 * 1024 * 1024


class WSGIAdapter:
    """An ASGI 3 app that serves a WSGI app in a thread pool."""

    def __init__(self, app: Callable[..., Iterable[bytes]], threads: int = 10, multiprocess: bool = False) -> None:
        self.app = app
        self.threads = threads
        self.multiprocess = multiprocess
        self._executor: ThreadPoolExecutor | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="heron-wsgi")
            loop = asyncio.get_running_loop()
            call = _WSGICall(self, scope, receive, send, loop)
            await loop.run_in_executor(self._executor, call.run)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    if self._executor is not None:
                        self._executor.shutdown(wait=False)
                    return


def build_environ(scope: Scope, body: Any, multiprocess: bool) -> dict[str, Any]:
    """The PEP 3333 ``environ`` for one ``http`` scope."""
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "0",
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
    }
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        if "_" in name:
            continue
        value = raw_value.decode("latin-1")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            environ[key] += "," + value
        else:
            environ[key] = value
    return environ


class _RequestBody(io.RawIOBase):
    """``wsgi.input``: the request body, pulled from ``receive()`` on demand."""

    def __init__(self, call: _WSGICall) -> None:
        self._call = call
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Pull one more piece of the body; False at its end."""
        if self._done:
            return False
        message = self._call.wait(self._call.receive())
        if message["type"] != "http.request":  # http.disconnect
            self._done = True
            raise OSError("client disconnected while the request body was read")
        self._buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self._done = True
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                if len(self._buffer) > MAX_READ_ALL:
                    raise OSError(f"request body over {MAX_READ_ALL} bytes read at once; read it in pieces")
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        while len(self._buffer) < size and self._fill():
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readinto(self, target: Any) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and (size is None or size < 0 or len(self._buffer) < size):
            if not self._fill():
                break
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class _WSGICall:
    """One request: runs in a pool thread, talks to the loop through ``wait``."""

    def __init__(self, adapter: WSGIAdapter, scope: Scope, receive: Any, send: Any, loop: Any) -> None:
        self.adapter = adapter
        self.scope = scope
        self.receive = receive
        self._send = send
        self.loop = loop
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False

    def wait(self, coro: Any) -> Any:
        """Run ``coro`` on the event loop and wait for its result (from the pool thread).

        The wait itself is unbounded (``send`` waits for a slow client, which the
        server's write timeout bounds), but it ends if the loop is closed under it,
        so a stopping server never leaves a thread waiting forever."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed():
                    future.cancel()
                    raise RuntimeError("the server stopped while the WSGI app was running") from None

    def send(self, message: Message) -> None:
        self.wait(self._send(message))

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        code, _, _ = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"invalid WSGI status {status!r}")
        self.status = int(code)
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return self.write

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._send_head()
        self.send({"type": "http.response.body", "body": bytes(data), "more_body": True})

    def _send_head(self) -> None:
        if self.head_sent:
            return
        if self.status is None:
            raise RuntimeError("the WSGI app returned a body before calling start_response()")
        self.head_sent = True
        self.send({"type": "http.response.start", "status": self.status, "headers": self.headers})

    def run(self) -> None:
        environ = build_environ(self.scope, _RequestBody(self), self.adapter.multiprocess)
        result = self.adapter.app(environ, self.start_response)
        try:
            for piece in result:
                self.write(piece)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self._send_head()
        self.send({"type": "http.response.body", "body": b"", "more_body": False})


def looks_like_wsgi(app: Any) -> bool:
    """A plain (not async) callable taking exactly ``(environ, start_response)``."""
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", None)  # noqa: B004  # (the method itself, to inspect)
    if target is None or inspect.iscoroutinefunction(target) or inspect.isclass(app):
        return False
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [
        p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) == 2 and not any(p.kind == p.VAR_POSITIONAL for p in parameters)


__all__ = ["WSGIAdapter", "build_environ", "looks_like_wsgi"]
