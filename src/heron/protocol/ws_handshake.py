"""The WebSocket opening handshake, sans-IO (RFC 6455 4, RFC 7692 offers, RFC 8441 extended CONNECT).

Plain functions over requests the HTTP layer has already parsed:
:func:`validate_handshake` (HTTP/1.1 ``Upgrade: websocket``) and
:func:`validate_extended_connect` (HTTP/2 extended CONNECT) return a
:class:`HandshakeRequest` or raise :class:`HandshakeError` (answered 400, or
426 for a version we don't speak); :func:`accept_key`,
:func:`handshake_response_headers` and :func:`extended_connect_response_headers`
build the answer. What follows the handshake is
:class:`heron.protocol.websocket.WebSocketConnection`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .errors import HandshakeError, LocalProtocolError

__all__ = [
    "HandshakeRequest",
    "ExtensionOffer",
    "HandshakeError",
    "validate_handshake",
    "validate_extended_connect",
    "accept_key",
    "handshake_response_headers",
    "extended_connect_response_headers",
    "parse_extensions",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN_RE = rb"[" + _TCHAR + rb"]+"
_TOKEN = re.compile(_TOKEN_RE)
_QUOTED_RE = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e]|\\[\t\x20-\x7e])*"'
# base64 of exactly 16 bytes, canonical: the last symbol carries 2 data bits.
_KEY = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")
_BAD_VALUE_CHAR = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# list parsing: skip empty elements (RFC 9110 5.6.1), then token, params, end
_LIST_GAP = re.compile(rb"[ \t,]*")
_EXT_NAME = re.compile(_TOKEN_RE)
_EXT_PARAM = re.compile(
    rb"[ \t]*;[ \t]*(" + _TOKEN_RE + rb")(?:[ \t]*=[ \t]*(" + _TOKEN_RE + rb"|" + _QUOTED_RE + rb"))?"
)
_ELEMENT_END = re.compile(rb"[ \t]*(?:,|\Z)")
_UNESCAPE = re.compile(rb"\\(.)")

# Headers the application may not set on the 101 / 200 answer: we own them.
_RESERVED_101 = frozenset(
    (
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"upgrade",
        b"connection",
        b"content-length",
        b"transfer-encoding",
    )
)
_RESERVED_H2 = frozenset(
    (
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"upgrade",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"content-length",
        b"te",
    )
)


class ExtensionOffer(NamedTuple):
    """One element of ``Sec-WebSocket-Extensions``: a name and its parameters.

    Parameter values are None when absent, unquoted when quoted.
    """

    name: str
    params: list[tuple[str, str | None]]


class HandshakeRequest:
    """A valid opening handshake.

    ``key`` is the ``Sec-WebSocket-Key`` (None over HTTP/2, RFC 8441);
    ``subprotocols`` and ``extensions`` keep the client's order.
    """

    __slots__ = ("key", "subprotocols", "extensions")

    def __init__(self, key: bytes | None, subprotocols: list[str], extensions: list[ExtensionOffer]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.extensions = extensions

    def __repr__(self) -> str:
        return f"<HandshakeRequest subprotocols={self.subprotocols!r} extensions={self.extensions!r}>"


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def parse_extensions(values: Iterable[bytes]) -> list[ExtensionOffer]:
    """Parse ``Sec-WebSocket-Extensions`` field values (RFC 6455 9.1).

    Raises :class:`HandshakeError` (400) if a value is not well-formed.
    """
    offers: list[ExtensionOffer] = []
    for value in values:
        pos, end = 0, len(value)
        while True:
            pos = _LIST_GAP.match(value, pos).end()  # type: ignore[union-attr]
            if pos == end:
                break
            match = _EXT_NAME.match(value, pos)
            if match is None:
                raise HandshakeError("malformed Sec-WebSocket-Extensions")
            name = match.group().decode("ascii")
            pos = match.end()
            params: list[tuple[str, str | None]] = []
            while (match := _EXT_PARAM.match(value, pos)) is not None:
                raw = match.group(2)
                if raw is not None and raw[:1] == b'"':
                    raw = _UNESCAPE.sub(rb"\1", raw[1:-1])
                params.append((match.group(1).decode("ascii"), None if raw is None else raw.decode("ascii")))
                pos = match.end()
            match = _ELEMENT_END.match(value, pos)
            if match is None:
                raise HandshakeError("malformed Sec-WebSocket-Extensions")
            pos = match.end()
            offers.append(ExtensionOffer(name, params))
    return offers


def _parse_subprotocols(values: Iterable[bytes]) -> list[str]:
    subprotocols: list[str] = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item:
                continue
            if _TOKEN.fullmatch(item) is None:
                raise HandshakeError("malformed Sec-WebSocket-Protocol")
            subprotocols.append(item.decode("ascii"))
    return subprotocols


def _collect(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _check_version(fields: dict[bytes, list[bytes]], extra: list[tuple[bytes, bytes]]) -> None:
    if fields.get(b"sec-websocket-version") != [b"13"]:
        raise HandshakeError("unsupported WebSocket version", 426, [(b"sec-websocket-version", b"13"), *extra])


def _has_token(values: list[bytes] | None, token: bytes) -> bool:
    return values is not None and any(
        item.strip(b" \t").lower() == token for value in values for item in value.split(b",")
    )


def validate_handshake(method: bytes, http_version: str, headers: list[tuple[bytes, bytes]]) -> HandshakeRequest:
    """Check an HTTP/1.1 opening handshake (RFC 6455 4.2.1).

    Raises :class:`HandshakeError`: 426 with ``Sec-WebSocket-Version: 13``
    (plus ``Upgrade``/``Connection`` as RFC 9110 15.5.22 wants) when the
    version is missing or not 13, 400 for anything else.
    """
    if method != b"GET":
        raise HandshakeError("WebSocket handshake must use GET")
    if http_version != "1.1":
        raise HandshakeError("WebSocket handshake needs HTTP/1.1")
    fields = _collect(headers)
    if not _has_token(fields.get(b"upgrade"), b"websocket"):
        raise HandshakeError("missing Upgrade: websocket")
    if not _has_token(fields.get(b"connection"), b"upgrade"):
        raise HandshakeError("missing Connection: upgrade")
    _check_version(fields, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
    keys = fields.get(b"sec-websocket-key")
    if keys is None or len(keys) != 1:
        raise HandshakeError("need exactly one Sec-WebSocket-Key")
    if _KEY.fullmatch(keys[0]) is None:
        raise HandshakeError("invalid Sec-WebSocket-Key")
    return HandshakeRequest(
        keys[0],
        _parse_subprotocols(fields.get(b"sec-websocket-protocol", ())),
        parse_extensions(fields.get(b"sec-websocket-extensions", ())),
    )


def validate_extended_connect(headers: list[tuple[bytes, bytes]]) -> HandshakeRequest:
    """Check an HTTP/2 extended CONNECT that bootstraps a WebSocket (RFC 8441 4-5).

    ``headers`` include the pseudo-header fields. There is no key and no
    accept; the answer is a 200 (:func:`extended_connect_response_headers`).
    """
    fields = _collect(headers)
    if fields.get(b":method") != [b"CONNECT"]:
        raise HandshakeError("WebSocket over HTTP/2 needs an extended CONNECT")
    protocol = fields.get(b":protocol")
    if protocol is None or len(protocol) != 1 or protocol[0].lower() != b"websocket":
        raise HandshakeError("missing :protocol websocket")
    for name in (b":scheme", b":path", b":authority"):
        values = fields.get(name)
        if values is None or len(values) != 1 or not values[0]:
            raise HandshakeError(f"extended CONNECT needs one {name.decode()}")
    _check_version(fields, [])
    return HandshakeRequest(
        None,
        _parse_subprotocols(fields.get(b"sec-websocket-protocol", ())),
        parse_extensions(fields.get(b"sec-websocket-extensions", ())),
    )


def _answer_headers(
    base: list[tuple[bytes, bytes]],
    reserved: frozenset[bytes],
    subprotocol: str | None,
    extensions: bytes | None,
    extra_headers: Iterable[tuple[bytes, bytes]],
    offered: Sequence[str] | None,
    lowercase: bool,
) -> list[tuple[bytes, bytes]]:
    headers = base
    if subprotocol is not None:
        if (
            not isinstance(subprotocol, str)
            or not subprotocol.isascii()
            or _TOKEN.fullmatch(subprotocol.encode("ascii")) is None
        ):
            raise LocalProtocolError(f"invalid subprotocol {subprotocol!r}")
        if offered is not None and subprotocol not in offered:
            raise LocalProtocolError(f"subprotocol {subprotocol!r} was not offered by the client")
        headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
    if extensions:
        headers.append((b"sec-websocket-extensions", extensions))
    try:
        for name, value in extra_headers:
            if _TOKEN.fullmatch(name) is None:
                raise LocalProtocolError(f"invalid header name {name!r}")
            if _BAD_VALUE_CHAR.search(value) is not None:
                raise LocalProtocolError(f"invalid characters in the value of header {name!r}")
            lname = name.lower()
            if lname in reserved:
                raise LocalProtocolError(f"the server sets the {lname.decode()} header itself")
            headers.append((lname if lowercase else name, value))
    except (TypeError, ValueError):
        raise LocalProtocolError("headers must be an iterable of [name, value] pairs of bytes") from None
    return headers


def handshake_response_headers(
    accept: bytes,
    subprotocol: str | None = None,
    extensions: bytes | None = None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    offered_subprotocols: Sequence[str] | None = None,
) -> list[tuple[bytes, bytes]]:
    """Header fields of the ``101 Switching Protocols`` answer.

    ``accept`` comes from :func:`accept_key`, ``extensions`` from
    :func:`.permessage_deflate.negotiate`. Raises :class:`LocalProtocolError`
    (nothing is produced) if the subprotocol is not a token (or not in
    ``offered_subprotocols``, when given), or an extra header is malformed
    (CR, LF, NUL or other controls in a value) or one the server owns.
    """
    base = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", accept)]
    return _answer_headers(base, _RESERVED_101, subprotocol, extensions, extra_headers, offered_subprotocols, False)


def extended_connect_response_headers(
    subprotocol: str | None = None,
    extensions: bytes | None = None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    offered_subprotocols: Sequence[str] | None = None,
) -> list[tuple[bytes, bytes]]:
    """Header fields (``:status`` first, names lowercased) of the HTTP/2 200 answer."""
    base = [(b":status", b"200")]
    return _answer_headers(base, _RESERVED_H2, subprotocol, extensions, extra_headers, offered_subprotocols, True)
