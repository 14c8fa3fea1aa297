"""The ASGI ``http`` cycle: one request's scope, ``receive`` and ``send``.

This is the only place that knows ASGI HTTP semantics. A carrier (an HTTP/1.1
connection, an HTTP/2 stream) hands each request to an :class:`HTTPCycle` and
implements the small :class:`HTTPStream` interface that the cycle writes to;
it never interprets ASGI messages itself.

Rules enforced here (asgiref ``www`` spec 2.5):

* ``http.response.start`` once, then ``http.response.body`` until
  ``more_body`` is false; anything else out of order raises ``RuntimeError``
  naming the message; malformed messages raise ``TypeError``/``ValueError``.
* The head is not written until the first body message, so an invalid status
  or header (or an app that fails before its first body) still becomes a 500.
* ``receive()`` streams the request body as it arrives; once the body has been
  delivered it blocks until the response is complete or the client leaves,
  then returns ``http.disconnect``.
* ``send()`` after the client left raises :class:`ClientDisconnected` (an
  ``OSError``); messages after the response is complete are ignored.
* App exception before the response is on the wire: 500. After: the
  connection is closed so the client never mistakes a truncated body for a
  complete one. Returning without a response: 500.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Protocol, cast
from urllib.parse import unquote

from ..protocol.errors import LocalProtocolError
from .budget import BodyBuffer, ReadBudget

logger = logging.getLogger("heron.error")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.5"}

#: Bytes read from a file per step of ``http.response.pathsend``.
PATHSEND_CHUNK = 256 * 1024

#: What the unread request bodies of one HTTP/1.1 connection may cost before it
#: stops reading (see :class:`~heron.asgi.budget.ReadBudget`).
BODY_HIGH_WATER = 256 * 1024


class ClientDisconnected(OSError):
    """``send()`` was called after the client went away (ASGI spec 2.4+)."""


#: the bodies of the answers a stream gives in the app's place (HTTPStream.send_server_error):
#: 500 for a failed app, 503 for a request cancelled at shutdown before it answered
SERVER_ERROR_BODY = b"Internal Server Error\n"
ERROR_BODIES = {500: SERVER_ERROR_BODY, 503: b"Service Unavailable\n"}


class HTTPStream(Protocol):
    """What a protocol provides to a cycle. All writes happen here."""

    writing_paused: bool

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        """Write the head and first body piece; raise LocalProtocolError, writing nothing, if invalid."""

    def send_body(self, body: bytes, more_body: bool) -> None:
        """Write a further body piece (and the end of the response when not more_body)."""

    def send_server_error(self, status: int = 500) -> None:
        """Answer ``status`` (500 or 503) with its :data:`ERROR_BODIES` body (nothing of this
        response was written yet)."""

    def abort(self) -> None:
        """Close the connection: the response can't be completed."""

    def send_continue(self) -> None:
        """Send ``100 Continue`` if the client is waiting for it."""

    @property
    def budget(self) -> ReadBudget:
        """What the request bodies buffered for the app are charged to (the
        connection's, see :mod:`heron.asgi.budget`): the stream stops reading
        when it is spent."""

    def refuse(self, status: int) -> None:
        """Answer ``status`` (nothing of the response was written yet) and end the
        exchange without reading the rest of the request body: the connection
        closes (HTTP/1.1), or the stream is reset after the answer (HTTP/2)."""

    def wait_for_body(self, waiting: bool) -> None:
        """The app waits in ``receive()`` for more of the request body (True), or
        got some (False): the stream times out a client that sends nothing
        for ``timeout_request_body`` seconds (and then calls
        :meth:`HTTPCycle.refuse_body` with 408)."""

    async def drain(self) -> None:
        """Wait until the peer has read enough of what was written."""

    #: None, or (cleartext HTTP/1.1 today) a coroutine function ``send_file(fd,
    #: offset, count)`` that writes ``count`` bytes of the open file ``fd`` as the
    #: next piece of the body, zero copy; ``http.response.pathsend`` uses it
    #: after the head is written.
    send_file: Callable[[int, int, int], Awaitable[None]] | None


# The ASGI extensions a stream supports beyond HTTPStream. The stream names them
# in ``HTTPCycle(extensions=...)``; the cycle announces exactly those in
# ``scope["extensions"]`` and calls their method only then.


class TrailersStream(HTTPStream, Protocol):
    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """``http.response.trailers``: end the response with these trailers."""


class EarlyHintStream(HTTPStream, Protocol):
    def send_early_hint(self, links: list[bytes]) -> None:
        """``http.response.early_hint``: a 103 with these Link values (before the response)."""


class PushStream(HTTPStream, Protocol):
    def push(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        """``http.response.push``: promise a GET of ``path`` (HTTP/2 server push)."""


def http_scope(
    method: str,
    http_version: str,
    scheme: str,
    raw_path: bytes,
    query_string: bytes,
    root_path: str,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server: tuple[str, int | None] | None,
    state: dict[str, Any] | None,
    extensions: dict[str, Any],
) -> Scope:
    """Build an ``http`` scope. ``path`` includes ``root_path``, as in uvicorn."""
    if b"%" in raw_path:
        path = unquote(raw_path.decode("latin-1"), errors="replace")
    else:
        path = raw_path.decode("latin-1")
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    scope: Scope = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": scheme,
        "method": method,
        "root_path": root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
        "extensions": extensions,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


# response states
_START = 0  # waiting for http.response.start
_HEAD_PENDING = 1  # start received, nothing written yet
_BODY = 2  # head written, body in progress
_DONE = 3  # response complete (or abandoned)

_EMPTY_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


class HTTPCycle:
    """One request/response exchange between a protocol stream and an ASGI app."""

    __slots__ = (
        "scope",
        "stream",
        "_state",
        "_status",
        "_headers",
        "_body",
        "_received",
        "_body_limit",
        "_body_complete",
        "_request_delivered",
        "_expect_continue",
        "_disconnected",
        "_client_eof",
        "_waiter",
        "_extensions",
        "_consumed",
        "_trailers",
        "status",
        "bytes_sent",
        "task",
    )

    def __init__(
        self,
        scope: Scope,
        stream: HTTPStream,
        body_complete: bool,
        expect_continue: bool = False,
        extensions: tuple[str, ...] = (),
        body_limit: int = 0,
        on_body_consumed: Callable[[int], None] | None = None,
    ) -> None:
        self.scope = scope
        self.stream = stream
        self._state = _START
        self._status = 0
        self._headers: Iterable[tuple[bytes, bytes]] = ()
        #: the request body waiting for the app (created with its first byte)
        self._body: BodyBuffer | None = None
        self._received = 0  # request body bytes received, for body_limit
        #: --limit-request-body (0: none): more gets 413, and the app never sees it
        self._body_limit = body_limit
        self._body_complete = body_complete
        self._request_delivered = False
        self._expect_continue = expect_continue
        self._disconnected = False
        self._client_eof = False
        self._waiter: asyncio.Future[None] | None = None
        # extension message types the stream supports (announced in the scope)
        self._extensions = extensions
        if extensions:
            announced = scope["extensions"]
            for name in extensions:
                announced[name] = {}
        # told how many body bytes the app took (HTTP/2 returns window credit then)
        self._consumed = on_body_consumed
        self._trailers: int | list[tuple[bytes, bytes]] = 0  # 1: announced; a list: collecting them
        #: status actually sent (0 until the head is written), for access logs
        self.status = 0
        self.bytes_sent = 0
        #: the task running the app, set by whoever starts it
        self.task: asyncio.Task[None] | None = None

    # --- protocol side -------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self._state == _DONE or self._disconnected:
            return  # the response is over (or refused): the body goes nowhere
        limit = self._body_limit
        if limit:
            received = self._received = self._received + len(data)
            if received > limit:
                self.refuse_body(413)
                return
        body = self._body
        if body is None:
            body = self._body = BodyBuffer(self.stream.budget)
        body.append(data)  # charged to the connection's budget (it may pause reading)
        self._wake()

    def refuse_body(self, status: int) -> None:
        """The rest of the request body won't be read: it is over ``--limit-request-body``
        (413) or stopped arriving while the app waited for it (408). The app sees
        ``http.disconnect``; the client gets ``status`` when nothing of the
        response was written yet, else the connection (or stream) is reset."""
        if self._disconnected:
            return
        self._disconnected = True
        self._release_body()
        state = self._state
        self._state = _DONE
        if state == _START or state == _HEAD_PENDING:
            self.status = status
            self.stream.refuse(status)
        elif state == _BODY:
            self.stream.abort()
        self._wake()

    def end_body(self) -> None:
        self._body_complete = True
        self._wake()

    def disconnect(self) -> None:
        """The client went away (or the connection is being torn down)."""
        self._disconnected = True
        self._wake()

    def client_eof(self) -> None:
        """The client closed its side after a complete request. Once the body is
        delivered, ``receive()`` reports ``http.disconnect`` (so an app waiting
        for the client to leave learns it did); ``send()`` still writes, for a
        client that only half-closed."""
        self._client_eof = True
        self._wake()

    @property
    def response_complete(self) -> bool:
        return self._state == _DONE

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    # --- application side ----------------------------------------------------

    async def receive(self) -> Message:
        while True:
            buffered = self._body
            if buffered is not None and buffered.size:
                body = buffered.take_next()  # (releases the budget: reading may resume)
                if self._consumed is not None:
                    self._consumed(len(body))
                more_body = not self._body_complete or buffered.size > 0
                if not more_body:
                    self._request_delivered = True
                return {"type": "http.request", "body": body, "more_body": more_body}
            if not self._request_delivered:
                if self._body_complete:
                    self._request_delivered = True
                    return dict(_EMPTY_REQUEST)
                if self._disconnected or self._state == _DONE:
                    return {"type": "http.disconnect"}
                if self._expect_continue:
                    self._expect_continue = False
                    self.stream.send_continue()
                stream = self.stream
                stream.wait_for_body(True)
                try:
                    await self._wait()
                finally:
                    stream.wait_for_body(False)
                continue
            if self._state == _DONE or self._disconnected or self._client_eof:
                return {"type": "http.disconnect"}
            await self._wait()

    async def send(self, message: Message) -> None:
        try:
            message_type = message["type"]
        except (KeyError, TypeError):
            raise TypeError(f"ASGI message must be a dict with a 'type' key, got {message!r:.200}") from None
        state = self._state
        if message_type == "http.response.body":
            if state != _HEAD_PENDING and state != _BODY:
                if state == _DONE:
                    return
                raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'")
            body = message.get("body", b"")
            if type(body) is not bytes:
                if not isinstance(body, (bytes, bytearray, memoryview)):
                    raise TypeError(f"'body' must be bytes, got {type(body).__name__}")
                body = bytes(body)
            more_body = bool(message.get("more_body", False))
            trailing = False
            if self._trailers != 0:  # (rare: trailers were announced)
                trailing = self._last_body_before_trailers(more_body)
                more_body = more_body or trailing
            if self._disconnected:
                raise ClientDisconnected("client disconnected")
            # counted before writing: the stream logs access when the response ends
            self.bytes_sent += len(body)
            try:
                if state == _HEAD_PENDING:
                    self.status = self._status
                    self.stream.start_response(self._status, self._headers, body, more_body)
                else:
                    self.stream.send_body(body, more_body)
            except LocalProtocolError as exc:
                self._invalid_response(exc)
                raise
            if more_body:
                self._state = _BODY
                if trailing:
                    self._trailers = []
                if self.stream.writing_paused:
                    await self.stream.drain()
                    if self._disconnected:
                        raise ClientDisconnected("client disconnected")
            else:
                self._state = _DONE
                if self._body is not None:  # (_release_body, inlined: once per response)
                    self._body.clear()
                if self._waiter is not None:  # receive() waits for the response to end
                    self._wake()
            return
        if message_type == "http.response.start":
            self._start(message, state)
            return
        if state == _DONE:
            return
        if message_type in self._extensions:
            if message_type == "http.response.pathsend":
                await self._send_path(message, state)
            else:
                self._send_extension(message_type, message, state)
            return
        raise RuntimeError(f"ASGI app sent an unexpected message type {message_type!r}")

    def _start(self, message: Message, state: int) -> None:
        """``http.response.start``: kept until the first body (the head is
        written with it, in one piece)."""
        if state != _START:
            if state == _DONE:
                return
            raise RuntimeError("ASGI app sent 'http.response.start' twice")
        status = message.get("status")
        if type(status) is not int:
            raise TypeError(f"'status' must be an int, got {status!r:.50}")
        if not 200 <= status <= 599:
            raise ValueError(f"'status' must be between 200 and 599, got {status}")
        headers = message.get("headers", ())
        self._status = status
        self._headers = headers if headers is not None else ()
        self._state = _HEAD_PENDING
        if self._extensions and message.get("trailers") and "http.response.trailers" in self._extensions:
            self._trailers = 1

    def _last_body_before_trailers(self, more_body: bool) -> bool:
        """Trailers were announced: True when this body is the last one (the
        response then ends with the trailers, not with it)."""
        if self._trailers != 1:
            raise RuntimeError("ASGI app sent 'http.response.body' after its last body; expected trailers")
        return not more_body

    async def _send_path(self, message: Message, state: int) -> None:
        """``http.response.pathsend``: the body is the file at ``path``.

        A Content-Length is added when the app gave none. When the stream
        offers ``send_file`` (cleartext HTTP/1.1) the head goes through the
        ordinary body path and the stream then sends the file itself (zero
        copy). Otherwise the file is read in a thread, PATHSEND_CHUNK bytes at
        a time, and each piece goes through the ordinary body path (flow
        control, framing, disconnects).
        """
        if state != _HEAD_PENDING:
            raise RuntimeError("'http.response.pathsend' must come right after 'http.response.start'")
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"'path' must be an absolute path (str), got {path!r:.100}")
        loop = asyncio.get_running_loop()
        file = await loop.run_in_executor(None, open, path, "rb")
        try:
            remaining = os.fstat(file.fileno()).st_size
            headers = list(self._headers)
            declared = next((value for name, value in headers if name.lower() == b"content-length"), None)
            if declared is None:
                headers.append((b"content-length", b"%d" % remaining))
            self._headers = headers
            send_file = self.stream.send_file
            # (a Content-Length that contradicts the file is the app's error:
            # the threaded path reports it before the head is written)
            if send_file is not None and remaining and (declared is None or declared == b"%d" % remaining):
                await self._send_file(send_file, file.fileno(), remaining)
                return
            while True:
                chunk = (
                    await loop.run_in_executor(None, file.read, min(PATHSEND_CHUNK, remaining)) if remaining else b""
                )
                remaining -= len(chunk)
                more = remaining > 0 and bool(chunk)
                await self.send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return
        finally:
            file.close()

    async def _send_file(self, send_file: Callable[[int, int, int], Awaitable[None]], fd: int, size: int) -> None:
        """The head, then the file through the stream's ``send_file``, then the
        end of the body (where trailers, if announced, take over)."""
        await self.send({"type": "http.response.body", "body": b"", "more_body": True})
        if self._state != _BODY:
            return  # the head was refused (and answered 500) or the client left
        if self._disconnected:
            raise ClientDisconnected("client disconnected")
        # counted before writing, as in send(): an abort logs what was attempted
        self.bytes_sent += size
        try:
            await send_file(fd, 0, size)
        except LocalProtocolError as exc:
            self._invalid_response(exc)
            raise
        if self._disconnected:
            raise ClientDisconnected("client disconnected")
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    def _invalid_response(self, exc: LocalProtocolError) -> None:
        """The stream refused what the app sent: logged here, once, whether or
        not the app swallows the error; the response is failed."""
        logger.error(
            "Invalid response from ASGI app for %s %s: %s", self.scope.get("method"), self.scope.get("path"), exc
        )
        self._fail()

    def _send_extension(self, message_type: str, message: Message, state: int) -> None:
        stream = self.stream
        if self._disconnected:
            raise ClientDisconnected("client disconnected")
        try:
            if message_type == "http.response.trailers":
                collected = self._trailers
                if not isinstance(collected, list):
                    raise RuntimeError(
                        "ASGI app sent 'http.response.trailers' before its last body "
                        "(or without 'trailers': True in 'http.response.start')"
                    )
                collected.extend(message.get("headers") or ())
                if not message.get("more_trailers", False):
                    self._state = _DONE
                    self._release_body()
                    cast(TrailersStream, stream).send_trailers(collected)
                    self._wake()
            elif message_type == "http.response.early_hint":
                if state == _START:  # only before the response (ignored after)
                    links = message.get("links") or ()
                    if not all(isinstance(link, bytes) for link in links):
                        raise TypeError("'links' must be an iterable of bytes")
                    cast(EarlyHintStream, stream).send_early_hint(list(links))
            else:  # http.response.push
                path = message.get("path")
                if not isinstance(path, str):
                    raise TypeError(f"'path' must be a str, got {path!r:.50}")
                cast(PushStream, stream).push(path, list(message.get("headers") or ()))
        except LocalProtocolError as exc:
            logger.error("Invalid %r from ASGI app for %s: %s", message_type, self.scope.get("path"), exc)
            if message_type == "http.response.trailers":
                self._state = _BODY
                self._fail()
            raise

    async def run(self, app: ASGIApp, tasks: set[Any] | None = None) -> None:
        """Run the app for this request; never raises (except cancellation).

        ``tasks`` is the server's registry of running apps: this cycle's task
        leaves it when the app returns (cheaper than a done-callback).
        """
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            logger.debug("Client disconnected while the app was sending (%s)", self.scope.get("path"))
            if self._state != _DONE:
                self._state = _DONE
                self.stream.abort()
        except asyncio.CancelledError:
            state = self._state
            if state != _DONE:
                self._state = _DONE
                if (state == _START or state == _HEAD_PENDING) and not self._disconnected:
                    # cancelled before it answered (shutdown's time is up): the client gets a
                    # 503 it may retry, and the access log says so, not status 0
                    self.status = 503
                    self.bytes_sent = len(ERROR_BODIES[503])
                    self.stream.send_server_error(503)
                else:
                    self.stream.abort()
            raise
        except LocalProtocolError:
            pass  # raised by our send(), which logged it and answered already
        except BaseException as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            self._fail()
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit
        else:
            state = self._state
            if state == _DONE:
                pass  # the usual case, tested first
            elif state == _START or state == _HEAD_PENDING:
                if self._disconnected:
                    # the usual end of a long poll whose client left: no 500 was sent
                    logger.debug(
                        "ASGI app returned without a response after the client disconnected (%s)",
                        self.scope.get("path"),
                    )
                else:
                    logger.error("ASGI app returned without completing its response; answered 500")
                self._fail()
            else:
                if self._disconnected or self._client_eof:
                    # a stream (server-sent events, a cancelled push) whose client left
                    # or closed its side (receive() says http.disconnect for both):
                    # returning then is what the app should do
                    logger.debug(
                        "ASGI app returned mid-body after the client disconnected (%s)", self.scope.get("path")
                    )
                else:
                    logger.error("ASGI app returned with its response body incomplete; connection closed")
                self._state = _DONE
                self.stream.abort()
        finally:
            if self._body is not None:
                self._body.clear()
            if tasks is not None:
                tasks.discard(self.task)

    def _release_body(self) -> None:
        """The response is over: what the app did not read of the body is dropped
        (and its charge released, so the connection reads again)."""
        if self._body is not None:
            self._body.clear()

    def _fail(self) -> None:
        state = self._state
        self._state = _DONE
        self._release_body()
        if state == _START or state == _HEAD_PENDING:
            if not self._disconnected:
                self.status = 500
                # what the access log reports (it is written as the 500 goes out): our
                # answer's body, not the one the app had tried to send
                self.bytes_sent = len(SERVER_ERROR_BODY)
                self.stream.send_server_error()
        elif state == _BODY:
            self.stream.abort()
        self._wake()
