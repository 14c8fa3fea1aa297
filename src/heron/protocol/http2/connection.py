"""The server side of one HTTP/2 connection: :class:`H2Core` (see the package docstring)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from typing import Any

from hpack import Decoder
from hpack.exceptions import HPACKError, OversizedHeaderListError

from ..errors import LocalProtocolError
from .encoder import _ONE_BYTE_INDEXED, _STATIC, _STATIC_LEN, _Encoder
from .events import ConnectionEnded, DataReceived, RequestReceived, StreamEnded, StreamReset, StreamWritable
from .fields import (
    _ANY_TOKEN,
    _BAD_RESPONSE_VALUE,
    _CONNECTION_SPECIFIC,
    _PATH_BYTES,
    _RESPONSE_DROP,
    _Malformed,
    validate_request,
)
from .frames import (
    _ACK,
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
    _INTERNAL_ERROR,
    _MAX_BLOCK_FRAMES,
    _MAX_CACHED_HEAD,
    _MAX_CACHED_REQUEST,
    _MAX_FRAME,
    _MAX_WINDOW,
    _NO_ERROR,
    _PADDED,
    _PING,
    _PING_ACK,
    _PRIORITY,
    _PRIORITY_FLAG,
    _PROTOCOL_ERROR,
    _PUSH_PROMISE,
    _REFUSED_STREAM,
    _RESET_MEMORY,
    _RST_STREAM,
    _SETTING,
    _SETTINGS,
    _SETTINGS_ACK,
    _STREAM_CLOSED,
    _U32,
    _U32X2,
    _WINDOW_UPDATE,
    PREFACE,
    ErrorCodes,
    _frame_head,
)
from .limits import FRAMES_PER_CALL, H2Limits
from .stream import _Stream, _WindowCount


class _ConnError(Exception):
    """A connection error found while receiving: GOAWAY with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_STREAM_EVENTS = (RequestReceived, DataReceived, StreamEnded)


class H2Core:
    """One server-side HTTP/2 connection. See the module docstring."""

    def __init__(self, limits: H2Limits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits = limits or H2Limits()
        self.clock = clock
        #: open streams (either direction still open)
        self.streams: dict[int, _Stream] = {}
        #: stream id -> when its queued data started waiting for window credit
        self.blocked: dict[int, float] = {}
        #: the connection is finished (GOAWAY with an error sent or received)
        self.closed = False
        self.last_stream_id = 2**31 - 1
        self._highest = 0  # highest stream id the client opened
        self._next_push = 2
        self._pushed_open = 0
        # input
        self._buf = b""
        self._buf_pos = 0  # where the unparsed part of _buf starts
        #: complete frames are left in the input buffer (FRAMES_PER_CALL was reached):
        #: call receive_data(b"") again, once other connections have had their turn
        self.input_pending = False
        self._preface = True  # still waiting for the client preface
        self._hdr: list[Any] | None = None  # [sid, flags, depends_on, fragments, size, frames] of a header block
        self._max_block = limits.max_header_list_size + _MAX_FRAME
        self.decoder = Decoder(max_header_list_size=limits.max_header_list_size)
        self._dynamic = self.decoder.header_table.dynamic_entries
        #: header block -> validated request (see _validate), while the decoder's table is unchanged
        self._requests: dict[bytes, tuple[Any, ...]] = {}
        self._cacheable = False
        # output
        self._out: list[Any] = []
        #: the queued output holds DATA payloads of 8 KiB or more
        self.large_output = False
        self.encoder = _Encoder()
        #: (status, headers, default headers) -> [fields, content-length, block, encoder version]
        self._heads: dict[tuple[Any, ...], list[Any]] = {}
        # peer settings
        self._send_frame = 16384
        self._peer_window = 65535
        self._peer_max_streams: int | None = None
        self._push_allowed = True
        # windows
        self._send_window = 65535
        self._recv_window = 65535
        self._recv_max = 65535
        self._recv_proc = 0
        self._stream_window = limits.initial_window_size
        # bookkeeping
        self._events: list[object] = []
        self._fresh: set[int] = set()  # streams whose RequestReceived is in the current batch
        self._cancelled: set[int] = set()  # ... and that were reset in it too
        self._reset: dict[int, bool] = {}  # stream id -> True: we reset it, False: the peer did
        self._active = 0  # streams counted against max_concurrent_streams
        self._receiving = False
        self._resets = _WindowCount(limits.max_resets)
        self._refusals = _WindowCount(10 * limits.max_resets)
        self._empty_frames = _WindowCount(limits.max_empty_frames)
        self._control_queued = 0
        #: why the peer is flooding us (GOAWAY ENHANCE_YOUR_CALM once the read is processed), or None
        self._flood: str | None = None
        self._going_away = False
        self._window_opened = False  # a WINDOW_UPDATE or SETTINGS in this read may let queued data go
        self._settings_unacked = 0  # our SETTINGS frames the peer has not acknowledged

    # --- setup ---------------------------------------------------------------

    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        """Queue our SETTINGS (and the connection window increase). With
        ``upgrade_settings`` (the HTTP2-Settings value of an ``Upgrade: h2c``
        request) stream 1 is the upgraded request, half-closed (remote)."""
        limits = self.limits
        settings = [
            (1, 4096),  # HEADER_TABLE_SIZE
            (2, 0),  # ENABLE_PUSH
            (4, limits.initial_window_size),
            (5, _MAX_FRAME),
        ]
        if limits.enable_connect_protocol:
            settings.append((8, 1))
        settings.append((3, limits.max_concurrent_streams))
        settings.append((6, limits.max_header_list_size))
        payload = b"".join(_SETTING.pack(k, v) for k, v in settings)
        self._out.append(_frame_head(_SETTINGS, 0, 0, len(payload)) + payload)
        self._settings_unacked += 1
        if upgrade_settings is not None:
            try:
                raw = base64.urlsafe_b64decode(upgrade_settings)
            except (binascii.Error, ValueError):
                raw = b"\0"  # not a multiple of 6: FRAME_SIZE_ERROR below
            try:
                self._on_settings(0, 0, raw)
            except _ConnError as exc:
                self._fail(exc.code, f"HTTP2-Settings: {exc.reason}")
            self._highest = 1
            st = _Stream(1, self._stream_window, self._peer_window, True)
            st.method = b"GET"
            st.counted = True
            self._active += 1
            self.streams[1] = st
        increment = limits.connection_window_size - 65535
        self._recv_max = limits.connection_window_size
        if increment > 0:
            self._recv_window += increment
            self._out.append(_frame_head(_WINDOW_UPDATE, 0, 0, 4) + _U32.pack(increment))

    def adopt_upgraded_request(self, method: bytes, scheme: bytes, authority: bytes) -> None:
        """Stream 1 after ``Upgrade: h2c`` carries this (complete) HTTP/1.1 request."""
        st = self.streams.get(1)
        if st is not None:
            st.method = method
            st.scheme = scheme
            st.authority = authority

    @property
    def push_enabled(self) -> bool:
        return self._push_allowed and not self._going_away

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

    # --- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the peer; return heron events. Never raises."""
        if self.closed:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # payloads are slices of it: bytes for the app, and hashable
        self._events = []
        self._receiving = True
        self.input_pending = False
        try:
            self._receive(data)
        except _ConnError as exc:
            self._fail(exc.code, exc.reason)
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - a bug here: never crash the server
            self._fail(_INTERNAL_ERROR, f"internal error: {exc!r}")
        finally:
            self._receiving = False
        if self._window_opened:
            # queued data goes out once the whole read is processed (the windows are final then)
            self._window_opened = False
            if self.blocked and not self.closed:
                self._flush_all()
        if self._fresh:
            self._fresh.clear()
            if self._cancelled:
                cancelled = self._cancelled
                self._events = [
                    e for e in self._events if not (e.__class__ in _STREAM_EVENTS and e.stream_id in cancelled)
                ]
                cancelled.clear()
        if not self.closed:
            if self._flood is not None:
                self._fail(_ENHANCE_YOUR_CALM, self._flood)
            elif self._control_queued > self.limits.max_control_frames:
                self._fail(_ENHANCE_YOUR_CALM, "too many control frames queued (SETTINGS/PING flood)")
        return self._events

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
            if end < 24:
                if not PREFACE.startswith(data):
                    raise _ConnError(_PROTOCOL_ERROR, "invalid connection preface")
                self._buf = data
                return
            if data[:24] != PREFACE:
                raise _ConnError(_PROTOCOL_ERROR, "invalid connection preface")
            self._preface = False
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
            if kind == _HEADERS:
                self._on_headers(sid, flags, payload)
            elif kind == _DATA:
                self._on_data(sid, flags, payload)
            elif kind == _WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif kind == _SETTINGS:
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
            if self.closed:
                return
        if pos < end:
            if self.input_pending:
                self._buf = data  # kept whole: the next call starts at _buf_pos, no copy
                self._buf_pos = pos
            else:
                self._buf = data[pos:]

    def _idle(self, sid: int) -> bool:
        """No frame has opened ``sid`` yet."""
        if sid & 1:
            return sid > self._highest
        return sid >= self._next_push

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
            self._hdr = [sid, flags, depends_on, [payload], len(payload), 1]
            return
        self._on_header_block(sid, flags, depends_on, payload)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        hdr = self._hdr
        if hdr is None:
            raise _ConnError(_PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        if sid != hdr[0]:
            raise _ConnError(_PROTOCOL_ERROR, "CONTINUATION on another stream")
        hdr[3].append(payload)
        hdr[4] += len(payload)
        hdr[5] += 1
        if not payload and not flags & _END_HEADERS:
            self._empty_frame()
        if hdr[4] > self._max_block:
            raise _ConnError(_ENHANCE_YOUR_CALM, "header block too large (CONTINUATION flood)")
        if hdr[5] > _MAX_BLOCK_FRAMES:
            raise _ConnError(_ENHANCE_YOUR_CALM, "header block in too many frames (CONTINUATION flood)")
        if flags & _END_HEADERS:
            self._hdr = None
            self._on_header_block(sid, hdr[1], hdr[2], b"".join(hdr[3]))

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
            if st.recv_closed:
                self._stream_error(sid, "HEADERS after END_STREAM", _STREAM_CLOSED)
            elif depends_on == sid:
                self._stream_error(sid, "stream depends on itself")
            elif not end_stream:
                self._stream_error(sid, "trailers without END_STREAM")
            elif any(name[:1] == b":" for name, _ in headers):
                self._stream_error(sid, "pseudo-header field in trailers")
            else:
                self._end_of_request(st)
            return
        if not sid & 1:
            raise _ConnError(_PROTOCOL_ERROR, f"HEADERS on stream {sid}, not a client stream id")
        if sid <= self._highest:
            by_us = self._reset.get(sid)
            if by_us is None:
                raise _ConnError(_PROTOCOL_ERROR, f"HEADERS on stream {sid}, closed or lower than a stream opened")
            if not by_us:
                self._send_rst(sid, _STREAM_CLOSED)  # after the peer's RST_STREAM
            return  # after ours: ignored
        self._highest = sid
        if (self._going_away and sid > self.last_stream_id) or self._active >= self.limits.max_concurrent_streams:
            # refused: no work started, so not a reset the peer provoked (see the module docstring)
            self._remember_reset(sid, True)
            self._out.append(_frame_head(_RST_STREAM, 0, sid, 4) + _U32.pack(_REFUSED_STREAM))
            self._control_queued += 1
            if self._refusals.hit(self.clock()):
                self._flood = "too many streams opened beyond SETTINGS_MAX_CONCURRENT_STREAMS"
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
        method, scheme, authority, target, query, protocol, regular, expected, host = request
        if expected and end_stream:
            self._reset_new(sid, _PROTOCOL_ERROR)  # content-length larger than the body
            return
        st = _Stream(sid, self._stream_window, self._peer_window, end_stream)
        st.method = method
        st.scheme = scheme
        st.authority = host
        st.expected = expected
        st.counted = True
        self._active += 1
        self.streams[sid] = st
        self._fresh.add(sid)
        self._events.append(
            RequestReceived(
                sid, method, scheme, authority, target, query, protocol, list(regular), end_stream, expected
            )
        )
        if end_stream:
            self._events.append(StreamEnded(sid))

    def _end_of_request(self, st: _Stream) -> None:
        st.recv_closed = True
        if st.expected is not None and st.received != st.expected:
            self._stream_error(st.sid, "content-length doesn't match the body")
            return
        if st.live:
            self._events.append(StreamEnded(st.sid))
        if st.send_closed:
            self._remove(st)

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
        if st is None:
            if self._idle(sid):
                raise _ConnError(_PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if flow:
                self._connection_credit(flow)
            if not self._reset.get(sid):  # reset by us: ignored (RFC 9113 5.1)
                self._send_rst(sid, _STREAM_CLOSED)
            return
        if st.recv_closed:
            if flow:
                self._connection_credit(flow)
            self._stream_error(sid, "DATA after END_STREAM", _STREAM_CLOSED)
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

    def _connection_credit(self, size: int) -> None:
        """``size`` bytes counted on the connection window were consumed."""
        processed = self._recv_proc = self._recv_proc + size
        window = self._recv_window
        maximum = self._recv_max
        # h2's policy: credit back once half the window is consumed (or the window is empty)
        if processed >= maximum >> 1 or (window == 0 and processed > min(1024, maximum >> 2)):
            self._recv_proc = 0
            increment = min(processed, maximum - window)
            if increment > 0:
                self._recv_window = window + increment
                self._out.append(_frame_head(_WINDOW_UPDATE, 0, 0, 4) + _U32.pack(increment))

    def _credit(self, st: _Stream, size: int) -> None:
        """``size`` bytes of ``st`` were consumed: credit the connection and the stream."""
        self._connection_credit(size)
        if st.recv_closed:
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

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnError(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not increment:
                raise _ConnError(_PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ConnError(_FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._window_opened = True
            return
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise _ConnError(_PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: may cross our END_STREAM or RST_STREAM
        if not increment:
            self._stream_error(sid, "WINDOW_UPDATE of 0")
            return
        st.swin += increment
        if st.swin > _MAX_WINDOW:
            self._stream_error(sid, "stream window over 2^31-1", _FLOW_CONTROL_ERROR)
            return
        if st.chunks:
            self._window_opened = True

    # --- control frames ----------------------------------------------------------------

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise _ConnError(_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnError(_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self._settings_unacked:
                self._settings_unacked -= 1
            else:
                self._empty_frame()  # an ACK of nothing we sent
            return
        if len(payload) % 6:
            raise _ConnError(_FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        window_changed = False
        for offset in range(0, len(payload), 6):
            ident, value = _SETTING.unpack_from(payload, offset)
            if ident == 1:  # HEADER_TABLE_SIZE
                self.encoder.set_max_size(value)
            elif ident == 2:  # ENABLE_PUSH
                if value > 1:
                    raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
                self._push_allowed = value == 1
            elif ident == 3:  # MAX_CONCURRENT_STREAMS (for our pushes)
                self._peer_max_streams = value
            elif ident == 4:  # INITIAL_WINDOW_SIZE
                if value > _MAX_WINDOW:
                    raise _ConnError(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self._peer_window
                self._peer_window = value
                if delta:
                    window_changed = True
                    for st in self.streams.values():
                        st.swin += delta
                        if st.swin > _MAX_WINDOW:
                            raise _ConnError(_FLOW_CONTROL_ERROR, f"window of stream {st.sid} over 2^31-1")
            elif ident == 5:  # MAX_FRAME_SIZE
                if not 16384 <= value <= 16777215:
                    raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._send_frame = value
            elif ident == 8 and value > 1:  # ENABLE_CONNECT_PROTOCOL
                raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1")
            # MAX_HEADER_LIST_SIZE (advisory) and unknown settings: ignored
        self._out.append(_SETTINGS_ACK)
        self._control_queued += 1
        if window_changed:
            self._window_opened = True

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise _ConnError(_PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ConnError(_FRAME_SIZE_ERROR, "PING of a length other than 8")
        if not flags & _ACK:
            self._out.append(_PING_ACK + payload)
            self._control_queued += 1
        else:
            self._empty_frame()  # we send no PING: nothing to acknowledge

    def _on_priority(self, sid: int, payload: bytes) -> None:
        if not sid:
            raise _ConnError(_PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            code, reason = _FRAME_SIZE_ERROR, "PRIORITY of a length other than 5"
        elif _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            code, reason = _PROTOCOL_ERROR, "stream depends on itself"
        else:
            self._empty_frame()  # priorities are advisory (RFC 9113 5.3.2): ignored, but counted
            return
        if sid in self.streams:
            self._stream_error(sid, reason, code)
        elif self._idle(sid):
            raise _ConnError(code, reason)
        else:
            self._send_rst(sid, code)

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnError(_FRAME_SIZE_ERROR, "RST_STREAM of a length other than 4")
        if not sid:
            raise _ConnError(_PROTOCOL_ERROR, "RST_STREAM on stream 0")
        st = self.streams.get(sid)
        if st is None:
            if self._idle(sid):
                raise _ConnError(_PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return
        code = _U32.unpack(payload)[0]
        self._count_reset()
        self._forget(st)
        self._remove(st)
        self._remember_reset(sid, False)
        if sid in self._fresh:
            self._cancelled.add(sid)
        self._events.append(StreamReset(sid, code, True))

    def _on_goaway(self, sid: int, payload: bytes) -> None:
        if sid:
            raise _ConnError(_PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise _ConnError(_FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        code = _U32X2.unpack_from(payload)[1]
        if code:
            self.closed = True
            self._events.append(ConnectionEnded(code, True, "GOAWAY from the peer"))
        else:
            # NO_ERROR: the peer opens no more streams, but those in flight finish
            self._going_away = True
            self.last_stream_id = min(self.last_stream_id, self._highest)
            self._events.append(ConnectionEnded(0, True, "GOAWAY from the peer"))

    # --- resets and errors ---------------------------------------------------------

    def _send_rst(self, sid: int, code: int) -> None:
        """Every RST_STREAM we send passes here: the ones the peer provoked count."""
        self._out.append(_frame_head(_RST_STREAM, 0, sid, 4) + _U32.pack(code))
        self._control_queued += 1
        if self._receiving:
            self._count_reset()

    def _remember_reset(self, sid: int, by_us: bool) -> None:
        reset = self._reset
        reset[sid] = by_us
        if len(reset) > _RESET_MEMORY:
            del reset[next(iter(reset))]

    def _reset_new(self, sid: int, code: int) -> None:
        """Reset a stream the peer just opened (refused, or malformed)."""
        self._remember_reset(sid, True)
        self._send_rst(sid, code)

    def _stream_error(self, sid: int, reason: str, code: int = _PROTOCOL_ERROR) -> None:
        """Reset a stream the peer broke. The reset counts towards ``max_resets``."""
        st = self.streams.get(sid)
        known = False
        if st is not None:
            known = st.live
            if sid in self._fresh:
                self._cancelled.add(sid)
            self._forget(st)
            self._remove(st)
        self._remember_reset(sid, True)
        self._send_rst(sid, code)
        if known:
            self._events.append(StreamReset(sid, code, False))

    def _count_reset(self) -> None:
        if self._resets.hit(self.clock()):
            self._flood = "too many stream resets (rapid reset)"

    def _empty_frame(self) -> None:
        """A frame that carries nothing arrived (see the module docstring)."""
        if self._empty_frames.hit(self.clock()):
            self._flood = "too many frames that carry nothing (empty DATA, PRIORITY, unknown types...)"

    def _goaway(self, last_stream_id: int, code: int) -> None:
        self._out.append(_frame_head(_GOAWAY, 0, 0, 8) + _U32X2.pack(last_stream_id, code))

    def _fail(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY, then nothing more."""
        if self.closed:
            return
        self.closed = True
        self._goaway(self._highest, code)
        self._events.append(ConnectionEnded(code, False, reason))

    def _forget(self, st: _Stream) -> None:
        """The caller is done with ``st`` (or it is gone): drop what it queued."""
        st.live = False
        if st.chunks is not None:
            st.chunks = None
            st.size = 0
        if self.blocked:
            self.blocked.pop(st.sid, None)
        if st.counted:
            st.counted = False
            self._active -= 1

    def _remove(self, st: _Stream) -> None:
        """``st`` is closed: both ways, or reset."""
        if self.streams.pop(st.sid, None) is None:
            return
        if st.unacked:  # body bytes the caller won't acknowledge any more
            self._connection_credit(st.unacked)
            st.unacked = 0
        if st.pushed:
            self._pushed_open -= 1

    def stream_done(self, sid: int) -> None:
        """The caller is finished with a stream (response sent, or abandoned)."""
        st = self.streams.get(sid)
        if st is not None:
            self._forget(st)

    # --- output ---------------------------------------------------------------------

    def _queue_block(self, kind: int, sid: int, block: bytes, end_stream: bool, prefix: bytes = b"") -> None:
        """A HEADERS or PUSH_PROMISE frame (``prefix``: the promised stream id), with
        CONTINUATION frames when the block is bigger than the peer's frame size."""
        out = self._out
        flags = _END_STREAM if end_stream else 0
        size = len(prefix) + len(block)
        max_frame = self._send_frame
        if size <= max_frame:
            out.append(_frame_head(kind, flags | _END_HEADERS, sid, size))
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

    def _response_fields(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        default_headers: list[tuple[bytes, bytes]],
    ) -> tuple[list[tuple[bytes, bytes]], int | None]:
        fields = [(b":status", b"%d" % status)]
        remaining: int | None = None
        try:
            for name, value in headers:
                if not name or name.translate(None, _ANY_TOKEN):
                    raise LocalProtocolError(f"invalid header name {name!r:.40}")
                if _BAD_RESPONSE_VALUE.search(value) is not None:
                    raise LocalProtocolError(f"invalid characters in the value of header {name!r:.40}")
                name = name.lower()
                if name in _RESPONSE_DROP:
                    continue
                if name == b"content-length":
                    if remaining is not None or not value.isdigit():
                        raise LocalProtocolError("invalid or duplicate content-length")
                    remaining = int(value)
                fields.append((bytes(name), bytes(value)))
        except (TypeError, ValueError, AttributeError):
            raise LocalProtocolError("headers must be an iterable of [name, value] pairs of bytes") from None
        if default_headers:
            fields.extend(default_headers)
        return fields, remaining

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
                raise LocalProtocolError("headers must be an iterable of [name, value] pairs of bytes") from None
        heads = self._heads
        try:
            key: Any = (status, tuple(headers), tuple(default_headers))
            entry = heads.get(key)
        except TypeError:  # unhashable (lists as pairs...): validated every time
            key = None
            entry = None
        if entry is None:
            fields, remaining = self._response_fields(status, headers, default_headers)
            entry = [fields, remaining, None, -1]
            if key is not None and sum(len(n) + len(v) for n, v in fields) <= _MAX_CACHED_HEAD:
                if len(heads) >= 64:
                    heads.clear()
                heads[key] = entry
        st = self.streams.get(sid)
        if st is None or st.send_closed or self.closed:
            return  # the stream is gone (reset)
        encoder = self.encoder
        block = entry[2]
        if block is None or entry[3] != encoder.version or encoder.resize is not None:
            version = encoder.version
            block = encoder.encode(entry[0])
            if encoder.version == version:  # the table didn't change: the block can be sent again
                entry[2] = block
                entry[3] = version
            else:
                entry[2] = None
        no_body = status == 204 or status == 304 or st.method == b"HEAD"
        self._queue_block(_HEADERS, sid, block, end_stream)
        st.remaining = None if no_body else entry[1]
        st.no_body = no_body
        st.chunks = []
        st.size = 0
        st.end = False
        st.trailers = None
        if end_stream:
            self._sent_end(st)

    def _sent_end(self, st: _Stream) -> None:
        st.send_closed = True
        self._forget(st)
        if st.recv_closed:
            self._remove(st)

    def send_informational(self, sid: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        fields = [(b":status", b"%d" % status)]
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid header {name!r:.40}")
            fields.append((bytes(name.lower()), bytes(value)))
        st = self.streams.get(sid)
        if st is None or st.send_closed or self.closed:
            return
        self._queue_block(_HEADERS, sid, self.encoder.encode(fields), False)

    def send_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes; they go out as the peer's windows allow.
        Raises :class:`LocalProtocolError` for more than the declared content-length,
        or an end short of it (nothing queued then)."""
        st = self.streams.get(sid)
        if st is None or st.chunks is None or self.closed:
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
            out.append(_frame_head(_DATA, _END_STREAM, sid, n))
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
        if st is None or st.chunks is None or self.closed:
            return
        fields = []
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid trailer {name!r:.40}")
            name = name.lower()
            if name in _RESPONSE_DROP or name == b"content-length":
                raise LocalProtocolError(f"{name.decode()} is not allowed in trailers")
            fields.append((bytes(name), bytes(value)))
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
        chunks = st.chunks
        if chunks is None:
            return
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
        for sid in list(self.blocked):
            st = self.streams.get(sid)
            if st is None or not st.chunks:
                self.blocked.pop(sid, None)
                continue
            self._flush(st)
            if not st.chunks:
                self._events.append(StreamWritable(sid))

    def finish_stream(self, sid: int, unconsumed: int) -> None:
        """The caller is done with ``sid`` (its response is sent): credit back the
        ``unconsumed`` body bytes, and stop the request body if it isn't complete
        (RST_STREAM NO_ERROR, RFC 9113 8.1)."""
        st = self.streams.get(sid)
        if st is None:
            return
        if unconsumed and not self.closed:
            self.acknowledge(sid, unconsumed)
        if st.send_closed and not st.recv_closed and not self.closed:
            self._forget(st)
            self._remove(st)
            self._remember_reset(sid, True)
            self._send_rst(sid, _NO_ERROR)
        elif st.live or st.counted:
            self._forget(st)

    def reset(self, sid: int, code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Reset a stream from our side (the app failed, the response can't be completed)."""
        st = self.streams.get(sid)
        if st is None:
            return
        self._forget(st)
        if self.closed:
            return
        self._remove(st)
        self._remember_reset(sid, True)
        self._send_rst(sid, int(code))

    def push(self, sid: int, path: bytes, headers: list[tuple[bytes, bytes]]) -> int | None:
        """Promise a GET of ``path`` on stream ``sid``; return the promised stream id,
        or None when push is off (the peer disabled it, or we are shutting down),
        the parent stream is gone, or the peer's stream limit is reached."""
        parent = self.streams.get(sid)
        if not self.push_enabled or self.closed or parent is None or not parent.live or parent.pushed:
            return None
        if self._peer_max_streams is not None and self._pushed_open >= self._peer_max_streams:
            return None
        if not path or path[:1] != b"/" or path.translate(None, _PATH_BYTES):
            raise LocalProtocolError(f"invalid push path {path!r:.60}")
        scheme, authority = parent.scheme, parent.authority
        fields = [(b":method", b"GET"), (b":scheme", scheme or b"http"), (b":path", path)]
        if authority:
            fields.append((b":authority", authority))
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid push header {name!r:.40}")
            name = name.lower()
            if name in _CONNECTION_SPECIFIC or name == b"host":
                continue
            fields.append((bytes(name), bytes(value)))
        promised = self._next_push
        self._next_push += 2
        self._queue_block(_PUSH_PROMISE, sid, self.encoder.encode(fields), False, _U32.pack(promised))
        st = _Stream(promised, 0, self._peer_window, True)
        st.pushed = True
        st.method = b"GET"
        st.scheme = scheme
        st.authority = authority
        self.streams[promised] = st
        self._pushed_open += 1
        return promised

    def start_shutdown(self) -> None:
        """Graceful shutdown: GOAWAY NO_ERROR with the last stream id; later streams are refused."""
        if self._going_away or self.closed:
            return
        self._going_away = True
        self.last_stream_id = self._highest
        self._goaway(self.last_stream_id, _NO_ERROR)

    def close(self, code: int = ErrorCodes.NO_ERROR, reason: str = "") -> None:
        """End the connection now (GOAWAY with ``code``)."""
        if not self.closed:
            self.closed = True
            self._goaway(self._highest, int(code))

    @property
    def going_away(self) -> bool:
        return self._going_away

    def window_blocked_on_connection(self) -> bool:
        return self._send_window <= 0
