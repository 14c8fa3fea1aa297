"""The ``HTTPStream`` side of :class:`~heron.transport.http1.H1Protocol`: what
the request's :class:`~heron.asgi.http.HTTPCycle` calls to answer (the head,
body pieces, trailers, interim responses, a file by ``os.sendfile``, heron's
own error answers), and what follows a complete response: the next request
on the connection, or draining the unread rest of this one's body.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterable

from ..asgi.http import ERROR_BODIES
from ..protocol.errors import LocalProtocolError
from ..protocol.http1 import simple_response
from .context import error_logger, write_pieces
from .h1_base import (
    BODY_DEADLINE,
    HEADER_DEADLINE,
    KEEP_ALIVE_DEADLINE,
    MAX_DRAIN,
    NO_DEADLINE,
    PAUSED_BY_BODY,
    PAUSED_BY_PIPELINE,
    WRITE_DEADLINE,
    H1ProtocolBase,
)

#: sendfile errors that mean the client went away (any other is a file error)
_CLIENT_GONE = (ConnectionError, TimeoutError)
#: a streamed response's small pieces wait for one write until this many bytes wait
COALESCE_LIMIT = 64 * 1024
#: a piece at least this big is written at once (after what waits), not copied into a join
BIG_PIECE = 16 * 1024
#: what a waiting piece costs beyond its bytes (the bytes object and its list slot),
#: so that a stream of 1-byte chunks is bounded by what it really holds
PIECE_OVERHEAD = 48


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


#: status -> the head fields of heron's own answer in the app's place (ERROR_BODIES)
_ERROR_HEADERS = {
    status: [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
    for status, body in ERROR_BODIES.items()
}


class H1ResponseWriter(H1ProtocolBase):
    """Part of H1Protocol: the HTTPStream interface and the cycle transitions."""

    __slots__ = ()

    # --- HTTPStream interface (called by the cycle) ----------------------------

    def start_response(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes, more_body: bool) -> None:
        if self._closed:
            return
        if self._request is not None:  # observed: the access log may show response headers
            self._response_headers = headers
        ctx = self.ctx
        conn = self.conn
        # Close after this response when the unread body is too big to drain,
        # or when the client still waits for 100-continue (it may never send
        # the body now), or when the server is shutting down.
        close = ctx.shutting_down or (
            not conn.request_complete and (self._awaiting_continue or self._draining_needed())
        )
        if not more_body and len(body) < BIG_PIECE:
            # the whole response in one message: one call, one write
            self.transport.write(
                conn.send_response(
                    status,
                    headers,
                    server_line=ctx.server_line,
                    date_line=ctx.date_line,
                    extra_lines=ctx.extra_lines,
                    close=close,
                    complete_body=body,
                )
            )
            self._head_written = True
            self._response_complete()
            return
        head = conn.send_response(
            status,
            headers,
            server_line=ctx.server_line,
            date_line=ctx.date_line,
            extra_lines=ctx.extra_lines,
            close=close,
        )
        if not more_body:
            self._write_big_complete(head, body)
            return
        try:
            data = conn.send_data(body) if body else b""
        except LocalProtocolError:
            conn.send_failed()  # nothing written: send_server_error() can still answer
            raise
        self._head_written = True
        self._write_soon(head + data if data else head)

    def _write_big_complete(self, head: bytes, body: bytes) -> None:
        """The rest of a whole response whose body is big: the head, the
        framing and the end go out beside the body in one ``writev``, so its
        bytes are never copied into a joined buffer (a 64 KiB join costs more
        than the rest of the response). The framer checks the body's length
        as ``complete_body`` would."""
        conn = self.conn
        try:
            framing = conn.frame_data(len(body))
            end = conn.send_end()
        except LocalProtocolError:
            conn.send_failed()  # nothing written: send_server_error() can still answer
            raise
        if self._out is not None:
            self._flush_out()
        if framing is None:  # no body allowed (HEAD, 204, 304): only the head goes out
            self.transport.write(head)
        else:
            before, after = framing
            write_pieces(self.transport, (head + before, body, after + end) if after or end else (head + before, body))
        self._head_written = True
        self._response_complete()

    def send_body(self, body: bytes, more_body: bool) -> None:
        if self._closed or self._transport_lost():
            return
        conn = self.conn
        if more_body and len(body) >= BIG_PIECE:
            # a big piece: its chunk framing is written beside it, not joined to it (no copy)
            framing = conn.frame_data(len(body))
            if framing is not None:
                if self._out is not None:
                    self._flush_out()
                before, after = framing
                if before:
                    write_pieces(self.transport, (before, body, after))
                else:
                    self.transport.write(body)
            return
        data = conn.send_data(body) if body else b""
        if more_body:
            if data:
                self._write_soon(data)
            return
        data += conn.send_end()
        if self._out is not None:
            self._out.append(data)
            self._flush_out()
        elif data:
            self.transport.write(data)
        self._response_complete()

    # A streamed response's pieces (the head, then each chunk) are written together
    # at the end of the loop iteration, or as soon as COALESCE_LIMIT bytes wait
    # (pieces of BIG_PIECE bytes or more are written at once):
    # an app that sends 100 small chunks without waiting on anything else costs one
    # or two socket writes instead of 100 (a write is a system call, several times
    # the CPU heron spends on a chunk). Latency is unchanged: the loop iteration
    # ends when the app waits. Every other write of the connection (the last
    # piece, trailers, a file, closing) flushes what waits first, so the order holds.

    def _write_soon(self, data: bytes) -> None:
        out = self._out
        if len(data) >= BIG_PIECE:
            if out is not None:
                self._flush_out()
            self.transport.write(data)  # (big pieces: no copy into a joined buffer)
        elif out is None:
            self._out = [data]
            self._out_size = len(data) + PIECE_OVERHEAD
            self.ctx.write_at_turn_end(self._flush_out)
        else:
            out.append(data)
            self._out_size += len(data) + PIECE_OVERHEAD
            if self._out_size >= COALESCE_LIMIT:
                self._flush_out()

    def _flush_out(self) -> None:
        out = self._out
        if out is None or self._closed:
            return
        self._out = None
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_server_error(self, status: int = 500) -> None:
        if self._closed:
            return
        if self._head_written:
            self.abort()
            return
        body = ERROR_BODIES[status]
        if self.conn.response_started:
            # the framer was left mid-response: answer outside it, then close
            self.conn.send_failed()
            self.transport.write(simple_response(status, self.ctx.date_line + self.ctx.server_line, body))
            self._close()
            return
        self.start_response(status, _ERROR_HEADERS[status], body, False)

    def abort(self) -> None:
        self.conn.send_failed()
        cycle = self.cycle
        if cycle is not None:
            self._log_access(cycle)
            self.cycle = None
            # an app still sending (write timeout) must learn the connection is gone
            cycle.disconnect()
        self._close()

    def send_continue(self) -> None:
        if self._awaiting_continue and not self._closed and not self.conn.response_started:
            self._awaiting_continue = False
            self.transport.write(self.conn.send_informational(100))

    def refuse(self, status: int) -> None:
        """Answer ``status`` outside the framer (nothing of the response was
        written) and close: the rest of the request body is never read."""
        if self._closed:
            return
        cycle = self.cycle
        if cycle is not None and self._request is not None:
            self._log_access(cycle)
        self.conn.send_failed()
        self.transport.write(simple_response(status, self.ctx.date_line + self.ctx.server_line))
        self._close()

    def wait_for_body(self, waiting: bool) -> None:
        """Arm (True) or clear the ``timeout_request_body`` deadline (a write
        deadline, armed while the client reads slowly, is left alone)."""
        if waiting:
            timeout = self.ctx.config.timeout_request_body
            kind = self.deadline_kind
            if timeout and (kind == NO_DEADLINE or kind == BODY_DEADLINE) and not self._closed:
                self.ctx.deadlines.arm(self, BODY_DEADLINE, self.ctx.clock + timeout)
        else:
            self._clear_deadline(BODY_DEADLINE)

    def send_early_hint(self, links: list[bytes]) -> None:
        """103 Early Hints (RFC 8297), one Link field per link."""
        if not self._closed and not self.conn.response_started:
            self.transport.write(self.conn.send_informational(103, [(b"link", link) for link in links]))

    def send_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """End a response announced with trailers; they go on the wire only
        when it is chunked (with a Content-Length there is nowhere to put them)."""
        if self._closed:
            return
        conn = self.conn
        data = conn.send_end(headers if conn.chunked_response else None)
        if self._out is not None:
            self._flush_out()
        if data:
            self.transport.write(data)
        self._response_complete()

    async def drain(self) -> None:
        if not self.writing_paused or self._closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.ctx.loop.create_future()
        await waiter

    async def _send_file(self, fd: int, offset: int, count: int) -> None:
        """``send_file`` of the HTTPStream interface: ``count`` bytes of the
        open file ``fd`` from ``offset`` are the next piece of the body.

        Zero copy with ``os.sendfile``. The transport knows nothing of these
        bytes, so they go out only once everything written before them has
        left its buffer, and nothing is written through it meanwhile (the
        cycle is busy in this call). uvloop has no ``loop.sendfile`` and won't
        watch a transport's own fd, so the socket is ``dup()``'d: a second
        descriptor of the same connection that the loop polls while the
        client is slow. As for ordinary writes, a client that reads nothing
        for ``timeout_write`` seconds is disconnected; one that goes away
        aborts the connection (the cycle then sees a disconnect).

        Raises LocalProtocolError, writing nothing, when the file is longer
        than the response's Content-Length (or later, when it turns out
        shorter than ``count``), and OSError for a file error.
        """
        if self._closed or self._transport_lost():
            return
        framing = self.conn.frame_data(count)
        if framing is None:
            return  # HEAD, 204, 304: no body on the wire
        prefix, suffix = framing
        transport = self.transport
        if self._out is not None:
            self._flush_out()  # (the file's bytes bypass the transport: what waits goes first)
        if prefix:
            transport.write(prefix)
        if transport.get_write_buffer_size():
            # With both limits at 0 the transport pauses us at once and calls
            # resume_writing exactly when its buffer is empty (drain() waits
            # for that, bounded by timeout_write through pause_writing).
            low, high = transport.get_write_buffer_limits()
            transport.set_write_buffer_limits(high=0, low=0)
            try:
                await self.drain()
            finally:
                if not self._closed:
                    transport.set_write_buffer_limits(high=high, low=low)
            if self._closed:
                return
        metrics = self.ctx.metrics
        out = os.dup(transport.get_extra_info("socket").fileno())
        try:
            while True:
                try:
                    sent = os.sendfile(out, fd, offset, count)
                except BlockingIOError:
                    sent = -1
                except _CLIENT_GONE as exc:
                    error_logger.debug("Client %s went away during sendfile: %s", self.peer, exc)
                    self.abort()
                    return
                except OSError as exc:
                    if exc.errno != errno.ENOTCONN:
                        raise
                    self.abort()
                    return
                if sent == 0:
                    raise LocalProtocolError(
                        f"the file ended {count} bytes short of its size when the response started"
                    )
                if sent > 0:
                    if metrics is not None:  # these bytes bypass the counting transport
                        metrics.bytes_out += sent
                    offset += sent
                    count -= sent
                    if not count:
                        break
                # The socket took what it could: wait until the client reads.
                # (After a short send this also lets other connections run.)
                if not await self._wait_writable(out):
                    return
        finally:
            os.close(out)
        if suffix:
            transport.write(suffix)

    async def _wait_writable(self, fd: int) -> bool:
        """Wait until the socket ``fd`` can take more (False: the connection
        closed meanwhile, e.g. after ``timeout_write`` without progress)."""
        loop = self.ctx.loop
        # in _drain_waiter, so connection_lost wakes it too
        waiter = self._drain_waiter = loop.create_future()
        self._set_deadline(WRITE_DEADLINE, self.ctx.config.timeout_write)
        loop.add_writer(fd, _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            if self._drain_waiter is waiter:
                self._drain_waiter = None
            self._clear_deadline(WRITE_DEADLINE)
        return not self._closed

    # --- cycle transitions -------------------------------------------------------

    def _draining_needed(self) -> bool:
        """True when the unread request body is too big to drain: close instead."""
        remaining = self.conn.body_remaining
        return remaining is not None and remaining > MAX_DRAIN

    def _write_simple(self, status: int, body: bytes, close: bool = False) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        self.start_response(status, headers, body, False)

    def _response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and self._request is not None:
            self._log_access(cycle)
        conn = self.conn
        if not conn.keep_alive:
            self.cycle = None
            self._close()
        elif conn.request_complete:
            self._next_cycle()
        else:
            # The app answered without reading the whole body: discard the
            # rest (bounded) so the connection can be reused.
            self.cycle = None
            self._draining = True
            self._drained = 0
            self._set_deadline(HEADER_DEADLINE, self.ctx.config.timeout_request_header)
            self._resume_reading(PAUSED_BY_BODY)
            self.ctx.loop.call_soon(self._process)

    def _next_cycle(self) -> None:
        self.cycle = None
        pipelined = self.conn.start_next_cycle()
        ctx = self.ctx
        if ctx.shutting_down:
            self._close()
            return
        self._set_deadline(KEEP_ALIVE_DEADLINE, ctx.timeout_keep_alive)
        if self._reading_paused_by:
            self._resume_reading(PAUSED_BY_BODY | PAUSED_BY_PIPELINE)
        if pipelined or self._eof:
            # pipelined requests: parse them on the next loop turn, not inside
            # the send() of the previous app
            self.ctx.loop.call_soon(self._process)
