"""The receiving state machine of one WebSocket connection (RFC 6455 5-7).

:class:`WebSocketConnection` takes bytes apart into frames and frames into
events. What a message is made of (its pieces, UTF-8 check, inflation) is its
base :class:`~.assembler.MessageAssembler`, the sending side its base
:class:`~.sending.Sender`; the frame format is :mod:`.frames`. The package's
docstring (:mod:`heron.protocol.websocket`) gives the rules and the choices.

The per-frame path is ``next_event`` -> ``_next_event`` -> ``_read_header``
and, for a whole unfragmented message, nothing more: keep extra calls,
attribute lookups and allocations off it (rare cases go through
``_partial_frame``, ``_collected_frame`` and the assembler).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .._mask import apply_mask as _unmask
from .._mask import apply_mask_join as _unmask_join
from ..errors import WebSocketProtocolError
from ..permessage_deflate import DeflateParams, Deflater, Inflater
from .assembler import MessageAssembler
from .events import NEED_DATA, NO_ROOM, YIELD, BytesMessage, CloseReceived, Event, Ping, Pong, TextMessage
from .frames import (
    FIN,
    MASKED,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    RSV2_RSV3,
    RSV_BITS,
    header_error,
    parse_close_payload,
)
from .sending import Sender

__all__ = ["WebSocketConnection", "DEFAULT_MAX_MESSAGE_SIZE", "FRAMES_PER_CALL", "EMPTY_WINDOW"]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Frames one :meth:`WebSocketConnection.next_event` call handles at most.
FRAMES_PER_CALL = 1000
#: Seconds over which frames that carry nothing are counted.
EMPTY_WINDOW = 10.0

# what the input is at: a frame header, a frame's payload, or nothing more
_HEADER = 0
_PAYLOAD = 1
_CLOSED = 2  # a Close frame, EOF or an error was seen: input is ignored


class WebSocketConnection(MessageAssembler, Sender):
    """The server side of one WebSocket connection, after the handshake.

    ``max_message_size`` bounds a message after decompression (1009 beyond);
    ``max_frame_size`` bounds one frame's payload as sent (defaults to
    ``max_message_size``). ``deflate`` holds the permessage-deflate parameters
    agreed during the handshake, if any. Its fields are declared in
    :class:`~.state.ConnectionState`.
    """

    __slots__ = ()

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
        self.close_sent = False
        self.close_received = False
        self._buf = b""
        self._pos = 0
        self._raw = None
        self._state = _HEADER
        self._eof = False
        self._error = None
        self._fin = False
        self._opcode = 0
        self._mask = b""
        self._remaining = 0
        self._msg_type = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._parts = []
        self._utf8 = bytearray()
        self._decoder = None
        self._deflater = Deflater(deflate) if deflate is not None else None
        self._inflater = Inflater(deflate) if deflate is not None else None
        self.room = 1 << 62
        self._pending_inflate = None
        self._end_pending = False
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
            event = self._resume_inflate()
            if event is not None:
                return event
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
            if opcode >= OP_CLOSE:  # control frames are small: wait for all of it
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
                if opcode == OP_BINARY:
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
            if avail < remaining and self._msg_type == OP_BINARY and not self._msg_compressed:
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
        # One combined test per kind of opcode; header_error says which rule failed.
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG or b0 & RSV_BITS or not b0 & FIN or not b1 & MASKED:
                raise header_error(b0, b1, self._msg_type != 0, self._inflater is not None)
        elif opcode == OP_CONT:
            if b0 & RSV_BITS or not self._msg_type or not b1 & MASKED:
                raise header_error(b0, b1, self._msg_type != 0, self._inflater is not None)
        elif opcode <= OP_BINARY:
            if b0 & RSV2_RSV3 or self._msg_type or (b0 & RSV1 and self._inflater is None) or not b1 & MASKED:
                raise header_error(b0, b1, self._msg_type != 0, self._inflater is not None)
        else:
            raise header_error(b0, b1, self._msg_type != 0, self._inflater is not None)
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
        if opcode >= OP_CLOSE:
            if length > 125:
                raise WebSocketProtocolError("control frame payload over 125 bytes", 1002)
        else:
            if length > self.max_frame_size:
                raise WebSocketProtocolError("frame too big", 1009)
            # compressed: a continuation's message is (then RSV1 is clear), or
            # this frame starts one (then _msg_compressed was left False)
            if not (self._msg_compressed or b0 & RSV1) and self._msg_size + length > self.max_message_size:
                raise WebSocketProtocolError("message too big", 1009)
        if avail < header_len:
            return False
        end = pos + header_len
        self._mask = bytes(buf[end - 4 : end])
        self._pos = end
        self._fin = bool(b0 & FIN)
        self._opcode = opcode
        self._remaining = length
        if opcode == OP_TEXT or opcode == OP_BINARY:
            # _parts, _msg_size and the decoder's state were left empty by
            # the previous message's end (or it failed the connection).
            self._msg_type = opcode
            self._msg_compressed = bool(b0 & RSV1)
        self._state = _PAYLOAD
        return True

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            self._empty_frame()  # (we send few pings; a flood of pongs is noise)
            return Pong(payload)
        code, reason = parse_close_payload(payload)
        self.close_received = True
        self._state = _CLOSED
        self._buf = b""
        self._pos = 0
        return CloseReceived(code, reason)
