"""Caches of values already validated, bounded in bytes.

Real clients repeat their request lines, header lines and whole header
blocks, and apps repeat their response headers, so the parsers remember what
a value they have checked once says. Whatever a client sends, a cache may not
grow past a small number of bytes: an entry bigger than ``max_entry`` is never
kept, and once the entries' estimated cost would pass ``max_bytes`` the cache
starts over (empty). A flood of unique values then only costs cache misses.

The cost of an entry is estimated by the caller (the key's bytes, the bytes
of the value it stores, and a per-object overhead); the estimates err on the
high side, so the real footprint stays below ``max_bytes``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["BoundedCache", "ENTRY_OVERHEAD"]

#: What a cache entry costs beyond the bytes it holds: the dict slot, the key's
#: and value's object headers, a tuple or two.
ENTRY_OVERHEAD = 160


class BoundedCache(dict[K, V], Generic[K, V]):
    """A dict that :meth:`put` keeps under ``max_bytes`` (reads are plain dict reads)."""

    __slots__ = ("max_bytes", "max_entry", "used")

    def __init__(self, max_bytes: int, max_entry: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        #: the largest ``size`` an entry may have to be kept
        self.max_entry = max_entry
        #: the estimated cost of the entries held
        self.used = 0

    def put(self, key: K, value: V, size: int) -> None:
        """Remember ``value`` for ``key``; ``size`` is the bytes the entry holds."""
        if size > self.max_entry:
            return
        cost = size + ENTRY_OVERHEAD
        if self.used + cost > self.max_bytes:
            self.clear()
        self[key] = value
        self.used += cost

    def clear(self) -> None:
        super().clear()
        self.used = 0
