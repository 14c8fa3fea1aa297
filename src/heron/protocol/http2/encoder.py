"""HPACK (RFC 7541) for responses: heron's encoder, the cached encoding of a repeated
response head, and the static-table facts the decoder's fast path uses."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from hpack.table import HeaderTable

_STATIC = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(_STATIC)
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, _field in enumerate(_STATIC, 1):
    _STATIC_FULL.setdefault(_field, _i)
    _STATIC_NAME.setdefault(_field[0], _i)
del _i, _field
_INDEXED_STATIC = {i: bytes((0x80 | i,)) for i in range(1, _STATIC_LEN + 1)}
#: bytes that are, alone, a complete indexed field (indexes 1-126)
_ONE_BYTE_INDEXED = bytes(range(0x81, 0xFF))
#: response fields never entered in the dynamic table: their values rarely repeat, and a
#: table that doesn't change lets a repeated response head reuse its encoded block (as nghttp2)
_NO_INDEX = frozenset(
    (b"content-length", b"set-cookie", b"etag", b"location", b"last-modified", b"age", b"content-range", b":path")
)


class _CachedHead:
    """A response head the core has seen before (see ``H2Core.send_headers``): its
    validated fields and declared content-length, and its encoded block while the
    encoder's dynamic table is the one it was encoded with."""

    __slots__ = ("fields", "content_length", "block", "version")

    def __init__(self, fields: list[tuple[bytes, bytes]], content_length: int | None) -> None:
        self.fields = fields
        self.content_length = content_length
        #: the encoded block (None: encode again) and the encoder version it is valid for
        self.block: bytes | None = None
        self.version = -1


def _hpack_int(value: int, bits: int, flags: int) -> bytes:
    limit = (1 << bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(value: bytes) -> bytes:
    n = len(value)
    return (bytes((n,)) if n < 0x7F else _hpack_int(n, 7, 0)) + value


class _Encoder:
    """HPACK encoder for response heads (RFC 7541), without Huffman coding.

    Fields in the static table are indexed; others are sent as literals and
    entered in the dynamic table (except :data:`_NO_INDEX` and big ones), so
    a field that repeats costs one byte from its second use. ``version``
    changes whenever the dynamic table does: an encoded block can be sent
    again as is while the version is the same.
    """

    __slots__ = ("max_size", "size", "entries", "order", "inserted", "version", "resize")

    def __init__(self) -> None:
        self.max_size = 4096
        self.size = 0
        #: field -> its insertion number (the newest entry is index 62)
        self.entries: dict[tuple[bytes, bytes], int] = {}
        self.order: deque[tuple[tuple[bytes, bytes], int]] = deque()  # oldest first
        self.inserted = 0
        self.version = 0
        #: [smallest, final] table size to signal at the start of the next block
        self.resize: list[int] | None = None

    def set_max_size(self, peer_limit: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE (we never use more than 4096)."""
        new = min(peer_limit, 4096)
        if new == self.max_size:
            return
        if self.resize is None:
            self.resize = [new, new]
        else:
            self.resize[0] = min(self.resize[0], new)
            self.resize[1] = new
        self.max_size = new
        self._evict(0)
        self.version += 1

    def _evict(self, room: int) -> None:
        order = self.order
        while order and self.size + room > self.max_size:
            field, size = order.popleft()
            self.size -= size
            del self.entries[field]
            self.version += 1

    def encode(self, fields: Iterable[tuple[bytes, bytes]]) -> bytes:
        out: list[bytes] = []
        if self.resize is not None:
            low, final = self.resize
            self.resize = None
            if low < final:
                out.append(_hpack_int(low, 5, 0x20))
            out.append(_hpack_int(final, 5, 0x20))
        entries = self.entries
        for field in fields:
            index = _STATIC_FULL.get(field)
            if index is not None:
                out.append(_INDEXED_STATIC[index])
                continue
            seq = entries.get(field)
            if seq is not None:
                out.append(_hpack_int(_STATIC_LEN + self.inserted - seq, 7, 0x80))
                continue
            name, value = field
            name_index = _STATIC_NAME.get(name, 0)
            size = 32 + len(name) + len(value)
            if name in _NO_INDEX or 4 * size > 3 * self.max_size:
                out.append(_hpack_int(name_index, 4, 0x00))  # literal without indexing
            else:
                out.append(_hpack_int(name_index, 6, 0x40))  # literal with incremental indexing
                self._evict(size)
                entries[field] = self.inserted
                self.order.append((field, size))
                self.inserted += 1
                self.size += size
                self.version += 1
            if not name_index:
                out.append(_hpack_str(name))
            out.append(_hpack_str(value))
        return b"".join(out)
