"""WebSocket framing, sans-IO (RFC 6455 5-7, RFC 7692 permessage-deflate).

:class:`WebSocketConnection` is the server side of an open connection: bytes
go in with :meth:`~WebSocketConnection.receive_data`, whole messages and
control frames come out of :meth:`~WebSocketConnection.next_event`, and the
``send_*`` methods return the bytes to write. The opening handshake that comes
before it is :mod:`heron.protocol.ws_handshake`.

The package, by what each part is:

* :mod:`.connection`: :class:`WebSocketConnection`, the receiving state
  machine (frames in, events out) and the limits it enforces.
* :mod:`.assembler`: the message being received (pieces, UTF-8 check,
  inflation within :attr:`~WebSocketConnection.room`).
* :mod:`.sending`: the ``send_*`` side (messages and control frames out).
* :mod:`.frames`: the frame format (opcodes, header bits, building a header,
  the Close payload, why a header was refused).
* :mod:`.events`: what ``next_event()`` returns.

Everything a caller uses is importable from here.

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
  :mod:`heron.protocol.permessage_deflate`).
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

from ..errors import WebSocketProtocolError
from .connection import DEFAULT_MAX_MESSAGE_SIZE, EMPTY_WINDOW, FRAMES_PER_CALL, WebSocketConnection
from .events import NEED_DATA, NO_ROOM, YIELD, BytesMessage, CloseReceived, Event, Ping, Pong, TextMessage

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
    "FRAMES_PER_CALL",
    "EMPTY_WINDOW",
]
