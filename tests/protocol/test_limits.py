"""Memory and work limits of the sans-IO cores and the read budget, bytes in, events out.

What a hostile client can make a core hold or do per call: HTTP/1.1 chunk
floods become one Data event per batch, validation caches stay bounded in
bytes, HTTP/2 and WebSocket frames that carry nothing end the connection past
a threshold, one call handles a bounded number of frames, refused HTTP/2
streams are not counted as resets, and a compressed WebSocket message is not
inflated beyond the room its reader gives. The integration side (real
sockets, RSS, latency) is tests/hostile.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import hpack
import pytest

from heron.asgi.budget import PIECE_OVERHEAD, BodyBuffer, ReadBudget
from heron.protocol._cache import ENTRY_OVERHEAD, BoundedCache
from heron.protocol.errors import WebSocketProtocolError
from heron.protocol.http1 import CHUNKS_PER_EVENT, NEED_DATA, Data, EndOfMessage, H1Connection, Request
from heron.protocol.http1 import grammar as http1_module
from heron.protocol.http2 import (
    FRAMES_PER_CALL,
    PREFACE,
    ConnectionEnded,
    DataReceived,
    H2Core,
    H2Limits,
    RequestReceived,
)
from heron.protocol.permessage_deflate import DeflateParams
from heron.protocol.websocket import (
    NEED_DATA as WS_NEED_DATA,
)
from heron.protocol.websocket import (
    NO_ROOM,
    YIELD,
    BytesMessage,
    Pong,
    TextMessage,
    WebSocketConnection,
)

# --- the read budget -----------------------------------------------------------


def test_budget_pauses_at_its_limit_and_resumes_at_half() -> None:
    calls: list[str] = []
    budget = ReadBudget(100, lambda: calls.append("pause"), lambda: calls.append("resume"))
    budget.charge(60)
    assert calls == [] and budget.room == 40
    budget.charge(40)
    assert calls == ["pause"] and budget.paused
    budget.charge(10)  # paused once only
    budget.release(50)
    assert calls == ["pause"]  # 60 held: above half
    budget.release(10)
    assert calls == ["pause", "resume"] and not budget.paused and budget.held == 50


def test_budget_stall_pauses_whatever_is_held_and_resumes_on_the_next_release_below_half() -> None:
    calls: list[str] = []
    budget = ReadBudget(100, lambda: calls.append("pause"), lambda: calls.append("resume"))
    budget.charge(30)
    budget.stall()
    assert calls == ["pause"]
    budget.release(10)
    assert calls == ["pause", "resume"]


def test_body_buffer_coalesces_small_pieces_and_charges_what_they_cost() -> None:
    budget = ReadBudget(1 << 30)
    body = BodyBuffer(budget)
    for _ in range(100_000):
        body.append(b"x")
    assert len(body.pieces) == 1 and body.size == 100_000
    assert budget.held == 100_000 + PIECE_OVERHEAD  # one object, not 100,000
    big = b"y" * 8192
    body.append(big)
    assert body.pieces[-1] is big  # kept by reference: no copy
    assert budget.held == 100_000 + 8192 + 2 * PIECE_OVERHEAD
    assert body.take() == b"x" * 100_000 + big
    assert budget.held == 0 and body.size == 0


def test_body_buffer_hands_a_single_big_piece_over_without_a_copy() -> None:
    body = BodyBuffer(ReadBudget(1 << 20))
    piece = b"z" * 10_000
    body.append(piece)
    assert body.take() is piece


def test_body_buffer_hands_pieces_over_one_by_one_without_copies() -> None:
    budget = ReadBudget(1 << 30)
    body = BodyBuffer(budget)
    first, second = b"a" * 10_000, b"b" * 20_000
    body.append(first)
    body.append(second)
    body.append(b"c")  # a small tail, coalesced into its own bytearray
    body.append(b"d")
    assert budget.held == 30_002 + 3 * PIECE_OVERHEAD
    assert body.take_next() is first  # the objects that arrived, never joined
    assert budget.held == 20_002 + 2 * PIECE_OVERHEAD and body.size == 20_002
    assert body.take_next() is second
    tail = body.take_next()
    assert tail == b"cd" and type(tail) is bytes
    assert budget.held == 0 and body.size == 0 and not body.pieces


# --- HTTP/1.1: chunk floods ------------------------------------------------------

HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_many_small_chunks_are_one_data_event_per_batch() -> None:
    conn = H1Connection()
    n = 3 * CHUNKS_PER_EVENT + 5
    conn.receive_data(HEAD + b"1\r\nx\r\n" * n + b"0\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    events = []
    while True:
        event = conn.next_event()
        events.append(event)
        if isinstance(event, EndOfMessage):
            break
    data = [e for e in events if isinstance(e, Data)]
    assert len(data) == 4  # ceil(n / CHUNKS_PER_EVENT)
    assert all(len(e.data) <= CHUNKS_PER_EVENT for e in data)
    assert b"".join(e.data for e in data) == b"x" * n


def test_chunks_split_anywhere_give_the_same_body() -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"ab", b"c", b"defgh", b"i" * 20)) + b"0\r\n\r\n"
    wire = HEAD + body
    for cut in range(len(HEAD), len(wire)):
        conn = H1Connection()
        got = b""
        for piece in (wire[:cut], wire[cut:]):
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, EndOfMessage):
                    break
                if isinstance(event, Data):
                    got += event.data
        assert got == b"abcdefgh" + b"i" * 20, cut
        assert isinstance(event, EndOfMessage), cut


def test_a_malformed_chunk_after_good_ones_gives_their_data_first() -> None:
    conn = H1Connection()
    conn.receive_data(HEAD + b"1\r\nx\r\n1\r\ny\r\nzz\r\n")
    conn.next_event()
    event = conn.next_event()
    assert isinstance(event, Data) and event.data == b"xy"
    with pytest.raises(Exception, match="invalid chunk size line"):
        conn.next_event()


# --- caches bounded in bytes -------------------------------------------------------


def test_bounded_cache_never_keeps_big_entries_and_starts_over_when_full() -> None:
    cache: BoundedCache[bytes, int] = BoundedCache(max_bytes=10 * (100 + ENTRY_OVERHEAD), max_entry=100)
    cache.put(b"big", 1, 101)
    assert b"big" not in cache
    for i in range(10):
        cache.put(b"k%d" % i, i, 100)
    assert len(cache) == 10
    cache.put(b"one more", 0, 100)
    assert list(cache) == [b"one more"] and cache.used == 100 + ENTRY_OVERHEAD


def cache_bytes() -> int:
    caches = [
        http1_module._VALID_HOSTS,
        http1_module._VALID_LINES,
        http1_module._REQUEST_LINES,
        http1_module._FIELD_LINES,
        http1_module._FIELD_BLOCKS,
        http1_module._RESPONSE_FIELDS,
    ]
    return sum(c.max_bytes for c in caches)


def test_http1_caches_stay_small_whatever_clients_send() -> None:
    assert cache_bytes() <= 1100 * 1024  # about 1 MiB per process in all
    for i in range(3000):
        conn = H1Connection()
        long_line = b"x-unique-%d: %s" % (i, b"v" * 600)
        conn.receive_data(b"GET /%d?%s HTTP/1.1\r\nHost: h%d.example\r\n%s\r\n\r\n" % (i, b"q" * 500, i, long_line))
        assert isinstance(conn.next_event(), Request)
    for cache in (http1_module._REQUEST_LINES, http1_module._FIELD_LINES, http1_module._FIELD_BLOCKS):
        assert cache.used <= cache.max_bytes
    # a field line over the entry limit is never kept
    conn = H1Connection()
    huge = b"x-huge: " + b"h" * 30_000
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n" + huge + b"\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    assert huge not in http1_module._FIELD_LINES


# --- HTTP/2 -------------------------------------------------------------------------

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING = 0, 1, 2, 3, 4, 6
END_STREAM, END_HEADERS = 0x1, 0x4
ENHANCE_YOUR_CALM, REFUSED_STREAM = 0xB, 0x7


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def connected(limits: H2Limits | None = None) -> H2Core:
    core = H2Core(limits, clock=lambda: 0.0)
    core.initiate()
    core.data_to_send()
    # the client's SETTINGS, and its ACK of ours
    assert core.receive_data(PREFACE + frame(SETTINGS, 0, 0) + frame(SETTINGS, 0x1, 0)) == []
    core.data_to_send()
    return core


def sent_frames(core: H2Core) -> list[tuple[int, int, bytes]]:
    data = core.data_to_send()
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        kind, sid = data[3], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        out.append((kind, sid, data[9 : 9 + length]))
        data = data[9 + length :]
    return out


def goaway_code(core: H2Core) -> int | None:
    for kind, _, payload in sent_frames(core):
        if kind == 7:
            return int.from_bytes(payload[4:8], "big")
    return None


def post(enc: hpack.Encoder, sid: int) -> bytes:
    fields = [(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
    return frame(HEADERS, END_HEADERS, sid, enc.encode(fields))


@pytest.mark.parametrize(
    "noop",
    [
        frame(DATA, 0, 1),  # empty DATA without END_STREAM
        frame(DATA, 0x8, 1, b"\x00"),  # padded, still nothing in it
        frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10"),
        frame(0x42, 0, 0, b"extension"),  # a type we don't know
        frame(PING, 0x1, 0, b"12345678"),  # an ACK of a PING we never sent
        frame(SETTINGS, 0x1, 0),  # an ACK of SETTINGS we never sent
    ],
    ids=["empty-data", "padded-empty-data", "priority", "unknown-type", "ping-ack", "settings-ack"],
)
def test_frames_that_carry_nothing_end_in_enhance_your_calm(noop: bytes) -> None:
    core = connected(H2Limits(max_empty_frames=50))
    enc = hpack.Encoder()
    assert core.receive_data(post(enc, 1))  # stream 1 is open
    core.data_to_send()
    assert not any(isinstance(e, ConnectionEnded) for e in core.receive_data(noop * 50))
    events = core.receive_data(noop)
    assert any(isinstance(e, ConnectionEnded) and e.error_code == ENHANCE_YOUR_CALM for e in events)
    assert goaway_code(core) == ENHANCE_YOUR_CALM


def test_empty_data_with_end_stream_is_not_a_noop() -> None:
    core = connected(H2Limits(max_empty_frames=5))
    enc = hpack.Encoder()
    for sid in range(1, 40, 2):
        core.receive_data(post(enc, sid) + frame(DATA, END_STREAM, sid))
        core.stream_done(sid)
    assert not core.closed


def test_empty_frames_are_counted_per_window() -> None:
    now = [0.0]
    core = H2Core(H2Limits(max_empty_frames=10), clock=lambda: now[0])
    core.initiate()
    core.receive_data(PREFACE + frame(SETTINGS, 0, 0))
    for _ in range(5):
        core.receive_data(frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10") * 10)
        now[0] += 11.0  # a new window each time
    assert not core.closed


def test_refused_streams_are_not_resets_and_the_accepted_ones_go_on() -> None:
    core = connected(H2Limits(max_concurrent_streams=100, max_resets=200))
    enc = hpack.Encoder()
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
    wire = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid, enc.encode(fields)) for sid in range(1, 2000, 2))
    events: list[Any] = []
    while True:  # 1000 streams: more than one call's worth of frames
        events += core.receive_data(wire)
        wire = b""
        if not core.input_pending:
            break
    assert not core.closed
    accepted = [e.stream_id for e in events if isinstance(e, RequestReceived)]
    assert len(accepted) == 100
    refused = [
        sid for kind, sid, p in sent_frames(core) if kind == RST_STREAM and p == REFUSED_STREAM.to_bytes(4, "big")
    ]
    assert len(refused) == 900
    for sid in accepted:
        core.send_headers(sid, 200, [(b"content-length", b"0")], True)
    assert not core.closed and len([f for f in sent_frames(core) if f[0] == HEADERS]) == 100


def test_a_client_that_keeps_opening_refused_streams_gets_enhance_your_calm() -> None:
    core = connected(H2Limits(max_concurrent_streams=1, max_resets=10))  # 100 refusals allowed
    enc = hpack.Encoder()
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
    wire = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid, enc.encode(fields)) for sid in range(1, 206, 2))
    events = core.receive_data(wire)
    assert any(isinstance(e, ConnectionEnded) and e.error_code == ENHANCE_YOUR_CALM for e in events)


def test_one_call_handles_a_bounded_number_of_frames() -> None:
    core = connected()
    enc = hpack.Encoder()
    core.receive_data(post(enc, 1))
    tiny = frame(DATA, 0, 1, b"x")
    n = FRAMES_PER_CALL * 2 + 10
    events = core.receive_data(tiny * n)
    assert core.input_pending
    assert len([e for e in events if isinstance(e, DataReceived)]) == FRAMES_PER_CALL
    total = len(events)
    events = core.receive_data(b"")
    assert core.input_pending and len(events) == FRAMES_PER_CALL
    total += len(events)
    events = core.receive_data(b"")
    assert not core.input_pending
    total += len(events)
    assert total == n


def test_content_length_is_reported_with_the_request() -> None:
    core = connected()
    enc = hpack.Encoder()
    fields = [(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "a"), ("content-length", "12")]
    (event,) = core.receive_data(frame(HEADERS, END_HEADERS, 1, enc.encode(fields)))
    assert isinstance(event, RequestReceived) and event.content_length == 12


# --- WebSocket ----------------------------------------------------------------------

MASK = b"\x01\x02\x03\x04"


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


def deflated(data: bytes) -> bytes:
    obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = obj.compress(data) + obj.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def drain(conn: WebSocketConnection) -> list[Any]:
    out = []
    while True:
        event = conn.next_event()
        if event is WS_NEED_DATA or event is NO_ROOM:
            out.append(event)
            return out
        if event is not YIELD:
            out.append(event)


def test_a_compressed_message_is_inflated_only_as_far_as_the_room() -> None:
    size = 4 * 1024 * 1024
    conn = WebSocketConnection(max_message_size=8 * 1024 * 1024, deflate=DeflateParams())
    conn.room = 8 * 1024 * 1024 - 1024 * 1024  # 1 MiB held by messages the app has not taken
    wire = ws_frame(0x2, deflated(b"\0" * size), rsv1=True) + ws_frame(0x1, b"next")
    conn.receive_data(wire)
    assert len(wire) < 10_000
    conn.room = 1024 * 1024  # what is left for this message
    assert drain(conn) == [NO_ROOM]
    assert conn._msg_size <= 1024 * 1024  # inflated no further than the room
    conn.room = 2 * 1024 * 1024
    assert drain(conn) == [NO_ROOM]
    assert conn._msg_size <= 2 * 1024 * 1024
    conn.room = 8 * 1024 * 1024  # the app took what it had
    events = drain(conn)
    assert events == [BytesMessage(b"\0" * size), TextMessage("next"), WS_NEED_DATA]


def test_room_limited_inflation_gives_the_same_message_at_any_room() -> None:
    data = bytes(range(256)) * 4000 + b"tail"
    wire = ws_frame(0x2, deflated(data), rsv1=True)
    for room in (1, 1000, 65536, 300_000, len(data)):
        conn = WebSocketConnection(max_message_size=2 * len(data), deflate=DeflateParams())
        conn.receive_data(wire)
        got = []
        while True:
            conn.room = conn._msg_size + room  # the caller makes room each time
            event = conn.next_event()
            if event is NO_ROOM:
                continue
            got.append(event)
            break
        assert got == [BytesMessage(data)], room


def test_a_fragmented_binary_message_in_tiny_pieces_is_one_buffer() -> None:
    n = 20_000
    wire = ws_frame(0x2, b"a", fin=False) + ws_frame(0x0, b"bc", fin=False) * n + ws_frame(0x0, b"d")
    conn = WebSocketConnection()
    conn.receive_data(wire)
    events = drain(conn)
    assert events == [BytesMessage(b"a" + b"bc" * n + b"d"), WS_NEED_DATA]


def test_one_call_handles_a_bounded_number_of_frames_then_yields() -> None:
    conn = WebSocketConnection()
    conn.receive_data(ws_frame(0x1, b"x", fin=False) + ws_frame(0x0, b"y", fin=False) * 2500 + ws_frame(0x0, b"z"))
    assert conn.next_event() is YIELD
    assert conn.next_event() is YIELD
    assert conn.next_event() == TextMessage("x" + "y" * 2500 + "z")


@pytest.mark.parametrize(
    "noop",
    [ws_frame(0x0, b"", fin=False), ws_frame(0xA, b"beat")],
    ids=["empty-continuation", "unsolicited-pong"],
)
def test_frames_that_carry_nothing_close_with_1008(noop: bytes) -> None:
    conn = WebSocketConnection(max_empty_frames=100, clock=lambda: 0.0)
    conn.receive_data(ws_frame(0x1, b"start", fin=False) + noop * 100)
    events = drain(conn)
    assert all(e is WS_NEED_DATA or isinstance(e, Pong) for e in events)
    conn.receive_data(noop)
    with pytest.raises(WebSocketProtocolError) as info:
        drain(conn)
    assert info.value.close_code == 1008


def test_an_empty_final_fragment_is_not_a_noop() -> None:
    conn = WebSocketConnection(max_empty_frames=3, clock=lambda: 0.0)
    conn.receive_data(ws_frame(0x1, b"") * 50)
    assert drain(conn) == [TextMessage("")] * 50 + [WS_NEED_DATA]
