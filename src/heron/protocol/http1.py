"""HTTP/1.1 server connection, sans-IO (RFC 9110, RFC 9112).

Bytes go in with :meth:`H1Connection.receive_data`; events come out of
:meth:`H1Connection.next_event`; responses are turned into bytes by
:meth:`send_response`, :meth:`send_data` and :meth:`send_end`. Nothing here
touches a socket, an event loop or ASGI.

Parsing is strict, and every rejection carries the status code to answer with:

* request line: ``token SP request-target SP HTTP/x.y``; only 1.0 and 1.1 are
  served (505 otherwise); the target is origin-form, absolute-form, or ``*``
  for OPTIONS; CONNECT is answered 501.
* header fields: token names, no whitespace before the colon, no obs-fold, no
  control characters (other than HTAB) in values.
* **bare LF is rejected** (400) wherever a CRLF is expected, as is a bare CR.
  RFC 9112 lets a recipient accept a lone LF; we don't, because a front proxy
  that reads the same bytes differently is how requests get smuggled.
* framing: Transfer-Encoding must be exactly ``chunked`` (another final coding
  is 400, an unsupported coding 501), never with Content-Length and never on
  HTTP/1.0; Content-Length must be one decimal number (duplicates and lists
  are 400); chunk sizes are 1-16 hex digits, extensions and trailers are
  bounded and validated, and each chunk must end in exactly CRLF.

Sizes are bounded by :class:`H1Limits`: a request line past the limit is 414,
too many or too large header fields 431.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

from ._cache import BoundedCache
from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "H1Connection",
    "H1Limits",
    "Request",
    "Data",
    "EndOfMessage",
    "ConnectionClosed",
    "NEED_DATA",
    "PAUSED",
    "status_line",
    "simple_response",
    "is_field_name",
    "is_field_value",
]


@dataclass(frozen=True)
class H1Limits:
    """Size limits for one connection. All are in bytes except header count."""

    max_request_line: int = 8190
    max_header_count: int = 100
    max_head_size: int = 65536  # request line and all header fields together
    max_chunk_extensions: int = 4096  # per message, all chunk-ext bytes together
    max_trailer_size: int = 8192


# --- events ------------------------------------------------------------------


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


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: More bytes are needed before another event can be produced.
NEED_DATA = _Sentinel("NEED_DATA")
#: The request is complete; nothing more is parsed until the response is done
#: and :meth:`H1Connection.start_next_cycle` is called.
PAUSED = _Sentinel("PAUSED")

_END_OF_MESSAGE = EndOfMessage()
_CONNECTION_CLOSED = ConnectionClosed()

Event = Request | Data | EndOfMessage | ConnectionClosed | _Sentinel

# --- grammar -----------------------------------------------------------------

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
_FORWARDING_HEADERS = frozenset((b"x-forwarded-for", b"x-forwarded-proto"))
_RESPONSE_SPECIAL = frozenset((b"content-length", b"transfer-encoding", b"connection", b"server", b"date"))

# their (the client's) states
_HEAD = 0
_BODY_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILERS = 5
_BODY_END = 6
_DONE = 7
_CLOSED = 8

# our framing modes for the response body
_SEND_NONE = 0  # no body on the wire (HEAD, 1xx, 204, 304)
_SEND_LENGTH = 1
_SEND_CHUNKED = 2
_SEND_UNTIL_CLOSE = 3

# our states
_OURS_IDLE = 0
_OURS_BODY = 1
_OURS_DONE = 2


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


_STATUS_LINES: dict[int, bytes] = {code: b"HTTP/1.1 %d %s\r\n" % (code, _reason(code)) for code in range(100, 600)}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` for a status in 100..599."""
    return _STATUS_LINES[status]


def simple_response(status: int, extra_headers: bytes = b"", body: bytes | None = None) -> bytes:
    """A complete response that closes the connection (used for errors).

    ``extra_headers`` are pre-validated header lines, each ending in CRLF.
    """
    if body is None:
        body = _reason(status) + b"\n"
    return b"%scontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n%s" % (
        _STATUS_LINES[status],
        len(body),
        extra_headers,
        body,
    )


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


class H1Connection:
    """One server-side HTTP/1.1 connection: request parser and response framer."""

    __slots__ = (
        "limits",
        "_buf",
        "_eof",
        "_their_state",
        "_remaining",
        "_scanned",
        "_chunk_ext_bytes",
        "_request_method",
        "_request_http10",
        "_our_state",
        "_send_mode",
        "_send_remaining",
        "keep_alive",
        "request_complete",
    )

    def __init__(self, limits: H1Limits | None = None) -> None:
        self.limits = limits or H1Limits()
        self._buf = bytearray()
        self._eof = False
        self._their_state = _HEAD
        self._remaining = 0
        self._scanned = 0  # bytes of an incomplete head already searched
        self._chunk_ext_bytes = 0
        self._request_method = b""
        self._request_http10 = False
        self._our_state = _OURS_IDLE
        self._send_mode = _SEND_NONE
        self._send_remaining = 0
        #: False once either side asked to close (or framing forces it);
        #: the connection must then be closed after the current response.
        self.keep_alive = True
        #: The whole current request, body included, has been parsed (always
        #: ``_their_state == _DONE``; an attribute, not a property, because the
        #: transport asks on every request and a property costs a Python call).
        self.request_complete = False

    # --- input -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buf)

    @property
    def body_remaining(self) -> int | None:
        """Bytes of Content-Length body still to come; None when unknown (chunked)."""
        if self._their_state == _BODY_LENGTH:
            return self._remaining
        if self._their_state in (_DONE, _BODY_END):
            return 0
        return None

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA` / :data:`PAUSED`.

        Raises :class:`RemoteProtocolError` on a malformed request; the
        connection is then unusable and must be closed after answering.
        """
        state = self._their_state
        if state == _HEAD:
            return self._parse_head()
        if state == _BODY_LENGTH:
            return self._parse_length_body()
        if state == _DONE:
            return PAUSED
        if state == _BODY_END:
            self._their_state = _DONE
            self.request_complete = True
            return _END_OF_MESSAGE
        if state == _CLOSED:
            return _CONNECTION_CLOSED
        return self._parse_chunked()

    def _fail(self, message: str, status: int = 400) -> RemoteProtocolError:
        self._their_state = _CLOSED
        self.request_complete = False
        self.keep_alive = False
        return RemoteProtocolError(message, status)

    def _parse_head(self) -> Event:
        buf = self._buf
        # RFC 9112 2.2: ignore (a few) empty lines before the request line.
        while buf[:2] == b"\r\n":
            del buf[:2]
            self._scanned = 0
        end = buf.find(b"\r\n\r\n", self._scanned)
        if end == -1:
            return self._incomplete_head()
        self._scanned = 0
        limits = self.limits
        if end > limits.max_head_size:
            raise self._oversized_head()
        head = bytes(buf[:end])
        del buf[: end + 4]

        # Real clients repeat their header lines (Host, User-Agent, Accept,
        # Cookie...) on every request, and most repeat the whole block of them,
        # so what a block says is worked out once (the header list and the
        # facts framing needs) and then looked up: one dict lookup instead of a
        # dozen byte operations per line. The caches are bounded and keyed by
        # the exact bytes.
        line_end = head.find(b"\r\n")
        if line_end == -1:
            line, block = head, b""
        else:
            line, block = head[:line_end], head[line_end + 2 :]
        fields = _FIELD_BLOCKS.get(block)
        if fields is None:
            lines = block.split(b"\r\n") if block else []
            count = len(lines)
        else:
            count = fields[0]
        # (errors keep their order: the field count, the request line, the fields)
        if count > limits.max_header_count:
            raise self._fail("too many header fields", 431)
        parsed_line = _REQUEST_LINES.get(line)
        if parsed_line is None:
            parsed_line = self._parse_request_line(line)
        if fields is None:
            fields = self._scan_fields(lines, block)
        method, target, http10, path, query = parsed_line
        (
            _count,
            header_tuple,
            hosts,
            content_length,
            transfer_encoding,
            saw_close,
            saw_keep_alive,
            expect_100,
            upgrade,
            te_trailers,
            forwarded,
        ) = fields
        headers = list(header_tuple)  # the app may change its scope's list
        expect_continue = expect_100 and not http10

        # close wins over keep-alive, whatever the order; 1.0 needs keep-alive.
        keep_alive = not saw_close and (saw_keep_alive or not http10)

        if not http10 and hosts != 1:
            raise self._fail("missing Host header" if hosts == 0 else "more than one Host header")
        if http10 and hosts > 1:
            raise self._fail("more than one Host header")

        # message body length (RFC 9112 6.3)
        if transfer_encoding is not None:
            if http10:
                raise self._fail("Transfer-Encoding is not allowed in HTTP/1.0")
            if content_length is not None:
                raise self._fail("both Transfer-Encoding and Content-Length")
            if transfer_encoding[-1] != b"chunked":
                raise self._fail("Transfer-Encoding must end with chunked")
            if len(transfer_encoding) > 1:
                if b"chunked" in transfer_encoding[:-1]:
                    raise self._fail("chunked applied more than once")
                raise self._fail("unsupported transfer coding", 501)
            self._their_state = _CHUNK_SIZE
            self._chunk_ext_bytes = 0
            has_body = True
        elif content_length is not None and content_length.lstrip(b"0"):
            self._their_state = _BODY_LENGTH
            self._remaining = int(content_length)
            has_body = True
        else:
            self._their_state = _DONE
            self.request_complete = True
            has_body = False

        if not keep_alive:
            self.keep_alive = False
        self._request_method = method
        self._request_http10 = http10
        return Request(
            method,
            target,
            path,
            query,
            "1.0" if http10 else "1.1",
            headers,
            keep_alive,
            expect_continue,
            has_body,
            upgrade,
            te_trailers,
            forwarded,
        )

    def _scan_fields(self, lines: list[bytes], block: bytes) -> _Fields:
        """Validate and split a block of field lines; what framing needs from
        it, cached by the block's bytes (see _parse_head)."""
        headers: list[tuple[bytes, bytes]] = []
        content_length: bytes | None = None
        transfer_encoding: list[bytes] | None = None
        hosts = 0
        saw_close = saw_keep_alive = False
        expect_100 = False
        upgrade: bytes | None = None
        connection_upgrade = False
        te_trailers = False
        forwarded = False
        cache = _FIELD_LINES
        for field in lines:
            pair = cache.get(field)
            if pair is None:
                pair = _parse_field(field)
                if pair is None:
                    raise self._fail(_header_block_error(block))
            headers.append(pair)
            name = pair[0]
            if name not in _FRAMING_HEADERS:
                if name in _FORWARDING_HEADERS:
                    forwarded = True
                continue
            value = pair[1]
            if name == b"host":
                hosts += 1
                if value not in _VALID_HOSTS:
                    if _HOST.fullmatch(value) is None:
                        raise self._fail("invalid Host header")
                    _VALID_HOSTS.put(value, True, len(value))
            elif name == b"content-length":
                if content_length is not None:
                    raise self._fail("more than one Content-Length")
                if _DIGITS.fullmatch(value) is None:
                    raise self._fail("invalid Content-Length")
                content_length = value
            elif name == b"transfer-encoding":
                if transfer_encoding is None:
                    transfer_encoding = []
                transfer_encoding.extend(c.strip(b" \t").lower() for c in value.split(b","))
            elif name == b"connection":
                for token in value.lower().split(b","):
                    token = token.strip(b" \t")
                    if token == b"close":
                        saw_close = True
                    elif token == b"keep-alive":
                        saw_keep_alive = True
                    elif token == b"upgrade":
                        connection_upgrade = True
            elif name == b"expect":
                if value.lower() == b"100-continue":
                    expect_100 = True
                else:
                    raise self._fail("unsupported expectation", 417)
            elif name == b"te":
                te_trailers = te_trailers or b"trailers" in value.lower()
            else:  # upgrade
                upgrade = value.lower()
        fields = (
            len(lines),
            tuple(headers),
            hosts,
            content_length,
            tuple(transfer_encoding) if transfer_encoding is not None else None,
            saw_close,
            saw_keep_alive,
            expect_100,
            upgrade if connection_upgrade else None,
            te_trailers,
            forwarded,
        )
        _FIELD_BLOCKS.put(block, fields, 2 * len(block) + 64 * len(lines))
        return fields

    def _parse_request_line(self, line: bytes) -> tuple[bytes, bytes, bool, bytes, bytes]:
        """Validate a request line; return (method, target, http10, path, query).

        Validation uses bytes.translate(None, allowed), which deletes the
        allowed bytes in C: anything left over is a bad byte.
        """
        if len(line) > self.limits.max_request_line:
            raise self._fail("request line too long", 414)
        parts = line.split(b" ")
        if (
            len(parts) != 3
            or not parts[0]
            or not parts[1]
            or parts[0].translate(None, _TCHAR_BYTES)
            or parts[1].translate(None, _VCHAR_BYTES)
        ):
            if b"\n" in line or b"\r" in line:
                raise self._fail("bare CR or LF in the request line")
            raise self._fail("malformed request line")
        method, target, version = parts
        if version == b"HTTP/1.1":
            http10 = False
        elif version == b"HTTP/1.0":
            http10 = True
        elif _HTTP_VERSION.fullmatch(version) is not None:
            raise self._fail("HTTP version not supported", 505)
        else:
            raise self._fail("malformed request line")
        # request-target forms (RFC 9112 3.2)
        if target[0] == 0x2F:  # "/"
            if b"#" in target:
                raise self._fail("invalid request target")
            path, _, query = target.partition(b"?")
        elif method == b"CONNECT":
            raise self._fail("CONNECT is not supported", 501)
        elif target == b"*":
            if method != b"OPTIONS":
                raise self._fail("asterisk-form is only allowed with OPTIONS")
            path, query = b"*", b""
        else:
            absolute = _ABSOLUTE_FORM.fullmatch(target)
            if absolute is None or absolute.group(1).lower() not in (b"http", b"https"):
                raise self._fail("invalid request target")
            path, _, query = (absolute.group(3) or b"/").partition(b"?")
            if not path:
                path = b"/"
        if method == b"CONNECT":
            raise self._fail("CONNECT is not supported", 501)
        result = (method, target, http10, path, query)
        _REQUEST_LINES.put(line, result, 2 * len(line))
        return result

    def _incomplete_head(self) -> Event:
        buf = self._buf
        limits = self.limits
        # No CRLFCRLF yet: the head can still end with the last bytes we have
        # (a request line at the limit followed by its CR, a head at the limit
        # followed by CR LF CR), so only fail once that is impossible.
        if len(buf) > limits.max_request_line + 1 and buf.find(b"\r\n", 0, limits.max_request_line + 2) == -1:
            raise self._fail("request line too long", 414)
        if len(buf) - 3 > limits.max_head_size:
            raise self._oversized_head()
        # A bare CR or LF can never become a valid head: fail now, not at a
        # timeout. Only the new bytes are scanned, so a client trickling a head
        # byte by byte costs linear time, not quadratic.
        start = self._scanned
        if start and buf[start] == 0x0A:  # keep a CRLF pair together
            start -= 1
        end = len(buf) - 1 if buf[-1:] == b"\r" else len(buf)
        rest = buf[start:end].replace(b"\r\n", b"")
        if b"\n" in rest or b"\r" in rest:
            raise self._fail("bare CR or LF in the request head")
        self._scanned = max(len(buf) - 3, 0)
        if self._eof:
            if buf:
                raise self._fail("connection closed in the middle of a request head")
            self._their_state = _CLOSED
            return _CONNECTION_CLOSED
        return NEED_DATA

    def _oversized_head(self) -> RemoteProtocolError:
        if self._buf.find(b"\r\n", 0, self.limits.max_request_line + 2) == -1:
            return self._fail("request line too long", 414)
        return self._fail("request header fields too large", 431)

    def _parse_length_body(self) -> Event:
        buf = self._buf
        if not buf:
            if self._eof:
                raise self._fail("connection closed before the request body was complete")
            return NEED_DATA
        remaining = self._remaining
        if len(buf) <= remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:remaining])
            del buf[:remaining]
        remaining -= len(data)
        self._remaining = remaining
        if remaining == 0:
            self._their_state = _BODY_END
        return Data(data)

    def _parse_chunked(self) -> Event:
        """The next event of a chunked body. Consecutive chunks already received
        are given as one :class:`Data` (up to :data:`CHUNKS_PER_EVENT` of them),
        so a client's chunking costs no objects downstream, and the work of one
        call stays bounded."""
        buf = self._buf
        limits = self.limits
        pos = 0  # bytes of buf consumed by this call (deleted once, at the end)
        parts: list[bytes | bytearray] = []  # (bytes.join takes both)
        chunks = 0
        try:
            while True:
                state = self._their_state
                if state == _CHUNK_SIZE:
                    if chunks >= CHUNKS_PER_EVENT:
                        break
                    # (an error found after some data is raised by the next call:
                    # the data goes first, as it would if the bytes came apart)
                    end = buf.find(b"\r\n", pos)
                    if end == -1:
                        if len(buf) - pos > _MAX_CHUNK_SIZE_DIGITS + limits.max_chunk_extensions + 2:
                            if parts:
                                break
                            raise self._fail("chunk size line too long")
                        if buf.find(b"\n", pos) != -1:
                            if parts:
                                break
                            raise self._fail("bare LF in a chunk size line")
                        break
                    if end == pos + 1 and _HEX_VALUE[buf[pos]] >= 0:
                        size = _HEX_VALUE[buf[pos]]  # one digit, no extensions: small chunks go fast
                    else:
                        match = _CHUNK_LINE.fullmatch(buf, pos, end)
                        if match is None:
                            if parts:
                                break
                            raise self._fail("invalid chunk size line")
                        extensions = match.group(2)
                        if extensions:
                            ext_bytes = self._chunk_ext_bytes + len(extensions)
                            if ext_bytes > limits.max_chunk_extensions:
                                if parts:
                                    break
                                raise self._fail("chunk extensions too large")
                            self._chunk_ext_bytes = ext_bytes
                        size = int(match.group(1), 16)
                    pos = end + 2
                    chunks += 1
                    data_end = pos + size
                    if size and buf[data_end : data_end + 2] == b"\r\n":
                        # the whole chunk and its CRLF are here: no state changes
                        parts.append(buf[pos:data_end])
                        pos = data_end + 2
                        continue
                    if size == 0:
                        self._their_state = _TRAILERS
                    else:
                        self._remaining = size
                        self._their_state = _CHUNK_DATA
                elif state == _CHUNK_DATA:
                    avail = len(buf) - pos
                    if not avail:
                        break
                    remaining = self._remaining
                    n = min(remaining, avail)
                    if pos == 0 and n == len(buf):
                        parts.append(bytes(buf))  # the whole buffer: one copy
                    else:
                        with memoryview(buf) as view:
                            parts.append(bytes(view[pos : pos + n]))
                    pos += n
                    remaining -= n
                    self._remaining = remaining
                    if remaining:
                        break
                    self._their_state = _CHUNK_CRLF
                elif state == _CHUNK_CRLF:
                    if len(buf) - pos < 2:
                        if len(buf) > pos and buf[pos] != 0x0D and not parts:
                            raise self._fail("chunk data not followed by CRLF")
                        break
                    if buf[pos] != 0x0D or buf[pos + 1] != 0x0A:
                        if parts:
                            break
                        raise self._fail("chunk data not followed by CRLF")
                    pos += 2
                    self._their_state = _CHUNK_SIZE
                else:  # _TRAILERS
                    if parts:
                        break  # the data first; the end of the body on the next call
                    del buf[:pos]
                    pos = 0
                    return self._parse_trailers()
        finally:
            if pos:
                del buf[:pos]
        if parts:
            return Data(b"".join(parts))  # (one bytes part is returned as it is, not copied)
        return self._body_need_data()

    def _parse_trailers(self) -> Event:
        buf = self._buf
        limits = self.limits
        if buf[:2] == b"\r\n":
            del buf[:2]
            self._their_state = _DONE
            self.request_complete = True
            return _END_OF_MESSAGE
        end = buf.find(b"\r\n\r\n")
        if end == -1:
            if len(buf) - 3 > limits.max_trailer_size:  # see _incomplete_head
                raise self._fail("trailer section too large", 431)
            if len(buf) >= 2 and (buf.count(b"\n") != buf.count(b"\r\n")):
                raise self._fail("bare LF in the trailer section")
            return self._body_need_data()
        if end > limits.max_trailer_size:
            raise self._fail("trailer section too large", 431)
        block = bytes(buf[:end])
        if _HEADER_BLOCK.fullmatch(block) is None:
            raise self._fail(_header_block_error(block))
        if block.count(b"\r\n") >= limits.max_header_count:
            raise self._fail("too many trailer fields", 431)
        del buf[: end + 4]
        self._their_state = _DONE
        self.request_complete = True
        return _END_OF_MESSAGE

    def _body_need_data(self) -> Event:
        if self._eof:
            raise self._fail("connection closed before the request body was complete")
        return NEED_DATA

    # --- output ------------------------------------------------------------

    @property
    def response_started(self) -> bool:
        return self._our_state != _OURS_IDLE

    @property
    def response_complete(self) -> bool:
        return self._our_state == _OURS_DONE

    def send_informational(self, status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
        """A 1xx interim response (100 Continue, 103 Early Hints)."""
        if self._our_state != _OURS_IDLE:
            raise LocalProtocolError("interim response after the final response started")
        if type(status) is not int or not 100 <= status < 200 or status == 101:
            raise LocalProtocolError(f"{status} is not an interim status")
        if self._request_http10:
            return b""  # HTTP/1.0 clients do not understand 1xx
        parts = [_STATUS_LINES[status]]
        try:
            for name, value in headers:
                parts.append(_header_line(name, value))
        except (TypeError, ValueError):
            raise LocalProtocolError("headers must be [name, value] pairs of bytes") from None
        parts.append(b"\r\n")
        return b"".join(parts)

    def send_response(
        self,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        *,
        server_line: bytes = b"",
        date_line: bytes = b"",
        extra_lines: bytes = b"",
        close: bool = False,
        complete_body: bytes | None = None,
    ) -> bytes:
        """The response head, framed for this request.

        With ``complete_body`` the whole response is produced at once (head,
        body, end): the same as ``send_data(body) + send_end()`` after the
        head, in one call. A body that contradicts the app's Content-Length
        then raises :class:`LocalProtocolError` and produces nothing.

        ``server_line``/``date_line``/``extra_lines`` are pre-validated header
        lines ending in CRLF; the first two are dropped when the application
        sends its own Server or Date. ``close`` forces ``Connection: close``.
        Raises :class:`LocalProtocolError` (and produces nothing) if a status
        or header is invalid.
        """
        if self._our_state != _OURS_IDLE:
            raise LocalProtocolError("response already started")
        status_bytes = _STATUS_LINES.get(status) if type(status) is int else None
        if status_bytes is None or status < 200:
            raise LocalProtocolError(f"invalid response status {status!r}")
        # Apps repeat their header lists: each distinct list is validated and
        # rendered once (see _describe_response_fields).
        try:
            items = headers if type(headers) is tuple else tuple(headers)
        except TypeError:
            raise LocalProtocolError("response headers must be an iterable of [name, value] pairs of bytes") from None
        try:
            described = _RESPONSE_FIELDS.get(items)
        except TypeError:  # unhashable pairs (lists): described every time
            described = None
        if described is None:
            described = _describe_response_fields(items)
        block, content_length, length_line, own_server, own_date, says_close = described
        if own_server:
            server_line = b""
        if own_date:
            date_line = b""
        keep_alive = self.keep_alive and not close and not says_close
        parts = [status_bytes, server_line + date_line + extra_lines, block]

        if status == 204 or status == 304 or self._request_method == b"HEAD":
            mode = _SEND_NONE
            if content_length != -1 and status != 204:
                parts.append(length_line)
        elif content_length != -1:
            mode = _SEND_LENGTH
            parts.append(length_line)
        elif not self._request_http10:
            mode = _SEND_CHUNKED
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            mode = _SEND_UNTIL_CLOSE
            keep_alive = False

        if not keep_alive:
            parts.append(b"connection: close\r\n")
        elif self._request_http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")

        if complete_body is not None:
            if mode == _SEND_LENGTH:
                if len(complete_body) != content_length:
                    longer = "longer" if len(complete_body) > content_length else "shorter"
                    self.keep_alive = False  # the app can't be trusted with this connection
                    raise LocalProtocolError(
                        f"response body ({len(complete_body)} bytes) {longer} than its Content-Length ({content_length})"
                    )
                parts.append(complete_body)
            elif mode == _SEND_CHUNKED:
                if complete_body:
                    parts.append(b"%x\r\n%b\r\n0\r\n\r\n" % (len(complete_body), complete_body))
                else:
                    parts.append(b"0\r\n\r\n")
            elif mode == _SEND_UNTIL_CLOSE:
                parts.append(complete_body)
            if not keep_alive:
                self.keep_alive = False
            self._send_mode = mode
            self._our_state = _OURS_DONE
            return b"".join(parts)
        if not keep_alive:
            self.keep_alive = False
        self._send_mode = mode
        self._send_remaining = content_length
        self._our_state = _OURS_BODY
        return b"".join(parts)

    def send_data(self, data: bytes) -> bytes:
        """Frame a piece of the response body."""
        mode = self._send_mode
        if self._our_state != _OURS_BODY:
            raise LocalProtocolError("response body outside a response")
        if mode == _SEND_LENGTH:
            if len(data) > self._send_remaining:
                raise LocalProtocolError("response body longer than its Content-Length")
            self._send_remaining -= len(data)
            return data
        if mode == _SEND_CHUNKED:
            if not data:
                return b""
            return b"%x\r\n%b\r\n" % (len(data), data)
        if mode == _SEND_UNTIL_CLOSE:
            return data
        return b""

    def frame_data(self, length: int) -> tuple[bytes, bytes] | None:
        """Like :meth:`send_data` for ``length`` body bytes the caller writes
        itself (with ``sendfile``): the framing to write before and after them,
        or None when this response carries no body (HEAD, 204, 304)."""
        mode = self._send_mode
        if self._our_state != _OURS_BODY:
            raise LocalProtocolError("response body outside a response")
        if mode == _SEND_LENGTH:
            if length > self._send_remaining:
                raise LocalProtocolError("response body longer than its Content-Length")
            self._send_remaining -= length
            return b"", b""
        if mode == _SEND_CHUNKED:
            return (b"%x\r\n" % length, b"\r\n") if length else (b"", b"")
        if mode == _SEND_UNTIL_CLOSE:
            return b"", b""
        return None

    def send_end(self, trailers: Iterable[tuple[bytes, bytes]] | None = None) -> bytes:
        """End the response body (with trailers when chunked)."""
        if self._our_state != _OURS_BODY:
            raise LocalProtocolError("response end outside a response")
        mode = self._send_mode
        if mode == _SEND_LENGTH and self._send_remaining != 0:
            self.keep_alive = False
            raise LocalProtocolError("response body shorter than its Content-Length")
        end = b""
        if mode == _SEND_CHUNKED:
            if trailers:
                # built before the state changes: a bad trailer leaves the body open
                try:
                    end = b"0\r\n" + b"".join([_header_line(n, v) for n, v in trailers]) + b"\r\n"
                except (TypeError, ValueError):
                    raise LocalProtocolError("trailers must be [name, value] pairs of bytes") from None
            else:
                end = b"0\r\n\r\n"
        self._our_state = _OURS_DONE
        return end

    def send_failed(self) -> None:
        """The response was abandoned half-way: the connection can't be reused."""
        self.keep_alive = False
        self._our_state = _OURS_DONE

    @property
    def chunked_response(self) -> bool:
        return self._send_mode == _SEND_CHUNKED

    def take_buffer(self) -> bytes:
        """Hand over the unparsed bytes (after an upgrade) and stop parsing."""
        data = bytes(self._buf)
        self._buf.clear()
        self._their_state = _CLOSED
        self.request_complete = False
        return data

    def start_next_cycle(self) -> bool:
        """Reset for the next pipelined or keep-alive request; True when bytes
        of it are already buffered (saves the caller a second call)."""
        if self._their_state != _DONE or self._our_state != _OURS_DONE:
            raise LocalProtocolError("the current request/response cycle is not finished")
        if not self.keep_alive:
            raise LocalProtocolError("the connection is closing")
        self._their_state = _HEAD
        self.request_complete = False
        self._our_state = _OURS_IDLE
        self._request_method = b""
        self._send_mode = _SEND_NONE
        return len(self._buf) > 0


def _validate_field(name: object, value: object) -> tuple[bytes, bytes]:
    """Check one response header; return its wire line and, for the headers
    the framer handles itself, its lowercased name (else b"")."""
    if type(name) is not bytes or type(value) is not bytes:
        _check_bytes_header(name, value)
        name, value = bytes(name), bytes(value)  # type: ignore[call-overload]  # (bytes-like: checked above)
    assert isinstance(name, bytes) and isinstance(value, bytes)  # (what the check above made sure of)
    if _TOKEN.fullmatch(name) is None:
        raise LocalProtocolError(f"invalid header name {name!r}")
    if _BAD_VALUE_CHAR.search(value) is not None:
        raise LocalProtocolError(f"invalid characters in the value of header {name!r}")
    lname = name.lower()
    special = lname if lname in _RESPONSE_SPECIAL else b""
    if special == b"content-length":
        if _DIGITS.fullmatch(value.strip(b" \t")) is None:
            raise LocalProtocolError(f"invalid Content-Length header {value!r}")
        result = (b"content-length: %d\r\n" % int(value), special)  # normalised
    else:
        result = (name + b": " + value + b"\r\n", special)
    _VALID_LINES.put((name, value), result, 2 * (len(name) + len(value)))
    return result


def _describe_response_fields(
    items: tuple[tuple[bytes, bytes], ...],
) -> tuple[bytes, int, bytes, bool, bool, bool]:
    """What send_response needs from an app's header list: the wire lines of
    the headers written as they are, the Content-Length (-1: none) and its
    normalised line, whether the app sent its own Server and Date, and whether
    it asked for Connection: close. Raises LocalProtocolError if invalid;
    cached (bounded) when the list is hashable."""
    lines = []
    content_length = -1
    length_line = b""
    own_server = own_date = says_close = False
    cache = _VALID_LINES
    try:
        for name, value in items:
            try:
                line, special = cache[name, value]
            except (KeyError, TypeError):
                line, special = _validate_field(name, value)
            if special:
                if special == b"content-length":
                    if content_length != -1:
                        raise LocalProtocolError("more than one Content-Length header")
                    content_length = int(value)
                    length_line = line
                    continue  # written by send_response, once the framing is decided
                if special == b"transfer-encoding":
                    continue  # the server owns framing (ASGI spec)
                if special == b"connection":
                    if b"close" in value.lower():
                        says_close = True
                    continue  # re-emitted by send_response to match what it really does
                if special == b"server":
                    own_server = True
                else:
                    own_date = True
            lines.append(line)
    except TypeError:
        raise LocalProtocolError("response headers must be an iterable of [name, value] pairs of bytes") from None
    except ValueError:
        raise LocalProtocolError("response headers must be [name, value] pairs") from None
    block = b"".join(lines)
    described = (block, content_length, length_line, own_server, own_date, says_close)
    try:
        _RESPONSE_FIELDS.put(items, described, 2 * len(block) + 64 * len(items))
    except TypeError:  # unhashable pairs
        pass
    return described


def _check_bytes_header(name: object, value: object) -> None:
    """Raise, naming the header, unless its name and value are bytes (not str)."""
    for item in (name, value):
        if not isinstance(item, (bytes, bytearray)):
            raise LocalProtocolError(f"header {name!r:.80}: names and values must be bytes, not {type(item).__name__}")


def _header_line(name: bytes, value: bytes) -> bytes:
    try:
        if _TOKEN.fullmatch(name) is None or _BAD_VALUE_CHAR.search(value) is not None:
            raise LocalProtocolError(f"invalid header {name!r}")
    except TypeError:
        raise LocalProtocolError("header names and values must be bytes") from None
    return name + b": " + value + b"\r\n"
