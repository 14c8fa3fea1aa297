"""Tests for the sans-IO HTTP/1.1 core (heron.protocol.http1).

Every parser test goes through :func:`parse`, which feeds the same bytes
whole, one byte at a time and (for short inputs) split in two at every
position, and checks that all the runs produce the same normalised event
sequence. Nothing is mocked: real bytes in, real events and bytes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heron.protocol.errors import LocalProtocolError, RemoteProtocolError
from heron.protocol.http1 import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    H1Connection,
    H1Limits,
    Request,
    simple_response,
    status_line,
)
from heron.protocol.http1.connection import _DONE as _PARSER_DONE

# --- the feeding helper --------------------------------------------------------


class Req(NamedTuple):
    """Every field of a :class:`Request`, comparable."""

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    http_version: str
    headers: tuple[tuple[bytes, bytes], ...]
    keep_alive: bool
    expect_continue: bool
    has_body: bool
    upgrade: bytes | None


# Normalised events are tuples whose first item is a tag:
#   ("request", Req) ("data", bytes) ("eom",) ("closed",) ("error", status)
# and the run ends with one marker saying where the parser stopped:
#   ("need_data",)  waiting for bytes that never came
#   ("paused",)     request complete, nothing answered (respond=False)
#   ("we_close",)   we answered and the connection must close (keep_alive False)
# An ("error", ...) or ("closed",) event ends the run by itself.

SPLIT_ALL_MAX = 400  # inputs up to this size are also split at every position

_OK_RESPONSE = [(b"content-length", b"0")]


class Run(NamedTuple):
    events: list[tuple]
    error: RemoteProtocolError | None
    conn: H1Connection


def _drive(pieces: Sequence[bytes], *, eof: bool, limits: H1Limits | None, respond: bool) -> Run:
    conn = H1Connection(limits)
    events: list[tuple] = []

    def add(ev: tuple) -> None:
        if ev[0] == "data" and events and events[-1][0] == "data":
            events[-1] = ("data", events[-1][1] + ev[1])
        elif ev[0] == "data" and not ev[1]:
            raise AssertionError("empty Data event")
        else:
            events.append(ev)

    def drain() -> str:
        while True:
            ev = conn.next_event()
            # a plain attribute (cheaper than a property), kept in step with the parser
            assert conn.request_complete == (conn._their_state == _PARSER_DONE)
            if ev is NEED_DATA:
                return "need_data"
            if ev is PAUSED:
                if not respond:
                    return "paused"
                # A real server answers, then moves on to the next request.
                conn.send_response(200, _OK_RESPONSE)
                conn.send_end()
                if not conn.keep_alive:
                    return "we_close"
                conn.start_next_cycle()
                continue
            if isinstance(ev, Request):
                assert isinstance(ev.headers, list)
                add(
                    (
                        "request",
                        Req(
                            ev.method,
                            ev.target,
                            ev.path,
                            ev.query,
                            ev.http_version,
                            tuple(ev.headers),
                            ev.keep_alive,
                            ev.expect_continue,
                            ev.has_body,
                            ev.upgrade,
                        ),
                    )
                )
            elif isinstance(ev, Data):
                assert type(ev.data) is bytes
                add(("data", ev.data))
            elif isinstance(ev, EndOfMessage):
                add(("eom",))
            elif isinstance(ev, ConnectionClosed):
                add(("closed",))
                return "closed"
            else:  # pragma: no cover - the test fails loudly
                raise AssertionError(f"unexpected event {ev!r}")

    error = None
    state = "need_data"
    try:
        for piece in pieces:
            if not piece:
                continue  # b"" would mean EOF
            conn.receive_data(piece)
            state = drain()
            if state in ("closed", "we_close"):
                break
        else:
            if eof:
                conn.receive_data(b"")
                state = drain()
    except RemoteProtocolError as exc:
        error = exc
        add(("error", exc.status_code))
        assert conn.keep_alive is False, "a protocol error must end keep-alive"
    else:
        if state != "closed":
            add((state,))
    return Run(events, error, conn)


def splits(data: bytes) -> list[list[bytes]]:
    """Every way of feeding ``data`` that the helper checks."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    if len(data) <= SPLIT_ALL_MAX:
        ways.extend([data[:i], data[i:]] for i in range(1, len(data)))
    else:
        ways.append([data[i : i + 7] for i in range(0, len(data), 7)])
    return ways


def run(
    data: bytes,
    *,
    eof: bool = False,
    limits: H1Limits | None = None,
    respond: bool = True,
    pieces: list[list[bytes]] | None = None,
) -> Run:
    """Feed ``data`` in every way of :func:`splits`; all must agree.

    Returns the run that got the data whole (its ``error`` is the exception).
    """
    ways = pieces if pieces is not None else splits(data)
    first = _drive(ways[0], eof=eof, limits=limits, respond=respond)
    for way in ways[1:]:
        assert b"".join(way) == data
        other = _drive(way, eof=eof, limits=limits, respond=respond)
        assert other.events == first.events, f"split {[len(p) for p in way][:20]} differs"
    return first


def parse(data: bytes, **kwargs) -> list[tuple]:
    return run(data, **kwargs).events


def requests_of(events: list[tuple]) -> list[Req]:
    return [ev[1] for ev in events if ev[0] == "request"]


def the_request(data: bytes, **kwargs) -> Req:
    events = parse(data, **kwargs)
    reqs = requests_of(events)
    assert len(reqs) == 1, events
    return reqs[0]


def rejected(data: bytes, status: int, **kwargs) -> RemoteProtocolError:
    r = run(data, **kwargs)
    assert r.events[-1] == ("error", status), r.events
    assert r.error is not None
    assert r.error.status_code == status
    return r.error


def head(*lines: bytes) -> bytes:
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def get(target: bytes = b"/", *fields: bytes, version: bytes = b"1.1", method: bytes = b"GET") -> bytes:
    return head(method + b" " + target + b" HTTP/" + version, *fields)


def conn_with(request: bytes) -> tuple[H1Connection, Request]:
    """A connection that has parsed ``request`` (a complete head without body)."""
    conn = H1Connection()
    conn.receive_data(request)
    ev = conn.next_event()
    assert isinstance(ev, Request), ev
    return conn, ev


# --- the helper itself ---------------------------------------------------------


def test_helper_compares_splits_and_merges_data() -> None:
    data = get(b"/", b"Host: a", b"Content-Length: 10", method=b"POST") + b"0123456789"
    ways = splits(data)
    assert len(ways) == 2 + len(data) - 1
    events = parse(data)
    # one Data event even though byte-at-a-time produced ten
    assert events[1:] == [("data", b"0123456789"), ("eom",), ("need_data",)]


def test_helper_detects_differences() -> None:
    good = get(b"/", b"Host: a")
    with pytest.raises(AssertionError):
        # the second "way" holds different bytes
        run(good, pieces=[[good], [good[:-1]]])
    # and the normalised events do tell different outcomes apart
    kw = dict(eof=False, limits=None, respond=True)
    assert _drive([good], **kw).events != _drive([good[:-1]], **kw).events
    assert _drive([good], **kw).events != _drive([good], eof=True, limits=None, respond=False).events


# --- valid requests ---------------------------------------------------------------


def test_get_with_query() -> None:
    events = parse(get(b"/search/x?q=1&r=a%20b&&=", b"Host: example.com", b"Accept: */*"))
    assert events == [
        (
            "request",
            Req(
                b"GET",
                b"/search/x?q=1&r=a%20b&&=",
                b"/search/x",
                b"q=1&r=a%20b&&=",
                "1.1",
                ((b"host", b"example.com"), (b"accept", b"*/*")),
                True,
                False,
                False,
                None,
            ),
        ),
        ("need_data",),
    ]


def test_query_split_at_first_question_mark_and_empty_query() -> None:
    req = the_request(get(b"/a?b?c", b"Host: h"))
    assert (req.path, req.query) == (b"/a", b"b?c")
    req = the_request(get(b"/a?", b"Host: h"))
    assert (req.path, req.query) == (b"/a", b"")
    req = the_request(get(b"/", b"Host: h"))
    assert (req.path, req.query) == (b"/", b"")


def test_lowercase_and_unusual_methods_are_tokens() -> None:
    for method in (b"get", b"PURGE", b"M-SEARCH", b"X!#$%&'*+.^_`|~9"):
        req = the_request(get(b"/", b"Host: h", method=method))
        assert req.method == method


def test_head_request() -> None:
    req = the_request(get(b"/x", b"Host: h", method=b"HEAD"))
    assert req.method == b"HEAD" and req.has_body is False


def test_options_asterisk() -> None:
    req = the_request(get(b"*", b"Host: h", method=b"OPTIONS"))
    assert (req.method, req.target, req.path, req.query) == (b"OPTIONS", b"*", b"*", b"")


@pytest.mark.parametrize(
    "target, path, query",
    [
        (b"http://example.com:8080/a/b?c=d", b"/a/b", b"c=d"),
        (b"http://example.com", b"/", b""),
        (b"HTTPS://example.com?x=1", b"/", b"x=1"),
        (b"http://[::1]:80/p", b"/p", b""),
        (b"http://example.com:/p", b"/p", b""),
        (b"http://a.b-c_d~e%41:1?x", b"/", b"x"),
        (b"https://example.com/a?b?c", b"/a", b"b?c"),
    ],
)
def test_absolute_form(target: bytes, path: bytes, query: bytes) -> None:
    req = the_request(get(target, b"Host: example.com"))
    assert (req.target, req.path, req.query) == (target, path, query)


def test_http10_without_keep_alive() -> None:
    r = run(get(b"/", version=b"1.0"))
    assert r.events[0][1].http_version == "1.0"
    assert r.events[0][1].keep_alive is False
    assert r.events[1:] == [("we_close",)]
    # Host is optional on 1.0
    assert r.events[0][1].headers == ()


def test_http10_with_keep_alive_and_host() -> None:
    events = parse(get(b"/", b"Connection: Keep-Alive", b"Host: h", version=b"1.0") * 2)
    reqs = requests_of(events)
    assert len(reqs) == 2
    assert all(r.keep_alive and r.http_version == "1.0" for r in reqs)
    assert events[-1] == ("need_data",)


def test_http10_keep_alive_response_says_keep_alive() -> None:
    conn, _ = conn_with(get(b"/", b"Connection: keep-alive", version=b"1.0"))
    out = conn.send_response(200, [(b"content-length", b"2")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n"
    assert conn.keep_alive is True


@pytest.mark.parametrize(
    "fields, keep_alive, upgrade",
    [
        ((), True, None),
        ((b"Connection: close",), False, None),
        ((b"Connection: CLOSE",), False, None),
        ((b"Connection: keep-alive",), True, None),
        ((b"Connection: keep-alive, close",), False, None),
        ((b"Connection: close, keep-alive",), False, None),
        ((b"Connection: keep-alive", b"Connection: Close"), False, None),
        ((b"Connection: foo,\tclose ,bar",), False, None),
        ((b"Connection: closed",), True, None),  # a different token
        ((b"Connection: Upgrade", b"Upgrade: WebSocket"), True, b"websocket"),
        ((b"Connection: keep-alive, UPGRADE", b"Upgrade: h2c"), True, b"h2c"),
        ((b"Upgrade: websocket",), True, None),  # no Connection: upgrade
        ((b"Connection: upgrade",), True, None),  # no Upgrade field
        ((b"Connection: upgrade, close", b"Upgrade: websocket"), False, b"websocket"),
    ],
)
def test_connection_tokens(fields: tuple[bytes, ...], keep_alive: bool, upgrade: bytes | None) -> None:
    events = parse(get(b"/", b"Host: h", *fields))
    req = requests_of(events)[0]
    assert req.keep_alive is keep_alive
    assert req.upgrade == upgrade
    assert events[-1] == (("need_data",) if keep_alive else ("we_close",))


def test_http10_close_wins_over_keep_alive() -> None:
    req = the_request(get(b"/", b"Connection: keep-alive, close", version=b"1.0"))
    assert req.keep_alive is False


def test_leading_empty_lines_are_ignored() -> None:
    events = parse(b"\r\n\r\n\r\n" + get(b"/", b"Host: h"))
    assert [e[0] for e in events] == ["request", "need_data"]
    assert events[0][1].target == b"/"


def test_only_empty_lines_then_eof_is_a_clean_close() -> None:
    assert parse(b"\r\n\r\n", eof=True) == [("closed",)]


def test_headers_keep_order_and_duplicates_names_lowercased() -> None:
    req = the_request(
        get(b"/", b"X-B: 1", b"HOST: h", b"x-b: 2", b"Accept-Encoding: gzip", b"X-B: 3", b"Cookie: a", b"cookie: b")
    )
    assert req.headers == (
        (b"x-b", b"1"),
        (b"host", b"h"),
        (b"x-b", b"2"),
        (b"accept-encoding", b"gzip"),
        (b"x-b", b"3"),
        (b"cookie", b"a"),
        (b"cookie", b"b"),
    )


def test_header_values_have_ows_stripped_and_inner_space_kept() -> None:
    req = the_request(get(b"/", b"Host:h", b"A: \t x  y \t ", b"B:", b"C:   ", b"D:\tq"))
    assert req.headers == ((b"host", b"h"), (b"a", b"x  y"), (b"b", b""), (b"c", b""), (b"d", b"q"))


def test_obs_text_in_values_is_kept() -> None:
    req = the_request(get(b"/", b"Host: h", b"X-Name: caf\xc3\xa9 \x80\xff\xfe"))
    assert req.headers[1] == (b"x-name", b"caf\xc3\xa9 \x80\xff\xfe")


def test_content_length_body() -> None:
    events = parse(get(b"/upload", b"Host: h", b"Content-Length: 11", method=b"POST") + b"hello world")
    req = events[0][1]
    assert req.has_body is True
    assert events[1:] == [("data", b"hello world"), ("eom",), ("need_data",)]


def test_content_length_body_exposes_body_remaining() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/", b"Host: h", b"Content-Length: 10", method=b"PUT") + b"abcd")
    assert isinstance(conn.next_event(), Request)
    assert conn.body_remaining == 10
    ev = conn.next_event()
    assert isinstance(ev, Data) and ev.data == b"abcd"
    assert conn.body_remaining == 6
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"efghij" + b"NEXT")
    ev = conn.next_event()
    assert isinstance(ev, Data) and ev.data == b"efghij"
    assert conn.body_remaining == 0
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.request_complete is True
    assert conn.next_event() is PAUSED
    assert conn.buffered == 4  # the next request's bytes are not touched


def test_a_read_inside_a_content_length_body_is_its_data_event_as_is() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/", b"Host: h", b"Content-Length: 30000", method=b"PUT"))
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is NEED_DATA
    piece = b"p" * 20000
    conn.receive_data(piece)
    assert conn.buffered == 20000
    ev = conn.next_event()
    assert isinstance(ev, Data) and ev.data is piece  # not copied in and out of a buffer
    assert conn.buffered == 0 and conn.body_remaining == 10000
    # two reads before the parser runs: both kept, in order
    conn.receive_data(b"q" * 6000)
    following = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    conn.receive_data(b"r" * 4000 + following)
    assert conn.buffered == 10000 + len(following)
    ev = conn.next_event()
    assert isinstance(ev, Data) and ev.data == b"q" * 6000 + b"r" * 4000
    assert isinstance(conn.next_event(), EndOfMessage)
    conn.send_response(200, _OK_RESPONSE)
    conn.send_end()
    assert conn.start_next_cycle() is True
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.target == b"/next"


def test_a_held_read_is_handed_over_after_an_upgrade() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/", b"Host: h", b"Content-Length: 10", method=b"POST"))
    assert isinstance(conn.next_event(), Request)
    conn.receive_data(b"0123456789tail")
    assert conn.take_buffer() == b"0123456789tail"


@pytest.mark.parametrize("value", [b"0", b"000", b" 0 "])
def test_content_length_zero(value: bytes) -> None:
    events = parse(get(b"/", b"Host: h", b"Content-Length: " + value, method=b"POST"))
    assert events[0][1].has_body is False
    assert events[1:] == [("need_data",)]


def test_content_length_with_leading_zeros() -> None:
    events = parse(get(b"/", b"Host: h", b"Content-Length: 003", method=b"POST") + b"abc")
    assert events[1:] == [("data", b"abc"), ("eom",), ("need_data",)]


def test_chunked_body_with_extensions_and_trailers() -> None:
    body = (
        b"5;name=value;flag\r\nhello\r\n"
        b'6 ; q="quo\\"ted;x" ;\tz = y\r\n world\r\n'
        b"A\r\n0123456789\r\n"
        b"0000000000000001\r\n!\r\n"
        b"0;last\r\n"
        b"Expires: never\r\n"
        b"X-Checksum: abc\r\n"
        b"\r\n"
    )
    events = parse(get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST") + body)
    assert events[0][1].has_body is True
    assert events[1:] == [("data", b"hello world0123456789!"), ("eom",), ("need_data",)]


def test_chunked_transfer_encoding_is_case_insensitive_with_ows() -> None:
    events = parse(get(b"/", b"Host: h", b"Transfer-Encoding:  Chunked ", method=b"POST") + b"0\r\n\r\n")
    assert events[1:] == [("eom",), ("need_data",)]


def test_chunked_empty_body_and_body_remaining_unknown() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST"))
    req = conn.next_event()
    assert isinstance(req, Request) and req.has_body
    assert conn.body_remaining is None
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"0\r\n\r\n")
    assert isinstance(conn.next_event(), EndOfMessage)
    assert conn.body_remaining == 0
    assert conn.next_event() is PAUSED


def test_pipelined_requests() -> None:
    data = (
        get(b"/one", b"Host: h")
        + b"\r\n"  # a stray empty line between requests is allowed
        + get(b"/two", b"Host: h", b"Content-Length: 3", method=b"POST")
        + b"abc"
        + get(b"/three", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST")
        + b"2\r\nde\r\n0\r\n\r\n"
        + get(b"/four", b"Host: h", method=b"HEAD")
        + get(b"/five", b"Host: h", b"Connection: close")
        + get(b"/never", b"Host: h")
    )
    events = parse(data)
    assert [e[1].target if e[0] == "request" else e for e in events] == [
        b"/one",
        b"/two",
        ("data", b"abc"),
        ("eom",),
        b"/three",
        ("data", b"de"),
        ("eom",),
        b"/four",
        b"/five",
        ("we_close",),
    ]


def test_pipelined_requests_wait_for_the_response() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/a", b"Host: h") + get(b"/b", b"Host: h"))
    first = conn.next_event()
    assert isinstance(first, Request) and first.target == b"/a"
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED  # nothing is parsed until start_next_cycle
    assert conn.send_response(204, []) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert conn.send_end() == b""
    conn.start_next_cycle()
    second = conn.next_event()
    assert isinstance(second, Request) and second.target == b"/b"
    assert conn.next_event() is PAUSED


@pytest.mark.parametrize(
    "fields, version, expected",
    [
        ((b"Expect: 100-continue",), b"1.1", True),
        ((b"Expect: 100-Continue",), b"1.1", True),
        ((b"Expect:  100-CONTINUE ",), b"1.1", True),
        ((), b"1.1", False),
        ((b"Expect: 100-continue",), b"1.0", False),  # RFC 9110 10.1.1: ignored on 1.0
    ],
)
def test_expect_100_continue(fields: tuple[bytes, ...], version: bytes, expected: bool) -> None:
    data = get(b"/", b"Host: h", b"Content-Length: 2", *fields, version=version, method=b"POST") + b"ok"
    events = parse(data)
    assert events[0][1].expect_continue is expected
    assert ("data", b"ok") in events


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"example.com:8080",
        b"example.com:",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8000",
        b"[2001:db8::a:b]:443",
        b"[::ffff:192.0.2.1]",
        b"xn--bcher-kva.example",
        b"a_b~c!$&'()*+,;=%20",
        b"",
    ],
)
def test_host_values_accepted(host: bytes) -> None:
    req = the_request(get(b"/", b"Host: " + host))
    assert req.headers == ((b"host", host),)


# --- rejected requests ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"GE(T / HTTP/1.1",
        b"GE\x00T / HTTP/1.1",
        b"G\xc3\xa9T / HTTP/1.1",
        b"GET\t/ HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET /  HTTP/1.1",
        b"GET/ HTTP/1.1",
        b"GET / ",
        b"GET /",  # HTTP/0.9 simple request
        b"/ HTTP/1.1",
    ],
)
def test_malformed_request_line_is_400(line: bytes) -> None:
    rejected(head(line, b"Host: h"), 400)


@pytest.mark.parametrize("version", [b"2.0", b"0.9", b"1.2", b"3.0", b"1.9", b"0.0", b"9.1"])
def test_other_well_formed_versions_are_505(version: bytes) -> None:
    err = rejected(get(b"/", b"Host: h", version=version), 505)
    assert "version" in str(err)


@pytest.mark.parametrize("version", [b"1.10", b"1", b"11", b"1.1.1", b"1,1", b"x.y", b"", b"1.", b".1", b"01.1"])
def test_garbage_versions_are_400(version: bytes) -> None:
    rejected(get(b"/", b"Host: h", version=version), 400)


@pytest.mark.parametrize("proto", [b"http/1.1", b"HTTPS/1.1", b"HTTP /1.1", b"HTTP-1.1"])
def test_protocol_name_is_case_sensitive_and_exact(proto: bytes) -> None:
    rejected(head(b"GET / " + proto, b"Host: h"), 400)


@pytest.mark.parametrize("target", [b"example.com:443", b"/x", b"http://example.com/"])
def test_connect_is_501(target: bytes) -> None:
    rejected(get(target, b"Host: example.com:443", method=b"CONNECT"), 501)


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST", b"options"])
def test_asterisk_form_requires_options(method: bytes) -> None:
    rejected(get(b"*", b"Host: h", method=method), 400)


@pytest.mark.parametrize(
    "target",
    [
        b"/a#frag",
        b"/#",
        b"http://a/b#f",
        b"/caf\xc3\xa9",
        b"/a\x7fb",
        b"/a\x01b",
        b"/a\x00",
        b"/a\tb",
        b"example.com/x",
        b"x",
        b"**",
        b"*/",
        b"ftp://a/b",
        b"http:/a",
        b"http:///path",  # empty host: RFC 9110 4.2.1 says reject
        b"http://",
        b"http://:80/x",
        b"http://user@example.com/",  # userinfo: RFC 9110 4.2.4
        b"http://a b",
        b"http://a:80x/",
        b"http://[::1/",
        b"://a/b",
        b"1http://a/",
    ],
)
def test_invalid_request_target_is_400(target: bytes) -> None:
    rejected(get(target, b"Host: h"), 400)


def test_missing_host_on_http11_is_400() -> None:
    err = rejected(get(b"/", b"Accept: */*"), 400)
    assert "Host" in str(err)
    rejected(get(b"/"), 400)


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_two_host_headers_are_400(version: bytes) -> None:
    rejected(get(b"/", b"Host: a", b"X: y", b"host: a", version=version), 400)


@pytest.mark.parametrize(
    "host",
    [
        b"a b",
        b"a/b",
        b"user@a",
        b"[::1",
        b"::1",
        b"a:b",
        b"a:80x",
        b"[::1]x",
        b"[zz::1]",
        b'a"b',
        b"a?b",
        b"a#b",
        b"\xc3\xa9",
    ],
)
def test_invalid_host_is_400(host: bytes) -> None:
    rejected(get(b"/", b"Host: " + host), 400)


@pytest.mark.parametrize(
    "field",
    [
        b"Host : h",
        b"X-A\t: b",
        b" X: y",  # obs-fold at the start of the block
        b"X: a\r\n b",  # obs-fold
        b"X: a\r\n\tb",
        b"No-Colon",
        b": empty-name",
        b"X(y): z",
        b"X\xc3\xa9: z",
        b"X: a\x00b",
        b"X: a\x01b",
        b"X: a\x1fb",
        b"X: a\x7fb",
        b"X: a\x0bb",
    ],
)
def test_invalid_field_lines_are_400(field: bytes) -> None:
    rejected(get(b"/", b"Host: h", field), 400)


def test_obs_fold_message() -> None:
    err = rejected(get(b"/", b"Host: h", b"X: a", b" continued"), 400)
    assert "obs-fold" in str(err)


def test_whitespace_before_colon_message() -> None:
    err = rejected(get(b"/", b"Host : h"), 400)
    assert "whitespace" in str(err)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        b"GET / HTTP/1.1\r\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nX: a\nb\r\nHost: h\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\rHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\nHost: h\r\n\r\n",
        b"\rGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n",
    ],
)
def test_bare_lf_or_cr_in_head_is_400(data: bytes) -> None:
    rejected(data, 400)


@pytest.mark.parametrize(
    "prefix",
    [
        b"GET / HTTP/1.1\nHost",
        b"GET / HTTP/1.1\r\nHost: h\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",
        b"\n",
        b"GET / HTTP/1.1\rX",
        b"GET / HTTP/1.1\r\nHost: h\r\r",
        b"GET / HTTP/1.1\r\n\r\r",
        b"\r\r",
        b"\r\n\r\n\rG",
    ],
)
def test_bare_lf_or_cr_in_head_detected_without_more_data(prefix: bytes) -> None:
    # no terminator and no EOF: a parser that waited would end in need_data
    err = rejected(prefix, 400)
    assert "bare CR or LF" in str(err)


def test_cr_at_the_end_of_an_incomplete_head_waits() -> None:
    assert parse(b"GET / HTTP/1.1\r") == [("need_data",)]
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r") == [("need_data",)]


@pytest.mark.parametrize(
    "fields",
    [
        (b"Content-Length: 5", b"Content-Length: 5"),
        (b"Content-Length: 5", b"Content-Length: 6"),
        (b"content-length: 0", b"Content-Length: 0"),
    ],
)
def test_duplicate_content_length_is_400(fields: tuple[bytes, ...]) -> None:
    rejected(get(b"/", b"Host: h", *fields, method=b"POST") + b"hello", 400)


@pytest.mark.parametrize(
    "value",
    [
        b"5, 5",
        b"5,5",
        b"5 5",
        b"abc",
        b"+5",
        b"-5",
        b"-0",
        b"0x5",
        b"5.0",
        b"5e0",
        b"",
        b"\xd9\xa5",
        b"1234567890123456789",
    ],
)
def test_invalid_content_length_is_400(value: bytes) -> None:
    rejected(get(b"/", b"Host: h", b"Content-Length: " + value, method=b"POST") + b"hello", 400)


@pytest.mark.parametrize(
    "fields",
    [
        (b"Transfer-Encoding: chunked", b"Content-Length: 5"),
        (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        (b"Content-Length: 0", b"Transfer-Encoding: chunked"),
    ],
)
def test_transfer_encoding_with_content_length_is_400(fields: tuple[bytes, ...]) -> None:
    err = rejected(get(b"/", b"Host: h", *fields, method=b"POST") + b"0\r\n\r\n", 400)
    assert "Content-Length" in str(err)


def test_transfer_encoding_on_http10_is_400() -> None:
    rejected(get(b"/", b"Transfer-Encoding: chunked", version=b"1.0", method=b"POST") + b"0\r\n\r\n", 400)


@pytest.mark.parametrize(
    "fields, status",
    [
        ((b"Transfer-Encoding: gzip, chunked",), 501),
        ((b"Transfer-Encoding: deflate,chunked",), 501),
        ((b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"), 501),
        ((b"Transfer-Encoding: chunked, gzip",), 400),
        ((b"Transfer-Encoding: identity",), 400),
        ((b"Transfer-Encoding: gzip",), 400),
        ((b"Transfer-Encoding: chunked, chunked",), 400),
        ((b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 400),
        ((b"Transfer-Encoding: chunked, gzip, chunked",), 400),
        ((b"Transfer-Encoding: chunked;q=1",), 400),
        ((b"Transfer-Encoding: xchunked",), 400),
        ((b"Transfer-Encoding:",), 400),
        ((b"Transfer-Encoding: chunked,",), 400),
    ],
)
def test_bad_transfer_encoding(fields: tuple[bytes, ...], status: int) -> None:
    rejected(get(b"/", b"Host: h", *fields, method=b"POST") + b"0\r\n\r\n", status)


def chunked_request(body: bytes, limits: H1Limits | None = None) -> Run:
    return run(get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST") + body, limits=limits)


@pytest.mark.parametrize(
    "size_line",
    [
        b"+5",
        b"-5",
        b"0x5",
        b"00000000000000005",  # 17 digits
        b"1FFFFFFFFFFFFFFFF",
        b"g",
        b"5g",
        b" 5",
        b"",
        b"5 ",
        b"\t5",
    ],
)
def test_invalid_chunk_size_is_400(size_line: bytes) -> None:
    r = chunked_request(size_line + b"\r\nhello\r\n0\r\n\r\n")
    assert r.events[1:] == [("error", 400)]


def test_sixteen_digit_chunk_size_is_fine() -> None:
    r = chunked_request(b"0000000000000005\r\nhello\r\n0\r\n\r\n")
    assert r.events[1:] == [("data", b"hello"), ("eom",), ("need_data",)]


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhelloXX0\r\n\r\n",  # CVE-2025-43859
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5\r\nhello\r\r\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",  # the size lies
    ],
)
def test_chunk_data_must_end_in_crlf(body: bytes) -> None:
    r = chunked_request(body)
    assert r.events[1:] == [("data", body[3 : 3 + int(body[:1])]), ("error", 400)]
    assert "CRLF" in str(r.error)


def test_chunk_data_crlf_wrong_first_byte_detected_early() -> None:
    r = chunked_request(b"5\r\nhelloX")
    assert r.events[1:] == [("data", b"hello"), ("error", 400)]


def test_chunk_extensions_over_the_limit() -> None:
    limits = H1Limits(max_chunk_extensions=20)
    ok = b"1;abcdefghijklmnopqrs\r\nx\r\n0\r\n\r\n"  # 20 extension bytes
    assert chunked_request(ok, limits).events[1:] == [("data", b"x"), ("eom",), ("need_data",)]
    too_big = b"1;abcdefghijklmnopqrst\r\nx\r\n0\r\n\r\n"  # 21
    assert chunked_request(too_big, limits).events[1:] == [("error", 400)]
    # the budget is per message, across chunks
    cumulative = b"1;abcdefghij\r\nx\r\n1;abcdefghij\r\ny\r\n0\r\n\r\n"  # 11 + 11
    assert chunked_request(cumulative, limits).events[1:] == [("data", b"x"), ("error", 400)]
    # an extension that never ends is refused without waiting forever
    endless = b"1;" + b"a" * 100
    assert chunked_request(endless, limits).events[1:] == [("error", 400)]


def test_chunk_extension_budget_resets_per_message() -> None:
    limits = H1Limits(max_chunk_extensions=12)
    one = get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST") + b"1;abcdefghij\r\nx\r\n0\r\n\r\n"
    events = parse(one * 3, limits=limits)
    assert [e[0] for e in events] == ["request", "data", "eom"] * 3 + ["need_data"]


@pytest.mark.parametrize(
    "ext",
    [
        b";",
        b";=x",
        b";a=",
        b';a="unterminated',
        b";a b",
        b";a=b c",
        b';a="x"y',
        b"=b",
        b";a==b",
        b';a="\x01"',
        b';a="\\\x00"',
        b";\xff",
        b";a=(b)",
    ],
)
def test_bad_chunk_extension_syntax_is_400(ext: bytes) -> None:
    r = chunked_request(b"5" + ext + b"\r\nhello\r\n0\r\n\r\n")
    assert r.events[1:] == [("error", 400)]


def test_bare_lf_in_chunk_size_line() -> None:
    assert chunked_request(b"5\nhello\r\n0\r\n\r\n").events[1:] == [("error", 400)]
    # detected as soon as it is there
    assert chunked_request(b"5;a=b\n").events[1:] == [("error", 400)]
    assert chunked_request(b"5\r\nhello\r\n0\n\r\n").events[1:] == [("data", b"hello"), ("error", 400)]


@pytest.mark.parametrize(
    "trailers",
    [
        b"X: a\nb\r\n\r\n",
        b"X: a\n\r\n",
        b"X: a\r\n\n",
        b"X: a\rb\r\n\r\n",
        b"X : a\r\n\r\n",
        b"X: a\r\n folded\r\n\r\n",
        b"X: a\x00\r\n\r\n",
        b"no colon\r\n\r\n",
    ],
)
def test_bad_trailers_are_400(trailers: bytes) -> None:
    r = chunked_request(b"2\r\nok\r\n0\r\n" + trailers)
    assert r.events[1:] == [("data", b"ok"), ("error", 400)]


def test_bare_lf_in_trailers_detected_without_more_data() -> None:
    r = chunked_request(b"0\r\nX: a\nY")
    assert r.events[1:] == [("error", 400)]


def test_trailers_too_large_is_431() -> None:
    limits = H1Limits(max_trailer_size=20)
    fits = b"X: " + b"y" * 17  # exactly 20 bytes
    r = chunked_request(b"0\r\n" + fits + b"\r\n\r\n", limits)
    assert r.events[1:] == [("eom",), ("need_data",)]
    too_big = b"X: " + b"y" * 18
    r = chunked_request(b"0\r\n" + too_big + b"\r\n\r\n", limits)
    assert r.events[1:] == [("error", 431)]
    # never terminated: refused once past the limit, no EOF needed
    r = chunked_request(b"0\r\nX: " + b"y" * 40, limits)
    assert r.events[1:] == [("error", 431)]


def test_too_many_trailer_fields_is_431() -> None:
    limits = H1Limits(max_header_count=3)
    three = b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert chunked_request(b"0\r\n" + three, limits).events[1:] == [("eom",), ("need_data",)]
    four = b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"
    assert chunked_request(b"0\r\n" + four, limits).events[1:] == [("error", 431)]


def test_eof_mid_head_is_an_error() -> None:
    for prefix in (b"G", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost: h\r\n", b"GET / HTTP/1.1\r\nHost: h\r\n\r"):
        err = rejected(prefix, 400, eof=True)
        assert "closed" in str(err)


def test_eof_mid_body_is_an_error() -> None:
    r = run(get(b"/", b"Host: h", b"Content-Length: 10", method=b"POST") + b"abc", eof=True)
    assert r.events[1:] == [("data", b"abc"), ("error", 400)]
    r = run(get(b"/", b"Host: h", b"Content-Length: 10", method=b"POST"), eof=True)
    assert r.events[1:] == [("error", 400)]


@pytest.mark.parametrize(
    "body, before",
    [
        (b"", []),
        (b"5", []),
        (b"5\r\n", []),
        (b"5\r\nhel", [("data", b"hel")]),
        (b"5\r\nhello", [("data", b"hello")]),
        (b"5\r\nhello\r", [("data", b"hello")]),
        (b"5\r\nhello\r\n", [("data", b"hello")]),
        (b"0\r\n", []),
        (b"0\r\nX: y\r\n", []),
    ],
)
def test_eof_mid_chunked_body_is_an_error(body: bytes, before: list) -> None:
    r = run(get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST") + body, eof=True)
    assert r.events[1:] == before + [("error", 400)]


def test_eof_between_requests_is_connection_closed() -> None:
    assert parse(b"", eof=True) == [("closed",)]
    events = parse(get(b"/", b"Host: h") + get(b"/2", b"Host: h"), eof=True)
    assert [e[0] for e in events] == ["request", "request", "closed"]
    events = parse(get(b"/", b"Host: h", b"Content-Length: 1", method=b"POST") + b"x", eof=True)
    assert events[1:] == [("data", b"x"), ("eom",), ("closed",)]


def test_connection_closed_event_repeats() -> None:
    conn = H1Connection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert isinstance(conn.next_event(), ConnectionClosed)


SMALL = H1Limits(max_request_line=32, max_header_count=4, max_head_size=100)


def line_of(length: int) -> bytes:
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


def test_request_line_at_the_limit_is_accepted() -> None:
    req = the_request(head(line_of(32), b"Host: h"), limits=SMALL)
    assert len(req.target) == 32 - len(b"GET  HTTP/1.1")


def test_request_line_over_the_limit_is_414() -> None:
    rejected(head(line_of(33), b"Host: h"), 414, limits=SMALL)


@pytest.mark.parametrize("extra", [2, 10, 60, 200])
def test_incomplete_request_line_over_the_limit_is_414(extra: int) -> None:
    rejected(b"GET /" + b"a" * (27 + extra), 414, limits=SMALL)  # no CRLF yet, no EOF


def test_incomplete_request_line_at_the_limit_waits() -> None:
    assert parse(line_of(32) + b"\r", limits=SMALL) == [("need_data",)]


def test_request_line_limit_with_default_limits() -> None:
    default = H1Limits().max_request_line
    ok = head(line_of(default), b"Host: h")
    r = run(ok, pieces=[[ok], [ok[i : i + 1] for i in range(len(ok))]])
    assert r.events[0][0] == "request"
    rejected(b"GET /" + b"a" * default, 414, pieces=[[b"GET /" + b"a" * default]])
    long = head(line_of(default + 1), b"Host: h")
    rejected(long, 414, pieces=[[long], [long[:100], long[100:]]])


def test_too_many_headers_is_431() -> None:
    four = [b"Host: h", b"A: 1", b"B: 2", b"C: 3"]
    assert the_request(get(b"/", *four), limits=SMALL).headers[3] == (b"c", b"3")
    err = rejected(get(b"/", *four, b"D: 4"), 431, limits=SMALL)
    assert "too many" in str(err)


def test_head_at_the_size_limit_is_accepted() -> None:
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    data = start + b"v" * (100 - len(start)) + b"\r\n\r\n"  # 100 bytes before the CRLFCRLF
    assert the_request(data, limits=SMALL).headers[1] == (b"x", b"v" * (100 - len(start)))


def test_head_over_the_size_limit_is_431() -> None:
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    data = start + b"v" * (101 - len(start)) + b"\r\n\r\n"
    rejected(data, 431, limits=SMALL)
    # incomplete: refused without EOF as soon as it cannot fit any more
    rejected(start + b"v" * 200, 431, limits=SMALL)


def test_head_size_counts_leading_empty_lines_out() -> None:
    start = b"GET / HTTP/1.1\r\nHost: h\r\nX: "
    data = b"\r\n" * 20 + start + b"v" * (100 - len(start)) + b"\r\n\r\n"
    assert the_request(data, limits=SMALL).method == b"GET"


@pytest.mark.parametrize("value", [b"foo", b"100-continue, foo", b"200-ok", b"100-continue;x=1", b""])
def test_unsupported_expectation_is_417(value: bytes) -> None:
    rejected(get(b"/", b"Host: h", b"Expect: " + value, b"Content-Length: 1", method=b"POST") + b"x", 417)


def test_after_an_error_the_connection_is_closed() -> None:
    conn = H1Connection()
    conn.receive_data(b"GET / HTTP/2.0\r\n\r\n" + get(b"/", b"Host: h"))
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.keep_alive is False
    ev = conn.next_event()
    assert not isinstance(ev, (Request, Data, EndOfMessage))


# --- responses ----------------------------------------------------------------------


def test_status_line_and_reason() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(404) == b"HTTP/1.1 404 Not Found\r\n"
    assert status_line(418) == b"HTTP/1.1 418 I'm a Teapot\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(404, [(b"content-length", b"0")])
    assert out == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def test_content_length_response_is_kept() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5"), (b"X-A", b"b")])
    assert out == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: b\r\ncontent-length: 5\r\n\r\n")
    assert conn.chunked_response is False
    assert conn.response_started and not conn.response_complete
    assert conn.send_data(b"hel") == b"hel"
    assert conn.send_data(b"lo") == b"lo"
    assert conn.send_end() == b""
    assert conn.response_complete
    assert conn.keep_alive is True


def test_chunked_response_when_no_length_on_http11() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"content-type", b"text/plain")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    assert conn.chunked_response is True
    assert conn.send_data(b"hello") == b"5\r\nhello\r\n"
    assert conn.send_data(b"") == b""
    assert conn.send_data(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert conn.send_end() == b"0\r\n\r\n"
    assert conn.keep_alive is True


def test_chunked_response_with_trailers() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h", b"TE: trailers"))
    conn.send_response(200, [])
    assert conn.send_end([(b"x-checksum", b"abc"), (b"Expires", b"0")]) == (
        b"0\r\nx-checksum: abc\r\nExpires: 0\r\n\r\n"
    )


def test_invalid_trailer_raises_and_leaves_the_response_open() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    conn.send_response(200, [])
    for bad in ([(b"ok", b"1"), (b"bad name", b"x")], [(b"x", b"a\r\nb")], [("x", "y")], [(b"x",)], [None]):
        with pytest.raises(LocalProtocolError):
            conn.send_end(bad)
        # nothing was produced, so the body is not finished
        assert conn.response_complete is False
        with pytest.raises(LocalProtocolError):
            conn.start_next_cycle()
    assert conn.send_end() == b"0\r\n\r\n"
    assert conn.response_complete


def test_close_delimited_response_on_http10() -> None:
    conn, _ = conn_with(get(b"/", b"Connection: keep-alive", version=b"1.0"))
    out = conn.send_response(200, [(b"content-type", b"text/plain")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
    assert conn.keep_alive is False
    assert conn.chunked_response is False
    assert conn.send_data(b"raw bytes") == b"raw bytes"
    assert conn.send_end() == b""
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


@pytest.mark.parametrize(
    "method, status, headers, expected_head",
    [
        (b"HEAD", 200, [(b"content-length", b"5")], b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        (b"HEAD", 200, [], b"HTTP/1.1 200 OK\r\n\r\n"),
        (b"GET", 204, [(b"content-length", b"5")], b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", 204, [(b"transfer-encoding", b"chunked")], b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", 304, [(b"content-length", b"5")], b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
        (b"GET", 304, [(b"ETag", b'"x"')], b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'),
    ],
)
def test_no_body_bytes_for_head_204_304(method: bytes, status: int, headers: list, expected_head: bytes) -> None:
    conn, _ = conn_with(get(b"/", b"Host: h", method=method))
    assert conn.send_response(status, headers) == expected_head
    assert conn.send_data(b"hello") == b""
    assert conn.send_end() == b""
    assert conn.keep_alive is True
    conn.start_next_cycle()


def test_transfer_encoding_from_the_app_is_ignored() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"Transfer-Encoding", b"gzip"), (b"content-length", b"3")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"transfer-encoding", b"identity")])
    assert out == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close"])
def test_app_connection_close_is_honoured(value: bytes) -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"Connection", value), (b"content-length", b"0")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert conn.keep_alive is False
    conn.send_end()
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_close_argument_and_client_close() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"content-length", b"0")], close=True)
    assert out.endswith(b"connection: close\r\n\r\n") and conn.keep_alive is False
    conn, req = conn_with(get(b"/", b"Host: h", b"Connection: close"))
    assert req.keep_alive is False and conn.keep_alive is False
    out = conn.send_response(200, [(b"content-length", b"0")])
    assert out.endswith(b"connection: close\r\n\r\n")


def test_app_connection_keep_alive_is_not_duplicated() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"connection", b"keep-alive"), (b"content-length", b"0")])
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert conn.keep_alive is True


def test_server_and_date_lines() -> None:
    server = b"server: heron\r\n"
    date = b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    extra = b"x-extra: 1\r\n"
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"content-length", b"0")], server_line=server, date_line=date, extra_lines=extra)
    assert out == b"HTTP/1.1 200 OK\r\n" + server + date + extra + b"content-length: 0\r\n\r\n"
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(200, [(b"Server", b"app"), (b"content-length", b"0")], server_line=server, date_line=date)
    assert out == b"HTTP/1.1 200 OK\r\n" + date + b"Server: app\r\ncontent-length: 0\r\n\r\n"
    conn, _ = conn_with(get(b"/", b"Host: h"))
    out = conn.send_response(
        200, [(b"DATE", b"yesterday"), (b"content-length", b"0")], server_line=server, date_line=date
    )
    assert out == b"HTTP/1.1 200 OK\r\n" + server + b"DATE: yesterday\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"bad name", b"x")],
        [(b"bad:name", b"x")],
        [(b"x\r\nInjected: 1", b"x")],
        [(b"", b"x")],
        [(b"x\x00", b"x")],
        [("x-str", b"x")],
        [(b"x", "str value")],
        [(b"x", b"a\r\nSet-Cookie: evil=1")],  # response splitting, CVE-2020-7695
        [(b"x", b"a\rb")],
        [(b"x", b"a\nb")],
        [(b"x", b"a\x00b")],
        [(b"x", b"a\x7f")],
        [(b"x", b"ok"), (b"y",)],
        [(b"x", b"ok", b"extra")],
        [b"xy"],
        [None],
        [(b"content-length", b"5"), (b"Content-Length", b"5")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"five")],
    ],
)
def test_invalid_response_headers_raise_and_produce_nothing(headers: list) -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, headers)
    assert conn.response_started is False
    # the caller can still answer with something else
    assert conn.send_response(500, [(b"content-length", b"0")]) == (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
    )


@pytest.mark.parametrize("status", [99, 100, 101, 199, 600, 1000, -200, "200", 200.0, True, None])
def test_invalid_final_status_raises(status: object) -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    with pytest.raises(LocalProtocolError):
        conn.send_response(status, [])  # type: ignore[arg-type]
    assert conn.response_started is False


def test_body_longer_than_content_length_raises() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    conn.send_response(200, [(b"content-length", b"5")])
    assert conn.send_data(b"abc") == b"abc"
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"def")
    assert conn.send_data(b"de") == b"de"
    assert conn.send_end() == b""


def test_body_shorter_than_content_length_raises_on_end() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    conn.send_response(200, [(b"content-length", b"5")])
    conn.send_data(b"abc")
    with pytest.raises(LocalProtocolError):
        conn.send_end()
    assert conn.keep_alive is False
    assert conn.response_complete is False


def test_send_response_twice_and_data_outside_a_response() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        conn.send_end()
    conn.send_response(200, [(b"content-length", b"0")])
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, [])
    conn.send_end()
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        conn.send_end()


def test_send_informational() -> None:
    conn, req = conn_with(get(b"/", b"Host: h", b"Expect: 100-continue", b"Content-Length: 1", method=b"POST"))
    assert req.expect_continue is True
    assert conn.send_informational(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_informational(103, [(b"link", b"</s.css>; rel=preload")]) == (
        b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
    )
    assert conn.response_started is False
    for bad in (101, 99, 200, 204, "100", 100.0, None):
        with pytest.raises(LocalProtocolError):
            conn.send_informational(bad)  # type: ignore[arg-type]
    for headers in ([(b"link", b"a\r\nb")], [(b"bad name", b"x")], [(b"link",)], [None], [("link", "x")]):
        with pytest.raises(LocalProtocolError):
            conn.send_informational(103, headers)  # type: ignore[list-item]
    conn.send_response(200, [(b"content-length", b"0")])
    with pytest.raises(LocalProtocolError):
        conn.send_informational(100)


def test_send_informational_is_empty_for_http10() -> None:
    conn, _ = conn_with(get(b"/", version=b"1.0"))
    assert conn.send_informational(100) == b""


def test_simple_response_format() -> None:
    assert simple_response(400) == (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 12\r\nconnection: close\r\n\r\nBad Request\n"
    )
    assert simple_response(431, b"retry-after: 1\r\n", b"nope") == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 4\r\nconnection: close\r\nretry-after: 1\r\n\r\nnope"
    )
    assert simple_response(500, body=b"").endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")


def test_start_next_cycle_refuses_unfinished_cycles() -> None:
    conn = H1Connection()
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # nothing happened yet
    conn.receive_data(get(b"/", b"Host: h", b"Content-Length: 3", method=b"POST") + b"ab")
    assert isinstance(conn.next_event(), Request)
    conn.send_response(200, [(b"content-length", b"0")])
    conn.send_end()
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # request body not read
    assert isinstance(conn.next_event(), Data)
    conn.receive_data(b"c")
    assert isinstance(conn.next_event(), Data)
    assert isinstance(conn.next_event(), EndOfMessage)
    conn.start_next_cycle()
    conn.receive_data(get(b"/", b"Host: h"))
    assert isinstance(conn.next_event(), Request)
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # response not sent
    conn.send_response(200, [])
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()  # response not finished
    conn.send_end()
    conn.start_next_cycle()


def test_start_next_cycle_refuses_when_closing() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h", b"Connection: close"))
    conn.send_response(200, [(b"content-length", b"0")])
    conn.send_end()
    assert conn.response_complete
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_send_failed_stops_reuse() -> None:
    conn, _ = conn_with(get(b"/", b"Host: h"))
    conn.send_response(200, [])
    conn.send_failed()
    assert conn.keep_alive is False and conn.response_complete
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_response_framing_follows_each_pipelined_request() -> None:
    conn = H1Connection()
    conn.receive_data(get(b"/", b"Host: h", method=b"HEAD") + get(b"/", b"Host: h"))
    assert isinstance(conn.next_event(), Request)
    assert conn.send_response(200, []) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert conn.send_data(b"body") == b""
    conn.send_end()
    conn.start_next_cycle()
    assert isinstance(conn.next_event(), Request)
    assert conn.send_response(200, []).endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert conn.send_data(b"body") == b"4\r\nbody\r\n"


# --- property tests --------------------------------------------------------------

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FRAGMENTS = [
    b"GET / HTTP/1.1\r\n",
    b"POST /x?y HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"Host: h\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b'1;a="b"\r\n',
    b"X: y\r\n",
    b" ",
    b":",
    b"\x00",
    b"\xff",
]

_noise = st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=8)), max_size=20).map(b"".join)


def _cuts(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for c in cuts:
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    return [p for p in pieces if p]


@PROPS
@given(
    data=st.one_of(st.binary(max_size=300), _noise),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    eof=st.booleans(),
)
def test_property_arbitrary_bytes_only_give_events_or_remote_errors(data: bytes, points: list[int], eof: bool) -> None:
    limits = H1Limits(
        max_request_line=64, max_header_count=8, max_head_size=200, max_chunk_extensions=32, max_trailer_size=64
    )
    # _drive lets only RemoteProtocolError through as an event; anything else fails.
    whole = _drive([data] if data else [], eof=eof, limits=limits, respond=True)
    split = _drive(_cuts(data, points), eof=eof, limits=limits, respond=True)

    # splitting may change which of two defects is reported first, never whether
    # bytes are accepted: the same requests and body come out until any error
    def accepted(events: list[tuple]) -> list[tuple]:
        return [e for e in events if e[0] in ("request", "data", "eom")]

    # whether the bytes are an error at all must not depend on how they arrive
    assert (whole.error is None) == (split.error is None), (whole.events, split.events)
    a, b = accepted(whole.events), accepted(split.events)
    n = min(len(a), len(b))
    assert a[: n - 1] == b[: n - 1] if n else True
    if whole.error is None and split.error is None:
        assert whole.events == split.events


_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_token = st.text(alphabet=_TCHARS, min_size=1, max_size=12).map(str.encode)
_path = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@%/", max_size=24).map(lambda p: b"/" + p.encode())
_query = st.one_of(st.none(), st.text(alphabet="abc=&/?:@%+019", max_size=12).map(str.encode))
# field values: any byte except CTLs (HTAB is fine), so obs-text shows up too
_VALUE_TABLE = bytes(b if b == 0x09 or 0x20 <= b != 0x7F else 0x5F for b in range(256))
_value = st.binary(max_size=20).map(lambda v: v.translate(_VALUE_TABLE))
_ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])
_reserved = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
_field_name = _token.filter(lambda n: n.lower() not in _reserved)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, dict]:
    method = draw(_token.filter(lambda m: m not in (b"CONNECT",)))
    path = draw(_path)
    query = draw(_query)
    target = path if query is None else path + b"?" + query
    version = draw(st.sampled_from([b"1.0", b"1.1"]))
    fields = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(_field_name)
        value = draw(_value).strip(b" \t")
        fields.append((name, value, draw(_ows), draw(_ows)))
    if version == b"1.1" or draw(st.booleans()):
        host = draw(st.sampled_from([b"example.com", b"h:8080", b"[::1]:1", b""]))
        fields.insert(
            draw(st.integers(0, len(fields))), (draw(st.sampled_from([b"Host", b"host", b"HOST"])), host, b" ", b"")
        )
    body = draw(st.binary(max_size=200))
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == b"1.1" else ["none", "length"]))
    if framing == "none":
        body = b""
    raw_body = b""
    if framing == "length":
        fields.append((b"Content-Length", str(len(body)).encode(), b" ", b""))
        raw_body = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked", b" ", b""))
        raw_body = draw(chunked_encoding(body))
    lines = [method + b" " + target + b" HTTP/" + version]
    lines += [n + b":" + l + v + r for n, v, l, r in fields]
    data = draw(st.sampled_from([b"", b"\r\n"])) + head(*lines) + raw_body
    expected = dict(
        method=method,
        target=target,
        path=path,
        query=query or b"",
        http_version=version.decode(),
        headers=tuple((n.lower(), v) for n, v, _, _ in fields),
        keep_alive=version == b"1.1",
        has_body=bool(body) or framing == "chunked",
        body=body,
    )
    return data, expected


_ext = st.one_of(
    st.just(b""),
    st.builds(lambda n: b";" + n, _token),
    st.builds(lambda n, v: b" ; " + n + b"=" + v, _token, _token),
    st.builds(lambda n: b';q="' + n + b'"', _token),
)


@st.composite
def chunked_encoding(draw: st.DrawFn, body: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        size = draw(st.integers(1, max(1, len(body) - pos)))
        piece = body[pos : pos + size]
        digits = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(piece)
        out.append(digits.encode() + draw(_ext) + b"\r\n" + piece + b"\r\n")
        pos += size
    out.append(b"0" + draw(_ext) + b"\r\n")
    trailers = draw(st.lists(st.tuples(_field_name, _value), max_size=3))
    out.extend(n + b": " + v.strip(b" \t") + b"\r\n" for n, v in trailers)
    out.append(b"\r\n")
    return b"".join(out)


@PROPS
@given(req=valid_requests(), points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_property_valid_requests_parse_the_same_in_any_split(req: tuple[bytes, dict], points: list[int]) -> None:
    data, expected = req
    r = run(data, pieces=[[data], _cuts(data, points), [data[i : i + 1] for i in range(len(data))]])
    assert r.error is None, r.error
    got = r.events[0][1]
    assert got == Req(
        expected["method"],
        expected["target"],
        expected["path"],
        expected["query"],
        expected["http_version"],
        expected["headers"],
        expected["keep_alive"],
        False,
        expected["has_body"],
        None,
    )
    body = b"".join(e[1] for e in r.events if e[0] == "data")
    assert body == expected["body"]
    tail = r.events[1:]
    if got.has_body:
        assert tail[-2] == ("eom",)
    assert tail[-1] == (("need_data",) if got.keep_alive else ("we_close",))


@PROPS
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=64), max_size=12),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10),
)
def test_property_chunked_body_round_trips(pieces: list[bytes], points: list[int]) -> None:
    # our own chunked response framing, read back by our request parser
    out = H1Connection()
    out.receive_data(get(b"/", b"Host: h"))
    assert isinstance(out.next_event(), Request)
    wire = out.send_response(200, [])
    assert wire.endswith(b"transfer-encoding: chunked\r\n\r\n")
    body = b"".join(out.send_data(p) for p in pieces) + out.send_end()
    data = get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"PUT") + body
    r = run(data, pieces=[[data], _cuts(data, points), [data[i : i + 1] for i in range(len(data))]])
    assert r.events[-2:] == [("eom",), ("need_data",)]
    assert b"".join(e[1] for e in r.events if e[0] == "data") == b"".join(pieces)


@PROPS
@given(
    body=st.binary(max_size=300),
    data=st.data(),
)
def test_property_generated_chunked_encoding_round_trips(body: bytes, data: st.DataObject) -> None:
    encoded = data.draw(chunked_encoding(body))
    wire = get(b"/", b"Host: h", b"Transfer-Encoding: chunked", method=b"POST") + encoded
    points = data.draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
    r = run(wire, pieces=[[wire], _cuts(wire, points)])
    assert r.error is None
    assert r.events[-2:] == [("eom",), ("need_data",)]
    assert b"".join(e[1] for e in r.events if e[0] == "data") == body


_LIMITS = H1Limits(max_request_line=32, max_head_size=100, max_trailer_size=40)


@PROPS
@given(
    line_len=st.integers(min_value=15, max_value=40),
    value_len=st.integers(min_value=0, max_value=90),
    trailer_len=st.integers(min_value=0, max_value=50),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_property_limits_do_not_depend_on_how_bytes_arrive(
    line_len: int, value_len: int, trailer_len: int, points: list[int]
) -> None:
    line = line_of(line_len)
    start = line + b"\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX: "
    data = start + b"v" * value_len + b"\r\n\r\n"
    head_size = len(start) + value_len
    trailer = b"T: " + b"t" * trailer_len
    data += b"0\r\n" + trailer + b"\r\n\r\n"
    ways = [[data], [data[i : i + 1] for i in range(len(data))], _cuts(data, points)]
    r = run(data, limits=_LIMITS, pieces=ways)
    if line_len > 32:
        assert r.events == [("error", 414)]
    elif head_size > 100:
        assert r.events == [("error", 431)]
    elif len(trailer) > 40:
        assert r.events[1:] == [("error", 431)]
    else:
        assert r.events[1:] == [("eom",), ("need_data",)]


# --- send_response(complete_body=...): the whole response in one call ---------


def _ready(request: bytes) -> H1Connection:
    conn = H1Connection()
    conn.receive_data(request)
    assert isinstance(conn.next_event(), Request)
    return conn


def test_complete_body_with_content_length_matches_separate_calls() -> None:
    one = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    two = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    headers = [(b"content-length", b"5")]
    whole = one.send_response(200, headers, complete_body=b"hello")
    parts = two.send_response(200, headers) + two.send_data(b"hello") + two.send_end()
    assert whole == parts == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert one.response_complete and one.keep_alive
    one.start_next_cycle()


def test_complete_body_chunked_and_empty() -> None:
    conn = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.send_response(200, [], complete_body=b"abc").endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    conn.start_next_cycle()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.next_event()
    assert conn.send_response(200, [], complete_body=b"").endswith(b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")


def test_complete_body_head_and_http10() -> None:
    head = _ready(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    out = head.send_response(200, [(b"content-length", b"5")], complete_body=b"hello")
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    old = _ready(b"GET / HTTP/1.0\r\n\r\n")
    out = old.send_response(200, [], complete_body=b"hi")
    assert out == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhi" and not old.keep_alive


@pytest.mark.parametrize("body", [b"1234", b"123456"])
def test_complete_body_contradicting_content_length_produces_nothing(body: bytes) -> None:
    conn = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with pytest.raises(LocalProtocolError, match="Content-Length"):
        conn.send_response(200, [(b"content-length", b"5")], complete_body=body)
    assert not conn.response_started and not conn.keep_alive


def test_frame_data_for_bytes_written_elsewhere() -> None:
    """frame_data (sendfile): the framing around bytes the caller writes itself."""
    conn = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    conn.send_response(200, [(b"content-length", b"10")])
    assert conn.frame_data(6) == (b"", b"")
    with pytest.raises(LocalProtocolError, match="longer than its Content-Length"):
        conn.frame_data(5)
    assert conn.frame_data(4) == (b"", b"") and conn.send_end() == b""
    chunked = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    chunked.send_response(200, [])
    assert chunked.frame_data(300) == (b"12c\r\n", b"\r\n") and chunked.send_end() == b"0\r\n\r\n"
    head = _ready(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head.send_response(200, [(b"content-length", b"10")])
    assert head.frame_data(10) is None  # no body on the wire
    old = _ready(b"GET / HTTP/1.0\r\n\r\n")
    old.send_response(200, [])
    assert old.frame_data(3) == (b"", b"")


def test_a_cached_header_block_still_obeys_each_connections_limit() -> None:
    """Header blocks are cached across connections; the field count limit is per connection."""
    request = get(b"/", b"Host: a", b"Accept: */*", b"X-A: 1")
    assert list(the_request(request).headers) == [(b"host", b"a"), (b"accept", b"*/*"), (b"x-a", b"1")]
    assert rejected(request, 431, limits=H1Limits(max_header_count=2))


def test_a_cached_header_block_gives_each_request_its_own_list() -> None:
    conn = H1Connection()
    request = get(b"/", b"Host: a", b"Connection: keep-alive")
    conn.receive_data(request + request)
    first = conn.next_event()
    assert isinstance(first, Request)
    first.headers.append((b"x-added", b"by the app"))
    conn.send_response(200, [(b"content-length", b"0")])
    conn.send_end()
    conn.start_next_cycle()
    second = conn.next_event()
    assert isinstance(second, Request)
    assert second.headers == [(b"host", b"a"), (b"connection", b"keep-alive")]
    # what a cached block says about framing is per request: 1.0 vs 1.1, Expect
    old = get(b"/", b"Host: a", b"Expect: 100-continue", version=b"1.0")
    new = get(b"/", b"Host: a", b"Expect: 100-continue")
    for _ in range(2):
        assert not the_request(old).expect_continue and the_request(new).expect_continue


def test_response_headers_described_once_are_framed_per_request() -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    for _ in range(2):  # the second time from the cache
        get_ = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert get_.send_response(200, headers, server_line=b"server: s\r\n", complete_body=b"hi") == (
            b"HTTP/1.1 200 OK\r\nserver: s\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi"
        )
        head = _ready(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert head.send_response(200, headers, complete_body=b"hi").endswith(b"content-length: 2\r\n\r\n")
        old = _ready(b"GET / HTTP/1.0\r\n\r\n")
        assert old.send_response(200, tuple(headers), complete_body=b"hi").endswith(
            b"content-length: 2\r\nconnection: close\r\n\r\nhi"
        )
        with pytest.raises(LocalProtocolError, match="Content-Length"):
            _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").send_response(200, headers, complete_body=b"h")
    # the app's own Server/Date and Connection: close, from the cache too
    own = [(b"server", b"app"), (b"date", b"today"), (b"connection", b"close")]
    for _ in range(2):
        conn = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        out = conn.send_response(200, own, server_line=b"server: s\r\n", date_line=b"date: d\r\n", complete_body=b"")
        assert out.startswith(b"HTTP/1.1 200 OK\r\nserver: app\r\ndate: today\r\n")
        assert b"server: s" not in out and b"date: d" not in out
        assert b"connection: close\r\n" in out and not conn.keep_alive


@pytest.mark.parametrize(
    "headers",
    [
        [[b"content-length", b"2"], [b"x-a", b"b"]],  # list pairs: unhashable, described every time
        iter([(b"content-length", b"2"), (b"x-a", b"b")]),  # any iterable, read once
        ((b"content-length", b"2"), (b"x-a", b"b")),
    ],
)
def test_response_headers_of_any_iterable_shape(headers: Any) -> None:
    conn = _ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.send_response(200, headers, complete_body=b"hi") == (
        b"HTTP/1.1 200 OK\r\nx-a: b\r\ncontent-length: 2\r\n\r\nhi"
    )
