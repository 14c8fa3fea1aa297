"""HTTP/1.1 responses, sans-IO: status lines, response fields checked and framed,
bodies as Content-Length, chunked or until-close (RFC 9112 6, 7)."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from ..errors import LocalProtocolError
from .grammar import _BAD_VALUE_CHAR, _DIGITS, _RESPONSE_FIELDS, _RESPONSE_SPECIAL, _TOKEN, _VALID_LINES

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


class ResponseWriter:
    """The writing half of an HTTP/1.1 connection: responses turned into bytes.

    :class:`~heron.protocol.http1.connection.H1Connection` is its one subclass;
    it sets these slots in its ``__init__``.
    """

    __slots__ = ("keep_alive", "_our_state", "_send_mode", "_send_remaining")

    # set by the reading half (slots of H1Connection), read here
    _request_method: bytes
    _request_http10: bool
    # this half's own (set in H1Connection.__init__)
    keep_alive: bool
    _our_state: int
    _send_mode: int
    _send_remaining: int

    @property
    def response_started(self) -> bool:
        return self._our_state != _OURS_IDLE

    @property
    def response_complete(self) -> bool:
        return self._our_state == _OURS_DONE

    def send_informational(self, status: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
        """A 1xx interim response (100 Continue, 103 Early Hints).

        (``status`` is typed ``object`` as ``send_response``'s is: checked here.)"""
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
        status: object,
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
        or header is invalid. (``status`` is typed ``object`` because that check is
        this method's: compiled by mypyc, an ``int`` parameter would be checked at the
        call instead, with a TypeError.)
        """
        if self._our_state != _OURS_IDLE:
            raise LocalProtocolError("response already started")
        if type(status) is not int or status < 200 or (status_bytes := _STATUS_LINES.get(status)) is None:
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
    items: tuple[Any, ...],  # (Any: each pair's shape is checked here, lists allowed)
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
