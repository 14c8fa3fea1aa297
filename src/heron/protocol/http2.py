"""HTTP/2, sans-IO: the server side of one connection (RFC 9113, RFC 7541, RFC 8441).

The python-hyper ``h2`` library is the frame and HPACK engine; this module is
heron's core around it. Bytes go in with :meth:`H2Core.receive_data`, heron's
own events come out (:class:`RequestReceived`, :class:`DataReceived`,
:class:`StreamEnded`, :class:`StreamReset`, :class:`StreamWritable`,
:class:`ConnectionEnded`), and the ``send_*`` methods queue frames that
:meth:`H2Core.data_to_send` hands back. :meth:`receive_data` never raises: a
connection error queues a GOAWAY and returns :class:`ConnectionEnded`.

What this core decides itself rather than leaving to ``h2``:

* Request validation (``h2``'s own is switched off because it fails the whole
  connection): pseudo-header fields (known, once each, before the regular
  fields, the right set for the method), lowercase token names, values
  without NUL/CR/LF or surrounding whitespace, no connection-specific fields,
  ``te`` only ``trailers``, a well-formed ``content-length`` matching the
  DATA received. A malformed request is a *stream* error (RST_STREAM
  PROTOCOL_ERROR); the connection keeps working. ``:authority`` becomes the
  ``host`` field, first, as the ASGI spec asks; split ``cookie`` fields are
  joined again (RFC 9113 8.2.3).
* HPACK errors are connection errors with COMPRESSION_ERROR (``h2`` says
  PROTOCOL_ERROR).
* Flow control: window credit is returned only when the caller says the
  bytes were consumed (:meth:`H2Core.acknowledge`); outbound DATA is queued
  per stream and sent in pieces that fit the peer's windows and maximum
  frame size, as WINDOW_UPDATEs arrive.
* Graceful GOAWAY (:meth:`H2Core.start_shutdown`) keeps the streams below
  the last stream id working (``h2``'s ``close_connection`` would not); a
  peer's GOAWAY NO_ERROR does not stop the responses in flight either.

Denial-of-service guards, all on by default (:class:`H2Limits`):

* ``max_concurrent_streams`` (advertised): a stream beyond it is refused
  with RST_STREAM REFUSED_STREAM, not a connection error.
* Rapid reset (CVE-2023-44487) and "MadeYouReset" (2025): resets sent by the
  peer and resets the peer provokes from us (malformed requests, frames on
  closed streams, refused streams, per-stream flow-control errors) are
  counted together; more than ``max_resets`` within ``RESET_WINDOW`` seconds
  gets GOAWAY ENHANCE_YOUR_CALM.
* CONTINUATION flood (CVE-2024-27316): the encoded header block collected
  across HEADERS/CONTINUATION frames may not exceed ``max_header_list_size``
  plus one frame; ``h2`` alone only caps the number of frames (64).
* HPACK bomb: the *decoded* header list is bounded by
  ``max_header_list_size`` while decoding (GOAWAY ENHANCE_YOUR_CALM).
* SETTINGS/PING floods: replies (ACKs, resets) queued while the transport has
  not flushed its output are counted; beyond ``max_control_frames`` the
  connection gets GOAWAY ENHANCE_YOUR_CALM. (The transport also stops reading
  while its write buffer is full.)
* Zero-window stalls: :attr:`H2Core.blocked` maps each stream whose queued
  data waits for window credit to the time it started waiting; the transport
  resets or closes what waits longer than its write timeout.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived as _H2Data,
    PingAckReceived,
    RemoteSettingsChanged,
    RequestReceived as _H2Request,
    StreamEnded as _H2StreamEnded,
    StreamReset as _H2StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import (
    DenialOfServiceError,
    FlowControlError,
    InvalidBodyLengthError,
    NoSuchStreamError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import StreamState
from hpack.exceptions import HPACKError
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
)

from .errors import LocalProtocolError

__all__ = [
    "PREFACE",
    "H2Limits",
    "H2Core",
    "RequestReceived",
    "DataReceived",
    "StreamEnded",
    "StreamReset",
    "StreamWritable",
    "ConnectionEnded",
    "ErrorCodes",
]

#: The client connection preface (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Seconds over which resets are counted for ``max_resets``.
RESET_WINDOW = 10.0

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_LOWER_TOKEN = _TCHAR
_ANY_TOKEN = _TCHAR + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 9113 8.2.1: no NUL, CR or LF anywhere; no leading or trailing SP/HTAB
_BAD_REQUEST_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_BAD_RESPONSE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_PATH_BYTES = bytes(range(0x21, 0x7F))
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))
# dropped from responses: HTTP/2 has its own framing (the HTTP/1.1 path ignores transfer-encoding too)
_RESPONSE_DROP = _CONNECTION_SPECIFIC | {b"te"}


class H2Limits:
    """Per-connection settings and DoS limits (see the module docstring)."""

    __slots__ = (
        "max_concurrent_streams",
        "max_header_list_size",
        "initial_window_size",
        "connection_window_size",
        "max_resets",
        "max_control_frames",
        "enable_connect_protocol",
    )

    def __init__(
        self,
        max_concurrent_streams: int = 100,
        max_header_list_size: int = 65536,
        initial_window_size: int = 262144,
        connection_window_size: int | None = None,
        max_resets: int = 200,
        max_control_frames: int = 10000,
        enable_connect_protocol: bool = True,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_list_size = max_header_list_size
        self.initial_window_size = initial_window_size
        #: the connection receive window; by default 4 stream windows (at least 64 KiB)
        self.connection_window_size = (
            connection_window_size if connection_window_size is not None else max(65535, 4 * initial_window_size)
        )
        self.max_resets = max_resets
        self.max_control_frames = max_control_frames
        self.enable_connect_protocol = enable_connect_protocol


# --- events --------------------------------------------------------------------


class _Event:
    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)


class RequestReceived(_Event):
    """A valid request head. ``headers`` are the regular fields (``host`` first
    when ``:authority`` was given), ``path`` and ``query`` come from ``:path``
    (``b"*"`` for ``OPTIONS *``; both empty for a plain CONNECT)."""

    __slots__ = ("stream_id", "method", "scheme", "authority", "path", "query", "protocol", "headers", "end_stream")

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        scheme: bytes,
        authority: bytes | None,
        path: bytes,
        query: bytes,
        protocol: bytes | None,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
    ) -> None:
        self.stream_id = stream_id
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.query = query
        self.protocol = protocol
        self.headers = headers
        self.end_stream = end_stream


class DataReceived(_Event):
    """Request body bytes. Call :meth:`H2Core.acknowledge` with ``len(data)``
    once they are consumed (padding is acknowledged already)."""

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class StreamEnded(_Event):
    """The request on this stream is complete (END_STREAM, possibly on trailers)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset(_Event):
    """The stream is gone: reset by the peer (``remote``) or by us for a stream
    error the peer caused (a malformed request, a refused stream...)."""

    __slots__ = ("stream_id", "error_code", "remote")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class StreamWritable(_Event):
    """All data queued on this stream has been handed to the connection."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class ConnectionEnded(_Event):
    """The connection is over: the peer sent GOAWAY with an error, or we found
    a connection error (our GOAWAY is queued). Flush, then close."""

    __slots__ = ("error_code", "remote", "reason")

    def __init__(self, error_code: int, remote: bool, reason: str) -> None:
        self.error_code = error_code
        self.remote = remote
        self.reason = reason


class _ConnectionError(ProtocolError):
    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code  # type: ignore[assignment]


class _Malformed(Exception):
    pass


# --- h2 with heron's decisions ---------------------------------------------------


class _GuardedFrameBuffer(FrameBuffer):
    """``h2``'s frame buffer, plus a bound on the total size of one header block."""

    def __init__(self, max_block: int) -> None:
        super().__init__(server=True)
        self.max_block = max_block
        self._block_size = 0

    def __next__(self) -> Frame:
        try:
            return super().__next__()
        except ProtocolError as exc:
            # hyperframe calls a SETTINGS ACK with a payload invalid data; RFC 9113 6.5
            # names the error: FRAME_SIZE_ERROR.
            if "ack frame must not have payload" in str(exc.__cause__):
                raise _ConnectionError("SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR) from exc
            raise

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        if self._headers_buffer:
            if isinstance(f, ContinuationFrame):
                self._block_size += len(f.data)
                if self._block_size > self.max_block:
                    raise _ConnectionError("header block too large (CONTINUATION flood)", ErrorCodes.ENHANCE_YOUR_CALM)
        elif isinstance(f, (HeadersFrame, PushPromiseFrame)) and "END_HEADERS" not in f.flags:
            self._block_size = len(f.data)
        return super()._update_header_buffer(f)


class _Connection(H2Connection):
    """``H2Connection`` with stream-level answers where RFC 9113 allows them."""

    def __init__(self, core: "H2Core", config: H2Configuration) -> None:
        super().__init__(config)
        self.core = core

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        core = self.core
        for f in frames:
            kind = f.__class__
            if kind is RstStreamFrame:
                core._sent_reset(f.stream_id, f.error_code)  # type: ignore[attr-defined]
            elif (kind is PingFrame or kind is SettingsFrame) and "ACK" in f.flags:
                core._control_queued += 1
        super()._prepare_for_sending(frames)

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Any]]:
        sid = frame.stream_id
        core = self.core
        if sid not in self.streams and sid > self.highest_inbound_stream_id and sid % 2 == 1:
            refuse = core._going_away and sid > core.last_stream_id
            if not refuse and core._active >= core.limits.max_concurrent_streams:
                refuse = True
            if refuse:
                return self._refuse(frame)
        try:
            return super()._receive_headers_frame(frame)
        except TooManyStreamsError:
            return self._refuse(frame)
        except DenialOfServiceError:
            raise
        except ProtocolError as exc:
            cause = exc.__cause__
            if isinstance(cause, (HPACKError, IndexError, TypeError, UnicodeDecodeError)):
                raise _ConnectionError(f"HPACK: {exc}", ErrorCodes.COMPRESSION_ERROR) from cause
            stream = self.streams.get(sid)
            if stream is None or stream.closed or isinstance(exc, StreamClosedError):
                raise
            # a malformed request (bad content-length, trailers without END_STREAM): stream error
            core._stream_error(sid, str(exc))
            return [], []

    def _refuse(self, frame: HeadersFrame) -> tuple[list[Frame], list[Any]]:
        # Decode anyway: the HPACK state is shared by the whole connection.
        try:
            self.decoder.decode(frame.data, raw=True)
        except HPACKError as exc:
            raise _ConnectionError(f"HPACK: {exc}", ErrorCodes.COMPRESSION_ERROR) from exc
        self.highest_inbound_stream_id = frame.stream_id
        from h2.stream import StreamClosedBy

        self._closed_streams[frame.stream_id] = StreamClosedBy.SEND_RST_STREAM
        rst = RstStreamFrame(frame.stream_id)
        rst.error_code = ErrorCodes.REFUSED_STREAM
        return [rst], []

    def _receive_data_frame(self, frame: object) -> tuple[list[Frame], list[Any]]:
        try:
            return super()._receive_data_frame(frame)  # type: ignore[arg-type]
        except InvalidBodyLengthError as exc:
            sid = frame.stream_id  # type: ignore[attr-defined]
            self.core._stream_error(sid, str(exc))
            # the stream's bytes will never be consumed: give the connection credit back
            self.acknowledge_received_data(frame.flow_controlled_length, sid)  # type: ignore[attr-defined]
            return [], []

    def _receive_window_update_frame(self, frame: object) -> tuple[list[Frame], list[Any]]:
        try:
            return super()._receive_window_update_frame(frame)  # type: ignore[arg-type]
        except FlowControlError:
            sid = frame.stream_id  # type: ignore[attr-defined]
            if not sid or sid not in self.streams:
                raise
            self.core._stream_error(sid, "stream window overflow", ErrorCodes.FLOW_CONTROL_ERROR)
            return [], []

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Any]]:
        state = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            # NO_ERROR: the peer opens no more streams, but those in flight finish.
            self.state_machine.state = state
        return result

    def send_goaway(self, last_stream_id: int, error_code: int) -> None:
        """GOAWAY without closing h2's state: streams <= last_stream_id go on."""
        f = GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = error_code
        self._prepare_for_sending([f])


# --- the core ------------------------------------------------------------------


class _Out:
    """Outbound state of one stream: queued DATA and what ends it."""

    __slots__ = ("chunks", "size", "end", "trailers", "remaining", "no_body")

    def __init__(self, remaining: int | None, no_body: bool) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: declared content-length still to send (None: not declared)
        self.remaining = remaining
        self.no_body = no_body


class H2Core:
    """One server-side HTTP/2 connection. See the module docstring."""

    def __init__(
        self, limits: H2Limits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits = limits or H2Limits()
        self.clock = clock
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self.conn = conn = _Connection(self, config)
        initial = {
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            SettingCodes.ENABLE_PUSH: 0,
        }
        if limits.enable_connect_protocol:
            initial[SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        conn.local_settings = Settings(client=False, initial_values=initial)
        conn.decoder.max_header_list_size = limits.max_header_list_size
        conn.incoming_buffer = _GuardedFrameBuffer(limits.max_header_list_size + 16384)
        #: request method per open stream (HEAD answers carry no body)
        self._methods: dict[int, bytes] = {}
        self._out: dict[int, _Out] = {}
        #: stream id -> when its queued data started waiting for window credit
        self.blocked: dict[int, float] = {}
        self._events: list[object] = []
        self._active = 0  # streams counted against max_concurrent_streams
        self._counted: set[int] = set()
        self._receiving = False
        self._resets = 0
        self._reset_window_start = 0.0
        self._control_queued = 0
        self._reset_flood = False
        self._going_away = False
        self.last_stream_id = 2**31 - 1
        #: the connection is finished (GOAWAY with an error sent or received)
        self.closed = False
        self._authority: dict[int, tuple[bytes, bytes]] = {}

    # --- setup ---------------------------------------------------------------

    def initiate(self, upgrade_settings: bytes | None = None) -> None:
        """Queue our SETTINGS (and the connection window increase). With
        ``upgrade_settings`` (the HTTP2-Settings value of an ``Upgrade: h2c``
        request) stream 1 is the upgraded request, half-closed (remote)."""
        conn = self.conn
        if upgrade_settings is not None:
            conn.initiate_upgrade_connection(upgrade_settings)
            self._count_stream(1)
        else:
            conn.initiate_connection()
        increment = self.limits.connection_window_size - 65535
        if increment > 0:
            conn.increment_flow_control_window(increment)

    def adopt_upgraded_request(self, method: bytes, scheme: bytes, authority: bytes) -> None:
        """Stream 1 after ``Upgrade: h2c`` carries this (complete) HTTP/1.1 request."""
        self._methods[1] = method
        self._authority[1] = (scheme, authority)

    @property
    def push_enabled(self) -> bool:
        return bool(self.conn.remote_settings.enable_push) and not self._going_away

    @property
    def highest_stream_id(self) -> int:
        return self.conn.highest_inbound_stream_id

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send()

    def output_flushed(self) -> None:
        """The transport wrote everything out: queued replies are no longer piling up."""
        self._control_queued = 0

    # --- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[object]:
        """Feed bytes from the peer; return heron events. Never raises."""
        if self.closed:
            return []
        events = self._events = []
        self._receiving = True
        try:
            h2_events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self._receiving = False
            self._fail(int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)), str(exc), already_queued=True)
            return events
        except Exception as exc:  # pragma: no cover - a bug in h2 or here: never crash the server
            self._receiving = False
            self._fail(ErrorCodes.INTERNAL_ERROR, f"internal error: {exc!r}")
            return events
        try:
            self._dispatch(h2_events, events)
        finally:
            self._receiving = False
        if self.closed:
            return events
        if self._reset_flood:
            self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "too many stream resets (rapid reset)")
        elif self._control_queued > self.limits.max_control_frames:
            self._fail(ErrorCodes.ENHANCE_YOUR_CALM, "too many control frames queued (SETTINGS/PING flood)")
        return events

    def _dispatch(self, h2_events: list[Any], events: list[object]) -> None:
        for ev in h2_events:
            kind = ev.__class__
            if kind is _H2Data:
                sid = ev.stream_id
                flow = ev.flow_controlled_length
                payload = ev.data
                if sid in self._methods:
                    if flow > len(payload):  # padding: nobody will consume it
                        self.conn.acknowledge_received_data(flow - len(payload), sid)
                    if payload:
                        events.append(DataReceived(sid, payload))
                    elif not flow:
                        pass
                else:  # a stream we already reset (this batch): give the credit back
                    self.conn.acknowledge_received_data(flow, sid)
            elif kind is _H2Request:
                self._on_request(ev)
            elif kind is _H2StreamEnded:
                sid = ev.stream_id
                if sid in self._methods:
                    events.append(StreamEnded(sid))
            elif kind is WindowUpdated:
                self._flush_all()
            elif kind is _H2StreamReset:
                sid = ev.stream_id
                self._forget(sid)
                if ev.remote_reset:
                    self._count_reset()
                events.append(StreamReset(sid, int(ev.error_code), bool(ev.remote_reset)))
            elif kind is TrailersReceived:
                sid = ev.stream_id
                for name, _ in ev.headers:
                    if name.startswith(b":"):
                        self._stream_error(sid, "pseudo-header field in trailers")
                        break
            elif kind is RemoteSettingsChanged:
                if SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                    self._flush_all()
            elif kind is ConnectionTerminated:
                code = int(ev.error_code or 0)
                if code:
                    self.closed = True
                    events.append(ConnectionEnded(code, True, "GOAWAY from the peer"))
                else:
                    self._going_away = True
                    self.last_stream_id = min(self.last_stream_id, self.conn.highest_inbound_stream_id)
                    events.append(ConnectionEnded(0, True, "GOAWAY from the peer"))
            # PingReceived, SettingsAcknowledged, PriorityUpdated... are handled by h2

    def _on_request(self, ev: _H2Request) -> None:
        sid = ev.stream_id
        stream = self.conn.streams.get(sid)
        if stream is None or stream.closed:
            return  # reset already, later in the same batch (bad content-length...)
        end_stream = ev.stream_ended is not None
        try:
            request = self._validate(sid, ev.headers, end_stream)
        except _Malformed as exc:
            self._stream_error(sid, str(exc))
            return
        self._methods[sid] = request.method
        self._count_stream(sid)
        self._events.append(request)

    def _validate(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> RequestReceived:
        method = scheme = path = authority = protocol = None
        regular: list[tuple[bytes, bytes]] = []
        host: bytes | None = None
        cookies: list[bytes] = []
        content_length: bytes | None = None
        for name, value in headers:
            if name[:1] == b":":
                if regular or host is not None or cookies:
                    raise _Malformed("pseudo-header field after a regular field")
                if name not in _REQUEST_PSEUDO:
                    raise _Malformed(f"unknown pseudo-header field {name!r:.40}")
                if name == b":method":
                    if method is not None:
                        raise _Malformed("duplicate :method")
                    method = value
                elif name == b":path":
                    if path is not None:
                        raise _Malformed("duplicate :path")
                    path = value
                elif name == b":scheme":
                    if scheme is not None:
                        raise _Malformed("duplicate :scheme")
                    scheme = value
                elif name == b":authority":
                    if authority is not None:
                        raise _Malformed("duplicate :authority")
                    authority = value
                else:
                    if protocol is not None:
                        raise _Malformed("duplicate :protocol")
                    protocol = value
                if _BAD_REQUEST_VALUE.search(value) is not None:
                    raise _Malformed(f"invalid value of {name.decode()}")
                continue
            if not name or name.translate(None, _LOWER_TOKEN):
                raise _Malformed(f"invalid field name {name!r:.40}")
            if _BAD_REQUEST_VALUE.search(value) is not None:
                raise _Malformed(f"invalid value of field {name!r:.40}")
            if name in _CONNECTION_SPECIFIC:
                raise _Malformed(f"connection-specific field {name.decode()}")
            if name == b"te":
                if value != b"trailers":
                    raise _Malformed("te other than 'trailers'")
            elif name == b"host":
                if host is not None:
                    raise _Malformed("duplicate host")
                host = value
                continue
            elif name == b"cookie":
                cookies.append(value)
                continue
            elif name == b"content-length":
                if content_length is not None or not value.isdigit() or len(value) > 18:
                    raise _Malformed("invalid content-length")
                content_length = value
            regular.append((name, value))
        if method is None:
            raise _Malformed("missing :method")
        if not method or method.translate(None, _ANY_TOKEN):
            raise _Malformed("invalid :method")
        if protocol is not None and (method != b"CONNECT" or not self.limits.enable_connect_protocol):
            raise _Malformed(":protocol without extended CONNECT")
        if method == b"CONNECT" and protocol is None:
            if scheme is not None or path is not None or not authority:
                raise _Malformed("CONNECT needs :authority only")
            path = b""
            scheme = b""
        else:
            if scheme is None:
                raise _Malformed("missing :scheme")
            if not path:
                raise _Malformed("missing or empty :path")
            if path.translate(None, _PATH_BYTES):
                raise _Malformed("invalid :path")
            if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
                raise _Malformed("invalid :path")
        if authority is not None:
            if not authority:
                raise _Malformed("empty :authority")
            if host is not None and host != authority:
                raise _Malformed("host differs from :authority")
            host = authority
        if content_length is not None and end_stream and content_length.strip(b"0"):
            raise _Malformed("content-length larger than the body")
        if cookies:
            regular.append((b"cookie", b"; ".join(cookies)))
        if host is not None:
            regular.insert(0, (b"host", host))
        target, _, query = path.partition(b"?")
        self._authority[sid] = (scheme, authority or host or b"")
        return RequestReceived(sid, method, scheme, authority, target, query, protocol, regular, end_stream)

    # --- resets and errors ---------------------------------------------------------

    def _stream_error(self, sid: int, reason: str, code: int = ErrorCodes.PROTOCOL_ERROR) -> None:
        """Reset a stream the peer broke. The reset counts towards ``max_resets``."""
        known = sid in self._methods
        self._forget(sid)
        try:
            self.conn.reset_stream(sid, code)
        except (ProtocolError, NoSuchStreamError, StreamClosedError):  # pragma: no cover - already closed
            pass
        if known:
            self._events.append(StreamReset(sid, int(code), False))

    def _sent_reset(self, sid: int, code: int) -> None:
        """Every RST_STREAM we send passes here: the ones the peer provoked count."""
        self._control_queued += 1
        if self._receiving:
            self._count_reset()

    def _count_reset(self) -> None:
        limit = self.limits.max_resets
        if not limit:
            return
        now = self.clock()
        if now - self._reset_window_start > RESET_WINDOW:
            self._reset_window_start = now
            self._resets = 0
        self._resets += 1
        if self._resets > limit:
            self._reset_flood = True

    def _fail(self, code: int, reason: str, already_queued: bool = False) -> None:
        """A connection error: GOAWAY (unless h2 queued it already), then nothing more."""
        if self.closed:
            return
        self.closed = True
        if not already_queued:
            self.conn.send_goaway(self.conn.highest_inbound_stream_id, code)
        self._events.append(ConnectionEnded(code, False, reason))

    def _count_stream(self, sid: int) -> None:
        self._counted.add(sid)
        self._active += 1

    def _forget(self, sid: int) -> None:
        self._methods.pop(sid, None)
        self._authority.pop(sid, None)
        self._out.pop(sid, None)
        self.blocked.pop(sid, None)
        if sid in self._counted:
            self._counted.discard(sid)
            self._active -= 1

    def stream_done(self, sid: int) -> None:
        """The caller is finished with a stream (response sent, or abandoned)."""
        self._forget(sid)

    # --- output ---------------------------------------------------------------------

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
                fields.append((name, value))
        except (TypeError, ValueError, AttributeError):
            raise LocalProtocolError("headers must be an iterable of [name, value] pairs of bytes") from None
        if default_headers:
            fields.extend(default_headers)
        no_body = self._methods.get(sid) == b"HEAD" or status in (204, 304)
        if no_body:
            remaining = None
        self.conn.send_headers(sid, fields, end_stream=end_stream)
        self._out[sid] = _Out(remaining, no_body)
        if end_stream:
            self._forget(sid)

    def send_informational(self, sid: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        fields = [(b":status", b"%d" % status)]
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid header {name!r:.40}")
            fields.append((name.lower(), value))
        self.conn.send_headers(sid, fields, end_stream=False)

    def send_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes; they go out as the peer's windows allow.
        Raises :class:`LocalProtocolError` for more than the declared content-length,
        or an end short of it (nothing queued then)."""
        out = self._out.get(sid)
        if out is None:
            return  # the stream is gone (reset): drop
        if out.no_body:
            data = b""
        if out.remaining is not None:
            left = out.remaining - len(data)
            if left < 0:
                raise LocalProtocolError("response body longer than its content-length")
            if end_stream and left:
                raise LocalProtocolError("response body shorter than its content-length")
            out.remaining = left
        if data:
            out.chunks.append(data)
            out.size += len(data)
        if end_stream:
            out.end = True
        self._flush(sid, out)

    def send_trailers(self, sid: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the stream with a trailer section (after the queued data)."""
        out = self._out.get(sid)
        if out is None:
            return
        fields = []
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid trailer {name!r:.40}")
            name = name.lower()
            if name in _RESPONSE_DROP or name == b"content-length":
                raise LocalProtocolError(f"{name.decode()} is not allowed in trailers")
            fields.append((name, value))
        if out.remaining:
            raise LocalProtocolError("response body shorter than its content-length")
        out.trailers = fields
        out.end = True
        self._flush(sid, out)

    def pending(self, sid: int) -> int:
        """Bytes queued on ``sid`` waiting for window credit."""
        out = self._out.get(sid)
        return out.size if out is not None else 0

    def _flush(self, sid: int, out: _Out) -> None:
        conn = self.conn
        chunks = out.chunks
        if chunks:
            max_frame = conn.max_outbound_frame_size
            while chunks:
                window = conn.local_flow_control_window(sid)
                if window <= 0:
                    if sid not in self.blocked:
                        self.blocked[sid] = self.clock()
                    return
                chunk = chunks[0]
                n = min(window, max_frame, len(chunk))
                last = n == len(chunk) and len(chunks) == 1
                if n == len(chunk):
                    chunks.pop(0)
                    piece = chunk
                else:
                    piece = chunk[:n]
                    chunks[0] = chunk[n:]
                out.size -= n
                conn.send_data(sid, piece, end_stream=last and out.end and out.trailers is None)
            self.blocked.pop(sid, None)
            if out.end:
                if out.trailers is not None:
                    conn.send_headers(sid, out.trailers, end_stream=True)
                self._forget(sid)
            return
        if out.end:
            if out.trailers is not None:
                conn.send_headers(sid, out.trailers, end_stream=True)
            else:
                conn.end_stream(sid)
            self._forget(sid)

    def _flush_all(self) -> None:
        if not self._out:
            return
        for sid, out in list(self._out.items()):
            if out.chunks:
                self._flush(sid, out)
                if not out.chunks:
                    self._events.append(StreamWritable(sid))

    def flush_pending(self) -> list[object]:
        """Re-try queued data (after a local window change); return StreamWritable events."""
        self._events = []
        self._flush_all()
        return self._events

    def acknowledge(self, sid: int, size: int) -> None:
        """``size`` body bytes of ``sid`` were consumed: return the window credit."""
        if size and not self.closed:
            self.conn.acknowledge_received_data(size, sid)

    def reset(self, sid: int, code: int = ErrorCodes.INTERNAL_ERROR) -> None:
        """Reset a stream from our side (the app failed, the response can't be completed)."""
        self._forget(sid)
        stream = self.conn.streams.get(sid)
        if stream is None or stream.closed or self.closed:
            return
        self.conn.reset_stream(sid, code)

    def end_request_early(self, sid: int) -> None:
        """The response is complete but the request body isn't: RST_STREAM NO_ERROR
        tells the client to stop sending it (RFC 9113 8.1)."""
        stream = self.conn.streams.get(sid)
        if stream is not None and not stream.closed and stream.state_machine.state == StreamState.HALF_CLOSED_LOCAL:
            self.conn.reset_stream(sid, ErrorCodes.NO_ERROR)

    def push(self, sid: int, path: bytes, headers: list[tuple[bytes, bytes]]) -> int | None:
        """Promise a GET of ``path`` on stream ``sid``; return the promised stream id,
        or None when push is off (the peer disabled it, or we are shutting down),
        the parent stream is gone, or the peer's stream limit is reached."""
        conn = self.conn
        if not self.push_enabled or self.closed or sid not in self._methods:
            return None
        if conn.open_outbound_streams >= conn.remote_settings.max_concurrent_streams:
            return None
        if not path or path[:1] != b"/" or path.translate(None, _PATH_BYTES):
            raise LocalProtocolError(f"invalid push path {path!r:.60}")
        scheme, authority = self._authority.get(sid, (b"http", b""))
        fields = [(b":method", b"GET"), (b":scheme", scheme or b"http"), (b":path", path)]
        if authority:
            fields.append((b":authority", authority))
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid push header {name!r:.40}")
            name = name.lower()
            if name in _CONNECTION_SPECIFIC or name == b"host":
                continue
            fields.append((name, value))
        promised = conn.get_next_available_stream_id()
        conn.push_stream(sid, promised, fields)
        self._methods[promised] = b"GET"
        self._authority[promised] = (scheme, authority)
        return promised

    def start_shutdown(self) -> None:
        """Graceful shutdown: GOAWAY NO_ERROR with the last stream id; later streams are refused."""
        if self._going_away or self.closed:
            return
        self._going_away = True
        self.last_stream_id = self.conn.highest_inbound_stream_id
        self.conn.send_goaway(self.last_stream_id, ErrorCodes.NO_ERROR)

    def close(self, code: int = ErrorCodes.NO_ERROR, reason: str = "") -> None:
        """End the connection now (GOAWAY with ``code``)."""
        if not self.closed:
            self.closed = True
            self.conn.send_goaway(self.conn.highest_inbound_stream_id, code)

    @property
    def active_streams(self) -> int:
        return self._active

    @property
    def going_away(self) -> bool:
        return self._going_away

    def window_blocked_on_connection(self) -> bool:
        return self.conn.outbound_flow_control_window <= 0


# PingAckReceived is imported for completeness of the event mapping (ignored)
_IGNORED = (PingAckReceived,)
