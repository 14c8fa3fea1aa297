"""HTTP/2 header fields: the request's validation (RFC 9113 8.2, 8.3) and the
grammar a response's fields are checked against."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import LocalProtocolError

_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_LOWER_TOKEN = _TCHAR
_ANY_TOKEN = _TCHAR + b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 9113 8.2.1: no NUL, CR or LF anywhere; no leading or trailing SP/HTAB
_BAD_REQUEST_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_BAD_RESPONSE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_PATH_BYTES = bytes(range(0x21, 0x7F))
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))
# dropped from responses: HTTP/2 has its own framing (the HTTP/1.1 path ignores transfer-encoding too)
_RESPONSE_DROP = _CONNECTION_SPECIFIC | {b"te"}
_FORWARDING = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))


class _Malformed(Exception):
    pass


class RequestFields:
    """What a valid request header block says (cached per block by the core)."""

    __slots__ = (
        "method", "scheme", "authority", "target", "query", "protocol", "regular", "expected", "host", "forwarded",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        scheme: bytes,
        authority: bytes | None,
        target: bytes,
        query: bytes,
        protocol: bytes | None,
        regular: tuple[tuple[bytes, bytes], ...],
        expected: int | None,
        host: bytes,
        forwarded: bool = False,
    ) -> None:
        self.method = method
        self.scheme = scheme  # b"" for a plain CONNECT
        self.authority = authority  # :authority as sent
        self.target = target  # :path before "?" (b"" for a plain CONNECT)
        self.query = query
        self.protocol = protocol  # :protocol (extended CONNECT, RFC 8441)
        self.regular = regular  # host first, cookies joined
        self.expected = expected  # content-length
        self.host = host  # :authority or host (b"" when neither): the authority of pushed requests
        self.forwarded = forwarded  # a proxy header field is present (see RequestReceived)


def validate_request(headers: list[tuple[bytes, bytes]], extended_connect: bool) -> RequestFields:
    """The request of a decoded header block, or :class:`_Malformed` (a stream
    error). ``extended_connect``: we advertised SETTINGS_ENABLE_CONNECT_PROTOCOL."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    host: bytes | None = None
    cookies: list[bytes] = []
    content_length: bytes | None = None
    forwarded = False
    for name, value in headers:
        if name[:1] == b":":
            if regular or host is not None or cookies:
                raise _Malformed("pseudo-header field after a regular field")
            _add_pseudo(pseudo, name, value)
            continue
        if not name or name.translate(None, _LOWER_TOKEN):
            raise _Malformed(f"invalid field name {name!r:.40}")
        if _BAD_REQUEST_VALUE.search(value) is not None:
            raise _Malformed(f"invalid value of field {name!r:.40}")
        if name in _CONNECTION_SPECIFIC:
            raise _Malformed(f"connection-specific field {name.decode()}")
        if name == b"te":
            if value != b"trailers":
                raise _Malformed("te other than 'trailers'")
        elif name == b"host":
            if host is not None:
                raise _Malformed("duplicate host")
            host = value
            continue
        elif name == b"cookie":
            cookies.append(value)
            continue
        elif name == b"content-length":
            if content_length is not None or not value.isdigit() or len(value) > 18:
                raise _Malformed("invalid content-length")
            content_length = value
        elif name in _FORWARDING:
            forwarded = True
        regular.append((name, value))
    method = pseudo.get(b":method")
    authority = pseudo.get(b":authority")
    protocol = pseudo.get(b":protocol")
    scheme, path = _check_target(method, pseudo.get(b":scheme"), pseudo.get(b":path"), authority, protocol)
    assert method is not None  # (checked by _check_target)
    if protocol is not None and not extended_connect:
        raise _Malformed(":protocol without extended CONNECT")
    if authority is not None:
        if not authority:
            raise _Malformed("empty :authority")
        if host is not None and host != authority:
            raise _Malformed("host differs from :authority")
        host = authority
    if cookies:
        regular.append((b"cookie", b"; ".join(cookies)))
    if host is not None:
        regular.insert(0, (b"host", host))
    target, _, query = path.partition(b"?")
    expected = int(content_length) if content_length is not None else None
    return RequestFields(
        method, scheme, authority, target, query, protocol, tuple(regular), expected, host or b"", forwarded
    )


def _add_pseudo(pseudo: dict[bytes, bytes], name: bytes, value: bytes) -> None:
    if name not in _REQUEST_PSEUDO:
        raise _Malformed(f"unknown pseudo-header field {name!r:.40}")
    if name in pseudo:
        raise _Malformed(f"duplicate {name.decode()}")
    if _BAD_REQUEST_VALUE.search(value) is not None:
        raise _Malformed(f"invalid value of {name.decode()}")
    pseudo[name] = value


def _check_target(
    method: bytes | None, scheme: bytes | None, path: bytes | None, authority: bytes | None, protocol: bytes | None
) -> tuple[bytes, bytes]:
    """(scheme, path) of a request, checked against its method (RFC 9113 8.3.1, 8.5)."""
    if method is None:
        raise _Malformed("missing :method")
    if not method or method.translate(None, _ANY_TOKEN):
        raise _Malformed("invalid :method")
    if protocol is not None and method != b"CONNECT":
        raise _Malformed(":protocol without extended CONNECT")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or not authority:
            raise _Malformed("CONNECT needs :authority only")
        return b"", b""
    if scheme is None:
        raise _Malformed("missing :scheme")
    if not path:
        raise _Malformed("missing or empty :path")
    if path.translate(None, _PATH_BYTES):
        raise _Malformed("invalid :path")
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise _Malformed("invalid :path")
    return scheme, path


def response_fields(
    status: int, headers: Iterable[tuple[bytes, bytes]]
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """``:status`` and the app's response fields, checked (RFC 9113 8.2, which
    HTTP/3 shares, RFC 9114 4.2), without the connection-specific ones; and the
    content-length (None: not given). Raises LocalProtocolError."""
    fields = [(b":status", b"%d" % status)]
    length: int | None = None
    try:
        for name, value in headers:
            if not name or name.translate(None, _ANY_TOKEN):
                raise LocalProtocolError(f"invalid header name {name!r:.40}")
            if _BAD_RESPONSE_VALUE.search(value) is not None:
                raise LocalProtocolError(f"invalid characters in the value of header {name!r:.40}")
            name = name.lower()
            if name in _RESPONSE_DROP:
                continue
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise LocalProtocolError("invalid or duplicate content-length")
                length = int(value)
            fields.append((bytes(name), bytes(value)))
    except (TypeError, ValueError, AttributeError):
        raise LocalProtocolError("headers must be an iterable of [name, value] pairs of bytes") from None
    return fields, length


def trailer_fields(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's trailer fields, checked (no connection-specific fields and
    no content-length in a trailer section). Raises LocalProtocolError."""
    fields = []
    for name, value in headers:
        if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
            raise LocalProtocolError(f"invalid trailer {name!r:.40}")
        name = name.lower()
        if name in _RESPONSE_DROP or name == b"content-length":
            raise LocalProtocolError(f"{name.decode()} is not allowed in trailers")
        fields.append((bytes(name), bytes(value)))
    return fields


def push_request_fields(
    scheme: bytes, authority: bytes, path: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The header section of a pushed GET of ``path`` (a PUSH_PROMISE's, RFC 9113 8.4
    and RFC 9114 4.6): the app's ``headers`` checked as response fields are, without
    the connection-specific ones and host. Raises LocalProtocolError."""
    if not path or path[:1] != b"/" or path.translate(None, _PATH_BYTES):
        raise LocalProtocolError(f"invalid push path {path!r:.60}")
    fields = [(b":method", b"GET"), (b":scheme", scheme), (b":path", path)]
    if authority:
        fields.append((b":authority", authority))
    for name, value in headers:
        if not name or name.translate(None, _ANY_TOKEN) or _BAD_RESPONSE_VALUE.search(value) is not None:
            raise LocalProtocolError(f"invalid push header {name!r:.40}")
        name = name.lower()
        if name in _CONNECTION_SPECIFIC or name == b"host":
            continue
        fields.append((bytes(name), bytes(value)))
    return fields
