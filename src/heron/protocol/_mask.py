"""WebSocket payload masking (RFC 6455 5.3): XOR with a repeated 4-byte key.

Two functions, each with two implementations: the C ones in ``heron._speedups``
(built when a compiler is available at install time) and the pure-Python ones
below. ``HERON_NO_EXTENSIONS=1`` forces the pure ones. Tests run both and
compare them on random input.

* ``apply_mask(data, mask)``: one buffer.
* ``apply_mask_join(pieces, mask)``: a list of buffers that together form one
  masked payload, joined and unmasked in a single pass (the C version writes
  straight into the result: no intermediate join).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# XOR tables for bytes.translate(): _TABLES[k][b] == b ^ k
_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Pure Python: small payloads XOR as one integer; large ones run four
    strided bytes.translate() passes (one per mask byte), all in C."""
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < 256:
        key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")
    out = bytearray(data)
    for k in range(4):
        out[k::4] = data[k::4].translate(_TABLES[mask[k]])
    return bytes(out)


def apply_mask_join_python(pieces: Sequence[bytes | bytearray | memoryview], mask: bytes) -> bytes:
    """Pure Python: join, then :func:`apply_mask_python`."""
    return apply_mask_python(b"".join(pieces), mask)


def _join_then_apply_mask(pieces: Sequence[bytes | bytearray | memoryview], mask: bytes) -> bytes:
    # without the C join (pure build, or a build older than it): join, then
    # whichever apply_mask was loaded
    return apply_mask(b"".join(pieces), mask)


apply_mask = apply_mask_python
apply_mask_join = _join_then_apply_mask
ACCELERATED = False
if not os.environ.get("HERON_NO_EXTENSIONS"):
    try:
        from .._speedups import apply_mask  # type: ignore[no-redef, import-not-found]

        ACCELERATED = True
        from .._speedups import apply_mask_join  # type: ignore[no-redef]
    except ImportError:  # pragma: no cover - depends on the build (an older build lacks the join)
        pass

__all__ = ["apply_mask", "apply_mask_python", "apply_mask_join", "apply_mask_join_python", "ACCELERATED"]
