"""The sending side of :class:`~heron.protocol.http2.connection.H2Core`: response
heads (validated and encoded once per repeated head), body data queued per stream
and sent as the peer's windows allow, trailers, and the output queue itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import LocalProtocolError
from .base import _H2Base
from .encoder import _CachedHead
from .events import StreamWritable
from .fields import _ANY_TOKEN, _BAD_RESPONSE_VALUE, response_fields, trailer_fields
from .frames import (
    _CONTINUATION,
    _DATA,
    _END_HEADERS,
    _END_STREAM,
    _HEADERS,
    _MAX_CACHED_HEAD,
    _PACK_FRAME,
    _frame_head,
)
from .stream import (
    _CLOSED,
    _HALF_CLOSED_LOCAL,
    _HALF_CLOSED_REMOTE,
    _OPEN,
    _SEND_END_STREAM,
    _SEND_HEADERS,
    _Stream,
    next_state,
)

_BAD_HEADERS = "headers must be an iterable of [name, value] pairs of bytes"


class _H2Sending(_H2Base):
    """Frames we send on streams, and the output queue (see :class:`H2Core`)."""

    # --- the output queue ---------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def take_output(self) -> list[Any]:
        """The queued output as a list of bytes-like pieces (for ``transport.writelines``;
        :attr:`large_output` tells whether joining them first would copy big DATA payloads)."""
        out = self._out
        if out:
            self._out = []
            self.large_output = False
        return out

    @property
    def has_output(self) -> bool:
        """Frames are queued (see :meth:`take_output`)."""
        return bool(self._out)

    def output_flushed(self) -> None:
        """The transport wrote everything out: queued replies are no longer piling up."""
        self._control_queued = 0

    def _queue_block(self, kind: int, sid: int, block: bytes, end_stream: bool, prefix: bytes = b"") -> None:
        """A HEADERS or PUSH_PROMISE frame (``prefix``: the promised stream id), with
        CONTINUATION frames when the block is bigger than the peer's frame size."""
        out = self._out
        flags = _END_STREAM if end_stream else 0
        size = len(prefix) + len(block)
        max_frame = self._send_frame
        if size <= max_frame:
            out.append(_PACK_FRAME(size >> 16, size & 0xFFFF, kind, flags | _END_HEADERS, sid))  # (_frame_head)
            if prefix:
                out.append(prefix)
            out.append(block)
            return
        first = max_frame - len(prefix)
        out.append(_frame_head(kind, flags, sid, max_frame))
        out.append(prefix)
        out.append(block[:first])
        pos = first
        while pos < len(block):
            piece = block[pos : pos + max_frame]
            pos += len(piece)
            out.append(_frame_head(_CONTINUATION, _END_HEADERS if pos >= len(block) else 0, sid, len(piece)))
            out.append(piece)

    # --- response heads ---------------------------------------------------------------

    def _response_fields(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: list[tuple[bytes, bytes]],
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        fields, remaining = response_fields(status, headers)
        if default_headers:
            fields.extend(default_headers)
        return fields, remaining

    def _new_head(
        self,
        key: tuple[Any, ...] | None,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: list[tuple[bytes, bytes]],
    ) -> _CachedHead:
        """A response head not in the cache: validate it, and keep it under ``key``
        (None: unhashable) if it is small."""
        head = _CachedHead(*self._response_fields(status, headers, default_headers))
        if key is not None and sum(len(n) + len(v) for n, v in head.fields) <= _MAX_CACHED_HEAD:
            heads = self._heads
            if len(heads) >= 64:
                heads.clear()
            heads[key] = head
        return head

    def send_headers(
        self,
        sid: int,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        end_stream: bool,
        default_headers: list[tuple[bytes, bytes]] = [],  # noqa: B006 - never mutated
    ) -> None:
        """Queue the response head. Raises :class:`LocalProtocolError` (queuing
        nothing) for an invalid header; drops connection-specific fields."""
        if type(headers) is not list and type(headers) is not tuple:
            try:
                headers = list(headers)
            except TypeError:
                raise LocalProtocolError(_BAD_HEADERS) from None
        try:
            key: Any = (status, tuple(headers), tuple(default_headers))
            head = self._heads.get(key)
        except TypeError:  # unhashable (lists as pairs...): validated every time
            key = None
            head = None
        if head is None:
            head = self._new_head(key, status, headers, default_headers)
        st = self.streams.get(sid)
        if st is None or self.closed:
            return  # the stream is gone (reset)
        state = st.state
        if state is not _HALF_CLOSED_REMOTE and state is not _OPEN:
            if state is _HALF_CLOSED_LOCAL:
                return  # our END_STREAM is sent already
            st.state = next_state(state, _SEND_HEADERS)  # a pushed response: reserved (local) -> half-closed (remote)
        encoder = self.encoder
        block = head.block
        if block is None or head.version != encoder.version or encoder.resize is not None:
            version = encoder.version
            block = encoder.encode(head.fields)
            if encoder.version == version:  # the table didn't change: the block can be sent again
                head.block = block
                head.version = version
            else:
                head.block = None
        no_body = status == 204 or status == 304 or st.method == b"HEAD"
        self._queue_block(_HEADERS, sid, block, end_stream)
        st.remaining = None if no_body else head.content_length
        st.no_body = no_body
        st.responding = True
        if end_stream:
            self._sent_end(st)

    def _sent_end(self, st: _Stream) -> None:
        """Our END_STREAM is queued on ``st``: the caller's part is over."""
        self._forget(st)
        if st.state is _HALF_CLOSED_REMOTE:
            st.state = _CLOSED  # (the table's move, inlined: the usual end of a stream)
            self._close_stream(st)
        else:
            st.state = next_state(st.state, _SEND_END_STREAM)  # open -> half-closed (local)

    def send_informational(self, sid: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        fields = [(b":status", b"%d" % status)]
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid header {name!r:.40}")
            fields.append((bytes(name.lower()), bytes(value)))
        st = self.streams.get(sid)
        if st is None or st.state is _HALF_CLOSED_LOCAL or self.closed:
            return
        self._queue_block(_HEADERS, sid, self.encoder.encode(fields), False)

    # --- body and trailers ------------------------------------------------------------------

    def send_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes; they go out as the peer's windows allow.
        Raises :class:`LocalProtocolError` for more than the declared content-length,
        or an end short of it (nothing queued then)."""
        st = self.streams.get(sid)
        if st is None or not st.responding or self.closed:
            return  # the stream is gone (reset): drop
        if st.no_body:
            data = b""
        n = len(data)
        if st.remaining is not None:
            left = st.remaining - n
            if left < 0:
                raise LocalProtocolError("response body longer than its content-length")
            if end_stream and left:
                raise LocalProtocolError("response body shorter than its content-length")
            st.remaining = left
        if (
            end_stream
            and not st.chunks
            and n <= self._send_frame
            and n <= self._send_window
            and n <= st.swin
            and st.trailers is None
        ):
            # the common case: the whole (rest of the) body in one last frame
            self._send_window -= n
            st.swin -= n
            out = self._out
            out.append(_PACK_FRAME(n >> 16, n & 0xFFFF, _DATA, _END_STREAM, sid))  # (_frame_head, inlined)
            if n:
                out.append(data)
                if n >= 8192:
                    self.large_output = True
            if self.blocked:
                self.blocked.pop(sid, None)
            self._sent_end(st)
            return
        if data:
            st.chunks.append(data)
            st.size += n
        if end_stream:
            st.end = True
        self._flush(st)

    def send_trailers(self, sid: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the stream with a trailer section (after the queued data)."""
        st = self.streams.get(sid)
        if st is None or not st.responding or self.closed:
            return
        fields = trailer_fields(headers)
        if st.remaining:
            raise LocalProtocolError("response body shorter than its content-length")
        st.trailers = fields
        st.end = True
        self._flush(st)

    def pending(self, sid: int) -> int:
        """Bytes queued on ``sid`` waiting for window credit."""
        st = self.streams.get(sid)
        return st.size if st is not None else 0

    def _flush(self, st: _Stream) -> None:
        """Send what ``st`` has queued, as far as the windows allow (``st.responding``)."""
        chunks = st.chunks
        sid = st.sid
        if chunks:
            out = self._out
            max_frame = self._send_frame
            while chunks:
                window = self._send_window
                if st.swin < window:
                    window = st.swin
                if window <= 0:
                    if sid not in self.blocked:
                        self.blocked[sid] = self.clock()
                    return
                chunk = chunks[0]
                n = len(chunk)
                if n > window or n > max_frame:
                    n = min(max_frame, window)
                    if type(chunk) is not memoryview:
                        chunk = memoryview(chunk)
                    piece = chunk[:n]
                    chunks[0] = chunk[n:]
                else:
                    del chunks[0]
                    piece = chunk
                st.size -= n
                st.swin -= n
                self._send_window -= n
                last = not chunks and st.end and st.trailers is None
                out.append(_frame_head(_DATA, _END_STREAM if last else 0, sid, n))
                out.append(piece)
                if n >= 8192:
                    self.large_output = True
            if self.blocked:
                self.blocked.pop(sid, None)
            if st.end:
                if st.trailers is not None:
                    self._queue_block(_HEADERS, sid, self.encoder.encode(st.trailers), True)
                self._sent_end(st)
            return
        if st.end:
            if st.trailers is not None:
                self._queue_block(_HEADERS, sid, self.encoder.encode(st.trailers), True)
            else:
                self._out.append(_frame_head(_DATA, _END_STREAM, sid, 0))
            self._sent_end(st)

    def _flush_all(self) -> None:
        """Window credit arrived: send what the blocked streams queued."""
        for sid in list(self.blocked):
            st = self.streams.get(sid)
            if st is None or not st.chunks:
                self.blocked.pop(sid, None)
                continue
            self._flush(st)
            if not st.chunks:
                self._events.append(StreamWritable(sid))
