"""What one HTTP/2 connection keeps, and the stream bookkeeping both directions share:
closing streams, resets, errors, the connection's receive window.

:class:`H2Core` (in :mod:`.connection`) is this class with the sending side
(:mod:`.sending`) and the receiving side (:mod:`.receiving`, :mod:`.control`)
mixed in; they are parts of one object, so their methods reach each other's
attributes directly, as before the split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hpack import Decoder

from .encoder import _CachedHead, _Encoder
from .events import ConnectionEnded, StreamReset
from .fields import RequestFields
from .frames import (
    _GOAWAY,
    _MAX_FRAME,
    _PROTOCOL_ERROR,
    _RESET_MEMORY,
    _RST_STREAM,
    _U32,
    _U32X2,
    _WINDOW_UPDATE,
    _frame_head,
    _HeaderBlock,
)
from .limits import H2Limits
from .stream import (
    _CLOSED,
    _IDLE,
    _SEND_RST_STREAM,
    InvalidTransition,
    StreamEvent,
    StreamState,
    _Stream,
    _WindowCount,
    next_state,
)


class _ConnError(Exception):
    """A connection error found while receiving: GOAWAY with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _H2Base:
    """The state of one server-side HTTP/2 connection (see the package docstring)."""

    def __init__(self, limits: H2Limits | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits = limits or H2Limits()
        self.clock = clock
        #: the streams kept: opened or reserved, and not closed yet (see :class:`_Stream`)
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
        self._hdr: _HeaderBlock | None = None  # a header block waiting for its CONTINUATION frames
        self._max_block = limits.max_header_list_size + _MAX_FRAME
        self.decoder = Decoder(max_header_list_size=limits.max_header_list_size)
        self._dynamic = self.decoder.header_table.dynamic_entries
        #: header block -> validated request (see _decode), while the decoder's table is unchanged
        self._requests: dict[bytes, RequestFields] = {}
        self._cacheable = False
        # output
        self._out: list[Any] = []
        #: the queued output holds DATA payloads of 8 KiB or more
        self.large_output = False
        self.encoder = _Encoder()
        #: (status, headers, default headers) -> the validated, and maybe encoded, response head
        self._heads: dict[tuple[Any, ...], _CachedHead] = {}
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
        self._reads = 0  # receive_data calls so far (see _Stream.opened_in)
        #: streams opened and reset within the current receive_data call: their events are dropped
        self._cancelled: set[int] = set()
        #: stream id -> the RST_STREAM that closed it (SEND_: ours, RECV_: the peer's); the last ones
        self._closed_by_reset: dict[int, StreamEvent] = {}
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

    # --- stream states -------------------------------------------------------------

    def _idle(self, sid: int) -> bool:
        """No frame has opened ``sid`` yet (ids only grow, RFC 9113 5.1.1)."""
        if sid & 1:
            return sid > self._highest
        return sid >= self._next_push

    def _absent_state(self, sid: int) -> StreamState:
        """The state of a stream not in :attr:`streams`: idle, or closed."""
        return _IDLE if self._idle(sid) else _CLOSED

    def _refuse(self, sid: int, st: _Stream | None, event: StreamEvent, what: str, flow: int = 0) -> bool:
        """If ``what`` from the peer (``event``) is a move the state of stream ``sid`` (``st``;
        None: not kept) doesn't allow, answer it as RFC 9113 5.1 says and return True.
        ``flow``: DATA bytes counted on the connection window, credited back then."""
        state = st.state if st is not None else self._absent_state(sid)
        try:
            next_state(state, event)
        except InvalidTransition as exc:
            if exc.connection:
                raise _ConnError(exc.code, f"{what} on {state.value} stream {sid}") from None
            if flow:
                self._connection_credit(flow)  # consumed by nobody
            if st is not None:
                self._stream_error(sid, f"{what} on a stream {state.value}", exc.code)
            elif self._closed_by_reset.get(sid) is not _SEND_RST_STREAM:
                self._send_rst(sid, exc.code)  # (after our own RST_STREAM what crossed it is ignored)
            return True
        return False

    def _forget(self, st: _Stream) -> None:
        """The caller is done with ``st`` (or it is gone): drop what it queued."""
        st.live = False
        if st.responding:
            st.responding = False
            if st.chunks:
                st.chunks.clear()
                st.size = 0
        if self.blocked:
            self.blocked.pop(st.sid, None)
        if st.counted:
            st.counted = False
            self._active -= 1

    def _close_stream(self, st: _Stream) -> None:
        """``st`` has reached the closed state (both ways ended, or reset): drop it."""
        if self.streams.pop(st.sid, None) is None:
            return
        if st.unacked:  # body bytes the caller won't acknowledge any more
            self._connection_credit(st.unacked)
            st.unacked = 0
        if not st.sid & 1:  # a stream we pushed
            self._pushed_open -= 1

    def _reset_stream(self, st: _Stream, event: StreamEvent) -> None:
        """``st`` is reset (``event``: by us or by the peer): forget and close it, and
        remember who reset it (frames that crossed the reset are told apart by it)."""
        st.state = next_state(st.state, event)
        self._forget(st)
        self._close_stream(st)
        self._remember_reset(st.sid, event)

    # --- resets and errors ---------------------------------------------------------

    def _send_rst(self, sid: int, code: int) -> None:
        """Every RST_STREAM we send passes here: the ones the peer provoked count."""
        self._out.append(_frame_head(_RST_STREAM, 0, sid, 4) + _U32.pack(code))
        self._control_queued += 1
        if self._receiving:
            self._count_reset()

    def _remember_reset(self, sid: int, event: StreamEvent) -> None:
        resets = self._closed_by_reset
        resets[sid] = event
        if len(resets) > _RESET_MEMORY:
            del resets[next(iter(resets))]

    def _reset_new(self, sid: int, code: int) -> None:
        """Reset a stream the peer just opened (refused, or malformed)."""
        self._remember_reset(sid, _SEND_RST_STREAM)
        self._send_rst(sid, code)

    def _stream_error(self, sid: int, reason: str, code: int = _PROTOCOL_ERROR) -> None:
        """Reset a stream the peer broke. The reset counts towards ``max_resets``."""
        st = self.streams.get(sid)
        known = False
        if st is not None:
            known = st.live
            if st.opened_in == self._reads:
                self._cancelled.add(sid)
            self._reset_stream(st, _SEND_RST_STREAM)
        else:
            self._remember_reset(sid, _SEND_RST_STREAM)
        self._send_rst(sid, code)
        if known:
            self._events.append(StreamReset(sid, code, False))

    def _count_reset(self) -> None:
        if self._resets.hit(self.clock()):
            self._flood = "too many stream resets (rapid reset)"

    def _empty_frame(self) -> None:
        """A frame that carries nothing arrived (see the package docstring)."""
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

    # --- the connection's receive window -----------------------------------------------

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
