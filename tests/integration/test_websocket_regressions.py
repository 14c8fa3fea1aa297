"""Regression tests for WebSocket bugs found with the Autobahn|Testsuite (tests/compliance).

Each test drives heron through a real socket with hand-built frames, the way
the fuzzing client does, and checks what comes back on the wire. The Autobahn
case that found the bug is named in each docstring.
"""

from __future__ import annotations

import asyncio
import queue
import time
from typing import Any

import pytest

from ..conftest import serve
from ..rawclients import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, RawWS, close_payload
from ..rawclients import ws_frame as frame

pytestmark = pytest.mark.timeout(40)

WAIT = 5.0

#: serve() defaults to the asyncio loop; heron's default is uvloop. The transport runs on both.
LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


class Reports:
    """What the app (in the server's thread) saw, for the test thread."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[str, Any]] = queue.Queue()

    def put(self, kind: str, value: Any) -> None:
        self.q.put((kind, value))

    def until_disconnect(self, timeout: float = WAIT) -> list[tuple[str, Any]]:
        items = []
        deadline = time.monotonic() + timeout
        while True:
            item = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            items.append(item)
            if item[0] == "disconnect":
                return items


def echo_app(reports: Reports | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if reports is not None:
                    reports.put("disconnect", message["code"])
                return
            if reports is not None:
                reports.put("message", message.get("text", message.get("bytes")))
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})

    return app


# --- 1. messages received before the peer's Close or a protocol error were never answered -----------
#
# The transport answered a Close frame (or failed the connection on a protocol error) in the same
# data_received call that had just queued earlier messages for the app; the app's answers to them then
# hit a closed WebSocket and were dropped. Autobahn scored 3.2-3.4, 4.1.3-4.1.5, 4.2.3, 4.2.4 and
# 5.15 NON-STRICT ("echo for the first message is received, then the connection is failed") and 7.1.6
# "close was processed before the text message could be returned". Now reading stops at once, but the
# Close frame waits until the app has taken the queued messages.


@LOOPS
def test_message_before_a_protocol_error_is_answered_before_the_close(loop: str) -> None:
    """Autobahn 3.2: a text message, a frame with RSV2 set, a Ping, all in one write."""
    reports = Reports()
    with serve(echo_app(reports), loop=loop) as srv:
        ws, _ = RawWS.open(srv)
        ws.send(frame(OP_TEXT, b"Hello, world!") + frame(OP_TEXT, b"Hello, world!", rsv=0x20) + frame(OP_PING))
        before, code = ws.frames_until_close()
        assert before == [(OP_TEXT, b"Hello, world!")]  # the echo, and no Pong
        assert code == 1002
        assert ws.closed_by_server()
        ws.close()
        assert reports.until_disconnect() == [("message", "Hello, world!"), ("disconnect", 1002)]


@LOOPS
def test_all_messages_queued_before_a_protocol_error_are_answered_in_order(loop: str) -> None:
    """Autobahn 4.1.3 and 5.15: several messages (one fragmented), then a bad frame, in one write."""
    with serve(echo_app(), loop=loop) as srv:
        ws, _ = RawWS.open(srv)
        ws.send(
            frame(OP_TEXT, b"one")
            + frame(OP_BINARY, b"two")
            + frame(OP_TEXT, b"frag", fin=False)
            + frame(OP_CONT, b"ment")
            + frame(OP_CONT, b"nothing to continue", fin=False)
            + frame(OP_TEXT, b"never read")
        )
        before, code = ws.frames_until_close()
        assert before == [(OP_TEXT, b"one"), (OP_BINARY, b"two"), (OP_TEXT, b"fragment")]
        assert code == 1002
        assert ws.closed_by_server()
        ws.close()


@LOOPS
def test_messages_before_the_peer_close_are_answered_before_the_close_reply(loop: str) -> None:
    """Autobahn 7.1.6: a 256 KiB message, a small one, Close and a Ping, back to back."""
    reports = Reports()
    big = b"BAsd7&jh23" * 26215
    with serve(echo_app(reports), loop=loop) as srv:
        ws, _ = RawWS.open(srv)
        ws.send(
            frame(OP_TEXT, big)
            + frame(OP_TEXT, b"Hello World!")
            + frame(OP_CLOSE, close_payload(1000))
            + frame(OP_PING)
        )
        before, code = ws.frames_until_close()
        assert before == [(OP_TEXT, big), (OP_TEXT, b"Hello World!")]
        assert code == 1000
        assert ws.closed_by_server()
        ws.close()
        assert [kind for kind, _ in reports.until_disconnect()] == ["message", "message", "disconnect"]


@LOOPS
def test_close_is_not_held_back_by_an_app_that_does_not_read(loop: str) -> None:
    """The wait for the app is bounded: an app that never takes its messages doesn't stall the close."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(30)  # never reads (cancelled by the server's shutdown)

    with serve(app, loop=loop, timeout_graceful_shutdown=1) as srv:
        ws, _ = RawWS.open(srv)
        started = time.monotonic()
        ws.send(frame(OP_TEXT, b"unread") + frame(OP_CLOSE, close_payload(1000)))
        before, code = ws.frames_until_close()
        assert before == [] and code == 1000
        assert time.monotonic() - started < 3.0
        assert ws.closed_by_server()
        ws.close()


# --- guards for the batched UTF-8 check (a speed-up, not a bug fix) ----------------------------------
#
# Text is now decoded once per batch of input instead of once per frame (Autobahn 9.x: a 16 MiB message
# in 64-byte fragments). These pin the behaviour that must not change with it.


def test_text_in_many_small_fragments_in_one_write_is_joined_correctly() -> None:
    text = ("κόσμε €𝄞 " * 4000).encode()
    with serve(echo_app()) as srv:
        ws, _ = RawWS.open(srv)
        # 7-byte fragments split multi-byte characters across frames
        pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
        wire = b"".join(
            frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1) for i, p in enumerate(pieces)
        )
        ws.send(wire)
        assert ws.read_frame()[2:] == (OP_TEXT, text)
        ws.close()


@pytest.mark.parametrize(
    "wire",
    [
        # invalid UTF-8 followed, in the same write, by a framing error: the UTF-8 error came first
        pytest.param(frame(OP_TEXT, b"ok \xff", fin=False) + frame(0x3, b"x"), id="before-bad-opcode"),
        # ... or by a Ping: the connection fails before the Ping is answered
        pytest.param(frame(OP_TEXT, b"ok \xed\xa0", fin=False) + frame(OP_PING, b"p"), id="surrogate-before-ping"),
        # ... or by a Close frame
        pytest.param(frame(OP_TEXT, b"\xc0\xaf", fin=False) + frame(OP_CLOSE, close_payload(1000)), id="before-close"),
    ],
)
def test_invalid_utf8_fails_before_what_follows_it(wire: bytes) -> None:
    with serve(echo_app()) as srv:
        ws, _ = RawWS.open(srv)
        ws.send(wire)
        before, code = ws.frames_until_close()
        assert before == [] and code == 1007
        ws.close()


def test_invalid_utf8_fails_fast_without_waiting_for_the_rest_of_the_message() -> None:
    """Autobahn 6.4.x: the bad fragment is refused before the message's end arrives."""
    with serve(echo_app()) as srv:
        ws, _ = RawWS.open(srv)
        ws.send(frame(OP_TEXT, "κόσμε".encode(), fin=False))
        time.sleep(0.1)
        ws.send(frame(OP_CONT, b"\xf4\x90\x80\x80", fin=False))  # U+110000: out of range
        before, code = ws.frames_until_close(timeout=2)
        assert before == [] and code == 1007
        ws.close()


# --- the ASGI bridge's hand-over to a waiting receive() ---------------------------------------------


class _Stream:
    """The least a WebSocketCycle needs from its transport, for driving it directly."""

    def __init__(self) -> None:
        from heron.asgi.budget import ReadBudget

        self.budget = ReadBudget(1 << 20)
        self.writing_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_message_handed_to_a_cancelled_receive_is_not_lost() -> None:
    """A message given straight to a waiting receive() whose task is cancelled
    before it runs (asyncio.wait_for timing out at that moment) stays first in line."""
    from heron.asgi.websocket import WebSocketCycle

    async def main() -> None:
        stream = _Stream()
        cycle = WebSocketCycle({"type": "websocket"}, stream)  # type: ignore[arg-type]  # (a fake stream)
        assert (await cycle.receive())["type"] == "websocket.connect"
        waiting = asyncio.ensure_future(cycle.receive())
        await asyncio.sleep(0)  # it now waits for a message
        cycle.feed_message(b"one")  # handed over: nothing queued, nothing charged
        assert stream.budget.held == 0
        waiting.cancel()  # before the task resumed
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert stream.budget.held > 0  # back in the queue, charged
        cycle.feed_message(b"two")
        assert (await cycle.receive())["bytes"] == b"one"
        assert (await cycle.receive())["bytes"] == b"two"
        assert stream.budget.held == 0

    asyncio.run(main())
