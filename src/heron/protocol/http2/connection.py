"""The server side of one HTTP/2 connection: :class:`H2Core` (see the package docstring).

Its parts, each a class in the chain ``H2Core`` is built of: :mod:`.base` (what the
connection keeps; stream bookkeeping, resets, errors), :mod:`.sending` (response
heads, body and trailers, the output queue), :mod:`.control` (SETTINGS,
WINDOW_UPDATE, PING, PRIORITY, RST_STREAM, GOAWAY) and :mod:`.receiving` (the frame
loop, header blocks, DATA). This module holds the setup and what the caller does
to a stream or to the connection as a whole.
"""

from __future__ import annotations

import base64
import binascii

from .base import _ConnError
from .events import DataReceived, RequestReceived, StreamEnded
from .fields import push_request_fields
from .frames import (
    _ENHANCE_YOUR_CALM,
    _INTERNAL_ERROR,
    _MAX_FRAME,
    _NO_ERROR,
    _PUSH_PROMISE,
    _SETTING,
    _SETTINGS,
    _U32,
    _WINDOW_UPDATE,
    ErrorCodes,
    _frame_head,
)
from .receiving import _H2Receiving
from .sending import _H2Sending
from .stream import (
    _HALF_CLOSED_LOCAL,
    _IDLE,
    _RECV_END_STREAM,
    _RECV_HEADERS,
    _SEND_PUSH_PROMISE,
    _SEND_RST_STREAM,
    TRANSITIONS,
    _Stream,
    next_state,
)

_STREAM_EVENTS = (RequestReceived, DataReceived, StreamEnded)


class H2Core(_H2Receiving, _H2Sending):
    """One server-side HTTP/2 connection. See the package docstring."""

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
            self._adopt_upgrade(upgrade_settings)
        increment = limits.connection_window_size - 65535
        self._recv_max = limits.connection_window_size
        if increment > 0:
            self._recv_window += increment
            self._out.append(_frame_head(_WINDOW_UPDATE, 0, 0, 4) + _U32.pack(increment))

    def _adopt_upgrade(self, upgrade_settings: bytes) -> None:
        """The peer's settings from HTTP2-Settings, and stream 1: the request was received whole."""
        try:
            raw = base64.urlsafe_b64decode(upgrade_settings)
        except (binascii.Error, ValueError):
            raw = b"\0"  # not a multiple of 6: FRAME_SIZE_ERROR below
        try:
            self._on_settings(0, 0, raw)
        except _ConnError as exc:
            self._fail(exc.code, f"HTTP2-Settings: {exc.reason}")
        self._highest = 1
        state = next_state(next_state(_IDLE, _RECV_HEADERS), _RECV_END_STREAM)  # half-closed (remote)
        st = _Stream(1, self._stream_window, self._peer_window, state)
        st.method = b"GET"
        st.counted = True
        self._active += 1
        self.streams[1] = st

    def adopt_upgraded_request(self, method: bytes, scheme: bytes, authority: bytes) -> None:
        """Stream 1 after ``Upgrade: h2c`` carries this (complete) HTTP/1.1 request."""
        st = self.streams.get(1)
        if st is not None:
            st.method = method
            st.scheme = scheme
            st.authority = authority

    # --- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the peer; return heron events. Never raises."""
        if self.closed:
            return []
        if type(data) is not bytes:
            data = bytes(data)  # payloads are slices of it: bytes for the app, and hashable
        self._events = []
        self._reads += 1
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
        if self._cancelled:
            # streams opened and reset in this read: reported only by their StreamReset
            cancelled = self._cancelled
            self._events = [e for e in self._events if not (e.__class__ in _STREAM_EVENTS and e.stream_id in cancelled)]
            cancelled.clear()
        if not self.closed:
            if self._flood is not None:
                self._fail(_ENHANCE_YOUR_CALM, self._flood)
            elif self._control_queued > self.limits.max_control_frames:
                self._fail(_ENHANCE_YOUR_CALM, "too many control frames queued (SETTINGS/PING flood)")
        return self._events

    # --- the caller's side of a stream ----------------------------------------------

    def stream_done(self, sid: int) -> None:
        """The caller is finished with a stream (response sent, or abandoned)."""
        st = self.streams.get(sid)
        if st is not None:
            self._forget(st)

    def finish_stream(self, sid: int, unconsumed: int) -> None:
        """The caller is done with ``sid`` (its response is sent): credit back the
        ``unconsumed`` body bytes, and stop the request body if it isn't complete
        (RST_STREAM NO_ERROR, RFC 9113 8.1)."""
        st = self.streams.get(sid)
        if st is None:
            return
        if unconsumed and not self.closed:
            self.acknowledge(sid, unconsumed)
        if st.state is _HALF_CLOSED_LOCAL and not self.closed:
            self._reset_stream(st, _SEND_RST_STREAM)
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
        self._reset_stream(st, _SEND_RST_STREAM)
        self._send_rst(sid, int(code))

    @property
    def push_enabled(self) -> bool:
        return self._push_allowed and not self._going_away

    def push(self, sid: int, path: bytes, headers: list[tuple[bytes, bytes]]) -> int | None:
        """Promise a GET of ``path`` on stream ``sid``; return the promised stream id,
        or None when push is off (the peer disabled it, or we are shutting down),
        the parent stream is gone, or the peer's stream limit is reached."""
        parent = self.streams.get(sid)
        if not self.push_enabled or self.closed or parent is None or not parent.live:
            return None
        # a promise goes on a client's stream (RFC 9113 6.6) whose state allows it
        if not sid & 1 or (parent.state, _SEND_PUSH_PROMISE) not in TRANSITIONS:
            return None
        if self._peer_max_streams is not None and self._pushed_open >= self._peer_max_streams:
            return None
        scheme, authority = parent.scheme, parent.authority
        fields = push_request_fields(scheme or b"http", authority, path, headers)
        promised = self._next_push
        self._next_push += 2
        self._queue_block(_PUSH_PROMISE, sid, self.encoder.encode(fields), False, _U32.pack(promised))
        st = _Stream(promised, 0, self._peer_window, next_state(_IDLE, _SEND_PUSH_PROMISE))  # reserved (local)
        st.method = b"GET"
        st.scheme = scheme
        st.authority = authority
        self.streams[promised] = st
        self._pushed_open += 1
        return promised

    # --- the connection -------------------------------------------------------------

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
