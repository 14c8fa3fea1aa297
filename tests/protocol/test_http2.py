"""The sans-IO HTTP/2 core, driven with h2 (and hand-made frames) as the client: bytes in, bytes out."""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from heron.protocol.errors import LocalProtocolError
from heron.protocol.http2 import (
    PREFACE,
    ConnectionEnded,
    DataReceived,
    H2Core,
    H2Limits,
    RequestReceived,
    StreamEnded,
    StreamReset,
    StreamWritable,
)

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


class Pair:
    """A core and an h2 client joined by an in-memory link."""

    def __init__(
        self, limits: H2Limits | None = None, *, client_settings: dict[int, int] | None = None, clock: Any = None
    ) -> None:
        self.now = 0.0
        self.core = H2Core(limits, clock=clock or (lambda: self.now))
        self.core.initiate()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config)
        if client_settings:
            self.client.local_settings = h2.settings.Settings(client=True, initial_values=client_settings)
        self.client.initiate_connection()
        self.to_client()
        self.to_server()
        self.to_client()

    def to_server(self, data: bytes | None = None, byte_by_byte: bool = False) -> list[Any]:
        data = self.client.data_to_send() if data is None else data
        if not byte_by_byte:
            return self.core.receive_data(data)
        events: list[Any] = []
        for i in range(len(data)):
            events += self.core.receive_data(data[i : i + 1])
        return events

    def to_client(self) -> list[Any]:
        return self.client.receive_data(self.core.data_to_send())

    def request(
        self, path: str = "/", method: str = "GET", extra: list[tuple[bytes, bytes]] | None = None, end: bool = True
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":path", path.encode()),
            (b":authority", b"example.com"),
        ]
        self.client.send_headers(sid, fields + (extra or []), end_stream=end)
        return sid


def raw_headers(
    enc: hpack.Encoder, fields: list[tuple[str, str]], sid: int = 1, flags: int = END_STREAM | END_HEADERS
) -> bytes:
    return frame(HEADERS, flags, sid, enc.encode(fields))


REQ = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]


def connected(limits: H2Limits | None = None) -> H2Core:
    core = H2Core(limits)
    core.initiate()
    core.data_to_send()
    assert core.receive_data(PREFACE + frame(SETTINGS, 0, 0)) == []
    core.data_to_send()
    return core


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte-by-byte"])
def test_request_events(byte_by_byte: bool) -> None:
    pair = Pair()
    sid = pair.request("/p?q=1", "POST", [(b"cookie", b"a=1"), (b"x-y", b"z"), (b"cookie", b"b=2")], end=False)
    pair.client.send_data(sid, b"hello", end_stream=True)
    events = pair.to_server(byte_by_byte=byte_by_byte)
    body = b"".join(e.data for e in events if isinstance(e, DataReceived))
    request = events[0]
    assert request == RequestReceived(
        1,
        b"POST",
        b"https",
        b"example.com",
        b"/p",
        b"q=1",
        None,
        [(b"host", b"example.com"), (b"x-y", b"z"), (b"cookie", b"a=1; b=2")],
        False,
    )
    assert body == b"hello" and events[-1] == StreamEnded(1)


@pytest.mark.parametrize(
    ("fields", "forwarded"),
    [
        ([(b"accept", b"*/*")], False),
        ([(b"x-forwarded-for", b"10.0.0.1")], True),
        ([(b"x-forwarded-proto", b"https")], True),
        ([(b"forwarded", b"for=10.0.0.1")], True),
    ],
)
def test_request_says_whether_it_carries_proxy_fields(fields: list[tuple[bytes, bytes]], forwarded: bool) -> None:
    pair = Pair()
    # three times: the third block is the second's bytes (all indexed), answered from the core's cache
    for _ in range(3):
        pair.request("/", "GET", fields)
    requests = [e for e in pair.to_server() if isinstance(e, RequestReceived)]
    assert [r.forwarded for r in requests] == [forwarded] * 3


def test_settings_advertised() -> None:
    pair = Pair(H2Limits(max_concurrent_streams=7, max_header_list_size=5000, initial_window_size=70000))
    remote = pair.client.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.max_header_list_size == 5000
    assert remote.initial_window_size == 70000
    assert remote.enable_connect_protocol == 1
    assert pair.client.outbound_flow_control_window == 4 * 70000


MALFORMED = {
    "uppercase name": REQ + [("X-A", "1")],
    "space in name": REQ + [("x a", "1")],
    "cr lf in value": REQ + [("x-a", "a\r\nb")],
    "nul in value": REQ + [("x-a", "a\x00b")],
    "leading space": REQ + [("x-a", " b")],
    "trailing tab": REQ + [("x-a", "b\t")],
    "connection": REQ + [("connection", "close")],
    "keep-alive": REQ + [("keep-alive", "5")],
    "upgrade": REQ + [("upgrade", "websocket")],
    "transfer-encoding": REQ + [("transfer-encoding", "chunked")],
    "proxy-connection": REQ + [("proxy-connection", "x")],
    "te gzip": REQ + [("te", "gzip")],
    "unknown pseudo": REQ + [(":foo", "x")],
    ":status in request": REQ + [(":status", "200")],
    "pseudo after regular": REQ[:3] + [("x-a", "b"), (":authority", "x")],
    "duplicate :method": REQ + [(":method", "GET")],
    "duplicate :path": REQ + [(":path", "/x")],
    "missing :method": REQ[1:],
    "missing :scheme": [REQ[0]] + REQ[2:],
    "missing :path": REQ[:2] + REQ[3:],
    "empty :path": REQ[:2] + [(":path", "")] + REQ[3:],
    "relative :path": REQ[:2] + [(":path", "x")] + REQ[3:],
    "space in :path": REQ[:2] + [(":path", "/a b")] + REQ[3:],
    "* with GET": REQ[:2] + [(":path", "*")] + REQ[3:],
    "bad method": [(":method", "G T")] + REQ[1:],
    "host differs from :authority": REQ + [("host", "b")],
    "content-length not digits": REQ + [("content-length", "1x")],
    "two content-lengths": REQ + [("content-length", "0"), ("content-length", "0")],
    "content-length with END_STREAM": REQ + [("content-length", "3")],
    ":protocol without CONNECT": REQ + [(":protocol", "websocket")],
    "CONNECT with :path": [(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")],
    "CONNECT without :authority": [(":method", "CONNECT")],
}


@pytest.mark.parametrize("fields", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_is_a_stream_error(fields: list[tuple[str, str]]) -> None:
    core = connected()
    enc = hpack.Encoder()
    events = core.receive_data(raw_headers(enc, fields, 1) + raw_headers(enc, REQ, 3))
    assert [type(e) for e in events] == [RequestReceived, StreamEnded] and events[0].stream_id == 3
    out = core.data_to_send()
    assert frame(RST_STREAM, 0, 1, struct.pack(">I", 1)) in out  # PROTOCOL_ERROR, stream 1 only
    assert not core.closed


def test_valid_special_requests() -> None:
    core = connected()
    enc = hpack.Encoder()
    events = core.receive_data(
        raw_headers(enc, [(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"), (":authority", "a")], 1)
        + raw_headers(enc, REQ + [("te", "trailers"), ("host", "a")], 3)
        + raw_headers(enc, [(":method", "CONNECT"), (":authority", "a:443")], 5, END_HEADERS)
        + raw_headers(enc, [(":method", "GET"), (":scheme", "http"), (":path", "/")], 7)
    )
    requests = [e for e in events if isinstance(e, RequestReceived)]
    assert [r.path for r in requests] == [b"*", b"/", b"", b"/"]
    assert requests[1].headers == [(b"host", b"a"), (b"te", b"trailers")]
    assert requests[3].headers == []  # no :authority, no host


def test_content_length_mismatch_in_data_is_a_stream_error() -> None:
    pair = Pair()
    sid = pair.request("/", "POST", [(b"content-length", b"2")], end=False)
    assert isinstance(pair.to_server()[0], RequestReceived)
    pair.client.send_data(sid, b"abc", end_stream=True)
    other = pair.request("/other")
    events = pair.to_server()
    assert StreamReset(sid, 1, False) in events
    assert any(isinstance(e, RequestReceived) and e.stream_id == other for e in events)
    client_events = pair.to_client()
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in client_events)


def test_trailers_with_pseudo_header_reset_the_stream() -> None:
    core = connected()
    enc = hpack.Encoder()
    events = core.receive_data(
        raw_headers(enc, REQ, 1, END_HEADERS) + frame(DATA, 0, 1, b"x") + raw_headers(enc, [(":path", "/")], 1)
    )
    assert events[-1] == StreamReset(1, 1, False)


def test_request_trailers_end_the_body() -> None:
    core = connected()
    enc = hpack.Encoder()
    events = core.receive_data(
        raw_headers(enc, REQ, 1, END_HEADERS) + frame(DATA, 0, 1, b"x") + raw_headers(enc, [("x-t", "1")], 1)
    )
    assert events[1:] == [DataReceived(1, b"x"), StreamEnded(1)]


# --- flow control ----------------------------------------------------------------------------------


def test_credit_returned_only_on_acknowledge() -> None:
    pair = Pair(H2Limits(initial_window_size=65535))
    sid = pair.request("/", "POST", end=False)
    for _ in range(3):
        pair.client.send_data(sid, b"x" * 16384)
    pair.to_server()
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 65535 - 3 * 16384
    pair.core.acknowledge(sid, 3 * 16384)
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 65535


def test_padding_is_acknowledged_at_once() -> None:
    core = connected(H2Limits(initial_window_size=65535))
    enc = hpack.Encoder()
    core.receive_data(raw_headers(enc, REQ, 1, END_HEADERS))
    events = core.receive_data(frame(DATA, 0x8, 1, bytes([40000 % 256]) + b"ab" + b"\0" * (40000 % 256)))
    assert events == [DataReceived(1, b"ab")]


def test_output_chunked_to_window_and_frame_size() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 20000})
    sid = pair.request()
    pair.to_server()
    pair.core.send_headers(sid, 200, [], False)
    pair.core.send_data(sid, b"x" * 50000, True)
    assert pair.core.pending(sid) == 30000 and sid in pair.core.blocked
    events = pair.to_client()
    sizes = [len(e.data) for e in events if isinstance(e, h2.events.DataReceived)]
    assert sizes == [16384, 3616]
    pair.client.increment_flow_control_window(40000, sid)
    events = pair.to_server()
    assert events == [StreamWritable(sid)] and pair.core.pending(sid) == 0 and not pair.core.blocked
    client_events = pair.to_client()
    assert sum(len(e.data) for e in client_events if isinstance(e, h2.events.DataReceived)) == 30000
    assert any(isinstance(e, h2.events.StreamEnded) for e in client_events)


def test_response_validation() -> None:
    pair = Pair()
    sid = pair.request("/", "HEAD")
    sid2 = pair.request("/")
    pair.to_server()
    with pytest.raises(LocalProtocolError):
        pair.core.send_headers(sid2, 200, [(b"bad name", b"x")], False)
    with pytest.raises(LocalProtocolError):
        pair.core.send_headers(sid2, 200, [(b"x", b"a\nb")], False)
    pair.core.send_headers(sid2, 200, [(b"X-Up", b"1"), (b"Connection", b"close"), (b"content-length", b"3")], False)
    with pytest.raises(LocalProtocolError):
        pair.core.send_data(sid2, b"abcd", True)
    with pytest.raises(LocalProtocolError):
        pair.core.send_data(sid2, b"ab", True)
    pair.core.send_data(sid2, b"abc", True)
    pair.core.send_headers(sid, 200, [(b"content-length", b"3")], False)
    pair.core.send_data(sid, b"abc", True)  # HEAD: dropped
    events = pair.to_client()
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid2)
    assert response.headers == [(b":status", b"200"), (b"x-up", b"1"), (b"content-length", b"3")]
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived) and e.data] == [b"abc"]


def test_trailers_informational_and_push() -> None:
    pair = Pair()
    sid = pair.request("/")
    pair.to_server()
    pair.core.send_informational(sid, 103, [(b"link", b"</a>; rel=preload")])
    promised = pair.core.push(sid, b"/a.css", [(b"accept", b"text/css")])
    assert promised == 2
    pair.core.send_headers(sid, 200, [], False)
    pair.core.send_data(sid, b"body", False)
    pair.core.send_trailers(sid, [(b"x-sum", b"1")])
    pair.core.send_headers(2, 200, [], True)
    events = pair.to_client()
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("InformationalResponseReceived") < kinds.index("ResponseReceived")
    push = next(e for e in events if isinstance(e, h2.events.PushedStreamReceived))
    assert push.headers == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/a.css"),
        (b":authority", b"example.com"),
        (b"accept", b"text/css"),
    ]
    assert next(e for e in events if isinstance(e, h2.events.TrailersReceived)).headers == [(b"x-sum", b"1")]


def test_push_ignored_when_disabled() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.ENABLE_PUSH: 0})
    sid = pair.request()
    pair.to_server()
    assert pair.core.push(sid, b"/a", []) is None


# --- shutdown ---------------------------------------------------------------------------------------


def test_graceful_goaway_keeps_streams_in_flight_and_refuses_new_ones() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.core.start_shutdown()
    raw = pair.core.data_to_send()
    assert frame(GOAWAY, 0, 0, struct.pack(">II", sid, 0)) in raw
    enc = hpack.Encoder()
    # a stream the client opened before it saw the GOAWAY: refused (safe to retry)
    pair.core.receive_data(b"")
    events = pair.core.receive_data(
        frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            3,
            pair.client.encoder.encode(
                [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
            ),
        )
    )
    assert events == []
    assert frame(RST_STREAM, 0, 3, struct.pack(">I", 7)) in pair.core.data_to_send()
    del enc
    pair.core.send_headers(sid, 200, [], True)  # the stream in flight still completes
    assert pair.core.data_to_send()


def test_peer_goaway_no_error_lets_responses_finish() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    pair.client.close_connection()
    events = pair.to_server()
    assert events == [ConnectionEnded(0, True, "GOAWAY from the peer")]
    pair.core.send_headers(sid, 200, [], True)
    assert pair.core.data_to_send()


# --- DoS guards -----------------------------------------------------------------------------------------


def test_streams_beyond_the_limit_are_refused() -> None:
    core = connected(H2Limits(max_concurrent_streams=2))
    enc = hpack.Encoder()
    events = core.receive_data(b"".join(raw_headers(enc, REQ, sid) for sid in (1, 3, 5)))
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [1, 3]
    assert frame(RST_STREAM, 0, 5, struct.pack(">I", 7)) in core.data_to_send()
    core.send_headers(1, 200, [], True)  # stream 1 is closed both ways now
    events = core.receive_data(raw_headers(enc, REQ, 7))
    assert [e.stream_id for e in events] == [7, 7]
    # data on the refused stream: STREAM_CLOSED, not a connection error
    core.receive_data(frame(DATA, 0, 5, b"x"))
    assert not core.closed


def test_rapid_reset() -> None:
    clock = [0.0]
    core = H2Core(H2Limits(max_resets=10), clock=lambda: clock[0])
    core.initiate()
    core.receive_data(PREFACE + frame(SETTINGS, 0, 0))
    enc = hpack.Encoder()

    def burst(first: int, n: int) -> list[Any]:
        data = b""
        for sid in range(first, first + 2 * n, 2):
            data += raw_headers(enc, REQ, sid, END_HEADERS) + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
        return core.receive_data(data)

    events = burst(1, 10)
    assert all(isinstance(e, StreamReset) and e.remote for e in events) and len(events) == 10
    clock[0] = 11.0  # a new window
    assert not any(isinstance(e, ConnectionEnded) for e in burst(21, 10))
    events = burst(41, 1)
    assert events[-1] == ConnectionEnded(11, False, "too many stream resets (rapid reset)")
    assert frame(GOAWAY, 0, 0, struct.pack(">II", 41, 11)) in core.data_to_send()


def test_made_you_reset() -> None:
    core = connected(H2Limits(max_resets=5))
    enc = hpack.Encoder()
    data = b"".join(raw_headers(enc, REQ + [("X-Bad", "1")], sid) for sid in range(1, 13, 2))
    events = core.receive_data(data)
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == 11


def test_continuation_flood_is_bounded_by_header_list_size() -> None:
    core = connected(H2Limits(max_header_list_size=4096))
    enc = hpack.Encoder()
    events = core.receive_data(raw_headers(enc, REQ, 1, END_STREAM))
    big = frame(CONTINUATION, 0, 1, b"\x00" * 16384)
    assert core.receive_data(big) == []
    events = core.receive_data(big)
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == 11


def test_hpack_bomb() -> None:
    core = connected(H2Limits(max_header_list_size=65536))
    enc = hpack.Encoder()
    core.receive_data(raw_headers(enc, REQ + [("x-bomb", "a" * 4000)], 1))
    events = core.receive_data(frame(HEADERS, END_STREAM | END_HEADERS, 3, enc.encode(REQ) + b"\xbe" * 100))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == 11


def test_hpack_errors_are_compression_errors() -> None:
    core = connected()
    events = core.receive_data(frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x80"))
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == 9


@pytest.mark.parametrize("flood", ["ping", "settings"])
def test_control_frame_flood(flood: str) -> None:
    core = connected(H2Limits(max_control_frames=100))
    one = frame(PING, 0, 0, b"12345678") if flood == "ping" else frame(SETTINGS, 0, 0)
    assert core.receive_data(one * 60) == []
    core.output_flushed()  # the transport wrote them all out
    assert core.receive_data(one * 60) == []
    events = core.receive_data(one * 60)  # 120 replies waiting
    assert isinstance(events[-1], ConnectionEnded) and events[-1].error_code == 11


def test_settings_ack_with_payload_is_a_frame_size_error() -> None:
    core = connected()
    events = core.receive_data(frame(SETTINGS, 1, 0, b"\0\1\0\0\0\0"))
    assert events[-1].error_code == 6


def test_upgrade() -> None:
    import base64

    core = H2Core()
    settings = base64.urlsafe_b64encode(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 100000))[9:])
    core.initiate(settings)
    core.adopt_upgraded_request(b"POST", b"http", b"a")
    core.receive_data(PREFACE + frame(SETTINGS, 0, 0))
    core.send_headers(1, 200, [], False)
    core.send_data(1, b"x" * 80000, True)
    assert core.pending(1) == 80000 - 65535  # the connection window, not the stream's


# --- heron's own frame layer and HPACK encoder -------------------------------------------------------


def test_encoder_round_trips_through_hpack_with_table_size_changes() -> None:
    import random

    from heron.protocol.http2.encoder import _Encoder

    rng = random.Random(7)
    enc = _Encoder()
    dec = hpack.Decoder()
    names = [b"content-type", b"server", b"date", b"x-a", b"x-b", b"content-length", b"set-cookie", b"etag"]
    for i in range(3000):
        if i % 97 == 0:
            size = rng.choice([0, 100, 256, 4096, 8192])
            enc.set_max_size(size)
            if i % 2:
                enc.set_max_size(rng.choice([64, 4096]))
            dec.max_allowed_table_size = 4096
        fields = [(b":status", rng.choice([b"200", b"201", b"404", b"418"]))]
        for _ in range(rng.randrange(6)):
            value = rng.choice(
                [
                    b"",
                    b"text/plain",
                    b"heron",
                    bytes(rng.randrange(256) for _ in range(rng.randrange(3))).hex().encode(),
                    b"v" * rng.choice([1, 200, 1000, 5000]),
                ]
            )
            fields.append((rng.choice(names), value))
        assert [tuple(f) for f in dec.decode(enc.encode(fields), raw=True)] == fields


def test_repeated_response_heads_reuse_their_block_until_the_table_changes() -> None:
    pair = Pair()
    sids = [pair.request() for _ in range(4)]
    pair.to_server()
    heads = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    for i, sid in enumerate(sids):
        defaults = [(b"date", b"Mon, 01 Jan 2024 00:00:0%d GMT" % (i // 2))]
        pair.core.send_headers(sid, 200, heads, False, defaults)
        pair.core.send_data(sid, b"ok", True)
    events = pair.to_client()
    responses = [e.headers for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert responses == [
        [
            (b":status", b"200"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"2"),
            (b"date", b"Mon, 01 Jan 2024 00:00:0%d GMT" % (i // 2)),
        ]
        for i in range(4)
    ]


def test_request_cache_follows_the_decoders_table() -> None:
    core = connected()
    enc = hpack.Encoder()
    first = enc.encode(REQ + [("x-v", "1")])
    indexed = enc.encode(REQ + [("x-v", "1")])  # now only indexed fields
    assert not indexed.translate(None, bytes(range(0x81, 0xFF)))
    events = core.receive_data(
        raw_headers_bytes(first, 1) + raw_headers_bytes(indexed, 3) + raw_headers_bytes(indexed, 5)
    )
    requests = [e for e in events if isinstance(e, RequestReceived)]
    assert [r.headers for r in requests] == [[(b"host", b"a"), (b"x-v", b"1")]] * 3
    requests[1].headers.append((b"x-mutated", b"by the app"))
    # the same bytes mean other fields once the table changed: x-v: 2 is inserted first, and
    # the two indexes of the block now name x-v: 1 and x-v: 2 (no :authority any more)
    block = b"".join(enc.encode([(n, v)]) for n, v in REQ) + enc.encode([("x-v", "2")])
    core.receive_data(raw_headers_bytes(block, 7))
    events = core.receive_data(raw_headers_bytes(indexed, 9))
    assert events[0].headers == [(b"x-v", b"1"), (b"x-v", b"2")]


def raw_headers_bytes(block: bytes, sid: int, flags: int = END_STREAM | END_HEADERS) -> bytes:
    return frame(HEADERS, flags, sid, block)


def test_frames_after_our_reset_are_ignored_and_their_data_credited() -> None:
    core = connected(H2Limits(initial_window_size=65535, connection_window_size=65535))
    enc = hpack.Encoder()
    core.receive_data(raw_headers(enc, REQ, 1, END_HEADERS))
    core.data_to_send()
    core.reset(1, 8)
    assert frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) in core.data_to_send()
    events = core.receive_data(frame(DATA, 0, 1, b"x" * 16384) * 3 + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1)))
    assert events == [] and not core.closed
    out = core.data_to_send()
    assert frame(RST_STREAM, 0, 1, struct.pack(">I", 5)) not in out
    # credited like consumed data: back in batches of half the window
    assert frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2 * 16384)) in out


def test_frames_after_the_peers_reset_are_stream_closed() -> None:
    core = connected()
    enc = hpack.Encoder()
    core.receive_data(raw_headers(enc, REQ, 1, END_HEADERS))
    assert core.receive_data(frame(RST_STREAM, 0, 1, struct.pack(">I", 8))) == [StreamReset(1, 8, True)]
    core.data_to_send()
    core.receive_data(frame(DATA, 0, 1, b"x"))
    assert frame(RST_STREAM, 0, 1, struct.pack(">I", 5)) in core.data_to_send()
    assert not core.closed


def test_unconsumed_body_of_a_reset_stream_is_credited_to_the_connection() -> None:
    core = connected(H2Limits(initial_window_size=65535, connection_window_size=65535))
    enc = hpack.Encoder()
    core.receive_data(raw_headers(enc, REQ, 1, END_HEADERS))
    events = core.receive_data(frame(DATA, 0, 1, b"x" * 16384) * 3)
    assert sum(len(e.data) for e in events) == 3 * 16384
    core.data_to_send()
    core.receive_data(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))  # the app never read it
    assert frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 3 * 16384)) in core.data_to_send()
    core.acknowledge(1, 3 * 16384)  # late: nothing more
    assert core.data_to_send() == b""


def test_response_headers_split_into_continuation_frames() -> None:
    pair = Pair()
    sid = pair.request()
    pair.to_server()
    big = [(b"x-big-%d" % i, b"v" * 3000) for i in range(12)]
    pair.core.send_headers(sid, 200, big, True)
    raw = pair.core.data_to_send()
    assert raw[3] == HEADERS and raw[4] & END_HEADERS == 0 and CONTINUATION in raw
    events = pair.client.receive_data(raw)
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers[1:] == big


def test_peer_header_table_size_zero() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    sids = [pair.request() for _ in range(3)]
    pair.to_server()
    for sid in sids:
        pair.core.send_headers(sid, 201, [(b"x-a", b"b")], True, [(b"server", b"heron")])
    events = pair.to_client()
    assert [e.headers for e in events if isinstance(e, h2.events.ResponseReceived)] == [
        [(b":status", b"201"), (b"x-a", b"b"), (b"server", b"heron")]
    ] * 3
