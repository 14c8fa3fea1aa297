"""WebSocket payload masking (RFC 6455 5.3): XOR with a repeated 4-byte key.

One function, two implementations: the C one in ``heron._speedups`` (built
when a compiler is available at install time) and the pure-Python one below.
``HERON_NO_EXTENSIONS=1`` forces the pure one. Tests run both and compare
them on random input.
"""

from __future__ import annotations

import os

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


apply_mask = apply_mask_python
ACCELERATED = False
if not os.environ.get("HERON_NO_EXTENSIONS"):
    try:
        from .._speedups import apply_mask  # type: ignore[no-redef]  # noqa: F811

        ACCELERATED = True
    except ImportError:  # pragma: no cover - depends on the build
        pass

__all__ = ["apply_mask", "apply_mask_python", "ACCELERATED"]
