"""The receiving side of :class:`~heron.protocol.http2.connection.H2Core`: the frame
loop, header blocks (HEADERS, CONTINUATION, HPACK decoding, new streams and
trailers) and DATA with the receive windows. The frames that carry no request
are in :mod:`.control`, this class's base."""

from __future__ import annotations

from hpack.exceptions import HPACKError, OversizedHeaderListError

from .base import _ConnError
from .control import _H2Control
from .encoder import _ONE_BYTE_INDEXED, _STATIC, _STATIC_LEN
from .events import DataReceived, RequestReceived, StreamEnded
from .fields import _Malformed, validate_request
from .frames import (
    _COMPRESSION_ERROR,
    _CONTINUATION,
    _DATA,
    _END_HEADERS,
    _END_STREAM,
    _ENHANCE_YOUR_CALM,
    _FLOW_CONTROL_ERROR,
    _FRAME,
    _FRAME_SIZE_ERROR,
    _GOAWAY,
    _HEADERS,
    _MAX_BLOCK_FRAMES,
    _MAX_CACHED_REQUEST,
    _MAX_FRAME,
    _PADDED,
    _PING,
    _PRIORITY,
    _PRIORITY_FLAG,
    _PROTOCOL_ERROR,
    _PUSH_PROMISE,
    _REFUSED_STREAM,
    _RST_STREAM,
    _SETTINGS,
    _U32,
    _WINDOW_UPDATE,
    PREFACE,
    _frame_head,
    _HeaderBlock,
)
from .limits import FRAMES_PER_CALL
from .stream import (
    _HALF_CLOSED_LOCAL,
    _HALF_CLOSED_REMOTE,
    _OPEN,
    _RECV_DATA,
    _RECV_END_STREAM,
    _RECV_HEADERS,
    _SEND_RST_STREAM,
    _Stream,
    next_state,
)


class _H2Receiving(_H2Control):
    """Frames from the peer (see :class:`H2Core`)."""

    # --- the frame loop -------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        pos = 0
        buf = self._buf
        if buf:
            if data:
                data = buf[self._buf_pos :] + data
            else:  # the rest of an earlier read (input_pending): no copy
                data = buf
                pos = self._buf_pos
            self._buf = b""
            self._buf_pos = 0
        end = len(data)
        if self._preface:
            if not self._read_preface(data):
                return
            pos = 24
        unpack = _FRAME.unpack_from
        frames = FRAMES_PER_CALL
        while end - pos >= 9:
            if not frames:
                self.input_pending = True
                break
            frames -= 1
            high, low, kind, flags, sid = unpack(data, pos)
            length = (high << 16) | low
            if length > _MAX_FRAME:
                raise _ConnError(_FRAME_SIZE_ERROR, f"frame of {length} bytes (SETTINGS_MAX_FRAME_SIZE {_MAX_FRAME})")
            start = pos + 9
            pos = start + length
            if pos > end:
                pos = start - 9
                break
            payload = data[start:pos]
            sid &= 0x7FFFFFFF
            if self._hdr is not None and kind != _CONTINUATION:
                raise _ConnError(_PROTOCOL_ERROR, "a header block was interrupted (CONTINUATION expected)")
            # the frames of every request first; the others are dispatched by _on_other_frame
            if kind == _HEADERS:
                self._on_headers(sid, flags, payload)
            elif kind == _DATA:
                self._on_data(sid, flags, payload)
            elif kind == _WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            else:
                self._on_other_frame(kind, sid, flags, payload)
            if self.closed:
                return
        if pos < end:
            if self.input_pending:
                self._buf = data  # kept whole: the next call starts at _buf_pos, no copy
                self._buf_pos = pos
            else:
                self._buf = data[pos:]

    def _read_preface(self, data: bytes) -> bool:
        """The client preface starts ``data``: True once it is complete (24 bytes);
        False while it may still be (``data`` is kept for the next call)."""
        if len(data) < 24:
            if not PREFACE.startswith(data):
                raise _ConnError(_PROTOCOL_ERROR, "invalid connection preface")
            self._buf = data
            return False
        if data[:24] != PREFACE:
            raise _ConnError(_PROTOCOL_ERROR, "invalid connection preface")
        self._preface = False
        return True

    def _on_other_frame(self, kind: int, sid: int, flags: int, payload: bytes) -> None:
        if kind == _SETTINGS:
            self._on_settings(sid, flags, payload)
        elif kind == _RST_STREAM:
            self._on_rst_stream(sid, payload)
        elif kind == _PING:
            self._on_ping(sid, flags, payload)
        elif kind == _PRIORITY:
            self._on_priority(sid, payload)
        elif kind == _CONTINUATION:
            self._on_continuation(sid, flags, payload)
        elif kind == _GOAWAY:
            self._on_goaway(sid, payload)
        elif kind == _PUSH_PROMISE:
            raise _ConnError(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:  # an extension frame we don't know: ignored (RFC 9113 5.5), but it carries nothing
            self._empty_frame()

    # --- HEADERS / CONTINUATION ----------------------------------------------------

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise _ConnError(_PROTOCOL_ERROR, "HEADERS on stream 0")
        depends_on = -1
        if flags & (_PADDED | _PRIORITY_FLAG):
            start = 0
            stop = len(payload)
            if flags & _PADDED:
                if not payload:
                    raise _ConnError(_FRAME_SIZE_ERROR, "padded HEADERS without a pad length")
                start = 1
                stop -= payload[0]
            if flags & _PRIORITY_FLAG:
                if stop - start < 5:
                    raise _ConnError(
                        _FRAME_SIZE_ERROR if not flags & _PADDED else _PROTOCOL_ERROR,
                        "HEADERS too short for its priority",
                    )
                depends_on = _U32.unpack_from(payload, start)[0] & 0x7FFFFFFF
                start += 5
            if stop < start:
                raise _ConnError(_PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            payload = payload[start:stop]
        if not flags & _END_HEADERS:
            if len(payload) > self._max_block:
                raise _ConnError(_ENHANCE_YOUR_CALM, "header block too large")
            self._hdr = _HeaderBlock(sid, flags, depends_on, payload)
            return
        self._on_header_block(sid, flags, depends_on, payload)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        hdr = self._hdr
        if hdr is None:
            raise _ConnError(_PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        if sid != hdr.sid:
            raise _ConnError(_PROTOCOL_ERROR, "CONTINUATION on another stream")
        hdr.fragments.append(payload)
        hdr.size += len(payload)
        hdr.frames += 1
        if not payload and not flags & _END_HEADERS:
            self._empty_frame()
        if hdr.size > self._max_block:
            raise _ConnError(_ENHANCE_YOUR_CALM, "header block too large (CONTINUATION flood)")
        if hdr.frames > _MAX_BLOCK_FRAMES:
            raise _ConnError(_ENHANCE_YOUR_CALM, "header block in too many frames (CONTINUATION flood)")
        if flags & _END_HEADERS:
            self._hdr = None
            self._on_header_block(sid, hdr.flags, hdr.depends_on, b"".join(hdr.fragments))

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Decode a header block. ``_cacheable`` tells whether the decoder's table
        stayed as it was (so the same block would decode the same way again)."""
        if block and not block.translate(None, _ONE_BYTE_INDEXED):
            self._cacheable = True
            # only indexed fields (1-126): table lookups, nothing changes in the table
            dynamic = self._dynamic
            limit = self.decoder.max_header_list_size
            fields = []
            size = 0
            for byte in block:
                index = byte - 0x81
                if index < _STATIC_LEN:
                    field = _STATIC[index]
                else:
                    index -= _STATIC_LEN
                    if index >= len(dynamic):
                        raise _ConnError(_COMPRESSION_ERROR, f"HPACK: invalid table index {byte - 0x80}")
                    field = dynamic[index]
                size += 32 + len(field[0]) + len(field[1])
                if size > limit:
                    raise _ConnError(_ENHANCE_YOUR_CALM, "HPACK: decoded header list too large")
                fields.append(field)
            return fields
        # anything else may change the table: what was cached may not decode the same way
        self._cacheable = False
        self._requests.clear()
        try:
            return self.decoder.decode(block, raw=True)  # type: ignore[return-value]
        except OversizedHeaderListError as exc:
            raise _ConnError(_ENHANCE_YOUR_CALM, f"HPACK: {exc}") from None
        except (HPACKError, IndexError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise _ConnError(_COMPRESSION_ERROR, f"HPACK: {exc}") from None

    def _on_header_block(self, sid: int, flags: int, depends_on: int, block: bytes) -> None:
        end_stream = bool(flags & _END_STREAM)
        st = self.streams.get(sid)
        request = self._requests.get(block) if st is None else None
        if request is None:
            headers = self._decode(block)  # always: the decoder's table is the connection's
        if st is not None:  # trailers, or HEADERS the stream's state doesn't allow
            self._on_trailers(st, depends_on, end_stream, headers)
            return
        if not sid & 1:
            raise _ConnError(_PROTOCOL_ERROR, f"HEADERS on stream {sid}, not a client stream id")
        if sid <= self._highest:  # not idle: closed
            if sid not in self._closed_by_reset:  # (RFC 9113 5.1.1: new streams have higher ids)
                raise _ConnError(_PROTOCOL_ERROR, f"HEADERS on stream {sid}, closed or lower than a stream opened")
            self._refuse(sid, None, _RECV_HEADERS, "HEADERS")
            return
        self._highest = sid
        if (self._going_away and sid > self.last_stream_id) or self._active >= self.limits.max_concurrent_streams:
            self._refuse_stream(sid)
            return
        if depends_on == sid:
            self._reset_new(sid, _PROTOCOL_ERROR)
            return
        if request is None:
            try:
                request = validate_request(headers, self.limits.enable_connect_protocol)
            except _Malformed:
                self._reset_new(sid, _PROTOCOL_ERROR)
                return
            if self._cacheable and len(block) <= _MAX_CACHED_REQUEST:
                requests = self._requests
                if len(requests) >= 32:
                    requests.clear()
                requests[block] = request
        expected = request.expected
        if expected and end_stream:
            self._reset_new(sid, _PROTOCOL_ERROR)  # content-length larger than the body
            return
        # idle -> open, and on to half-closed (remote) with END_STREAM (the table's moves, inlined)
        st = _Stream(
            sid, self._stream_window, self._peer_window, _HALF_CLOSED_REMOTE if end_stream else _OPEN, self._reads
        )
        st.method = method = request.method
        st.scheme = scheme = request.scheme
        st.authority = request.host
        st.expected = expected
        st.counted = True
        self._active += 1
        self.streams[sid] = st
        self._events.append(
            RequestReceived(
                sid,
                method,
                scheme,
                request.authority,
                request.target,
                request.query,
                request.protocol,
                list(request.regular),
                end_stream,
                expected,
                request.forwarded,
            )
        )
        if end_stream:
            self._events.append(StreamEnded(sid))

    def _refuse_stream(self, sid: int) -> None:
        """A new stream beyond SETTINGS_MAX_CONCURRENT_STREAMS, or after our GOAWAY: REFUSED_STREAM.
        No work started, so it is not a reset the peer provoked (see the package docstring)."""
        self._remember_reset(sid, _SEND_RST_STREAM)
        self._out.append(_frame_head(_RST_STREAM, 0, sid, 4) + _U32.pack(_REFUSED_STREAM))
        self._control_queued += 1
        if self._refusals.hit(self.clock()):
            self._flood = "too many streams opened beyond SETTINGS_MAX_CONCURRENT_STREAMS"

    def _on_trailers(self, st: _Stream, depends_on: int, end_stream: bool, headers: list[tuple[bytes, bytes]]) -> None:
        """HEADERS on a stream we keep: the request's trailers, if its state allows them."""
        sid = st.sid
        if self._refuse(sid, st, _RECV_HEADERS, "HEADERS"):
            return
        if depends_on == sid:
            self._stream_error(sid, "stream depends on itself")
        elif not end_stream:
            self._stream_error(sid, "trailers without END_STREAM")
        elif any(name[:1] == b":" for name, _ in headers):
            self._stream_error(sid, "pseudo-header field in trailers")
        else:
            self._end_of_request(st)

    def _end_of_request(self, st: _Stream) -> None:
        """END_STREAM from the peer (on DATA or trailers)."""
        if st.expected is not None and st.received != st.expected:
            self._stream_error(st.sid, "content-length doesn't match the body")
            return
        if st.live:
            self._events.append(StreamEnded(st.sid))
        if st.state is _OPEN:
            st.state = _HALF_CLOSED_REMOTE  # (the table's move, inlined: the response is still to come)
        else:
            st.state = next_state(st.state, _RECV_END_STREAM)  # half-closed (local) -> closed
            self._close_stream(st)

    # --- DATA and flow control -------------------------------------------------------

    def _on_data(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            raise _ConnError(_PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        if flags & _PADDED:
            if not flow:
                raise _ConnError(_FRAME_SIZE_ERROR, "padded DATA without a pad length")
            pad = payload[0]
            if pad >= flow:
                raise _ConnError(_PROTOCOL_ERROR, "DATA padding longer than the frame")
            payload = payload[1 : flow - pad]
        if flow > self._recv_window:
            raise _ConnError(_FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_window -= flow
        st = self.streams.get(sid)
        # open and half-closed (local) take DATA (the table's rule, inlined); the others answer
        if st is None or ((state := st.state) is not _OPEN and state is not _HALF_CLOSED_LOCAL):
            self._refuse(sid, st, _RECV_DATA, "DATA", flow)
            return
        if flow > st.rwin:
            raise _ConnError(_FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        st.rwin -= flow
        size = len(payload)
        if st.expected is not None:
            st.received += size
            if st.received > st.expected:
                self._connection_credit(flow)
                self._stream_error(sid, "body longer than its content-length")
                return
        if st.live:
            if flow > size:  # padding: nobody will consume it
                self._credit(st, flow - size)
            if size:
                st.unacked += size
                self._events.append(DataReceived(sid, payload))
        elif flow:  # our response is complete: the body goes nowhere
            self._credit(st, flow)
        if flags & _END_STREAM:
            self._end_of_request(st)
        elif not size:
            self._empty_frame()

    def _credit(self, st: _Stream, size: int) -> None:
        """``size`` bytes of ``st`` were consumed: credit the connection and the stream."""
        self._connection_credit(size)
        state = st.state
        if state is not _OPEN and state is not _HALF_CLOSED_LOCAL:
            return  # the peer sends nothing more on it
        processed = st.rproc = st.rproc + size
        window = st.rwin
        maximum = self._stream_window
        if processed >= maximum >> 1 or (window == 0 and processed > min(1024, maximum >> 2)):
            st.rproc = 0
            increment = min(processed, maximum - window)
            if increment > 0:
                st.rwin = window + increment
                self._out.append(_frame_head(_WINDOW_UPDATE, 0, st.sid, 4) + _U32.pack(increment))

    def acknowledge(self, sid: int, size: int) -> None:
        """``size`` body bytes of ``sid`` were consumed: return the window credit."""
        if not size or self.closed:
            return
        st = self.streams.get(sid)
        if st is None:
            return  # closed: its credit went back to the connection then
        if size > st.unacked:
            size = st.unacked
        if size > 0:
            st.unacked -= size
            self._credit(st, size)
