"""The ASGI ``websocket`` cycle: scope, ``receive`` and ``send`` for one WebSocket.

Written once for every transport: WebSocket over HTTP/1.1 (Upgrade) and over
HTTP/2 (RFC 8441) implement :class:`WebSocketStream` and feed the cycle with
:meth:`WebSocketCycle.feed_message` and :meth:`WebSocketCycle.feed_disconnect`.

Rules (asgiref ``www`` spec 2.5):

* ``receive()`` first returns ``websocket.connect``; the app answers with
  ``websocket.accept``, ``websocket.close`` (403) or the denial-response
  extension (``websocket.http.response.start``/``body``, any status).
* After accept, ``receive()`` returns ``websocket.receive`` (exactly one of
  ``bytes``/``text``) and, once, ``websocket.disconnect`` with the real close
  code and reason, whoever closed. At most ``max_queue`` messages wait for
  the app, and what they cost is charged to the stream's ``budget``; beyond
  either the transport stops reading.
* ``websocket.send`` after the connection closed raises
  :class:`~heron.asgi.http.ClientDisconnected` (an ``OSError``);
  ``websocket.close`` after it is a no-op.
* App exception: 500 before accept, close 1011 after. Returning without
  accepting: 500; returning while open: close 1000. A denial response whose
  head is not on the wire yet (no body message, or a refused header) becomes
  a 500 too when the app fails or returns; once written, the connection is
  closed (the client never takes a truncated body for a complete one).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..protocol.errors import LocalProtocolError
from .budget import MESSAGE_OVERHEAD, ReadBudget
from .http import ASGIApp, ClientDisconnected, Message, Scope

logger = logging.getLogger("heron.error")

WEBSOCKET_ASGI = {"version": "3.0", "spec_version": "2.5"}

# states
_CONNECTING = 0  # connect not answered yet
_DENYING = 1  # denial response started
_OPEN = 2
_CLOSED = 3  # we or the peer closed, or the transport is gone


def _cost(message: Message) -> int:
    """What a queued ``websocket.receive`` message costs the budget."""
    payload = message.get("text")
    if payload is None:
        payload = message["bytes"]
    return sys.getsizeof(payload) + MESSAGE_OVERHEAD


class WebSocketStream(Protocol):
    """What a transport provides to a :class:`WebSocketCycle`."""

    @property
    def budget(self) -> ReadBudget:
        """What the queued messages are charged to (the stream stops reading when it is spent)."""

    @property
    def writing_paused(self) -> bool:
        """True while written bytes wait; ``send()`` then awaits :meth:`drain`."""

    def accept(self, subprotocol: str | None, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Complete the handshake; raise LocalProtocolError (writing nothing) on bad headers."""

    def deny(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        """Start an HTTP response instead of the handshake (403 for a plain close)."""

    def deny_body(self, body: bytes, more_body: bool) -> None: ...

    def send_message(self, data: str | bytes) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Send a Close frame and finish the closing handshake in the background."""

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def drain(self) -> None: ...


def websocket_scope(
    http_version: str,
    scheme: str,
    raw_path: bytes,
    query_string: bytes,
    root_path: str,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    subprotocols: list[str],
    state: dict[str, Any] | None,
) -> Scope:
    from .http import http_scope

    scope = http_scope(
        "GET", http_version, scheme, raw_path, query_string, root_path, headers, client, server, state, {}
    )
    del scope["method"]
    scope["type"] = "websocket"
    scope["asgi"] = WEBSOCKET_ASGI
    scope["subprotocols"] = subprotocols
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


class WebSocketCycle:
    __slots__ = (
        "scope",
        "stream",
        "max_queue",
        "_state",
        "_connect_delivered",
        "_queue",
        "_disconnect",
        "_waiter",
        "_reading_paused",
        "close_code",
        "task",
        "_denial",
        "on_idle",
        "_handling",
    )

    def __init__(self, scope: Scope, stream: WebSocketStream, *, max_queue: int = 32) -> None:
        self.scope = scope
        self.stream = stream
        self.max_queue = max(1, max_queue)
        self._state = _CONNECTING
        self._connect_delivered = False
        self._queue: deque[Message] = deque()
        self._disconnect: Message | None = None
        self._waiter: asyncio.Future[Message | None] | None = None
        self._reading_paused = False
        #: the close code of the session, for the access log (None while open)
        self.close_code: int | None = None
        self.task: asyncio.Task[None] | None = None
        #: a denial head waiting for its first body message
        self._denial: tuple[int, Any] | None = None
        #: called once when the app calls receive() with nothing queued (the
        #: transport uses it to send its Close only after the app has handled
        #: every message that arrived before the peer's Close)
        self.on_idle: Callable[[], None] | None = None
        #: the app took a message and has not called receive() again yet
        self._handling = False

    # --- transport side ------------------------------------------------------

    def feed_message(self, data: str | bytes) -> None:
        if self._disconnect is not None:
            return
        if type(data) is str:
            message: Message = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": data}
        queue = self._queue
        waiter = self._waiter
        if waiter is not None and not queue and not waiter.done():
            # The app waits in receive(): hand the message over. Nothing waits
            # for the app, so nothing is charged (the common case, and the
            # cheap one).
            self._waiter = None
            self._handling = True
            waiter.set_result(message)
            return
        queue.append(message)
        self.stream.budget.charge(_cost(message))
        if len(queue) >= self.max_queue and not self._reading_paused:
            self._reading_paused = True
            self.stream.pause_reading()
        self._wake()

    def feed_disconnect(self, code: int, reason: str = "") -> None:
        """The connection ended (peer close, our close completing, or transport loss)."""
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            if self.close_code is None:
                self.close_code = code
        self._state = _CLOSED
        self._wake()

    @property
    def pending_messages(self) -> int:
        """Received messages the app has not taken yet, or is still handling
        (it took one and has not asked for the next)."""
        return len(self._queue) + self._handling

    @property
    def accepted(self) -> bool:
        return self._state == _OPEN or (self._state == _CLOSED and self._connect_delivered)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- application side ----------------------------------------------------

    async def receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        self._handling = False
        while True:
            if self._queue:
                message = self._queue.popleft()
                self._handling = True
                # (may resume reading, and parse what waited, queuing more)
                self.stream.budget.release(_cost(message))
                if self._reading_paused and len(self._queue) < self.max_queue // 2 + 1:
                    self._reading_paused = False
                    self.stream.resume_reading()
                return message
            if self._disconnect is not None:
                return self._disconnect
            on_idle = self.on_idle
            if on_idle is not None:
                # the app has taken every queued message and asks for more
                self.on_idle = None
                on_idle()
                continue
            waiter: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                handed = await waiter
            except BaseException:
                # Cancelled after a message was handed over: it stays first in line.
                if waiter.done() and not waiter.cancelled() and (handed := waiter.result()) is not None:
                    self._queue.appendleft(handed)
                    self._handling = False
                    self.stream.budget.charge(_cost(handed))
                raise
            finally:
                if self._waiter is waiter:
                    self._waiter = None
            if handed is not None:
                return handed

    async def send(self, message: Message) -> None:
        try:
            message_type = message["type"]
        except (KeyError, TypeError):
            raise TypeError(f"ASGI message must be a dict with a 'type' key, got {message!r:.200}") from None
        state = self._state
        if message_type == "websocket.send":
            if state == _CLOSED:
                raise ClientDisconnected("WebSocket is closed")
            if state != _OPEN:
                raise RuntimeError("ASGI app sent 'websocket.send' before 'websocket.accept'")
            text = message.get("text")
            data = message.get("bytes")
            if (text is None) == (data is None):
                raise ValueError("'websocket.send' needs exactly one of 'bytes' or 'text'")
            if text is not None:
                if not isinstance(text, str):
                    raise TypeError(f"'text' must be str, got {type(text).__name__}")
                self.stream.send_message(text)
            else:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(f"'bytes' must be bytes, got {type(data).__name__}")
                self.stream.send_message(bytes(data))
            if self.stream.writing_paused:
                await self.stream.drain()
            return
        if message_type == "websocket.accept":
            self._accept(message, state)
        elif message_type == "websocket.close":
            self._close(message, state)
        elif message_type == "websocket.http.response.start":
            self._deny_start(message, state)
        elif message_type == "websocket.http.response.body":
            self._deny_body(message, state)
        else:
            raise RuntimeError(f"ASGI app sent an unexpected message type {message_type!r}")

    # (the messages of a session's start and end, once each: websocket.send above
    # is the one on the hot path and stays inline)

    def _accept(self, message: Message, state: int) -> None:
        if state != _CONNECTING:
            if state == _CLOSED:
                raise ClientDisconnected("WebSocket is closed")
            raise RuntimeError("ASGI app sent 'websocket.accept' twice or after a denial response")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if not isinstance(subprotocol, str):
                raise TypeError("'subprotocol' must be a str")
            if subprotocol not in self.scope["subprotocols"]:
                raise ValueError(
                    f"subprotocol {subprotocol!r} was not offered by the client (offered: {self.scope['subprotocols']})"
                )
        headers = message.get("headers") or ()
        try:
            self.stream.accept(subprotocol, headers)
        except LocalProtocolError as exc:
            logger.error("Invalid 'websocket.accept' from ASGI app: %s", exc)
            raise
        if self._state == _CONNECTING:  # the stream may have closed it at once (shutdown)
            self._state = _OPEN

    def _close(self, message: Message, state: int) -> None:
        if state == _CLOSED:
            return
        code = message.get("code", 1000)
        reason = message.get("reason") or ""
        if not isinstance(code, int) or isinstance(code, bool):
            raise TypeError(f"'code' must be an int, got {code!r:.50}")
        if not isinstance(reason, str):
            raise TypeError("'reason' must be a str")
        if state == _CONNECTING:
            self.stream.deny(
                403,
                [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"10")],
                b"Forbidden\n",
                False,
            )
            self.close_code = 403
            self.feed_disconnect(1006)
            return
        if state == _DENYING:
            raise RuntimeError("ASGI app sent 'websocket.close' during a denial response")
        try:
            self.stream.close(code, reason)
        except LocalProtocolError as exc:
            raise ValueError(str(exc)) from None
        self.close_code = code
        self.feed_disconnect(code, reason)

    def _deny_start(self, message: Message, state: int) -> None:
        if state != _CONNECTING:
            raise RuntimeError("'websocket.http.response.start' is only allowed before accept")
        status = message.get("status")
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"'status' must be an int between 200 and 599, got {status!r:.50}")
        self._pending_denial(status, message.get("headers") or ())

    def _deny_body(self, message: Message, state: int) -> None:
        if state != _DENYING:
            raise RuntimeError("'websocket.http.response.body' without 'websocket.http.response.start'")
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"'body' must be bytes, got {type(body).__name__}")
        more_body = bool(message.get("more_body", False))
        denial = self._denial
        if denial is not None:
            # cleared only once the head is written: if deny() refuses a header the
            # head is still pending, and the app's failure becomes a 500
            self.stream.deny(denial[0], denial[1], bytes(body), more_body)
            self._denial = None
        else:
            self.stream.deny_body(bytes(body), more_body)
        if not more_body:
            self.feed_disconnect(1006)

    def _pending_denial(self, status: int, headers: Any) -> None:
        self._denial = (status, headers)
        self.close_code = status
        self._state = _DENYING

    async def run(self, app: ASGIApp, tasks: set[Any] | None = None) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("WebSocket client went away while the app was sending")
        except asyncio.CancelledError:
            self._finish(1001, "")
            raise
        except BaseException as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            self._finish(1011, "", error=True)
            if not isinstance(exc, Exception):
                raise
        else:
            if self._state == _CONNECTING:
                logger.error("ASGI app returned without accepting or closing the WebSocket; answered 500")
            elif self._state == _DENYING:
                logger.error("ASGI app returned with its denial response incomplete")
            self._finish(1000, "", error=self._state == _CONNECTING)
        finally:
            self._queue.clear()
            if tasks is not None:
                tasks.discard(self.task)

    def _finish(self, code: int, reason: str, error: bool = False) -> None:
        state = self._state
        if state == _CONNECTING:
            status = 500 if error else 403
            self.close_code = status
            body = b"Internal Server Error\n" if error else b"Forbidden\n"
            self.stream.deny(
                status,
                [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))],
                body,
                False,
            )
        elif state == _DENYING:
            if self._denial is not None:  # the denial head is not on the wire yet: 500, as for HTTP
                self._denial = None
                self.close_code = 500
                body = b"Internal Server Error\n"
                self.stream.deny(
                    500,
                    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))],
                    body,
                    False,
                )
            else:
                self.stream.abort()
        elif state == _OPEN:
            self.close_code = code
            self.stream.close(code, reason)
        self._state = _CLOSED
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
