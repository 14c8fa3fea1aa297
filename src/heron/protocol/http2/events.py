"""What :class:`~heron.protocol.http2.connection.H2Core` reports: heron's own HTTP/2 events."""

from __future__ import annotations


class _Event:  # noqa: PLW1641  # (events compare by value; none is hashed)
    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)


class RequestReceived(_Event):
    """A valid request head. ``headers`` are the regular fields (``host`` first
    when ``:authority`` was given), ``path`` and ``query`` come from ``:path``
    (``b"*"`` for ``OPTIONS *``; both empty for a plain CONNECT)."""

    __slots__ = (
        "stream_id", "method", "scheme", "authority", "path", "query", "protocol", "headers", "end_stream",
        "content_length", "forwarded",
    )  # fmt: skip

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        scheme: bytes,
        authority: bytes | None,
        path: bytes,
        query: bytes,
        protocol: bytes | None,
        headers: list[tuple[bytes, bytes]],
        end_stream: bool,
        content_length: int | None = None,
        forwarded: bool = False,
    ) -> None:
        self.stream_id = stream_id
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.query = query
        self.protocol = protocol
        self.headers = headers
        self.end_stream = end_stream
        #: the declared ``content-length`` (None: not declared)
        self.content_length = content_length
        #: X-Forwarded-For, X-Forwarded-Proto or Forwarded is present (so a server
        #: applying proxy headers skips the search on the many requests without them)
        self.forwarded = forwarded


class DataReceived(_Event):
    """Request body bytes. Call :meth:`H2Core.acknowledge` with ``len(data)``
    once they are consumed (padding is acknowledged already)."""

    __slots__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.data = data


class StreamEnded(_Event):
    """The request on this stream is complete (END_STREAM, possibly on trailers)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset(_Event):
    """The stream is gone: reset by the peer (``remote``) or by us for a stream
    error the peer caused (a malformed request, a refused stream...)."""

    __slots__ = ("stream_id", "error_code", "remote")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class StreamWritable(_Event):
    """All data queued on this stream has been handed to the connection."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class ConnectionEnded(_Event):
    """The connection is over: the peer sent GOAWAY with an error, or we found
    a connection error (our GOAWAY is queued). Flush, then close."""

    __slots__ = ("error_code", "remote", "reason")

    def __init__(self, error_code: int, remote: bool, reason: str) -> None:
        self.error_code = error_code
        self.remote = remote
        self.reason = reason
