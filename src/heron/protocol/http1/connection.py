"""One server-side HTTP/1.1 connection: the request parser (the reading half),
on top of :class:`~heron.protocol.http1.writer.ResponseWriter` (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LocalProtocolError, RemoteProtocolError
from .events import _CONNECTION_CLOSED, _END_OF_MESSAGE, NEED_DATA, PAUSED, Data, Event, Request
from .grammar import (
    _ABSOLUTE_FORM,
    _CHUNK_LINE,
    _DIGITS,
    _FIELD_BLOCKS,
    _FIELD_LINES,
    _FORWARDING_HEADERS,
    _FRAMING_HEADERS,
    _HEADER_BLOCK,
    _HEX_VALUE,
    _HOST,
    _HTTP_VERSION,
    _MAX_CHUNK_SIZE_DIGITS,
    _REQUEST_LINES,
    _TCHAR_BYTES,
    _VALID_HOSTS,
    _VCHAR_BYTES,
    CHUNKS_PER_EVENT,
    _Fields,
    _header_block_error,
    _parse_field,
)
from .writer import _OURS_DONE, _OURS_IDLE, _SEND_NONE, ResponseWriter


@dataclass(frozen=True)
class H1Limits:
    """Size limits for one connection. All are in bytes except header count."""

    max_request_line: int = 8190
    max_header_count: int = 100
    max_head_size: int = 65536  # request line and all header fields together
    max_chunk_extensions: int = 4096  # per message, all chunk-ext bytes together
    max_trailer_size: int = 8192


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


class H1Connection(ResponseWriter):
    """One server-side HTTP/1.1 connection: request parser and response framer."""

    __slots__ = (
        "limits",
        "_buf",
        "_held",
        "_eof",
        "_their_state",
        "_remaining",
        "_scanned",
        "_chunk_ext_bytes",
        "_request_method",
        "_request_http10",
        "request_complete",
    )

    def __init__(self, limits: H1Limits | None = None) -> None:
        self.limits = limits or H1Limits()
        self._buf = bytearray()
        #: a read that arrived whole in the middle of a Content-Length body, kept
        #: as the object it is (``_buf`` is then empty): it becomes a Data event
        #: without being copied in and out of ``_buf``
        self._held: bytes | None = None
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
        if not data:
            self._eof = True
            return
        held = self._held
        if held is not None:  # a second read before the first was parsed: both go to _buf
            self._held = None
            self._buf += held
            self._buf += data
        elif self._their_state == _BODY_LENGTH and not self._buf and type(data) is bytes:
            self._held = data
        else:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        held = self._held
        return len(self._buf) if held is None else len(held)

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
        held = self._held
        if held is not None:
            self._held = None
            remaining = self._remaining
            if len(held) > remaining:  # the body ends inside this read: the rest is the next request's
                self._buf += memoryview(held)[remaining:]
                held = held[:remaining]
            remaining -= len(held)
            self._remaining = remaining
            if remaining == 0:
                self._their_state = _BODY_END
            return Data(held)
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
                        if not parts:  # (with data before it, the next call says what is wrong)
                            self._check_partial_size_line(pos)
                        break
                    if end == pos + 1 and _HEX_VALUE[buf[pos]] >= 0:
                        size = _HEX_VALUE[buf[pos]]  # one digit, no extensions: small chunks go fast
                    else:  # (a call here costs ~0.07 us a chunk, ~3% for 1 KiB chunks, measured)
                        size = self._chunk_size(pos, end, bool(parts))
                        if size < 0:
                            break
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

    def _check_partial_size_line(self, pos: int) -> None:
        """A chunk size line without its CRLF yet: fail now if it can't become valid."""
        buf = self._buf
        if len(buf) - pos > _MAX_CHUNK_SIZE_DIGITS + self.limits.max_chunk_extensions + 2:
            raise self._fail("chunk size line too long")
        if buf.find(b"\n", pos) != -1:
            raise self._fail("bare LF in a chunk size line")

    def _chunk_size(self, pos: int, end: int, after_data: bool) -> int:
        """The size of a chunk size line with more than one digit or with
        extensions (bounded in bytes per message); -1 when it is invalid and
        ``after_data`` (the data goes first, the next call raises)."""
        match = _CHUNK_LINE.fullmatch(self._buf, pos, end)
        if match is None:
            if after_data:
                return -1
            raise self._fail("invalid chunk size line")
        extensions = match.group(2)
        if extensions:
            ext_bytes = self._chunk_ext_bytes + len(extensions)
            if ext_bytes > self.limits.max_chunk_extensions:
                if after_data:
                    return -1
                raise self._fail("chunk extensions too large")
            self._chunk_ext_bytes = ext_bytes
        return int(match.group(1), 16)

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

    def take_buffer(self) -> bytes:
        """Hand over the unparsed bytes (after an upgrade) and stop parsing."""
        held = self._held
        if held is not None:
            self._held = None
            self._buf += held
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
