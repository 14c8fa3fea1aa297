"""The HTTP/2 core's sending side, driven through its API and read back by the h2 client:
what it refuses (LocalProtocolError, nothing queued), what it drops, and how a
stream or the connection ends from our side."""

from __future__ import annotations

from typing import Any

import h2.events
import pytest

from heron.protocol.errors import LocalProtocolError
from heron.protocol.http2 import H2Limits, StreamWritable

from .test_http2 import Pair


def events_of(pair: Pair, kind: type) -> list[Any]:
    return [e for e in pair.to_client() if isinstance(e, kind)]


def opened(pair: Pair, method: str = "GET", end: bool = True) -> int:
    sid = pair.request("/", method, end=end)
    pair.to_server()
    return sid


@pytest.mark.parametrize(
    "headers",
    [
        [(b"bad name", b"x")],
        [(b"x", b"a\x00b")],
        [(b"content-length", b"3"), (b"content-length", b"3")],
        [(b"content-length", b"-1")],
        [(b"x",)],  # not a pair
        5,  # not an iterable
    ],
    ids=["name", "value", "duplicate content-length", "bad content-length", "not a pair", "not iterable"],
)
def test_invalid_response_head_is_refused_and_nothing_is_sent(headers: Any) -> None:
    pair = Pair()
    sid = opened(pair)
    with pytest.raises(LocalProtocolError):
        pair.core.send_headers(sid, 200, headers, True)
    assert not pair.core.has_output
    pair.core.send_headers(sid, 200, [], True)  # the stream can still be answered
    assert [e.stream_id for e in events_of(pair, h2.events.ResponseReceived)] == [sid]


def test_response_head_of_unhashable_pairs_is_sent_every_time() -> None:
    pair = Pair()
    for _ in range(2):
        sid = opened(pair)
        pair.core.send_headers(sid, 200, [[b"x-a", b"1"]], True)  # type: ignore[list-item]  # (lists, as some apps send)
        (response,) = events_of(pair, h2.events.ResponseReceived)
        assert (b"x-a", b"1") in response.headers


def test_body_longer_or_shorter_than_content_length_is_refused() -> None:
    pair = Pair()
    sid = opened(pair)
    pair.core.send_headers(sid, 200, [(b"content-length", b"3")], False)
    with pytest.raises(LocalProtocolError, match="longer"):
        pair.core.send_data(sid, b"abcd", True)
    with pytest.raises(LocalProtocolError, match="shorter"):
        pair.core.send_data(sid, b"ab", True)
    pair.core.send_data(sid, b"abc", True)
    assert b"".join(e.data for e in events_of(pair, h2.events.DataReceived)) == b"abc"


def test_head_response_sends_no_body() -> None:
    pair = Pair()
    sid = opened(pair, "HEAD")
    pair.core.send_headers(sid, 200, [(b"content-length", b"5")], False)
    pair.core.send_data(sid, b"hello", True)
    events = pair.to_client()
    assert not [e for e in events if isinstance(e, h2.events.DataReceived) and e.data]
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_informational_response() -> None:
    pair = Pair()
    sid = opened(pair)
    with pytest.raises(LocalProtocolError):
        pair.core.send_informational(sid, 103, [(b"bad name", b"x")])
    pair.core.send_informational(sid, 103, [(b"Link", b"</a.css>; rel=preload")])
    (hint,) = events_of(pair, h2.events.InformationalResponseReceived)
    assert (b":status", b"103") in hint.headers and (b"link", b"</a.css>; rel=preload") in hint.headers


def test_trailers_are_checked_and_sent_after_the_body() -> None:
    pair = Pair()
    sid = opened(pair)
    pair.core.send_headers(sid, 200, [(b"content-length", b"2")], False)
    with pytest.raises(LocalProtocolError):
        pair.core.send_trailers(sid, [(b"bad name", b"1")])
    with pytest.raises(LocalProtocolError, match="not allowed"):
        pair.core.send_trailers(sid, [(b"content-length", b"2")])
    with pytest.raises(LocalProtocolError, match="shorter"):
        pair.core.send_trailers(sid, [(b"x-sum", b"1")])  # before the 2 bytes
    pair.core.send_data(sid, b"ok", False)
    pair.core.send_trailers(sid, [(b"X-Sum", b"1")])
    events = pair.to_client()
    kinds = [type(e) for e in events]
    assert kinds.index(h2.events.DataReceived) < kinds.index(h2.events.TrailersReceived)
    (trailers,) = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers.headers == [(b"x-sum", b"1")]


def test_body_waits_for_the_window_and_reports_writable() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pair.client.auto_ack = False  # type: ignore[attr-defined]  # (the test credits the window itself)
    sid = opened(pair)
    pair.core.send_headers(sid, 200, [], False)
    pair.core.send_data(sid, b"x" * 25, True)
    assert pair.core.pending(sid) == 15 and sid in pair.core.blocked
    received = b"".join(e.data for e in events_of(pair, h2.events.DataReceived))
    assert received == b"x" * 10
    pair.client.increment_flow_control_window(100, stream_id=sid)
    events = pair.to_server()
    assert StreamWritable(sid) in events and pair.core.pending(sid) == 0
    assert b"".join(e.data for e in events_of(pair, h2.events.DataReceived)) == b"x" * 15


def test_push_checks_its_path_and_headers() -> None:
    pair = Pair()
    sid = opened(pair)
    with pytest.raises(LocalProtocolError):
        pair.core.push(sid, b"no-slash", [])
    with pytest.raises(LocalProtocolError):
        pair.core.push(sid, b"/a", [(b"bad name", b"1")])
    promised = pair.core.push(sid, b"/a.css", [(b"Connection", b"x"), (b"host", b"h"), (b"accept", b"*/*")])
    assert promised == 2
    (push,) = events_of(pair, h2.events.PushedStreamReceived)
    assert (b"accept", b"*/*") in push.headers
    assert not any(name in (b"connection", b"host") for name, _ in push.headers)


def test_no_push_once_shutting_down() -> None:
    pair = Pair()
    sid = opened(pair)
    pair.core.start_shutdown()
    assert pair.core.going_away and pair.core.push(sid, b"/a", []) is None
    (goaway,) = events_of(pair, h2.events.ConnectionTerminated)
    assert goaway.error_code == 0 and goaway.last_stream_id == sid
    pair.core.start_shutdown()  # once
    assert not pair.core.has_output


def test_finish_stream_with_the_request_body_unread_resets_with_no_error() -> None:
    pair = Pair()
    sid = opened(pair, "POST", end=False)
    pair.core.send_headers(sid, 200, [], True)
    pair.core.finish_stream(sid, 0)
    (reset,) = events_of(pair, h2.events.StreamReset)
    assert reset.stream_id == sid and reset.error_code == 0


def test_reset_and_close_from_our_side() -> None:
    pair = Pair()
    sid = opened(pair)
    pair.core.reset(sid)
    (reset,) = events_of(pair, h2.events.StreamReset)
    assert reset.error_code == 2  # INTERNAL_ERROR
    pair.core.send_headers(sid, 200, [], True)  # the stream is gone: nothing is sent
    pair.core.send_data(sid, b"x", True)
    pair.core.reset(sid)
    assert not pair.core.has_output
    pair.core.close(0xB, "enough")
    (goaway,) = events_of(pair, h2.events.ConnectionTerminated)
    assert goaway.error_code == 0xB
    pair.core.close()  # once
    assert not pair.core.has_output and pair.core.receive_data(b"anything") == []


def test_take_output_hands_pieces_and_tells_when_they_are_big() -> None:
    pair = Pair(H2Limits())
    sid = opened(pair)
    pair.core.send_headers(sid, 200, [], False)
    pair.core.send_data(sid, b"x" * 9000, True)
    assert pair.core.has_output and pair.core.large_output  # (read before taking: taking resets it)
    pieces = pair.core.take_output()
    assert not pair.core.large_output and b"".join(pieces).endswith(b"x" * 9000)
    assert pair.core.take_output() == [] and not pair.core.has_output
    pair.core.output_flushed()
    assert not pair.core.window_blocked_on_connection()


def test_trailers_and_the_end_wait_behind_queued_data() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4})
    first, second = opened(pair), opened(pair)
    for sid in (first, second):
        pair.core.send_headers(sid, 200, [], False)
        pair.core.send_data(sid, b"abcdefgh", False)  # 4 go out, 4 wait for the window
    pair.core.send_trailers(first, [(b"x-t", b"1")])
    pair.core.send_data(second, b"", True)
    pair.to_client()
    for sid in (first, second):
        pair.client.increment_flow_control_window(100, stream_id=sid)
    pair.to_server()
    events = pair.to_client()
    assert [e.stream_id for e in events if isinstance(e, h2.events.TrailersReceived)] == [first]
    assert sorted(e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)) == [first, second]


def test_finish_stream_credits_what_the_app_did_not_read() -> None:
    pair = Pair(H2Limits(initial_window_size=65535, connection_window_size=65535))  # credit back at half
    sid = opened(pair, "POST", end=False)
    for _ in range(3):
        pair.client.send_data(sid, b"x" * 13000)
    pair.client.end_stream(sid)
    pair.to_server()
    pair.core.send_headers(sid, 200, [], True)
    pair.core.finish_stream(sid, 39000)
    pair.core.finish_stream(99, 0)  # unknown: nothing
    updates = events_of(pair, h2.events.WindowUpdated)
    assert any(e.stream_id == 0 for e in updates)  # the connection's window came back


def test_push_stops_at_the_peers_stream_limit() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    sid = opened(pair)
    assert pair.core.push(sid, b"/a", []) == 2
    assert pair.core.push(sid, b"/b", []) is None  # one pushed stream open already


def test_extended_connect_off_refuses_protocol() -> None:
    pair = Pair(H2Limits(enable_connect_protocol=False))
    assert pair.client.remote_settings.enable_connect_protocol == 0
    sid = pair.client.get_next_available_stream_id()
    fields = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https")]
    fields += [(b":path", b"/ws"), (b":authority", b"a")]
    pair.client.send_headers(sid, fields)
    pair.to_server()
    (reset,) = events_of(pair, h2.events.StreamReset)
    assert reset.error_code == 1  # PROTOCOL_ERROR


@pytest.mark.parametrize("value", [b"A", b"AAEAAA"], ids=["not base64", "not whole settings"])
def test_invalid_upgrade_settings_end_the_connection(value: bytes) -> None:
    from heron.protocol.http2 import H2Core

    core = H2Core()
    core.initiate(upgrade_settings=value)
    assert core.closed
    assert b"HTTP2-Settings" not in core.data_to_send()  # (the reason is ours; the GOAWAY carries the code)


def test_peer_goaway() -> None:
    from heron.protocol.http2 import ConnectionEnded

    from .test_http2_rules import GOAWAY, frame, u32

    pair = Pair()
    sid = opened(pair, end=False)
    # GOAWAY NO_ERROR: the peer opens nothing more, the streams in flight go on
    (ended,) = [
        e for e in pair.core.receive_data(frame(GOAWAY, 0, 0, u32(sid) + u32(0))) if isinstance(e, ConnectionEnded)
    ]
    assert ended.remote and ended.error_code == 0 and not pair.core.closed
    pair.core.send_headers(sid, 200, [], True)
    assert [e.stream_id for e in events_of(pair, h2.events.ResponseReceived)] == [sid]
    # with an error: the connection is over
    events = pair.core.receive_data(frame(GOAWAY, 0, 0, u32(sid) + u32(2)))
    (ended,) = [e for e in events if isinstance(e, ConnectionEnded)]
    assert ended.error_code == 2 and pair.core.closed


def test_bytes_like_input_is_accepted() -> None:
    pair = Pair()
    pair.request("/")
    events = pair.core.receive_data(bytearray(pair.client.data_to_send()))
    assert any(type(e).__name__ == "RequestReceived" for e in events)
