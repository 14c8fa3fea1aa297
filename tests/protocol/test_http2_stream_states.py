"""HTTP/2 stream states (RFC 9113 5.1): the transition table on its own, then the core
following it, stream by stream, bytes in and bytes out."""

from __future__ import annotations

import itertools

import hpack
import pytest

from heron.protocol.http2 import H2Core, StreamEnded, StreamReset
from heron.protocol.http2.stream import TRANSITIONS, InvalidTransition, StreamEvent, StreamState, next_state

from .test_http2 import DATA, END_HEADERS, END_STREAM, HEADERS, REQ, RST_STREAM, connected, frame, raw_headers
from .test_http2_rules import NO_ERROR, PROTOCOL_ERROR, STREAM_CLOSED, answer_of, goaway, rst

S, E = StreamState, StreamEvent

#: RFC 9113 5.1 figure 2, the server's side, written out again: the table must say exactly this
LEGAL = {
    (S.IDLE, E.RECV_HEADERS): S.OPEN,
    (S.IDLE, E.SEND_PUSH_PROMISE): S.RESERVED_LOCAL,
    (S.RESERVED_LOCAL, E.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.RESERVED_LOCAL, E.SEND_RST_STREAM): S.CLOSED,
    (S.RESERVED_LOCAL, E.RECV_RST_STREAM): S.CLOSED,
    (S.OPEN, E.RECV_HEADERS): S.OPEN,
    (S.OPEN, E.RECV_DATA): S.OPEN,
    (S.OPEN, E.RECV_END_STREAM): S.HALF_CLOSED_REMOTE,
    (S.OPEN, E.SEND_PUSH_PROMISE): S.OPEN,
    (S.OPEN, E.SEND_HEADERS): S.OPEN,
    (S.OPEN, E.SEND_DATA): S.OPEN,
    (S.OPEN, E.SEND_END_STREAM): S.HALF_CLOSED_LOCAL,
    (S.OPEN, E.SEND_RST_STREAM): S.CLOSED,
    (S.OPEN, E.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_PUSH_PROMISE): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.RECV_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.SEND_RST_STREAM): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_RST_STREAM): S.CLOSED,
    (S.CLOSED, E.RECV_RST_STREAM): S.CLOSED,
    (S.CLOSED, E.SEND_RST_STREAM): S.CLOSED,
}


def test_the_table_is_rfc_9113_figure_2() -> None:
    assert TRANSITIONS == LEGAL


@pytest.mark.parametrize(("state", "event"), list(LEGAL), ids=lambda v: v.name)
def test_every_legal_transition(state: StreamState, event: StreamEvent) -> None:
    assert next_state(state, event) is LEGAL[state, event]


# (state, event) -> (error code, a connection error?), RFC 9113 5.1
ILLEGAL = [
    # idle: only HEADERS (and PRIORITY, which changes no state) may arrive
    (S.IDLE, E.RECV_DATA, PROTOCOL_ERROR, True),
    (S.IDLE, E.RECV_END_STREAM, PROTOCOL_ERROR, True),
    (S.IDLE, E.RECV_RST_STREAM, PROTOCOL_ERROR, True),
    # reserved (local): only RST_STREAM (and PRIORITY, WINDOW_UPDATE)
    (S.RESERVED_LOCAL, E.RECV_HEADERS, PROTOCOL_ERROR, True),
    (S.RESERVED_LOCAL, E.RECV_DATA, PROTOCOL_ERROR, True),
    # half-closed (remote) and closed: the peer's side is over
    (S.HALF_CLOSED_REMOTE, E.RECV_HEADERS, STREAM_CLOSED, False),
    (S.HALF_CLOSED_REMOTE, E.RECV_DATA, STREAM_CLOSED, False),
    (S.HALF_CLOSED_REMOTE, E.RECV_END_STREAM, STREAM_CLOSED, False),
    (S.CLOSED, E.RECV_HEADERS, STREAM_CLOSED, False),
    (S.CLOSED, E.RECV_DATA, STREAM_CLOSED, False),
    # what we may not send: on a side that is closed to us, or before a stream is opened
    (S.HALF_CLOSED_LOCAL, E.SEND_DATA, STREAM_CLOSED, False),
    (S.HALF_CLOSED_LOCAL, E.SEND_HEADERS, STREAM_CLOSED, False),
    (S.CLOSED, E.SEND_END_STREAM, STREAM_CLOSED, False),
    (S.IDLE, E.SEND_HEADERS, PROTOCOL_ERROR, False),
    (S.RESERVED_LOCAL, E.SEND_DATA, PROTOCOL_ERROR, False),
    (S.RESERVED_LOCAL, E.SEND_PUSH_PROMISE, PROTOCOL_ERROR, False),
]


@pytest.mark.parametrize(
    ("state", "event", "code", "connection"), ILLEGAL, ids=[f"{s.name}-{e.name}" for s, e, _, _ in ILLEGAL]
)
def test_illegal_transitions_carry_the_rfc_error(
    state: StreamState, event: StreamEvent, code: int, connection: bool
) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert (info.value.code, info.value.connection) == (code, connection)
    assert (info.value.state, info.value.event) == (state, event)
    assert str(info.value) == f"{event.value} on a stream {state.value}"


def test_every_move_the_table_lacks_is_refused() -> None:
    for state, event in itertools.product(StreamState, StreamEvent):
        if (state, event) in LEGAL:
            continue
        with pytest.raises(InvalidTransition) as info:
            next_state(state, event)
        assert info.value.code in (PROTOCOL_ERROR, STREAM_CLOSED)


# --- the core follows the table -------------------------------------------------------------------


def state_of(core: H2Core, sid: int) -> StreamState | None:
    """The state of a stream the core keeps (None: not kept, i.e. idle or closed)."""
    st = core.streams.get(sid)
    return st.state if st is not None else None


def opened(end_stream: bool) -> tuple[H2Core, hpack.Encoder]:
    core = connected()
    enc = hpack.Encoder()
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    core.receive_data(raw_headers(enc, [(":method", "POST"), *REQ[1:]], 1, flags))
    core.data_to_send()
    return core, enc


def test_request_then_response() -> None:
    core, _ = opened(end_stream=False)
    assert state_of(core, 1) is S.OPEN
    core.receive_data(frame(DATA, END_STREAM, 1, b"body"))
    assert state_of(core, 1) is S.HALF_CLOSED_REMOTE
    core.send_headers(1, 200, [], False)
    assert state_of(core, 1) is S.HALF_CLOSED_REMOTE
    core.send_data(1, b"ok", True)
    assert state_of(core, 1) is None and 1 not in core.streams


def test_response_before_the_request_body_ends() -> None:
    core, _ = opened(end_stream=False)
    core.send_headers(1, 200, [], True)
    assert state_of(core, 1) is S.HALF_CLOSED_LOCAL
    core.data_to_send()
    core.send_data(1, b"late", True)  # closed to us: dropped
    core.send_headers(1, 200, [], True)
    assert not core.data_to_send()
    events = core.receive_data(frame(DATA, 0, 1, b"x" * 16000) + frame(DATA, END_STREAM, 1, b"x"))
    assert events == []  # the body goes nowhere: the caller is done with the stream
    assert state_of(core, 1) is None


def test_trailers_end_a_half_closed_local_stream() -> None:
    core, enc = opened(end_stream=False)
    core.send_headers(1, 200, [], True)
    events = core.receive_data(raw_headers(enc, [("x-sum", "1")], 1))
    assert events == [] and state_of(core, 1) is None and answer_of(core.data_to_send()).kind == "none"


def test_finishing_a_half_closed_local_stream_resets_it() -> None:
    core, _ = opened(end_stream=False)
    core.send_headers(1, 200, [], True)
    core.data_to_send()
    core.finish_stream(1, 0)
    assert state_of(core, 1) is None
    assert answer_of(core.data_to_send()) == rst(1, NO_ERROR)
    # what crosses our reset is ignored (RFC 9113 5.1)
    assert core.receive_data(frame(DATA, END_STREAM, 1, b"x")) == []
    assert answer_of(core.data_to_send()).kind == "none"


def test_the_peers_reset_closes_the_stream_and_later_frames_get_stream_closed() -> None:
    core, enc = opened(end_stream=False)
    assert core.receive_data(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big"))) == [StreamReset(1, 8, True)]
    assert state_of(core, 1) is None
    core.receive_data(frame(DATA, 0, 1, b"x"))
    assert answer_of(core.data_to_send()) == rst(1, STREAM_CLOSED)
    core.receive_data(raw_headers(enc, REQ, 1))
    assert answer_of(core.data_to_send()) == rst(1, STREAM_CLOSED)
    core.receive_data(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))  # closed: ignored
    assert answer_of(core.data_to_send()).kind == "none" and not core.closed


def test_a_pushed_stream_is_reserved_until_its_head_is_sent() -> None:
    core, _ = opened(end_stream=True)
    promised = core.push(1, b"/a.css", [])
    assert promised == 2 and state_of(core, 2) is S.RESERVED_LOCAL
    assert core.push(2, b"/b.css", []) is None  # not on a stream we opened ourselves
    core.send_headers(2, 200, [], False)
    assert state_of(core, 2) is S.HALF_CLOSED_REMOTE
    core.send_data(2, b"a{}", True)
    assert state_of(core, 2) is None


@pytest.mark.parametrize(
    "kind",
    [HEADERS, DATA],
    ids=["HEADERS", "DATA"],
)
def test_frames_from_the_peer_on_a_reserved_stream_are_a_connection_error(kind: int) -> None:
    core, enc = opened(end_stream=True)
    core.push(1, b"/a.css", [])
    core.data_to_send()
    if kind == HEADERS:
        data = raw_headers(enc, [("x-a", "1")], 2)
    else:
        data = frame(DATA, END_STREAM, 2, b"x")
    core.receive_data(data)
    assert core.closed and answer_of(core.data_to_send()) == goaway(PROTOCOL_ERROR)


def test_a_reserved_stream_can_be_reset_by_the_peer() -> None:
    core, _ = opened(end_stream=True)
    core.push(1, b"/a.css", [])
    events = core.receive_data(frame(RST_STREAM, 0, 2, (8).to_bytes(4, "big")))
    assert events == [StreamReset(2, 8, True)] and state_of(core, 2) is None and not core.closed


def test_headers_end_stream_opens_half_closed_remote() -> None:
    core, _ = opened(end_stream=True)
    assert state_of(core, 1) is S.HALF_CLOSED_REMOTE
    core.reset(1)
    assert state_of(core, 1) is None


def test_data_end_stream_is_reported_once() -> None:
    core, _ = opened(end_stream=False)
    events = core.receive_data(frame(DATA, END_STREAM, 1, b"ab"))
    assert events[-1] == StreamEnded(1) and state_of(core, 1) is S.HALF_CLOSED_REMOTE
