"""Byte and connection counting for ``--metrics-bind``, as wrappers, used only with metrics on.

:class:`MeteredProtocol` stands between the event loop and a connection's
protocol: it counts the connection and the bytes read, and hands the protocol
a :class:`CountingTransport` that counts the bytes written. The protocol
itself knows nothing of metrics, and with metrics off nothing here is created.
After an upgrade (WebSocket, h2c) the transport talks to the new protocol
directly: WebSocket sessions report their input when they close, and writes
still go through the counting transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

__all__ = ["ByteCounter", "CountingTransport", "MeteredProtocol"]


class ByteCounter(Protocol):
    """What the wrappers count into (:class:`heron.metrics.Metrics`)."""

    connections_total: int
    bytes_in: int
    bytes_out: int


class CountingTransport:
    """Delegates to a transport, counting what is written."""

    __slots__ = ("_counter", "_transport")

    def __init__(self, transport: Any, counter: ByteCounter) -> None:
        self._transport = transport
        self._counter = counter

    def write(self, data: Any) -> None:
        self._counter.bytes_out += len(data)
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class MeteredProtocol(asyncio.Protocol):
    """Counts a connection and the bytes read, then passes everything to ``inner``."""

    __slots__ = ("_counter", "inner")

    def __init__(self, inner: asyncio.Protocol, counter: ByteCounter) -> None:
        self.inner = inner
        self._counter = counter

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._counter.connections_total += 1
        self.inner.connection_made(CountingTransport(transport, self._counter))  # type: ignore[arg-type]  # (duck-typed)

    def data_received(self, data: bytes) -> None:
        self._counter.bytes_in += len(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
