"""The message being received: its pieces kept and counted, its text checked
as UTF-8, its compressed payload inflated (RFC 7692) within the caller's room.

:class:`MessageAssembler` is a part of :class:`~.connection.WebSocketConnection`
(a base class; the fields are :class:`~.state.ConnectionState`'s), kept apart
because it is what a message is made of, while the connection decides what
the bytes are.
"""

from __future__ import annotations

import codecs

from ..errors import WebSocketProtocolError
from .events import NO_ROOM, BytesMessage, Event, TextMessage
from .frames import OP_TEXT
from .state import ConnectionState

#: A binary fragment smaller than this is copied into the message's buffer
#: rather than kept as an object of its own (see heron.asgi.budget).
COALESCE_BELOW = 4096

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class MessageAssembler(ConnectionState):
    """Collects the current message (``_msg_type`` is 0 when none is in progress)."""

    __slots__ = ()

    def _append(self, data: bytes) -> None:
        """Count, check and keep a piece of the current message."""
        if not data:
            return
        size = self._msg_size + len(data)
        if size > self.max_message_size:
            raise WebSocketProtocolError("message too big", 1009)
        self._msg_size = size
        if self._msg_type == OP_TEXT:
            # Decoded by _flush_text: once per batch of input, so a message
            # in many small fragments costs one decoder call per read, not
            # one per frame.
            self._utf8 += data
        else:
            parts: list[bytes | bytearray] = self._parts  # type: ignore[assignment]  # (binary: bytes)
            tail = parts[-1] if parts else None
            if len(data) >= COALESCE_BELOW:
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
        """The finished message as an event; the message state is left empty for the next one."""
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
        if msg_type == OP_TEXT:
            try:
                if self._decoder is not None:
                    self._decoder.decode(b"", True)  # also leaves it reset
            except UnicodeDecodeError:
                raise WebSocketProtocolError("incomplete UTF-8 sequence at the end of a text message", 1007) from None
            return TextMessage("".join(parts))  # type: ignore[arg-type]
        if len(parts) == 1 and type(parts[0]) is bytes:
            return BytesMessage(parts[0])
        return BytesMessage(b"".join(parts))  # type: ignore[arg-type]  # (binary: bytes-like parts)

    # --- permessage-deflate (RFC 7692) ------------------------------------------

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

    def _resume_inflate(self) -> Event | None:
        """Go on with the compressed input that waited for room: :data:`NO_ROOM`
        again, the message if that input ended it, or None (parse on)."""
        pending = self._pending_inflate
        assert pending is not None
        self._pending_inflate = None
        if not self._inflate(pending):
            return NO_ROOM
        if self._end_pending:
            self._end_pending = False
            return self._end_message()
        return None
