"""WebSocket framing, sans-IO (RFC 6455 5-7, RFC 7692 permessage-deflate).

:class:`WebSocketConnection` is the server side of an open connection: bytes
go in with :meth:`~WebSocketConnection.receive_data`, whole messages and
control frames come out of :meth:`~WebSocketConnection.next_event`, and the
``send_*`` methods return the bytes to write. The opening handshake that comes
before it is :mod:`heron.protocol.ws_handshake`.

Receiving is strict. Every violation raises :class:`WebSocketProtocolError`
with the close code to send (RFC 6455 7.4.1): 1002 for framing errors
(unmasked frame, RSV bits, unknown opcode, bad control frame, bad
fragmentation, 64-bit length with the top bit set, invalid close code or a
1-byte close payload, invalid compressed data), 1007 for invalid UTF-8 in a
text message or a close reason, 1009 for a frame or message over the limits.

Deliberate choices:

* Non-minimal length encodings (e.g. 5 as ``126, 0, 5``) are accepted. RFC
  6455 5.2 requires the sender to use the minimal form but gives the receiver
  no rule, the length is unambiguous either way, and rejecting it protects
  nothing.
* Sizes are checked from the frame header, before any payload is buffered:
  a frame over ``max_frame_size`` or (uncompressed) a message that would pass
  ``max_message_size`` fails as soon as its length is readable. Compressed
  messages are counted after inflation, while inflating (see
  :mod:`.permessage_deflate`).
* Text and compressed payload bytes are processed as they arrive, not when
  the frame is complete, so invalid UTF-8 fails as soon as the offending bytes
  are in, even in the middle of a frame. Text is decoded once per batch of
  input (before :data:`NEED_DATA` is returned, before a control frame is, and
  at the end of the message), not once per frame, so a message in thousands
  of small fragments costs one decoder call per read. CPython's incremental
  decoder already rejects an invalid prefix early except for a UTF-16
  surrogate prefix (``ED A0``-``ED BF``), which we check ourselves.
* A binary payload has nothing to check, so it is not touched before its
  frame is complete: the pieces of an incomplete binary frame are kept as
  they came (references to the ``bytes`` given to
  :meth:`~WebSocketConnection.receive_data`, no copy into a buffer) and
  unmasked in one pass once the frame is complete, straight into the message
  (no join). A 1 MiB message that arrives in 256 KiB reads is copied once.
* Unmasking is :func:`heron.protocol._mask.apply_mask` (and ``apply_mask_join``
  for a payload in pieces): small C functions when the optional extension is
  built (about 5 us per 64 KiB), otherwise pure-Python twins that keep the
  work in C-level bytes operations (about 40x slower, still linear; a per-byte
  loop would be about 600x slower).
* The input buffer is the last ``bytes`` received, parsed in place from an
  offset; only a frame head or a text/control payload that spans reads is
  copied into a ``bytearray``.
* Memory follows the caller's room, and work is bounded per call. The caller
  sets :attr:`~WebSocketConnection.room` (the bytes of message payload it can
  still take, the message in progress included): a compressed message is
  inflated only that far, and :meth:`~WebSocketConnection.next_event` then
  returns :data:`NO_ROOM` with the rest of the compressed input kept, to go on
  once the caller has made room (so what a small frame inflates to never
  exceeds what the app has room for). Small pieces of a fragmented binary
  message are copied into one buffer, not kept as thousands of objects. One
  call handles at most :data:`FRAMES_PER_CALL` frames, then returns
  :data:`YIELD` (call again, after letting others run).
* Frames that carry nothing (data frames without payload that don't end their
  message, unsolicited Pongs): more than ``max_empty_frames`` within
  :data:`EMPTY_WINDOW` seconds fail the connection with 1008.
* Nothing is answered automatically: a :class:`Ping` is returned and the
  caller writes ``conn.pong_reply(event)``; a :class:`CloseReceived` is
  answered with ``conn.close_reply(event)``.
* Messages are sent as single frames, compressed when permessage-deflate was
  agreed; nothing is fragmented on the way out. :meth:`~WebSocketConnection.frame_message`
  returns the frame head and the payload apart, so a big payload can be
  written without being copied behind its head.
"""

from __future__ import annotations

import codecs
import struct
import time
from collections.abc import Callable

from ._mask import apply_mask as _unmask
from ._mask import apply_mask_join as _unmask_join
from ._sentinel import Sentinel as _Sentinel
from .errors import LocalProtocolError, WebSocketProtocolError
from .permessage_deflate import DeflateParams, Deflater, Inflater

__all__ = [
    "WebSocketConnection",
    "WebSocketProtocolError",
    "TextMessage",
    "BytesMessage",
    "Ping",
    "Pong",
    "CloseReceived",
    "NEED_DATA",
    "NO_ROOM",
    "YIELD",
    "Event",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# --- events ------------------------------------------------------------------


class _Event:
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class TextMessage(_Event):
    """A complete text message (fragments joined, UTF-8 checked and decoded)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<TextMessage {len(self.text)} chars>"


class BytesMessage(_Event):
    """A complete binary message (fragments joined)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<BytesMessage {len(self.data)} bytes>"


class Ping(_Event):
    """A Ping frame; answer with :meth:`WebSocketConnection.pong_reply`."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"<Ping {self.payload!r}>"


class Pong(_Event):
    """A Pong frame (solicited or not)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"<Pong {self.payload!r}>"


class CloseReceived(_Event):
    """The peer closed: a Close frame, or the transport's EOF.

    ``code`` is 1005 when the Close frame had no status code, and 1006 when
    the transport ended without a Close frame (``receive_data(b"")``). Answer
    with :meth:`WebSocketConnection.close_reply`.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"<CloseReceived {self.code} {self.reason!r}>"


#: More bytes are needed before another event can be produced. Also returned
#: for ever after a :class:`CloseReceived`: later bytes are discarded.
NEED_DATA = _Sentinel("NEED_DATA")
#: The message in progress can't be inflated further within
#: :attr:`WebSocketConnection.room`: call again once the caller has room.
NO_ROOM = _Sentinel("NO_ROOM")
#: :data:`FRAMES_PER_CALL` frames were handled: call again (input is waiting).
YIELD = _Sentinel("YIELD")

#: Frames one :meth:`WebSocketConnection.next_event` call handles at most.
FRAMES_PER_CALL = 1000
#: Seconds over which frames that carry nothing are counted.
EMPTY_WINDOW = 10.0
#: A binary fragment smaller than this is copied into the message's buffer
#: rather than kept as an object of its own (see heron.asgi.budget).
_COALESCE_BELOW = 4096

Event = TextMessage | BytesMessage | Ping | Pong | CloseReceived | _Sentinel

# --- framing -----------------------------------------------------------------

_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN, _RSV1 = 0x80, 0x40

_HEADER = 0
_PAYLOAD = 1
_CLOSED = 2  # a Close frame, EOF or an error was seen: input is ignored

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def _valid_close_code(code: int) -> bool:
    """Codes that may appear on the wire (RFC 6455 7.4, IANA registry).

    1004 is reserved, 1005/1006/1015 are for APIs only, 1016-2999 are not
    registered, 3000-3999 are registered by libraries, 4000-4999 are private.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _frame_header(opcode: int, n: int, rsv1: int = 0) -> bytes:
    b0 = _FIN | rsv1 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 0x10000:
        return _PACK_16(b0, 126, n)
    return _PACK_64(b0, 127, n)


def _frame(opcode: int, payload: bytes, rsv1: int = 0) -> bytes:
    return _frame_header(opcode, len(payload), rsv1) + payload


class WebSocketConnection:
    """The server side of one WebSocket connection, after the handshake.

    ``max_message_size`` bounds a message after decompression (1009 beyond);
    ``max_frame_size`` bounds one frame's payload as sent (defaults to
    ``max_message_size``). ``deflate`` holds the permessage-deflate parameters
    agreed during the handshake, if any.
    """

    __slots__ = (
        "max_message_size",
        "max_frame_size",
        "close_sent",
        "close_received",
        "_buf",
        "_pos",
        "_raw",
        "_state",
        "_eof",
        "_error",
        "_fin",
        "_opcode",
        "_mask",
        "_remaining",
        "_msg_type",
        "_msg_compressed",
        "_msg_size",
        "_parts",
        "_utf8",
        "_decoder",
        "_deflater",
        "_inflater",
        "room",
        "_pending_inflate",
        "_end_pending",
        "max_empty_frames",
        "_clock",
        "_empty",
        "_empty_start",
    )

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        deflate: DeflateParams | None = None,
        max_empty_frames: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_message_size < 1 or (max_frame_size is not None and max_frame_size < 1):
            raise ValueError("size limits must be positive")
        self.max_message_size = max_message_size
        self.max_frame_size = max_message_size if max_frame_size is None else max_frame_size
        #: We sent a Close frame: nothing more may be sent.
        self.close_sent = False
        #: The peer's Close frame arrived: nothing more will be read.
        self.close_received = False
        # unparsed input from _pos on: the last bytes received as they came,
        # or a bytearray when a frame header or payload spans reads
        self._buf: bytes | bytearray = b""
        self._pos = 0
        # the masked pieces of a binary frame's payload collected as they come, or None
        self._raw: list[bytes | memoryview] | None = None
        self._state = _HEADER
        self._eof = False
        self._error: WebSocketProtocolError | None = None
        # current frame
        self._fin = False
        self._opcode = 0
        self._mask = b""
        self._remaining = 0
        # current message: _msg_type is 0 when none is in progress
        self._msg_type = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._parts: list[bytes] | list[str] = []
        # text payload not yet decoded (checked once per batch of input, not per frame)
        self._utf8 = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = None
        self._deflater = Deflater(deflate) if deflate is not None else None
        self._inflater = Inflater(deflate) if deflate is not None else None
        #: message payload bytes the caller can still take (the message in
        #: progress included); a compressed message is inflated only this far
        self.room = 1 << 62
        # compressed input of the current frame not inflated yet for lack of room, or None
        self._pending_inflate: bytes | None = None
        self._end_pending = False  # ... and the message ends with it
        #: frames that carry nothing allowed within EMPTY_WINDOW seconds (0: any number)
        self.max_empty_frames = max_empty_frames
        self._clock = clock
        self._empty = 0
        self._empty_start = 0.0

    @property
    def compressed(self) -> bool:
        """permessage-deflate is in use (then :attr:`room` bounds inflation)."""
        return self._inflater is not None

    @property
    def closed(self) -> bool:
        """Both Close frames went through (either order), or the transport ended."""
        return (self.close_sent and self.close_received) or self._eof

    # --- input -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the transport reached EOF.

        A ``bytes`` object is kept by reference (the payload of a binary frame
        is unmasked once, when the frame is complete, straight from the pieces
        it came in); any other bytes-like object is copied first.
        """
        if self._state == _CLOSED:
            return  # after Close (RFC 6455 5.5.1), EOF or an error: ignored
        if not data:
            self._eof = True
            return
        if type(data) is not bytes:
            data = bytes(data)
        n = self._remaining
        if self._raw is not None and n:
            # More of a binary frame whose payload is collected as it comes
            # (the buffer is empty meanwhile, see _collect).
            size = len(data)
            if size <= n:
                self._raw.append(data)
                self._remaining = n - size
                return
            self._raw.append(memoryview(data)[:n])
            self._remaining = 0
            self._buf = data
            self._pos = n
            return
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            # nothing left over: parse the new bytes where they are, no copy
            self._buf = data
            self._pos = 0
        elif type(buf) is bytearray:
            if pos:
                del buf[:pos]
                self._pos = 0
            buf += data
        else:
            rest = bytearray(buf[pos:])
            rest += data
            self._buf = rest
            self._pos = 0

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`.

        Raises :class:`WebSocketProtocolError` when the peer broke the
        protocol; send ``send_close(exc.close_code, str(exc))`` and close.
        Every later call raises the same error again.
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._next_event()
            if self._utf8 and event is NEED_DATA:
                # Everything received so far has been taken apart: check the
                # text now, so invalid UTF-8 fails before we wait for more.
                self._flush_text()
            return event
        except WebSocketProtocolError as exc:
            error = exc
            if self._utf8 and exc.close_code != 1007:
                # Text that arrived before the fault is checked first: its
                # invalid UTF-8 came first on the wire.
                try:
                    self._flush_text()
                except WebSocketProtocolError as earlier:
                    error = earlier
            self._error = error
            self._state = _CLOSED
            self._buf = b""
            self._pos = 0
            self._raw = None
            self._parts = []
            self._utf8 = bytearray()
            self._pending_inflate = None
            if error is exc:
                raise
            raise error from None

    def _next_event(self) -> Event:
        if self._pending_inflate is not None:
            pending, self._pending_inflate = self._pending_inflate, None
            if not self._inflate(pending):
                return NO_ROOM
            if self._end_pending:
                self._end_pending = False
                return self._end_message()
        frames = FRAMES_PER_CALL
        while True:
            if not frames:
                return YIELD
            frames -= 1
            state = self._state
            if state == _HEADER:
                if len(self._buf) - self._pos < 2 or not self._read_header():
                    return self._need_data()
            elif state == _CLOSED:
                return NEED_DATA
            opcode = self._opcode
            remaining = self._remaining
            raw = self._raw
            if raw is not None:  # a binary frame collected as it came in (see _collect)
                event = self._collected_frame(raw, remaining)
                if event is None:
                    continue
                return event
            buf = self._buf
            pos = self._pos
            avail = len(buf) - pos
            if opcode >= _CLOSE:  # control frames are small: wait for all of it
                if avail < remaining:
                    return self._need_data()
                end = pos + remaining
                with memoryview(buf) as view:
                    payload = _unmask(view[pos:end], self._mask)
                self._pos = end
                self._state = _HEADER
                if self._utf8:  # report invalid UTF-8 that came before this frame first
                    self._flush_text()
                return self._control(opcode, payload)
            if opcode and self._fin and not self._msg_compressed and not self._msg_size and avail >= remaining:
                # Fast path, the common case: a whole unfragmented message
                # (_msg_size == 0: none of it went through the slow path yet).
                end = pos + remaining
                with memoryview(buf) as view:  # no intermediate copy of the payload
                    payload = _unmask(view[pos:end], self._mask)
                if end == len(buf):
                    self._buf = b""  # all taken: don't keep the read alive
                    self._pos = 0
                else:
                    self._pos = end
                self._state = _HEADER
                self._msg_type = 0
                if opcode == _BINARY:
                    return BytesMessage(payload)
                try:
                    return TextMessage(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    raise WebSocketProtocolError("invalid UTF-8 in a text message", 1007) from None
            # the slow path: a fragment, a compressed frame, or a payload that spans reads
            event = self._partial_frame(buf, pos, avail, remaining)
            if event is not None:
                return event

    def _collected_frame(self, raw: list[bytes | memoryview], remaining: int) -> Event | None:
        """A binary frame gathered piece by piece: the message (or its end), or
        None when it was a fragment taken into the message (go on parsing)."""
        if remaining:
            return self._need_data()
        self._raw = None
        payload = _unmask_join(raw, self._mask)
        self._state = _HEADER
        if self._fin and not self._msg_size:  # the whole message: no join
            self._msg_type = 0
            return BytesMessage(payload)
        self._append(payload)
        if self._fin:
            return self._end_message()
        return None

    def _partial_frame(self, buf: bytes | bytearray, pos: int, avail: int, remaining: int) -> Event | None:
        """Take what is here of a data frame's payload into the message: the
        message, :data:`NEED_DATA`, :data:`NO_ROOM`, or None (the frame is done
        and the message goes on: parse the next frame)."""
        if remaining:
            if avail == 0:
                return self._need_data()
            if avail < remaining and self._msg_type == _BINARY and not self._msg_compressed:
                self._collect(buf, pos, avail)
                return self._need_data()
            n = min(remaining, avail)
            with memoryview(buf) as view:  # a partial payload is processed now: fail fast
                chunk = _unmask(view[pos : pos + n], self._mask)
            self._pos = pos + n
            if n < remaining:
                k = n & 3
                if k:
                    self._mask = self._mask[k:] + self._mask[:k]
            remaining -= n
            self._remaining = remaining
            if self._msg_compressed:
                if not remaining:
                    self._state = _HEADER
                if not self._inflate(chunk):
                    self._end_pending = not remaining and self._fin
                    return NO_ROOM
            else:
                self._append(chunk)
            if remaining:
                return self._need_data()
        elif not self._fin:
            self._empty_frame()  # a fragment without payload that doesn't end its message
        self._state = _HEADER
        if self._fin:
            return self._end_message()
        return None

    def _inflate(self, chunk: bytes) -> bool:
        """Inflate ``chunk`` into the message, as far as :attr:`room` allows;
        False when the rest had to wait (kept in ``_pending_inflate``)."""
        inflater = self._inflater
        assert inflater is not None
        limit = self.max_message_size - self._msg_size
        room = self.room - self._msg_size
        if room >= limit:  # the message limit binds first (1009 beyond it)
            self._append(inflater.decompress(chunk, limit))
            return True
        if room <= 0:
            self._pending_inflate = chunk
            return False
        out, rest, more = inflater.decompress_up_to(chunk, room)
        self._append(out)
        if more:
            self._pending_inflate = rest
            return False
        return True

    def _empty_frame(self) -> None:
        limit = self.max_empty_frames
        if not limit:
            return
        now = self._clock()
        if now - self._empty_start > EMPTY_WINDOW:
            self._empty_start = now
            self._empty = 0
        self._empty += 1
        if self._empty > limit:
            raise WebSocketProtocolError("too many frames that carry nothing", 1008)

    def _collect(self, buf: bytes | bytearray, pos: int, avail: int) -> None:
        """Start collecting an incomplete binary frame's payload as it comes:
        receive_data appends the next pieces to ``_raw`` untouched, and the
        frame is unmasked in one pass once complete (no copy into the buffer,
        no join). Nothing is checked in a binary payload, so nothing is lost
        by waiting; the frame's size was checked from its header."""
        if type(buf) is bytes:
            piece: bytes | memoryview = memoryview(buf)[pos:]  # bytes never move
        else:
            piece = bytes(buf[pos:])  # a bytearray may be resized: copy
        self._raw = [piece]
        self._remaining -= avail
        self._buf = b""
        self._pos = 0

    def _need_data(self) -> Event:
        if self._pos == len(self._buf) and self._buf:
            self._buf = b""  # don't keep the last read alive while idle
            self._pos = 0
        if self._eof:
            self._state = _CLOSED
            self._buf = b""
            self._pos = 0
            self._raw = None
            return CloseReceived(1006, "")
        return NEED_DATA

    def _read_header(self) -> bool:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 2:
            return False
        b0 = buf[pos]
        b1 = buf[pos + 1]
        opcode = b0 & 0x0F
        if b0 & 0x30:
            raise WebSocketProtocolError("RSV2 or RSV3 set", 1002)
        if opcode >= _CLOSE:
            if opcode > _PONG:
                raise WebSocketProtocolError(f"unknown opcode {opcode}", 1002)
            if not b0 & _FIN:
                raise WebSocketProtocolError("fragmented control frame", 1002)
            if b0 & _RSV1:
                raise WebSocketProtocolError("RSV1 set on a control frame", 1002)
        elif opcode == _CONT:
            if not self._msg_type:
                raise WebSocketProtocolError("continuation frame without a message to continue", 1002)
            if b0 & _RSV1:
                raise WebSocketProtocolError("RSV1 set on a continuation frame", 1002)
        elif opcode <= _BINARY:
            if self._msg_type:
                raise WebSocketProtocolError("new message inside a fragmented message", 1002)
            if b0 & _RSV1 and self._inflater is None:
                raise WebSocketProtocolError("RSV1 set but permessage-deflate was not agreed", 1002)
        else:
            raise WebSocketProtocolError(f"unknown opcode {opcode}", 1002)
        if not b1 & 0x80:
            raise WebSocketProtocolError("client frame not masked", 1002)
        length = b1 & 0x7F
        if length < 126:
            header_len = 6
        elif length == 126:
            if avail < 4:
                return False
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            header_len = 8
        else:
            if avail < 10:
                return False
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise WebSocketProtocolError("frame length has its most significant bit set", 1002)
            header_len = 14
        if opcode >= _CLOSE:
            if length > 125:
                raise WebSocketProtocolError("control frame payload over 125 bytes", 1002)
        else:
            if length > self.max_frame_size:
                raise WebSocketProtocolError("frame too big", 1009)
            compressed = self._msg_compressed if opcode == _CONT else b0 & _RSV1
            if not compressed and self._msg_size + length > self.max_message_size:
                raise WebSocketProtocolError("message too big", 1009)
        if avail < header_len:
            return False
        end = pos + header_len
        self._mask = bytes(buf[end - 4 : end])
        self._pos = end
        self._fin = bool(b0 & _FIN)
        self._opcode = opcode
        self._remaining = length
        if opcode == _TEXT or opcode == _BINARY:
            # _parts, _msg_size and the decoder's state were left empty by
            # the previous message's end (or it failed the connection).
            self._msg_type = opcode
            self._msg_compressed = bool(b0 & _RSV1)
        self._state = _PAYLOAD
        return True

    def _append(self, data: bytes) -> None:
        """Count, check and keep a piece of the current message."""
        if not data:
            return
        size = self._msg_size + len(data)
        if size > self.max_message_size:
            raise WebSocketProtocolError("message too big", 1009)
        self._msg_size = size
        if self._msg_type == _TEXT:
            # Decoded by _flush_text: once per batch of input, so a message
            # in many small fragments costs one decoder call per read, not
            # one per frame.
            self._utf8 += data
        else:
            parts: list[bytes | bytearray] = self._parts  # type: ignore[assignment]  # (binary: bytes)
            tail = parts[-1] if parts else None
            if len(data) >= _COALESCE_BELOW:
                parts.append(data)
            elif isinstance(tail, bytearray):
                tail += data
            else:
                parts.append(bytearray(data))

    def _flush_text(self) -> None:
        """Decode the text payload gathered so far; 1007 if it can't be UTF-8."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = _Utf8Decoder("strict")
        try:
            text = decoder.decode(self._utf8)
        except UnicodeDecodeError:
            raise WebSocketProtocolError("invalid UTF-8 in a text message", 1007) from None
        self._utf8.clear()
        # The one invalid prefix CPython buffers instead of rejecting: a
        # UTF-16 surrogate (ED A0..BF).
        pending = decoder.getstate()[0]
        if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise WebSocketProtocolError("invalid UTF-8 in a text message", 1007)
        if text:
            self._parts.append(text)  # type: ignore[arg-type]

    def _end_message(self) -> Event:
        if self._msg_compressed:
            assert self._inflater is not None
            self._append(self._inflater.finish(self.max_message_size - self._msg_size))
        if self._utf8:
            self._flush_text()
        parts = self._parts
        msg_type = self._msg_type
        self._parts = []
        self._msg_type = 0
        self._msg_size = 0
        self._msg_compressed = False
        if msg_type == _TEXT:
            try:
                if self._decoder is not None:
                    self._decoder.decode(b"", True)  # also leaves it reset
            except UnicodeDecodeError:
                raise WebSocketProtocolError("incomplete UTF-8 sequence at the end of a text message", 1007) from None
            return TextMessage("".join(parts))  # type: ignore[arg-type]
        if len(parts) == 1 and type(parts[0]) is bytes:
            return BytesMessage(parts[0])
        return BytesMessage(b"".join(parts))  # type: ignore[arg-type]  # (binary: bytes-like parts)

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == _PING:
            return Ping(payload)
        if opcode == _PONG:
            self._empty_frame()  # (we send few pings; a flood of pongs is noise)
            return Pong(payload)
        if not payload:
            code, reason = 1005, ""
        elif len(payload) == 1:
            raise WebSocketProtocolError("close frame payload of 1 byte", 1002)
        else:
            code = (payload[0] << 8) | payload[1]
            if not _valid_close_code(code):
                raise WebSocketProtocolError(f"invalid close code {code}", 1002)
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketProtocolError("invalid UTF-8 in the close reason", 1007) from None
        self.close_received = True
        self._state = _CLOSED
        self._buf = b""
        self._pos = 0
        return CloseReceived(code, reason)

    # --- output ------------------------------------------------------------

    def _check_can_send(self) -> None:
        if self.close_sent:
            raise LocalProtocolError("cannot send after a Close frame")

    def frame_message(self, data: str | bytes) -> tuple[bytes, bytes]:
        """One message (text for ``str``, binary otherwise) as one frame, given as
        ``(header, payload)``: the caller may write a big payload as a buffer of
        its own (``transport.writelines``) instead of copying it behind the header.
        """
        if self.close_sent:
            raise LocalProtocolError("cannot send after a Close frame")
        if isinstance(data, str):
            opcode = _TEXT
            try:
                payload = data.encode("utf-8")
            except UnicodeEncodeError:
                raise LocalProtocolError("text message is not valid Unicode (lone surrogate)") from None
        else:
            opcode = _BINARY
            payload = data
        if self._deflater is not None:
            payload = self._deflater.compress(payload)
            return _frame_header(opcode, len(payload), _RSV1), payload
        return _frame_header(opcode, len(payload)), payload

    def send_text(self, text: str) -> bytes:
        """One text message, as one frame."""
        header, payload = self.frame_message(text)
        return header + payload

    def send_bytes(self, data: bytes) -> bytes:
        """One binary message, as one frame."""
        if isinstance(data, str):
            raise TypeError("send_bytes() takes bytes; use send_text() for str")
        header, payload = self.frame_message(data)
        return header + payload

    def _control_frame(self, opcode: int, payload: bytes) -> bytes:
        self._check_can_send()
        if len(payload) > 125:
            raise LocalProtocolError("control frame payload over 125 bytes")
        return _frame(opcode, payload)

    def send_ping(self, payload: bytes = b"") -> bytes:
        """A Ping frame (payload up to 125 bytes)."""
        return self._control_frame(_PING, payload)

    def send_pong(self, payload: bytes) -> bytes:
        """A Pong frame (payload up to 125 bytes)."""
        return self._control_frame(_PONG, payload)

    def send_close(self, code: int | None = 1000, reason: str = "") -> bytes:
        """A Close frame; ``code=None`` sends one without a status code.

        The code must be one that may appear on the wire (1000-1003,
        1007-1014, 3000-4999) and the reason at most 123 bytes of UTF-8.
        """
        self._check_can_send()
        if code is None:
            if reason:
                raise LocalProtocolError("a close reason needs a close code")
            payload = b""
        else:
            if not isinstance(code, int) or not _valid_close_code(code):
                raise LocalProtocolError(f"close code {code!r} may not be sent")
            try:
                encoded = reason.encode("utf-8")
            except UnicodeEncodeError:
                raise LocalProtocolError("close reason is not valid Unicode") from None
            if len(encoded) > 123:
                raise LocalProtocolError("close reason over 123 bytes")
            payload = code.to_bytes(2, "big") + encoded
        self.close_sent = True
        return _frame(_CLOSE, payload)

    def pong_reply(self, ping: Ping) -> bytes:
        """The Pong answering ``ping`` (nothing once we sent Close)."""
        if self.close_sent:
            return b""
        return _frame(_PONG, ping.payload)

    def close_reply(self, event: CloseReceived) -> bytes:
        """The Close frame answering ``event``, echoing its code.

        1000 when the peer sent no code (1005); nothing if we already sent
        Close or the transport is gone (1006).
        """
        if self.close_sent or event.code == 1006:
            return b""
        return self.send_close(1000 if event.code == 1005 else event.code)
