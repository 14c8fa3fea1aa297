"""What :class:`~heron.protocol.http1.connection.H1Connection` reports: requests, body data, their end."""

from __future__ import annotations

from .._sentinel import Sentinel as _Sentinel


class Request:
    """A request head.

    ``headers`` keeps the order and duplicates of the wire, with names
    lowercased. When ``has_body`` is false the request is already complete:
    no :class:`Data` or :class:`EndOfMessage` follows it.
    """

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "http_version",
        "headers",
        "keep_alive",
        "expect_continue",
        "has_body",
        "upgrade",
        "te_trailers",
        "forwarded",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        path: bytes,
        query: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_continue: bool,
        has_body: bool,
        upgrade: bytes | None,
        te_trailers: bool = False,
        forwarded: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.has_body = has_body
        self.upgrade = upgrade
        #: the client accepts trailers (``TE: trailers``)
        self.te_trailers = te_trailers
        #: X-Forwarded-For or X-Forwarded-Proto is present (so a server applying
        #: proxy headers can skip the search on the many requests without them)
        self.forwarded = forwarded

    def __repr__(self) -> str:
        return f"<Request {self.method!r} {self.target!r} HTTP/{self.http_version}>"


class Data:
    """A piece of the request body (already de-chunked)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage:
    """The request body is complete (trailers, if any, were checked and dropped)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<EndOfMessage>"


class ConnectionClosed:
    """The peer closed its side between requests."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<ConnectionClosed>"


#: More bytes are needed before another event can be produced.
NEED_DATA = _Sentinel("NEED_DATA")
#: The request is complete; nothing more is parsed until the response is done
#: and :meth:`H1Connection.start_next_cycle` is called.
PAUSED = _Sentinel("PAUSED")

_END_OF_MESSAGE = EndOfMessage()
_CONNECTION_CLOSED = ConnectionClosed()

Event = Request | Data | EndOfMessage | ConnectionClosed | _Sentinel
