"""HTTP/2 frames (RFC 9113 4, 6): types, flags, error codes, the frame head, and a
header block collected across HEADERS and CONTINUATION frames.

The ``_``-prefixed ints are for the hot paths of the core (plain ints
compare and pack faster than enum members); :class:`ErrorCodes` names them.
"""

from __future__ import annotations

import enum
import struct

#: The client connection preface (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ErrorCodes(enum.IntEnum):
    """HTTP/2 error codes (RFC 9113 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


# plain ints on the hot paths
_NO_ERROR = 0x0
_PROTOCOL_ERROR = 0x1
_INTERNAL_ERROR = 0x2
_FLOW_CONTROL_ERROR = 0x3
_STREAM_CLOSED = 0x5
_FRAME_SIZE_ERROR = 0x6
_REFUSED_STREAM = 0x7
_COMPRESSION_ERROR = 0x9
_ENHANCE_YOUR_CALM = 0xB

# frame types
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
# flags
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

_MAX_WINDOW = 2**31 - 1
#: SETTINGS_MAX_FRAME_SIZE we accept (the protocol default; never raised)
_MAX_FRAME = 16384
#: frames one header block may span (HEADERS + CONTINUATIONs)
_MAX_BLOCK_FRAMES = 64
#: streams we reset, remembered to tell "reset" from "completed" (RFC 9113 5.1)
_RESET_MEMORY = 1024
#: per-connection caches (a repeated request's header block, a repeated response
#: head) keep only entries up to these sizes: at most ~100 KiB per connection
_MAX_CACHED_REQUEST = 512
_MAX_CACHED_HEAD = 1024

_FRAME = struct.Struct(">BHBBL")  # length as 8 + 16 bits, type, flags, stream id
_PACK_FRAME = _FRAME.pack
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_U32X2 = struct.Struct(">LL")


def _frame_head(kind: int, flags: int, sid: int, length: int) -> bytes:
    return _PACK_FRAME(length >> 16, length & 0xFFFF, kind, flags, sid)


_SETTINGS_ACK = _frame_head(_SETTINGS, _ACK, 0, 0)
_PING_ACK = _frame_head(_PING, _ACK, 0, 8)


class _HeaderBlock:
    """A header block whose HEADERS frame came without END_HEADERS: its fragments
    are collected until the CONTINUATION frame that ends it."""

    __slots__ = ("sid", "flags", "depends_on", "fragments", "size", "frames")

    def __init__(self, sid: int, flags: int, depends_on: int, first: bytes) -> None:
        self.sid = sid
        self.flags = flags  # of the HEADERS frame (END_STREAM)
        self.depends_on = depends_on  # its priority's stream dependency (-1: none)
        self.fragments = [first]
        self.size = len(first)
        self.frames = 1
