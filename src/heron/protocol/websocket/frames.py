"""The WebSocket frame format (RFC 6455 5.2, 5.5.1): opcodes and header bits,
building a frame's header, and the cold parts of reading one.

The per-frame parsing itself is :meth:`WebSocketConnection._read_header
<.connection.WebSocketConnection._read_header>`, kept in the connection because
it is the hot path and reads the message state; what it hands over to this
module is only what happens off that path: explaining why a header was refused
(:func:`header_error`) and taking a Close payload apart
(:func:`parse_close_payload`). Unmasking is :mod:`heron.protocol._mask`.
"""

from __future__ import annotations

import struct

from ..errors import LocalProtocolError, WebSocketProtocolError

# opcodes (RFC 6455 5.2): data frames below OP_CLOSE, control frames from it on
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# first-byte bits; RSV1 marks a compressed message (RFC 7692 6)
FIN, RSV1 = 0x80, 0x40
#: the three reserved bits, and the two no extension we agree defines
RSV_BITS = 0x70
RSV2_RSV3 = 0x30
#: second-byte bit: the payload is masked (required from a client)
MASKED = 0x80

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def valid_close_code(code: int) -> bool:
    """Codes that may appear on the wire (RFC 6455 7.4, IANA registry).

    1004 is reserved, 1005/1006/1015 are for APIs only, 1016-2999 are not
    registered, 3000-3999 are registered by libraries, 4000-4999 are private.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def frame_header(opcode: int, n: int, rsv1: int = 0) -> bytes:
    """The header of an unmasked, final frame with an ``n``-byte payload (minimal length form)."""
    b0 = FIN | rsv1 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 0x10000:
        return _PACK_16(b0, 126, n)
    return _PACK_64(b0, 127, n)


def frame(opcode: int, payload: bytes) -> bytes:
    """One whole unmasked, final, uncompressed frame."""
    return frame_header(opcode, len(payload)) + payload


def header_error(b0: int, b1: int, in_message: bool, deflate: bool) -> WebSocketProtocolError:
    """Why a frame header's first two bytes were refused (all close code 1002).

    The connection tests the bytes with one combined condition per kind of
    opcode and calls this only when that condition fails, so the checks here
    run in the order the rules are reported: reserved bits, then the opcode
    against the message in progress, then the mask bit. ``in_message``: a
    fragmented message is in progress; ``deflate``: permessage-deflate was
    agreed.
    """
    opcode = b0 & 0x0F
    if b0 & RSV2_RSV3:
        return WebSocketProtocolError("RSV2 or RSV3 set", 1002)
    if opcode >= OP_CLOSE:
        if opcode > OP_PONG:
            return WebSocketProtocolError(f"unknown opcode {opcode}", 1002)
        if not b0 & FIN:
            return WebSocketProtocolError("fragmented control frame", 1002)
        if b0 & RSV1:
            return WebSocketProtocolError("RSV1 set on a control frame", 1002)
    elif opcode == OP_CONT:
        if not in_message:
            return WebSocketProtocolError("continuation frame without a message to continue", 1002)
        if b0 & RSV1:
            return WebSocketProtocolError("RSV1 set on a continuation frame", 1002)
    elif opcode <= OP_BINARY:
        if in_message:
            return WebSocketProtocolError("new message inside a fragmented message", 1002)
        if b0 & RSV1 and not deflate:
            return WebSocketProtocolError("RSV1 set but permessage-deflate was not agreed", 1002)
    else:
        return WebSocketProtocolError(f"unknown opcode {opcode}", 1002)
    if not b1 & MASKED:
        return WebSocketProtocolError("client frame not masked", 1002)
    raise AssertionError(f"header bytes {b0:#04x} {b1:#04x} are valid")  # pragma: no cover - caller's bug


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """A received Close frame's code and reason (RFC 6455 5.5.1, 7.1.5-6).

    1005 when it has no payload; 1002 for a 1-byte payload or a code that may
    not appear on the wire, 1007 for a reason that is not UTF-8.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise WebSocketProtocolError("close frame payload of 1 byte", 1002)
    code = (payload[0] << 8) | payload[1]
    if not valid_close_code(code):
        raise WebSocketProtocolError(f"invalid close code {code}", 1002)
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketProtocolError("invalid UTF-8 in the close reason", 1007) from None


def close_payload(code: int | None, reason: str) -> bytes:
    """The payload of a Close frame we send; ``code=None``: none (then no reason either).

    The code must be one that may appear on the wire and the reason at most
    123 bytes of UTF-8 (125 with the code), else :class:`LocalProtocolError`.
    """
    if code is None:
        if reason:
            raise LocalProtocolError("a close reason needs a close code")
        return b""
    if not isinstance(code, int) or not valid_close_code(code):
        raise LocalProtocolError(f"close code {code!r} may not be sent")
    try:
        encoded = reason.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError("close reason is not valid Unicode") from None
    if len(encoded) > 123:
        raise LocalProtocolError("close reason over 123 bytes")
    return code.to_bytes(2, "big") + encoded
