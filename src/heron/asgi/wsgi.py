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
  ``send()`` through the loop; the thread may run at most RUN_AHEAD bytes
  ahead of what has been sent, then waits, so a slow client slows the app
  down instead of filling memory. The piece that completes the
  Content-Length (or the last item of a list) ends the response at once,
  before the iterable's ``close()`` runs.
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
import inspect
import io
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .http import Message, Scope

#: how many bytes ``wsgi.input.read()`` without a size may return (a whole body
#: read into memory by the app itself); beyond it the read raises
MAX_READ_ALL = 64 * 1024 * 1024
#: how far (in bytes) the app's thread may run ahead of what the loop has sent
RUN_AHEAD = 1024 * 1024
#: a thread stopped by RUN_AHEAD resumes once this much is left unsent (waking a
#: thread costs system calls and a GIL hand-off: once per many pieces, not per piece)
RESUME_AT = RUN_AHEAD // 2
#: a thread takes its next request only once its last response has at most this
#: much unsent: a finished response cannot leave more behind (a client's hundred
#: HTTP/2 streams that read nothing hold 100 x 64 KiB, not 100 x RUN_AHEAD)
LEAVE_AT = 64 * 1024
#: what one queued body piece costs beyond its bytes (message dict, tuple, list slot)
_PIECE_COST = 400

# the steps a request's thread posts to the loop
_SEND, _RECEIVE, _DONE, _ERROR = range(4)
#: a reply that tells the thread the exchange has failed (see _WSGICall._failure)
_FAILED = object()


class WSGIAdapter:
    """An ASGI 3 app that serves a WSGI app in a thread pool."""

    def __init__(self, app: Callable[..., Iterable[bytes]], threads: int = 10, multiprocess: bool = False) -> None:
        self.app = app
        self.threads = threads
        self.multiprocess = multiprocess
        self._pool: _ThreadPool | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            pool = self._pool
            if pool is None:
                pool = self._pool = _ThreadPool(self.threads)
            call = _WSGICall(self, scope, receive, send, asyncio.get_running_loop())
            pool.submit(call)
            await call.pump()
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
                    if self._pool is not None:
                        self._pool.shutdown()
                    return


class _ThreadPool:
    """Up to ``size`` threads running the calls put in one queue.

    Leaner than ``concurrent.futures.ThreadPoolExecutor`` (no Future per call:
    a call reports its own end through the loop), which saves about 5 µs per
    request. Threads start with the first ``size`` calls and then stay; they
    are daemon threads, so an app stuck in a call cannot hold the process
    open after the server's graceful shutdown has given up on it.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[_WSGICall | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: _WSGICall) -> None:
        if self._closed:
            raise RuntimeError("the WSGI thread pool is shut down")
        self._queue.put(call)
        threads = self._threads
        if len(threads) < self._size:
            thread = threading.Thread(target=self._work, name=f"heron-wsgi_{len(threads)}", daemon=True)
            threads.append(thread)
            thread.start()

    def _work(self) -> None:
        get = self._queue.get
        while (call := get()) is not None:
            try:
                call.run()
            except Exception:  # noqa: BLE001  # (only when the loop is gone: nobody is left to tell)
                continue

    def shutdown(self) -> None:
        """Let each thread end after the call it is running."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)


def build_environ(scope: Scope, body: Any, multiprocess: bool) -> dict[str, Any]:
    """The PEP 3333 ``environ`` for one ``http`` scope."""
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    server = scope.get("server") or ("localhost", 80)
    environ = (_BASE_MULTIPROCESS if multiprocess else _BASE).copy()
    environ["REQUEST_METHOD"] = scope["method"]
    environ["SCRIPT_NAME"] = root_path.encode("utf-8").decode("latin-1") if root_path else ""
    environ["PATH_INFO"] = path if path.isascii() else path.encode("utf-8").decode("latin-1")
    environ["QUERY_STRING"] = scope["query_string"].decode("latin-1")
    environ["SERVER_NAME"] = str(server[0])
    environ["SERVER_PORT"] = str(server[1]) if server[1] is not None else "0"
    environ["SERVER_PROTOCOL"] = "HTTP/" + scope["http_version"]
    environ["wsgi.url_scheme"] = scope.get("scheme", "http")
    environ["wsgi.input"] = body
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    keys = _ENVIRON_KEYS
    for raw_name, raw_value in scope["headers"]:
        key = keys.get(raw_name, _UNKNOWN)
        if key is _UNKNOWN:
            key = _environ_key(raw_name)
        if key is None:
            continue
        value = raw_value.decode("latin-1")
        if key in environ:
            environ[key] += "," + value
        else:
            environ[key] = value
    return environ


# what every environ holds, copied for each request
_BASE: dict[str, Any] = {
    "wsgi.version": (1, 0),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}
_BASE_MULTIPROCESS = {**_BASE, "wsgi.multiprocess": True}

#: the environ key of each header name seen (None: left out), bounded: names come from clients
_ENVIRON_KEYS: dict[bytes, str | None] = {}
_MAX_ENVIRON_KEYS = 512
_UNKNOWN = ""


def _environ_key(raw_name: bytes) -> str | None:
    name = raw_name.decode("latin-1")
    key: str | None
    if "_" in name:
        key = None
    elif name == "content-type":
        key = "CONTENT_TYPE"
    elif name == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    if len(_ENVIRON_KEYS) < _MAX_ENVIRON_KEYS:
        _ENVIRON_KEYS[raw_name] = key
    return key


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
        message = self._call.receive()
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
    """One request: the app runs in a pool thread, the ASGI side in the loop.

    The two meet through an outbox of messages (thread to loop, carried out by
    :meth:`pump`) and a reply queue (loop to thread). A post wakes the loop only
    when the loop waits for the outbox, so a response whose pieces come quickly
    (a head, a body, the end) costs one wake-up each way, not one per message.
    The thread runs ahead of what the loop has sent by at most RUN_AHEAD bytes
    (each piece counted with its overhead) and then waits until RESUME_AT: a
    slow client still slows the app down, and a million tiny pieces cannot pile
    up. It leaves a finished request only when at most LEAVE_AT of it is
    unsent, so what finished requests leave behind stays small too.
    """

    __slots__ = (
        "adapter",
        "scope",
        "loop",
        "_receive",
        "_send",
        "_lock",
        "_outbox",
        "_waiter",
        "_replies",
        "_queued",
        "_blocked",
        "_resume_at",
        "_failure",
        "status",
        "headers",
        "head_sent",
        "_remaining",
        "_complete",
    )

    def __init__(self, adapter: WSGIAdapter, scope: Scope, receive: Any, send: Any, loop: Any) -> None:
        self.adapter = adapter
        self.scope = scope
        self.loop = loop
        self._receive = receive
        self._send = send
        self._lock = threading.Lock()
        self._outbox: list[tuple[int, Any]] = []
        #: set while the loop waits for the outbox; the next post resolves it
        self._waiter: asyncio.Future[None] | None = None
        self._replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queued = 0  # cost of the body pieces posted and not yet sent
        self._blocked = False  # the thread waits for _queued to fall to _resume_at
        self._resume_at = RESUME_AT
        #: why the exchange ended early (client gone, bad response, server
        #: stopping): raised in the thread at its next step
        self._failure: BaseException | None = None
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        #: Content-Length bytes still to come (-1: none given); the piece that
        #: brings it to 0 ends the response, before the app's close() runs
        self._remaining = -1
        self._complete = False  # the last body message is posted

    # --- loop side -------------------------------------------------------------

    async def pump(self) -> None:
        """Carry out what the thread posts until it is done; raise what it raised."""
        lock = self._lock
        send = self._send
        while True:
            with lock:
                batch = self._outbox
                if batch:
                    self._outbox = []
                else:
                    waiter = self._waiter = self.loop.create_future()
            if not batch:
                try:
                    await waiter
                except BaseException:  # cancelled (the server's time is up)
                    self._fail(RuntimeError("the server stopped while the WSGI app was running"))
                    raise
                continue
            for op, value in batch:
                if op == _SEND:
                    if self._failure is None:
                        try:
                            await send(value)
                        except BaseException as exc:
                            self._fail(exc)
                            if not isinstance(exc, Exception):
                                raise
                    cost = value.get("body", b"").__len__() + _PIECE_COST
                    with lock:
                        self._queued -= cost
                        wake = self._blocked and self._queued <= self._resume_at
                        if wake:
                            self._blocked = False
                    if wake:
                        self._replies.put(None)
                elif op == _RECEIVE:
                    try:
                        message = await self._receive()
                    except BaseException as exc:
                        self._fail(exc)
                        raise
                    self._replies.put(message)
                elif op == _DONE:
                    if self._failure is not None:
                        raise self._failure  # (the app swallowed it; the cycle must still see it)
                    return
                else:  # _ERROR
                    raise value

    def _fail(self, exc: BaseException) -> None:
        """Remember why the exchange ended, and release the thread if it waits."""
        if self._failure is None:
            self._failure = exc
        self._replies.put(_FAILED)

    # --- thread side -----------------------------------------------------------

    def _post(self, op: int, value: Any, cost: int = 0) -> bool:
        """Queue one step for the loop; True when the thread is now too far ahead."""
        with self._lock:
            self._outbox.append((op, value))
            waiter = self._waiter
            self._waiter = None
            if cost:
                self._queued += cost
                self._blocked = blocked = self._queued > RUN_AHEAD
            else:
                blocked = False
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)
        return blocked

    def _reply(self) -> Any:
        """The loop's next answer. Unbounded, as a send to a slow client is (the
        server's timeouts bound that), but it ends if the loop closes under it."""
        while True:
            try:
                reply = self._replies.get(timeout=1.0)
            except queue.Empty:
                if self.loop.is_closed():
                    raise RuntimeError("the server stopped while the WSGI app was running") from None
                continue
            if reply is _FAILED:
                raise self._failure  # type: ignore[misc]  # (_fail sets it before _FAILED)
            return reply

    def receive(self) -> Message:
        """The next request message, for ``wsgi.input``."""
        if self._failure is not None:
            raise self._failure
        self._post(_RECEIVE, None)
        return self._reply()  # type: ignore[no-any-return]

    def _send_body(self, body: bytes, more_body: bool) -> None:
        if self._failure is not None:
            raise self._failure
        if not self.head_sent:
            if self.status is None:
                raise RuntimeError("the WSGI app returned a body before calling start_response()")
            self.head_sent = True
            self._post(_SEND, {"type": "http.response.start", "status": self.status, "headers": self.headers})
        if not more_body:
            self._complete = True
        message = {"type": "http.response.body", "body": body, "more_body": more_body}
        if self._post(_SEND, message, len(body) + _PIECE_COST):
            self._reply()

    def _piece(self, data: bytes, last: bool) -> None:
        """One piece of the app's body (``last``: the iterable says so)."""
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # (a bytearray the app may reuse)
        if self._complete:
            raise RuntimeError("the WSGI app sent more body than its Content-Length")
        remaining = self._remaining
        if remaining >= 0:
            remaining -= len(data)
            if remaining < 0:
                raise RuntimeError("the WSGI app sent more body than its Content-Length")
            self._remaining = remaining
            last = last or remaining == 0
        self._send_body(data, not last)

    def write(self, data: bytes) -> None:
        """The ``write()`` callable that ``start_response`` returns."""
        self._piece(data, False)

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
        encoded = []
        remaining = -1
        for name, value in headers:
            name = name.lower()
            if name == "content-length" and value.isascii() and value.isdigit():
                remaining = int(value)  # (an invalid one is left to the HTTP layer to refuse)
            encoded.append((name.encode("latin-1"), value.encode("latin-1")))
        self.headers = encoded
        self._remaining = remaining
        return self.write

    def run(self) -> None:
        """The pool thread's work: the whole app call, then a last post saying how it ended."""
        try:
            environ = build_environ(self.scope, _RequestBody(self), self.adapter.multiprocess)
            result = self.adapter.app(environ, self.start_response)
            try:
                if type(result) is list or type(result) is tuple:
                    last = len(result) - 1
                    for index, piece in enumerate(result):
                        self._piece(piece, index == last)
                else:
                    for piece in result:
                        self._piece(piece, False)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if not self._complete:
                self._send_body(b"", False)
        except BaseException as exc:  # noqa: BLE001  # (carried to the loop: pump raises it there)
            self._post(_ERROR, exc)
        else:
            self._post(_DONE, None)
        with self._lock:
            self._resume_at = LEAVE_AT
            self._blocked = blocked = self._queued > LEAVE_AT and self._failure is None
        if blocked:
            self._reply()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
