"""The frames of :class:`~heron.protocol.http2.connection.H2Core` that carry no request:
SETTINGS, WINDOW_UPDATE, PING, PRIORITY, RST_STREAM and GOAWAY (RFC 9113 6)."""

from __future__ import annotations

from .base import _ConnError, _H2Base
from .events import ConnectionEnded, StreamReset
from .frames import (
    _ACK,
    _FLOW_CONTROL_ERROR,
    _FRAME_SIZE_ERROR,
    _MAX_WINDOW,
    _PING_ACK,
    _PROTOCOL_ERROR,
    _SETTING,
    _SETTINGS_ACK,
    _U32,
    _U32X2,
)
from .stream import _RECV_RST_STREAM

# SETTINGS identifiers (RFC 9113 6.5.2, RFC 8441 3)
_HEADER_TABLE_SIZE = 1
_ENABLE_PUSH = 2
_MAX_CONCURRENT_STREAMS = 3
_INITIAL_WINDOW_SIZE = 4
_MAX_FRAME_SIZE = 5
_ENABLE_CONNECT_PROTOCOL = 8


class _H2Control(_H2Base):
    """Connection-level and stream-control frames from the peer (see :class:`H2Core`)."""

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
        for offset in range(0, len(payload), 6):
            self._apply_setting(*_SETTING.unpack_from(payload, offset))
        self._out.append(_SETTINGS_ACK)
        self._control_queued += 1

    def _apply_setting(self, ident: int, value: int) -> None:
        """One of the peer's settings (MAX_HEADER_LIST_SIZE, advisory, and unknown ones are ignored)."""
        if ident == _HEADER_TABLE_SIZE:
            self.encoder.set_max_size(value)
        elif ident == _ENABLE_PUSH:
            if value > 1:
                raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
            self._push_allowed = value == 1
        elif ident == _MAX_CONCURRENT_STREAMS:  # (for our pushes)
            self._peer_max_streams = value
        elif ident == _INITIAL_WINDOW_SIZE:
            self._set_initial_window(value)
        elif ident == _MAX_FRAME_SIZE:
            if not 16384 <= value <= 16777215:
                raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
            self._send_frame = value
        elif ident == _ENABLE_CONNECT_PROTOCOL and value > 1:
            raise _ConnError(_PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1")

    def _set_initial_window(self, value: int) -> None:
        """SETTINGS_INITIAL_WINDOW_SIZE: every stream's send window moves by the change."""
        if value > _MAX_WINDOW:
            raise _ConnError(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
        delta = value - self._peer_window
        self._peer_window = value
        if not delta:
            return
        for st in self.streams.values():
            st.swin += delta
            if st.swin > _MAX_WINDOW:
                raise _ConnError(_FLOW_CONTROL_ERROR, f"window of stream {st.sid} over 2^31-1")
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
            self._refuse(sid, None, _RECV_RST_STREAM, "RST_STREAM")  # idle: an error; closed: ignored
            return
        code = _U32.unpack(payload)[0]
        self._count_reset()
        if st.opened_in == self._reads:
            self._cancelled.add(sid)
        self._reset_stream(st, _RECV_RST_STREAM)
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
