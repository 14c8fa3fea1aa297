"""permessage-deflate (RFC 7692) for the server side: negotiation and codecs.

:func:`negotiate` picks the first acceptable ``permessage-deflate`` offer from
the client's ``Sec-WebSocket-Extensions`` and returns the response header value
with the agreed :class:`DeflateParams`. :class:`Deflater` and :class:`Inflater`
are the per-connection codecs that :class:`~heron.protocol.websocket.WebSocketConnection`
drives. Nothing here does I/O.

Negotiation rules (RFC 7692 section 7.1):

* An offer with an unknown parameter, a repeated parameter, a value where none
  is allowed, or a window size that is not exactly one of ``8`` ... ``15``
  (no sign, no leading zero) is skipped, and the next offer is tried.
* ``server_no_context_takeover`` / ``client_no_context_takeover`` are agreed
  when the client offers them or when :class:`DeflateSettings` asks for them.
* ``server_max_window_bits`` (our compressor) is the smaller of the client's
  value and ours; it is sent when the client asked or when ours is below 15.
* ``client_max_window_bits`` (the peer's compressor) may only be sent when the
  client offered it (with or without a value); we then send the smaller of its
  value (15 when absent) and ours. When it was not offered the peer may use a
  32 KiB window and we must be able to inflate that.

Window size 8: zlib refuses ``wbits=-8`` for raw deflate streams since 1.2.9
(madler/zlib#171), so our compressor then runs with 9. That still honours a
256-byte window: zlib never emits a match farther back than ``window size - 262``
(``MAX_DIST`` in deflate.c), i.e. 250 bytes for a 512-byte window, so every
back-reference fits in what a window-8 peer keeps. Inflating accepts 8 as is.

Memory per connection (zlib's own figures, zconf.h), with ``w`` the window bits
and ``m`` the memLevel:

* compressor: ``2**(w + 2) + 2**(m + 9)`` bytes, plus about 6 KiB of state;
  zlib's defaults (w=15, m=8) cost 256 KiB, our defaults (w=12, m=5) 32 KiB.
* decompressor: ``2**w`` bytes plus about 7 KiB; 32 KiB at w=15, 4 KiB at w=12.

With context takeover both objects live as long as the connection. With
``*_no_context_takeover`` the matching object is created per message and
dropped right after it, so an idle connection holds no zlib memory for that
direction (at the price of a fresh allocation, and a worse ratio, per message).

Decompression bombs: :meth:`Inflater.decompress` asks zlib for at most
``limit + 1`` bytes (``decompressobj().decompress(data, max_length)``); the
input zlib did not get to stays in ``unconsumed_tail`` and is dropped with the
connection. So a message never inflates more than one byte past the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import WebSocketProtocolError

__all__ = [
    "EXTENSION_NAME",
    "DeflateSettings",
    "DeflateParams",
    "negotiate",
    "Deflater",
    "Inflater",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 7.2.1: each compressed message has this empty stored block's tail
# removed by the sender; the receiver appends it back before inflating.
_TAIL = b"\x00\x00\xff\xff"
_WINDOW_VALUES = {str(bits): bits for bits in range(8, 16)}
_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)


@dataclass(frozen=True, kw_only=True)
class DeflateSettings:
    """What the server is willing to do; the input to :func:`negotiate`.

    The defaults trade a little ratio for memory (see the module docstring):
    a 4 KiB window each way and memLevel 5 cost about 36 KiB per connection
    plus zlib's state, against about 290 KiB at zlib's defaults.
    """

    enabled: bool = True
    #: Reset our compressor after every message (frees it between messages).
    server_no_context_takeover: bool = False
    #: Ask the client to reset its compressor after every message.
    client_no_context_takeover: bool = False
    #: Largest window our compressor uses, 8..15 (8 runs as 9, see above).
    server_max_window_bits: int = 12
    #: Largest window we ask the client to use, 8..15. Only binding when the
    #: client offers ``client_max_window_bits``; otherwise it may use 15.
    client_max_window_bits: int = 12
    compress_level: int = 6
    mem_level: int = 5

    def __post_init__(self) -> None:
        if not 8 <= self.server_max_window_bits <= 15:
            raise ValueError("server_max_window_bits must be between 8 and 15")
        if not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be between 8 and 15")
        if not -1 <= self.compress_level <= 9:
            raise ValueError("compress_level must be between -1 and 9")
        if not 1 <= self.mem_level <= 9:
            raise ValueError("mem_level must be between 1 and 9")


@dataclass(frozen=True, kw_only=True)
class DeflateParams:
    """The agreed parameters of one connection (plus our local zlib settings)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    compress_level: int = 6
    mem_level: int = 8


def _parse_offer(params: Sequence[tuple[str, str | None]]) -> dict[str, str | None] | None:
    """The offer's parameters by name, or None when it must be skipped."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        name = name.lower()
        if name not in _PARAMS or name in seen:
            return None
        if name.endswith("no_context_takeover"):
            if value is not None:
                return None
        elif value is None:
            if name == "server_max_window_bits":
                return None
        elif value not in _WINDOW_VALUES:
            return None
        seen[name] = value
    return seen


def negotiate(
    offers: Iterable[tuple[str, Sequence[tuple[str, str | None]]]],
    settings: DeflateSettings | None = None,
) -> tuple[bytes, DeflateParams] | None:
    """Accept the first acceptable permessage-deflate offer.

    ``offers`` are ``(extension name, [(param, value or None), ...])`` in the
    client's order, as parsed from ``Sec-WebSocket-Extensions`` (other
    extensions are ignored). Returns the ``Sec-WebSocket-Extensions`` response
    value and the agreed parameters, or None when nothing was accepted.
    """
    if settings is None:
        settings = DeflateSettings()
    if not settings.enabled:
        return None
    for name, raw_params in offers:
        if name.lower() != EXTENSION_NAME:
            continue
        offer = _parse_offer(raw_params)
        if offer is None:
            continue
        response = [EXTENSION_NAME]
        server_nct = "server_no_context_takeover" in offer or settings.server_no_context_takeover
        if server_nct:
            response.append("server_no_context_takeover")
        client_nct = "client_no_context_takeover" in offer or settings.client_no_context_takeover
        if client_nct:
            response.append("client_no_context_takeover")
        server_bits = settings.server_max_window_bits
        offered = offer.get("server_max_window_bits")
        if offered is not None:
            server_bits = min(server_bits, _WINDOW_VALUES[offered])
        if offered is not None or server_bits < 15:
            response.append(f"server_max_window_bits={server_bits}")
        client_bits = 15
        if "client_max_window_bits" in offer:
            offered = offer["client_max_window_bits"]
            client_bits = min(settings.client_max_window_bits, 15 if offered is None else _WINDOW_VALUES[offered])
            response.append(f"client_max_window_bits={client_bits}")
        params = DeflateParams(
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
            compress_level=settings.compress_level,
            mem_level=settings.mem_level,
        )
        return "; ".join(response).encode("ascii"), params
    return None


class Deflater:
    """Compresses outgoing messages (server to client)."""

    __slots__ = ("_wbits", "_no_context_takeover", "_level", "_mem_level", "_obj")

    def __init__(self, params: DeflateParams) -> None:
        # zlib cannot compress with a raw window of 8; 9 is safe (module docstring).
        self._wbits = -max(params.server_max_window_bits, 9)
        self._no_context_takeover = params.server_no_context_takeover
        self._level = params.compress_level
        self._mem_level = params.mem_level
        self._obj: zlib._Compress | None = None

    def compress(self, data: bytes) -> bytes:
        """One whole message's payload, tail removed (RFC 7692 7.2.1)."""
        obj = self._obj
        if obj is None:
            obj = zlib.compressobj(self._level, zlib.DEFLATED, self._wbits, self._mem_level)
            if not self._no_context_takeover:
                self._obj = obj
        # A sync flush always ends on a byte boundary with the empty stored
        # block 00 00 ff ff, which the RFC tells us to drop. The flush itself
        # writes those 4 bytes, so they are cut from its (short) output and the
        # bulk is copied once.
        out = obj.compress(data)
        tail = obj.flush(zlib.Z_SYNC_FLUSH)
        return out + tail[:-4] if out else tail[:-4]


class Inflater:
    """Decompresses incoming messages (client to server), bounded in size."""

    __slots__ = ("_wbits", "_no_context_takeover", "_obj")

    def __init__(self, params: DeflateParams) -> None:
        self._wbits = -params.client_max_window_bits
        self._no_context_takeover = params.client_no_context_takeover
        self._obj: zlib._Decompress | None = None

    def decompress(self, data: bytes, limit: int) -> bytes:
        """Inflate a piece of a message; at most ``limit`` bytes may come out.

        Raises :class:`WebSocketProtocolError` with 1009 if the output would
        pass ``limit`` (without inflating more than ``limit + 1`` bytes), and
        with 1002 if the data is not a valid deflate stream.
        """
        obj = self._obj
        if obj is None:
            obj = self._obj = zlib.decompressobj(self._wbits)
        if obj.eof:
            # After a final block, RFC 7692 7.2.1 step 2 has the sender append
            # an empty stored block anyway (RFC 7692 7.2.3.3 shows the leftover
            # 0x00); whatever follows can't be inflated, so it is dropped.
            return b""
        try:
            out = obj.decompress(data, limit + 1)
        except zlib.error:
            raise WebSocketProtocolError("invalid compressed data", 1002) from None
        # zlib stops at limit + 1 bytes and leaves the rest in unconsumed_tail,
        # so more than ``limit`` bytes out (or input left over) means too big.
        if len(out) > limit or obj.unconsumed_tail:
            raise WebSocketProtocolError("message too big", 1009)
        return out

    def decompress_up_to(self, data: bytes, max_out: int) -> tuple[bytes, bytes, bool]:
        """Inflate at most ``max_out`` (>= 1) bytes of a piece of a message:
        ``(out, rest, more)``. ``rest`` is the input zlib did not take; ``more``
        is true when inflation stopped for lack of room (some of ``rest``, or
        output zlib still holds, is to come: call again with ``rest``)."""
        obj = self._obj
        if obj is None:
            obj = self._obj = zlib.decompressobj(self._wbits)
        if obj.eof:
            return b"", b"", False
        try:
            out = obj.decompress(data, max_out)
        except zlib.error:
            raise WebSocketProtocolError("invalid compressed data", 1002) from None
        rest = obj.unconsumed_tail
        return out, rest, bool(rest) or len(out) >= max_out

    def finish(self, limit: int) -> bytes:
        """End the current message: inflate the implied tail, reset if needed."""
        obj = self._obj
        if obj is None:  # a compressed message with an empty payload
            obj = self._obj = zlib.decompressobj(self._wbits)
        # A sender may end a message with a final (BFINAL) block instead of a
        # sync flush; then there is no tail to add, and the next message must
        # start a new stream, so the context can't be taken over.
        out = b"" if obj.eof else self.decompress(_TAIL, limit)
        if self._no_context_takeover or obj.eof:
            self._obj = None
        return out
