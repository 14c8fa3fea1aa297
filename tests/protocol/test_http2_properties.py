"""Properties of the sans-IO HTTP/2 core (hypothesis), through its public interface only.

* Any valid run of requests gives the same events and the same output however
  its bytes are cut into reads.
* Arbitrary bytes after a valid preface never get past the core's
  protocol-error path (a GOAWAY and :class:`ConnectionEnded`, never an
  internal error), and what the core writes is always well-formed frames.
* Outbound flow control: whatever DATA the caller queues and whatever window
  credit and SETTINGS the peer sends, no DATA frame exceeds the peer's
  connection or stream window or its maximum frame size, and everything
  queued goes out, in order, once the windows allow.
* Response heads survive the core's HPACK encoder: decoded by an independent
  decoder (``hpack``), keeping its dynamic table across responses and table
  size changes, they are the fields sent (lowercased, connection-specific
  fields dropped).

The client side is hand-made frames (tests/rawclients.py) plus
``hpack.Encoder`` for request blocks.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heron.protocol.http2 import (
    PREFACE,
    ConnectionEnded,
    DataReceived,
    ErrorCodes,
    H2Core,
    RequestReceived,
    StreamEnded,
    StreamReset,
)

from ..rawclients import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    settings_frame,
)
from ..rawclients import h2_frame as frame

#: the client's connection window when nothing has been said about it (RFC 9113 6.9.2)
DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def request_block(encoder: hpack.Encoder, path: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"a")]
    return encoder.encode(fields + extra)


def parse_frames(output: bytes) -> list[tuple[int, int, int, bytes]]:
    """The core's output as (type, flags, stream id, payload); fails unless it is
    whole frames, with the stream id's reserved bit clear."""
    frames = []
    pos = 0
    while pos < len(output):
        assert len(output) - pos >= 9, f"a truncated frame head at {pos}"
        length = int.from_bytes(output[pos : pos + 3], "big")
        kind, flags = output[pos + 3], output[pos + 4]
        sid = int.from_bytes(output[pos + 5 : pos + 9], "big")
        assert not sid >> 31, "the reserved bit of the stream id is set"
        payload = output[pos + 9 : pos + 9 + length]
        assert len(payload) == length, "a frame longer than the output"
        frames.append((kind, flags, sid, payload))
        pos += 9 + length
    return frames


def connected(client_settings: tuple[tuple[int, int], ...] = ()) -> H2Core:
    """A core past the preface and both SETTINGS (its own output taken)."""
    core = H2Core(clock=lambda: 0.0)
    core.initiate()
    core.data_to_send()
    assert core.receive_data(PREFACE + settings_frame(*client_settings)) == []
    core.data_to_send()
    return core


def feed(core: H2Core, pieces: list[bytes]) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events += core.receive_data(piece)
        while core.input_pending:  # the caller's next turn
            events += core.receive_data(b"")
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(data) + 1) for p in points}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# --- 1. the events don't depend on how the bytes arrive ------------------------------

_names = st.from_regex(rb"x-[a-z0-9-]{0,10}", fullmatch=True)
# request values: no NUL/CR/LF, no surrounding whitespace (RFC 9113 8.2.1)
_request_values = st.from_regex(rb"([\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?)?", fullmatch=True)


@st.composite
def request_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-5 requests: extra fields, a body (total within the default windows) in
    DATA frames of random sizes (some padded), the header block maybe split."""
    streams = []
    for i in range(draw(st.integers(1, 5))):
        body_size = draw(st.integers(0, 10000))
        # a few frames each (at most 6): the bytes, not the frame count, are what varies
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, body_size - 1)), max_size=5)))) if body_size > 1 else []
        bounds = [0, *cuts, body_size] if body_size else []
        sizes = [b - a for a, b in itertools.pairwise(bounds) if b > a]
        streams.append(
            {
                "sid": 2 * i + 1,
                "extra": draw(st.lists(st.tuples(_names, _request_values), max_size=6)),
                "frames": [(n, draw(st.none() | st.integers(0, 255))) for n in sizes],
                "split_block": draw(st.floats(0, 1) | st.none()),
                "end_on_headers": not sizes and draw(st.booleans()),
            }
        )
    return streams


def _stream_units(stream: dict[str, Any], encoder: hpack.Encoder) -> list[bytes]:
    """The frames of one request, the header block (HEADERS + CONTINUATION) as one unit."""
    sid = stream["sid"]
    block = request_block(encoder, b"/s%d" % sid, stream["extra"])
    end = END_STREAM if stream["end_on_headers"] else 0
    if stream["split_block"] is None or len(block) < 2:
        head = frame(HEADERS, end | END_HEADERS, sid, block)
    else:
        at = max(1, min(len(block) - 1, int(len(block) * stream["split_block"])))
        head = frame(HEADERS, end, sid, block[:at]) + frame(CONTINUATION, END_HEADERS, sid, block[at:])
    units = [head]
    offset = 0
    for k, (size, pad) in enumerate(stream["frames"]):
        body = bytes((offset + j) % 251 for j in range(size))
        offset += size
        flags = END_STREAM if k == len(stream["frames"]) - 1 else 0
        if pad is None:
            units.append(frame(DATA, flags, sid, body))
        else:
            units.append(frame(DATA, flags | PADDED, sid, bytes([pad]) + body + bytes(pad)))
    if not stream["frames"] and not stream["end_on_headers"]:
        units.append(frame(DATA, END_STREAM, sid))
    return units


@PROPS
@given(streams=request_streams(), data=st.data())
def test_events_do_not_depend_on_how_the_bytes_are_cut(streams: list[dict[str, Any]], data: st.DataObject) -> None:
    # one encoder in wire order: blocks may refer to the dynamic table of the ones before
    encoder = hpack.Encoder()
    queues = [_stream_units(s, encoder) for s in streams]
    wire = [PREFACE, settings_frame()]
    started = 0
    while any(queues):
        # a stream may start only after the lower ones did (stream ids increase); then any interleaving
        choices = [i for i, q in enumerate(queues) if q and i <= started]
        i = data.draw(st.sampled_from(choices), label="next stream")
        started = max(started, i + 1)
        wire.append(queues[i].pop(0))
    whole = b"".join(wire)

    def fresh() -> H2Core:
        core = H2Core(clock=lambda: 0.0)
        core.initiate()
        core.data_to_send()
        return core

    reference = fresh()
    reference_events = feed(reference, [whole])
    reference_output = reference.data_to_send()

    # what a valid run must give: each request, its body, its end, and nothing else
    requests = [e for e in reference_events if isinstance(e, RequestReceived)]
    assert [r.stream_id for r in requests] == [s["sid"] for s in streams]
    assert [r.headers for r in requests] == [[(b"host", b"a"), *s["extra"]] for s in streams]
    for s in streams:
        body = b"".join(e.data for e in reference_events if isinstance(e, DataReceived) and e.stream_id == s["sid"])
        assert body == bytes(j % 251 for j in range(sum(n for n, _ in s["frames"])))
    assert sum(isinstance(e, StreamEnded) for e in reference_events) == len(streams)
    assert not any(isinstance(e, ConnectionEnded | StreamReset) for e in reference_events)

    mode = data.draw(st.sampled_from(["cuts", "chunks"]), label="mode")
    if mode == "cuts":
        pieces = cut(whole, data.draw(st.lists(st.integers(0, len(whole)), max_size=30), label="cut points"))
    else:
        size = data.draw(st.integers(max(1, len(whole) // 3000), 700), label="chunk size")
        pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
    core = fresh()
    events = feed(core, pieces)
    # the same events in the same order, and the same bytes back
    assert events == reference_events
    assert core.data_to_send() == reference_output


# --- 2. arbitrary input: the protocol-error path, well-formed output -------------------

_SERVER_FRAME_TYPES = {DATA, HEADERS, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION}


def check_output_frames(frames: list[tuple[int, int, int, bytes]]) -> None:
    """What a server may write, frame by frame (RFC 9113 6)."""
    for kind, flags, sid, payload in frames:
        assert kind in _SERVER_FRAME_TYPES, f"frame type {kind}"
        assert len(payload) <= 16384, "over the peer's SETTINGS_MAX_FRAME_SIZE"
        if kind == SETTINGS:
            assert sid == 0 and len(payload) % 6 == 0
            assert not (flags & ACK and payload)
        elif kind == PING:
            assert sid == 0 and len(payload) == 8
        elif kind == GOAWAY:
            assert sid == 0 and len(payload) >= 8
            code = int.from_bytes(payload[4:8], "big")
            assert code != ErrorCodes.INTERNAL_ERROR, f"the core's bug path: {payload[8:]!r}"
        elif kind == RST_STREAM:
            assert sid != 0 and len(payload) == 4
            assert int.from_bytes(payload, "big") != ErrorCodes.INTERNAL_ERROR
        elif kind == WINDOW_UPDATE:
            assert len(payload) == 4 and 0 < int.from_bytes(payload, "big") <= MAX_WINDOW


# Mostly near-valid frames (known types, small stream ids, the lengths the types
# have), so that a run gets past its first frame and into the states behind it.
_sids = st.sampled_from([0, 1, 3, 5]) | st.integers(0, 2**31 - 1)
_kinds = st.sampled_from(range(10)) | st.integers(0, 255)
_flags = st.sampled_from([0, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS, PADDED, PRIORITY_FLAG]) | st.integers(
    0, 255
)
_payloads = st.one_of(
    st.sampled_from([0, 4, 5, 6, 8, 12]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    st.binary(max_size=64),
)
_any_frame = st.builds(frame, _kinds, _flags, _sids, _payloads)
_request_frame = st.builds(
    lambda sid, flags, extra: frame(HEADERS, flags | END_HEADERS, sid, request_block(hpack.Encoder(), b"/", extra)),
    st.sampled_from([1, 3, 5, 7]) | st.integers(0, 9),
    st.sampled_from([0, END_STREAM]),
    st.lists(st.tuples(_names, _request_values), max_size=3),
)
_control_frame = st.one_of(
    st.builds(window_update, _sids, st.sampled_from([0, 1, 2**31 - 1]) | st.integers(0, 2**31)),
    st.builds(
        lambda pairs, ack: frame(SETTINGS, ACK, 0) if ack else settings_frame(*pairs),
        st.lists(st.tuples(st.integers(0, 9), st.sampled_from([0, 1, 2, 16384, 2**31]) | st.integers(0, 2**32 - 1))),
        st.booleans(),
    ),
    st.builds(lambda sid, code: frame(RST_STREAM, 0, sid, struct.pack(">I", code)), _sids, st.integers(0, 15)),
    st.builds(
        lambda flags, body: frame(PING, flags, 0, body), st.sampled_from([0, ACK]), st.binary(min_size=8, max_size=8)
    ),
    st.builds(lambda sid, dep: frame(PRIORITY, 0, sid, struct.pack(">IB", dep, 16)), _sids, st.integers(0, 9)),
    st.builds(lambda code: frame(GOAWAY, 0, 0, struct.pack(">II", 0, code)), st.integers(0, 15)),
    st.builds(lambda sid, body: frame(DATA, END_STREAM, sid, body), _sids, st.binary(max_size=64)),
    st.builds(lambda sid, n: frame(CONTINUATION, END_HEADERS, sid, b"\x82" * n), _sids, st.integers(0, 3)),
)
_garbage = st.binary(max_size=300) | st.tuples(
    # often after a request on stream 1 that is still open, so its frames have somewhere to go
    st.sampled_from([b"", frame(HEADERS, END_HEADERS, 1, request_block(hpack.Encoder(), b"/", []))]),
    st.lists(_any_frame | _request_frame | _control_frame, max_size=12).map(b"".join),
).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=_garbage, points=st.lists(st.integers(0, 10000), max_size=6))
def test_arbitrary_input_gets_a_protocol_answer_and_well_formed_frames(garbage: bytes, points: list[int]) -> None:
    core = connected()
    events: list[Any] = []
    output = b""
    ended_at = None
    for piece in cut(garbage, points):
        got = feed(core, [piece])  # raises nothing: any exception fails the property
        if ended_at is not None:
            assert got == [], "events after the connection ended"
        events += got
        output += core.data_to_send()
        # (a client's GOAWAY NO_ERROR ends the connection gracefully: frames still
        # come and are answered, RFC 9113 6.8; only a closed connection says nothing more)
        if ended_at is None and core.closed:
            assert any(isinstance(e, ConnectionEnded) for e in events)
            ended_at = len(output)
        elif ended_at is not None:
            assert len(output) == ended_at, "output after the connection ended"
    frames = parse_frames(output)
    check_output_frames(frames)
    errors = [f for f in frames if f[0] == GOAWAY and int.from_bytes(f[3][4:8], "big") != ErrorCodes.NO_ERROR]
    if errors:
        assert any(isinstance(e, ConnectionEnded) for e in events)
        assert len(errors) == 1 and frames[-1] is errors[0], "the error GOAWAY is the last frame"
    for e in events:
        assert type(e).__module__.startswith("heron.protocol.http2"), e


# --- 3. outbound flow control ---------------------------------------------------------

_actions = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.integers(0, 2), st.integers(0, 50000)),
        st.tuples(st.just("update"), st.integers(0, 3), st.integers(1, 40000)),  # 0: the connection
        st.tuples(st.just("settings"), st.integers(0, 70000), st.just(0)),
    ),
    max_size=25,
)


class PeerWindows:
    """The client's view: what it allowed the server to send, and what came."""

    def __init__(self, initial: int, max_frame: int, sids: list[int]) -> None:
        self.initial = initial
        self.max_frame = max_frame
        self.connection = DEFAULT_WINDOW
        self.streams = dict.fromkeys(sids, initial)
        self.received = {sid: bytearray() for sid in sids}
        self.ended: set[int] = set()

    def take(self, output: bytes) -> None:
        for kind, flags, sid, payload in parse_frames(output):
            if kind != DATA:
                continue
            assert sid in self.streams and sid not in self.ended
            assert len(payload) <= self.max_frame, "DATA over the peer's SETTINGS_MAX_FRAME_SIZE"
            # (an empty DATA frame, END_STREAM alone, may go whatever the windows: 6.9.1)
            if payload:
                assert len(payload) <= self.connection, "DATA beyond the connection window"
                assert len(payload) <= self.streams[sid], f"DATA beyond the window of stream {sid}"
            self.connection -= len(payload)
            self.streams[sid] -= len(payload)
            self.received[sid] += payload
            if flags & END_STREAM:
                self.ended.add(sid)


def body_bytes(offset: int, size: int, sid: int) -> bytes:
    return bytes((offset + j + sid) % 251 for j in range(size))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.integers(0, 70000),
    max_frame=st.sampled_from([16384, 16385, 20000, 65536]),
    n_streams=st.integers(1, 3),
    actions=_actions,
)
def test_data_never_exceeds_the_peer_windows(
    initial: int, max_frame: int, n_streams: int, actions: list[tuple[str, int, int]]
) -> None:
    core = connected(((INITIAL_WINDOW_SIZE, initial), (MAX_FRAME_SIZE, max_frame)))
    sids = [2 * i + 1 for i in range(n_streams)]
    encoder = hpack.Encoder()
    assert feed(
        core,
        [b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block(encoder, b"/", [])) for sid in sids)],
    )
    for sid in sids:
        core.send_headers(sid, 200, [], False)
    peer = PeerWindows(initial, max_frame, sids)
    queued = dict.fromkeys(sids, 0)
    peer.take(core.data_to_send())

    for action, which, amount in actions:
        if action == "data":
            sid = sids[which % n_streams]
            core.send_data(sid, body_bytes(queued[sid], amount, sid), False)
            queued[sid] += amount
        elif action == "update":
            sid = 0 if which == 0 else sids[(which - 1) % n_streams]
            window = peer.connection if sid == 0 else peer.streams[sid]
            amount = min(amount, MAX_WINDOW - window)
            if amount <= 0:
                continue
            if sid:
                peer.streams[sid] += amount
            else:
                peer.connection += amount
            events = feed(core, [window_update(sid, amount)])
            assert not any(isinstance(e, ConnectionEnded | StreamReset) for e in events)
        else:
            # a new SETTINGS_INITIAL_WINDOW_SIZE moves every stream window by the difference (6.9.2)
            if any(w + amount - peer.initial > MAX_WINDOW for w in peer.streams.values()):
                continue
            for sid in sids:
                peer.streams[sid] += amount - peer.initial
            peer.initial = amount
            feed(core, [settings_frame((INITIAL_WINDOW_SIZE, amount))])
        peer.take(core.data_to_send())

    # end every stream, then open the windows as far as what is queued needs
    for sid in sids:
        core.send_data(sid, b"", True)
    peer.take(core.data_to_send())
    owed = {sid: queued[sid] - len(peer.received[sid]) for sid in sids}
    need = sum(owed.values()) - peer.connection
    if need > 0:
        peer.connection += need
        feed(core, [window_update(0, need)])
    for sid in sids:
        need = owed[sid] - peer.streams[sid]
        if need > 0:
            peer.streams[sid] += need
            feed(core, [window_update(sid, need)])
    peer.take(core.data_to_send())
    for sid in sids:
        assert bytes(peer.received[sid]) == body_bytes(0, queued[sid], sid), f"stream {sid}'s body"
        assert sid in peer.ended
        assert core.pending(sid) == 0


# --- 4. HPACK: the core's encoder against an independent decoder ------------------------

_DROPPED = [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"]
_response_names = st.one_of(
    st.from_regex(rb"[xX]-[a-zA-Z0-9!#$%&'*+.^_`|~-]{0,12}", fullmatch=True),
    st.sampled_from([b"content-type", b"Cache-Control", b"server", b"date", b"set-cookie", b"vary", b"ETag"]),
    st.sampled_from(_DROPPED + [b"Connection", b"TE"]),
)
# response values: anything but control characters (HTAB allowed), obs-text included
_response_values = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128))
_big_values = st.integers(0, 5000).map(lambda n: b"v" * n)
_heads = st.tuples(
    st.sampled_from([200, 201, 204, 301, 304, 404, 500, 599]),
    st.lists(st.tuples(_response_names, _response_values | _big_values), max_size=10),
)


@PROPS
@given(
    table_size=st.sampled_from([0, 1, 64, 256, 4096, 65536]),
    max_frame=st.sampled_from([16384, 20000]),
    plan=st.lists(
        st.tuples(st.sampled_from(["new", "again", "resize"]), _heads, st.sampled_from([0, 32, 100, 4096, 8192])),
        min_size=1,
        max_size=8,
    ),
)
def test_response_heads_round_trip_through_hpack(
    table_size: int, max_frame: int, plan: list[tuple[str, tuple[int, list[tuple[bytes, bytes]]], int]]
) -> None:
    core = connected(((HEADER_TABLE_SIZE, table_size), (MAX_FRAME_SIZE, max_frame)))
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = table_size
    sids = [2 * i + 1 for i in range(len(plan))]
    encoder = hpack.Encoder()
    assert feed(
        core,
        [b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block(encoder, b"/", [])) for sid in sids)],
    )
    core.data_to_send()

    previous: tuple[int, list[tuple[bytes, bytes]]] | None = None
    for sid, (what, head, new_size) in zip(sids, plan):
        if what == "again" and previous is not None:
            head = previous  # the same head again: the core may reuse its encoded block
        if what == "resize":
            # the encoder must shrink within the new size before its next block (RFC 7541 4.2)
            feed(core, [settings_frame((HEADER_TABLE_SIZE, new_size))])
            decoder.max_allowed_table_size = new_size
        status, fields = head
        previous = head
        core.send_headers(sid, status, list(fields), True)

        # decoded at once, under the table size the client advertises now
        block = b""
        blocks = 0
        for kind, flags, on, payload in parse_frames(core.data_to_send()):
            if kind not in (HEADERS, CONTINUATION):
                continue
            assert on == sid and len(payload) <= max_frame
            assert (kind == HEADERS) == (blocks == 0), "CONTINUATION follows HEADERS"
            block += payload
            blocks += 1
            if flags & END_HEADERS:
                break
        else:
            raise AssertionError("no END_HEADERS")
        expected = [(b":status", b"%d" % status)] + [(n.lower(), v) for n, v in fields if n.lower() not in _DROPPED]
        assert decoder.decode(block, raw=True) == expected
