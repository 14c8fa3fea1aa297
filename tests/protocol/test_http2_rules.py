"""RFC 9113 rules for the HTTP/2 core, as a table: what a client sends, what the core must answer.

Each case is a run of frames sent after a valid preface and SETTINGS; the
expected answer is a connection error (GOAWAY with a code), a stream error
(RST_STREAM on a stream, with a code), or nothing at all. Every case is fed
whole, byte by byte, and split in two at every offset: the answer may not
depend on how the bytes arrive.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import hpack
import pytest

from heron.protocol.http2 import PREFACE, ConnectionEnded, H2Core, H2Limits, RequestReceived

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x5, 0x6
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def headers_block(path: str = "/") -> bytes:
    # a fresh encoder per block: literal fields without indexing change no table
    # (the core decodes each block of a case the same way whatever came first)
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "a")]
    return hpack.Encoder().encode(fields)


def request(sid: int, end_stream: bool = False) -> bytes:
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, headers_block())


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


class Answer(NamedTuple):
    kind: str  # "goaway", "rst" or "none"
    code: int = 0
    sid: int = 0


def goaway(code: int) -> Answer:
    return Answer("goaway", code)


def rst(sid: int, code: int) -> Answer:
    return Answer("rst", code, sid)


NOTHING = Answer("none")


def answer_of(output: bytes) -> Answer:
    """The first GOAWAY (with an error) or RST_STREAM in the core's output."""
    pos = 0
    while pos + 9 <= len(output):
        length = int.from_bytes(output[pos : pos + 3], "big")
        kind, sid = output[pos + 3], int.from_bytes(output[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        payload = output[pos + 9 : pos + 9 + length]
        if kind == GOAWAY and int.from_bytes(payload[4:8], "big") != NO_ERROR:
            return goaway(int.from_bytes(payload[4:8], "big"))
        if kind == RST_STREAM:
            return rst(sid, int.from_bytes(payload[:4], "big"))
        pos += 9 + length
    return NOTHING


#: one literal field whose decoded size passes the 64 KiB header list limit
_BIG_LITERAL = hpack.Encoder().encode([(":method", "POST"), ("x-big", "v" * 70000)], huffman=False)

#: name -> (frames after the preface and the client's SETTINGS, the answer, RFC 9113 section)
RULES: dict[str, tuple[bytes, Answer, str]] = {
    # --- frame layer ---
    "frame over SETTINGS_MAX_FRAME_SIZE": (frame(DATA, 0, 1, b"x" * 16385), goaway(FRAME_SIZE_ERROR), "4.2"),
    "unknown frame type is ignored": (frame(0xEE, 0, 0, b"abc") + request(1, True), NOTHING, "4.1, 5.5"),
    # --- stream states (5.1) ---
    "DATA on an idle stream": (frame(DATA, 0, 1, b"x"), goaway(PROTOCOL_ERROR), "5.1"),
    "WINDOW_UPDATE on an idle stream": (frame(WINDOW_UPDATE, 0, 1, u32(1)), goaway(PROTOCOL_ERROR), "5.1"),
    "RST_STREAM on an idle stream": (frame(RST_STREAM, 0, 1, u32(0)), goaway(PROTOCOL_ERROR), "5.1, 6.4"),
    "HEADERS on an even stream id": (request(2), goaway(PROTOCOL_ERROR), "5.1.1"),
    "HEADERS on a lower stream id": (request(5) + request(3), goaway(PROTOCOL_ERROR), "5.1.1"),
    "DATA after END_STREAM": (request(1, True) + frame(DATA, 0, 1, b"x"), rst(1, STREAM_CLOSED), "5.1"),
    "HEADERS after END_STREAM": (request(1, True) + request(1, True), rst(1, STREAM_CLOSED), "5.1"),
    "PUSH_PROMISE from a client": (
        request(1) + frame(PUSH_PROMISE, END_HEADERS, 1, u32(2) + headers_block()),
        goaway(PROTOCOL_ERROR),
        "8.4",
    ),
    # --- DATA (6.1) ---
    "DATA on stream 0": (frame(DATA, 0, 0, b"x"), goaway(PROTOCOL_ERROR), "6.1"),
    "DATA padding as long as the payload": (
        request(1) + frame(DATA, PADDED, 1, bytes([4]) + b"abc"),
        goaway(PROTOCOL_ERROR),
        "6.1",
    ),
    "DATA padding is not data": (
        request(1) + frame(DATA, PADDED | END_STREAM, 1, bytes([2]) + b"ab\0\0"),
        NOTHING,
        "6.1",
    ),
    # --- HEADERS (6.2) ---
    "HEADERS on stream 0": (frame(HEADERS, END_HEADERS, 0, headers_block()), goaway(PROTOCOL_ERROR), "6.2"),
    "HEADERS padding longer than the payload": (
        frame(HEADERS, END_HEADERS | PADDED, 1, bytes([200]) + headers_block()),
        goaway(PROTOCOL_ERROR),
        "6.2",
    ),
    "HEADERS that depends on itself": (
        frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, u32(1) + b"\x10" + headers_block()),
        rst(1, PROTOCOL_ERROR),
        "5.3.1",
    ),
    # --- PRIORITY (6.3) ---
    "PRIORITY on stream 0": (frame(PRIORITY, 0, 0, u32(1) + b"\x10"), goaway(PROTOCOL_ERROR), "6.3"),
    "PRIORITY of the wrong length": (request(1) + frame(PRIORITY, 0, 1, u32(0)), rst(1, FRAME_SIZE_ERROR), "6.3"),
    "PRIORITY that depends on itself": (
        request(1) + frame(PRIORITY, 0, 1, u32(1) + b"\x10"),
        rst(1, PROTOCOL_ERROR),
        "5.3.1",
    ),
    # (on an idle stream the stream error becomes a connection error: a RST_STREAM
    # on a stream the peer never opened is itself a protocol error, RFC 9113 6.4)
    "PRIORITY of the wrong length, idle stream": (frame(PRIORITY, 0, 1, u32(0)), goaway(FRAME_SIZE_ERROR), "6.3"),
    # --- RST_STREAM (6.4) ---
    "RST_STREAM on stream 0": (frame(RST_STREAM, 0, 0, u32(0)), goaway(PROTOCOL_ERROR), "6.4"),
    "RST_STREAM of the wrong length": (
        request(1) + frame(RST_STREAM, 0, 1, b"\0\0\0"),
        goaway(FRAME_SIZE_ERROR),
        "6.4",
    ),
    # --- SETTINGS (6.5) ---
    "SETTINGS on a stream": (frame(SETTINGS, 0, 1), goaway(PROTOCOL_ERROR), "6.5"),
    "SETTINGS not a multiple of 6": (frame(SETTINGS, 0, 0, b"\0\0\0\0\0"), goaway(FRAME_SIZE_ERROR), "6.5"),
    "SETTINGS ACK with a payload": (frame(SETTINGS, ACK, 0, b"\0" * 6), goaway(FRAME_SIZE_ERROR), "6.5"),
    "SETTINGS_ENABLE_PUSH of 2": (settings((2, 2)), goaway(PROTOCOL_ERROR), "6.5.2"),
    "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1": (settings((4, 2**31)), goaway(FLOW_CONTROL_ERROR), "6.5.2"),
    "SETTINGS_MAX_FRAME_SIZE under 16384": (settings((5, 16383)), goaway(PROTOCOL_ERROR), "6.5.2"),
    "SETTINGS_MAX_FRAME_SIZE over 2^24-1": (settings((5, 2**24)), goaway(PROTOCOL_ERROR), "6.5.2"),
    "SETTINGS_ENABLE_CONNECT_PROTOCOL of 2": (settings((8, 2)), goaway(PROTOCOL_ERROR), "RFC 8441 3"),
    "unknown setting is ignored": (settings((0x99, 7)) + request(1, True), NOTHING, "6.5.2"),
    # --- PING (6.7) ---
    "PING on a stream": (frame(PING, 0, 1, b"\0" * 8), goaway(PROTOCOL_ERROR), "6.7"),
    "PING of the wrong length": (frame(PING, 0, 0, b"\0" * 7), goaway(FRAME_SIZE_ERROR), "6.7"),
    # --- GOAWAY (6.8) ---
    "GOAWAY on a stream": (frame(GOAWAY, 0, 1, u32(0) + u32(0)), goaway(PROTOCOL_ERROR), "6.8"),
    # --- WINDOW_UPDATE (6.9) ---
    "WINDOW_UPDATE of the wrong length": (frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), goaway(FRAME_SIZE_ERROR), "6.9"),
    "WINDOW_UPDATE of 0 on the connection": (frame(WINDOW_UPDATE, 0, 0, u32(0)), goaway(PROTOCOL_ERROR), "6.9"),
    "WINDOW_UPDATE of 0 on a stream": (request(1) + frame(WINDOW_UPDATE, 0, 1, u32(0)), rst(1, PROTOCOL_ERROR), "6.9"),
    "connection window over 2^31-1": (
        frame(WINDOW_UPDATE, 0, 0, u32(2**31 - 1)),
        goaway(FLOW_CONTROL_ERROR),
        "6.9.1",
    ),
    "stream window over 2^31-1": (
        request(1) + frame(WINDOW_UPDATE, 0, 1, u32(2**31 - 1)),
        rst(1, FLOW_CONTROL_ERROR),
        "6.9.1",
    ),
    "SETTINGS_INITIAL_WINDOW_SIZE that overflows an open stream": (
        request(1) + frame(WINDOW_UPDATE, 0, 1, u32(2**31 - 1 - 65535)) + settings((4, 65536)),
        goaway(FLOW_CONTROL_ERROR),
        "6.9.2",
    ),
    # --- CONTINUATION (6.10) ---
    "CONTINUATION without HEADERS": (
        frame(CONTINUATION, END_HEADERS, 1, headers_block()),
        goaway(PROTOCOL_ERROR),
        "6.10",
    ),
    "another frame inside a header block": (
        frame(HEADERS, 0, 1, headers_block()) + frame(PING, 0, 0, b"\0" * 8),
        goaway(PROTOCOL_ERROR),
        "6.10",
    ),
    "CONTINUATION on another stream": (
        frame(HEADERS, 0, 1, headers_block()) + frame(CONTINUATION, END_HEADERS, 3, b""),
        goaway(PROTOCOL_ERROR),
        "6.10",
    ),
    "a header block split over CONTINUATION": (
        frame(HEADERS, END_STREAM, 1, headers_block()[:5]) + frame(CONTINUATION, END_HEADERS, 1, headers_block()[5:]),
        NOTHING,
        "6.10",
    ),
    "padded HEADERS without a pad length": (frame(HEADERS, END_HEADERS | PADDED, 1), goaway(FRAME_SIZE_ERROR), "4.2"),
    "HEADERS too short for its priority": (
        frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, b"\0\0"),
        goaway(FRAME_SIZE_ERROR),
        "4.2",
    ),
    "padded DATA without a pad length": (request(1) + frame(DATA, PADDED, 1), goaway(FRAME_SIZE_ERROR), "4.2"),
    "GOAWAY shorter than 8 bytes": (frame(GOAWAY, 0, 0, u32(0)), goaway(FRAME_SIZE_ERROR), "6.8"),
    "trailers without END_STREAM": (
        request(1) + frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode([("x-t", "1")])),
        rst(1, PROTOCOL_ERROR),
        "8.1",
    ),
    "a pseudo-header in trailers": (
        request(1) + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack.Encoder().encode([(":path", "/")])),
        rst(1, PROTOCOL_ERROR),
        "8.1",
    ),
    "content-length that the body doesn't match": (
        frame(HEADERS, END_HEADERS, 1, headers_block() + hpack.Encoder().encode([("content-length", "5")]))
        + frame(DATA, END_STREAM, 1, b"abc"),
        rst(1, PROTOCOL_ERROR),
        "8.1.1",
    ),
    "HEADERS again on a stream the peer reset": (
        request(1) + frame(RST_STREAM, 0, 1, u32(0x8)) + request(1, True),
        rst(1, STREAM_CLOSED),
        "5.1",
    ),
    "header block in too many frames": (
        frame(HEADERS, 0, 1, headers_block()) + frame(CONTINUATION, 0, 1, b"\x82") * 64,
        goaway(ENHANCE_YOUR_CALM),
        "CONTINUATION flood",
    ),
    "header block larger than the header list limit": (
        frame(HEADERS, 0, 1, b"\x82" * 16384) + frame(CONTINUATION, 0, 1, b"\x82" * 16384) * 5,
        goaway(ENHANCE_YOUR_CALM),
        "CONTINUATION flood",
    ),
    "decoded header list over the limit (indexed fields)": (
        frame(HEADERS, 0, 1, b"\x82" * 16384) + frame(CONTINUATION, END_HEADERS, 1, b"\x82"),
        goaway(ENHANCE_YOUR_CALM),
        "HPACK bomb",
    ),
    "decoded header list over the limit (a literal)": (
        frame(HEADERS, 0, 1, _BIG_LITERAL[:16384])
        + b"".join(
            frame(CONTINUATION, 0 if i + 16384 < len(_BIG_LITERAL) else END_HEADERS, 1, _BIG_LITERAL[i : i + 16384])
            for i in range(16384, len(_BIG_LITERAL), 16384)
        ),
        goaway(ENHANCE_YOUR_CALM),
        "HPACK bomb",
    ),
    "HPACK index beyond the tables": (
        frame(HEADERS, END_HEADERS, 1, b"\xfe"),
        goaway(COMPRESSION_ERROR),
        "RFC 7541 2.3.3",
    ),
    # --- HPACK (RFC 7541) ---
    "header block that is not HPACK": (
        frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"),
        goaway(COMPRESSION_ERROR),
        "4.3",
    ),
    # --- flow control (6.9) ---
    # (RFC 9113 6.9 lets a receiver answer a window overrun with a stream or a
    # connection error; heron ends the connection: the peer ignores what it was told)
    "DATA beyond the stream window": (
        request(1) + frame(DATA, 0, 1, b"x" * 16384) * 17,
        goaway(FLOW_CONTROL_ERROR),
        "6.9",
    ),
    "DATA beyond the connection window": (
        b"".join(request(sid) + frame(DATA, 0, sid, b"x" * 16384) * 16 for sid in (1, 3, 5, 7))
        + request(9)
        + frame(DATA, 0, 9, b"x"),
        goaway(FLOW_CONTROL_ERROR),
        "6.9",
    ),
}

#: the stream window for the flow-control case: 16 frames of 16 KiB fit, the 17th does not
LIMITS = H2Limits(initial_window_size=16 * 16384, connection_window_size=64 * 16384)


def fresh_core() -> H2Core:
    core = H2Core(LIMITS, clock=lambda: 0.0)
    core.initiate()
    core.data_to_send()
    return core


def opening() -> bytes:
    return PREFACE + frame(SETTINGS, 0, 0)


def run_case(data: bytes, pieces: list[bytes]) -> tuple[Answer, list[object]]:
    core = fresh_core()
    events: list[object] = []
    for piece in pieces:
        events += core.receive_data(piece)
        while core.input_pending:  # the caller's next turn
            events += core.receive_data(b"")
    return answer_of(core.data_to_send()), events


def splits(data: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and in two pieces at every offset."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


def _short(name: str) -> bool:
    return len(opening() + RULES[name][0]) < 2000  # byte-wise splits of the big ones add nothing


@pytest.mark.parametrize("name", list(RULES))
def test_rule(name: str) -> None:
    frames, expected, section = RULES[name]
    data = opening() + frames
    ways = splits(data) if _short(name) else [[data], [data[:9], data[9:]]]
    for pieces in ways:
        answer, events = run_case(data, pieces)
        assert answer == expected, f"RFC 9113 {section}: {name}: {answer} (pieces: {[len(p) for p in pieces]})"
        ended = [e for e in events if isinstance(e, ConnectionEnded)]
        assert bool(ended) == (expected.kind == "goaway"), (name, events)


def test_invalid_preface_is_a_connection_error() -> None:
    """RFC 9113 3.4: a client preface that is not the preface."""
    for pieces in splits(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0)):
        core = fresh_core()
        events: list[object] = []
        for piece in pieces:
            events += core.receive_data(piece)
        assert any(isinstance(e, ConnectionEnded) for e in events)
        assert answer_of(core.data_to_send()) == goaway(PROTOCOL_ERROR)


def test_a_good_request_after_ignored_frames_is_served() -> None:
    """The cases answered with nothing still deliver their request."""
    for name in (
        "unknown frame type is ignored",
        "unknown setting is ignored",
        "a header block split over CONTINUATION",
    ):
        data = opening() + RULES[name][0]
        for pieces in splits(data):
            _, events = run_case(data, pieces)
            assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [1], (name, events)
