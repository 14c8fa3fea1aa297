"""The HTTP/1.1 field grammar (RFC 9110 5, RFC 9112), shared by the reading and
the writing half, and the caches of values it already validated."""

from __future__ import annotations

import re

from .._cache import BoundedCache

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# field-value: visible chars, obs-text, SP and HTAB; never CR, LF, NUL or other CTLs.
_FIELD_LINE = rb"[" + _TCHAR + rb"]+:[\t\x20-\x7e\x80-\xff]*"
_HEADER_BLOCK = re.compile(_FIELD_LINE + rb"(?:\r\n" + _FIELD_LINE + rb")*")
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# byte sets for bytes.translate(None, allowed): what is left is not allowed
_TCHAR_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHAR_BYTES = bytes(range(0x21, 0x7F))
_NOT_FIELD_BYTES = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"  # CTLs but HTAB; CR, LF

# Caches of values already validated (most requests repeat their request line,
# Host and other header lines, most responses their header lines), bounded in
# bytes (see heron.protocol._cache): about 1 MiB per process in all, whatever
# clients send. An entry holds the key and what it says (about twice its bytes).
_VALID_HOSTS: BoundedCache[bytes, bool] = BoundedCache(16 * 1024, 256)
_VALID_LINES: BoundedCache[tuple[bytes, bytes], tuple[bytes, bytes]] = BoundedCache(96 * 1024, 2048)
_REQUEST_LINES: BoundedCache[bytes, tuple[bytes, bytes, bool, bytes, bytes]] = BoundedCache(128 * 1024, 2048)
_FIELD_LINES: BoundedCache[bytes, tuple[bytes, bytes]] = BoundedCache(256 * 1024, 2048)
# What a block of request field lines says (H1Connection._scan_fields): field
# count, headers, Host count, Content-Length, Transfer-Encoding codings,
# Connection: close, Connection: keep-alive, Expect: 100-continue, Upgrade
# (only with Connection: upgrade), TE: trailers, X-Forwarded-For/-Proto present.
_Fields = tuple[
    int, tuple[tuple[bytes, bytes], ...], int, bytes | None, tuple[bytes, ...] | None,
    bool, bool, bool, bytes | None, bool, bool,
]  # fmt: skip
_FIELD_BLOCKS: BoundedCache[bytes, _Fields] = BoundedCache(384 * 1024, 8192)
# What an app's response header list says (_describe_response_fields), by the list.
_RESPONSE_FIELDS: BoundedCache[tuple[tuple[bytes, bytes], ...], tuple[bytes, int, bytes, bool, bool, bool]] = (
    BoundedCache(160 * 1024, 8192)
)


def _parse_field(field: bytes) -> tuple[bytes, bytes] | None:
    """Validate and split one request field line (None if invalid); cache it."""
    if len(field.translate(None, _NOT_FIELD_BYTES)) != len(field):
        return None  # a control character, or a bare CR or LF
    name, colon, value = field.partition(b":")
    if not colon or not name or name.translate(None, _TCHAR_BYTES):
        return None  # no colon, empty name, or a name that is not a token
    pair = (name.lower(), value.strip(b" \t"))
    _FIELD_LINES.put(field, pair, 2 * len(field))
    return pair


_REG_NAME = rb"[A-Za-z0-9\-._~!$&'()*+,;=%]"
_IP_LITERAL = rb"\[[0-9A-Fa-f:.]+\]"
_HOST = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb"*)(?::[0-9]*)?")
# authority of an http(s) URI: the host may not be empty (RFC 9110 4.2.1) and
# userinfo is treated as an error (RFC 9110 4.2.4).
_ABSOLUTE_FORM = re.compile(
    rb"([A-Za-z][A-Za-z0-9+\-.]*)://((?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb"+)(?::[0-9]*)?)([/?][^#]*)?"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
_CHUNK_EXT = rb"(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+|" + _QUOTED + rb"))?)*"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(" + _CHUNK_EXT + rb")")
_MAX_CHUNK_SIZE_DIGITS = 16
#: byte -> its value as a hex digit, -1 for other bytes
_HEX_VALUE = [int(chr(b), 16) if chr(b) in "0123456789abcdefABCDEF" else -1 for b in range(256)]
#: Chunks one :class:`Data` event may gather (bounds the work of one ``next_event`` call).
CHUNKS_PER_EVENT = 256
_BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def is_field_name(name: bytes) -> bool:
    """``name`` is a valid field name (RFC 9110 5.1: a token)."""
    return _TOKEN.fullmatch(name) is not None


def is_field_value(value: bytes) -> bool:
    """``value`` may be sent as a field value: no CR, LF, NUL or other control
    character but HTAB (RFC 9110 5.5)."""
    return _BAD_VALUE_CHAR.search(value) is None


_FRAMING_HEADERS = frozenset(
    (b"content-length", b"transfer-encoding", b"host", b"connection", b"expect", b"upgrade", b"te")
)
_FORWARDING_HEADERS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))
_RESPONSE_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection", b"server", b"date"))


def _header_block_error(block: bytes) -> str:
    """Say why a header block failed :data:`_HEADER_BLOCK` (slow path, errors only)."""
    for line in block.split(b"\r\n"):
        if b"\n" in line or b"\r" in line:
            return "bare CR or LF in the request head"
        if line[:1] in (b" ", b"\t"):
            return "obs-fold (line folding) is not allowed"
        name, colon, value = line.partition(b":")
        if not colon:
            return "header line without a colon"
        if not name:
            return "empty header name"
        if name[-1:] in (b" ", b"\t"):
            return "whitespace between header name and colon"
        if _TOKEN.fullmatch(name) is None:
            return "invalid character in header name"
        if _BAD_VALUE_CHAR.search(value):
            return "control character in header value"
    return "malformed header field"
