"""Every field of a :class:`~.connection.WebSocketConnection`, declared once.

The connection is put together from parts that each own some of its methods
(:class:`~.assembler.MessageAssembler`, :class:`~.sending.Sender`) but share
its state. The slots live here, in the one base they all have, so that the
instance stays a single slotted layout (no ``__dict__``, the same attribute
access as one flat class) and each part is type-checked against the same
declarations. :meth:`WebSocketConnection.__init__
<.connection.WebSocketConnection.__init__>` sets the initial values.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..errors import WebSocketProtocolError
    from ..permessage_deflate import Deflater, Inflater


class ConnectionState:
    """The fields; no behaviour."""

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

    # limits: a message after decompression, one frame's payload as sent
    max_message_size: int
    max_frame_size: int
    #: We sent a Close frame: nothing more may be sent.
    close_sent: bool
    #: The peer's Close frame arrived: nothing more will be read.
    close_received: bool

    # --- input
    # unparsed input from _pos on: the last bytes received as they came,
    # or a bytearray when a frame header or payload spans reads
    _buf: bytes | bytearray
    _pos: int
    # the masked pieces of a binary frame's payload collected as they come, or None
    _raw: list[bytes | memoryview] | None
    # at a frame header, in a frame's payload, or closed (connection._HEADER...)
    _state: int
    _eof: bool
    # the error that failed the connection, raised again by every later call
    _error: WebSocketProtocolError | None

    # --- the current frame
    _fin: bool
    _opcode: int
    _mask: bytes  # rotated as a partial payload is unmasked
    _remaining: int  # payload bytes not taken yet

    # --- the current message: _msg_type is 0 when none is in progress
    _msg_type: int
    _msg_compressed: bool
    _msg_size: int
    _parts: list[bytes] | list[str]
    # text payload not yet decoded (checked once per batch of input, not per frame)
    _utf8: bytearray
    _decoder: codecs.IncrementalDecoder | None

    # --- permessage-deflate, when agreed
    _deflater: Deflater | None
    _inflater: Inflater | None
    #: message payload bytes the caller can still take (the message in
    #: progress included); a compressed message is inflated only this far
    room: int
    # compressed input of the current frame not inflated yet for lack of room, or None
    _pending_inflate: bytes | None
    _end_pending: bool  # ... and the message ends with it

    # --- frames that carry nothing
    #: frames that carry nothing allowed within EMPTY_WINDOW seconds (0: any number)
    max_empty_frames: int
    _clock: Callable[[], float]
    _empty: int  # counted since _empty_start
    _empty_start: float
