"""HTTP/3 server push (RFC 9114 4.6, ASGI ``http.response.push``) and the ASGI
``tls`` extension over QUIC, through real UDP sockets on 127.0.0.1 with
aioquic's client (which sends MAX_PUSH_ID 8 unless told otherwise)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, ProtocolError, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, PushPromiseReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamReset

from heron.transport.http3_quic import ControlScan

from ..conftest import RunningServer, serve
from .test_http3 import Certs, Client, certs, quic_port, run_client

__all__ = ["certs"]  # (the fixture, imported for its tests)

pytestmark = pytest.mark.timeout(30)

SEEN: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        SEEN["ws_tls"] = scope["extensions"].get("tls")
        await receive()
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    extensions = scope["extensions"]
    SEEN.setdefault("extensions", {})[path] = sorted(extensions)
    SEEN.setdefault("tls", {})[path] = extensions.get("tls")
    if path == "/page":
        if "http.response.push" in extensions:
            await send({"type": "http.response.push", "path": "/style.css", "headers": [(b"accept", b"text/css")]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<link rel=stylesheet href=/style.css>page"})
    elif path == "/many":  # more pushes than --http2-max-concurrent-streams lets be open
        for i in range(5):
            await send({"type": "http.response.push", "path": f"/slow.css?{i}", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"many"})
    elif path == "/style.css":
        SEEN["pushed_headers"] = list(scope["headers"])
        if "http.response.push" in extensions:  # (never: a pushed response can't push)
            await send({"type": "http.response.push", "path": "/nested.css", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"body { color: teal }"})
    elif path == "/fan":  # pushes that wait for the client to cancel them
        for i in range(int(scope["query_string"] or b"4")):
            await send({"type": "http.response.push", "path": f"/hold.css?{i}", "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fan"})
    elif path == "/hold.css":  # a pushed response that goes on until the client cancels it
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"/* more to come */", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        SEEN["held_ended"] = SEEN.get("held_ended", 0) + 1  # (the app's task ends: its push is cancelled)
    elif path == "/slow.css":
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"slow"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _serve(certs: Certs, **settings: Any) -> Iterator[RunningServer]:
    SEEN.clear()
    settings.setdefault("timeout_graceful_shutdown", 5)
    with serve(
        app, quic_bind=("127.0.0.1:0",), ssl_certfile=certs.certfile, ssl_keyfile=certs.keyfile, **settings
    ) as running:
        yield running


class PushClient(Client):
    """The test client, also recording push promises and pushed responses by push id."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.promises: list[PushPromiseReceived] = []
        self.pushed: dict[int, dict[str, Any]] = {}
        self.push_streams: dict[int, int] = {}  # push id -> its push stream
        self.push_resets: dict[int, int] = {}  # push stream -> the server's RESET_STREAM code

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id % 4 == 3:  # (3: the server's push streams)
            self.push_resets[event.stream_id] = event.error_code
        super().quic_event_received(event)

    def cancel_push(self, push_id: int, payload: bytes | None = None, split: bool = False) -> None:
        """CANCEL_PUSH on our control stream (``payload``: instead of ``push_id``; ``split``: a
        packet for each byte)."""
        control = self.h3._local_control_stream_id
        assert control is not None
        frame = encode_frame(FrameType.CANCEL_PUSH, encode_uint_var(push_id) if payload is None else payload)
        for piece in [frame[i : i + 1] for i in range(len(frame))] if split else [frame]:
            self._quic.send_stream_data(control, piece)
            if split:
                self.transmit()

    def _on_h3(self, event: H3Event) -> None:
        if isinstance(event, PushPromiseReceived):
            self.promises.append(event)
        elif isinstance(event, (HeadersReceived, DataReceived)) and event.push_id is not None:
            self.push_streams[event.push_id] = event.stream_id
            pushed = self.pushed.setdefault(event.push_id, {"headers": [], "body": b"", "ended": False})
            if isinstance(event, HeadersReceived):
                pushed["headers"] = list(event.headers)
            else:
                pushed["body"] += event.data
            pushed["ended"] = event.stream_ended
        else:
            super()._on_h3(event)


class _NoPushH3(H3Connection):
    """A client that sends no MAX_PUSH_ID: the server may not push (RFC 9114 4.6)."""

    def _init_connection(self) -> None:
        self._max_push_id = None
        super()._init_connection()


class NoPushClient(PushClient):
    h3_class = _NoPushH3


class _ManyPushH3(H3Connection):
    """A client that allows push ids 0 to 63 (MAX_PUSH_ID 63)."""

    def _init_connection(self) -> None:
        self._max_push_id = 63
        super()._init_connection()


class CancellingClient(PushClient):
    """Cancels each push as its response starts: STOP_SENDING on its push stream, CANCEL_PUSH
    on the control stream (RFC 9114 7.2.3), or both (``how``)."""

    h3_class = _ManyPushH3
    how: tuple[str, ...] = ()

    def _on_h3(self, event: H3Event) -> None:
        super()._on_h3(event)
        if isinstance(event, HeadersReceived) and event.push_id is not None:
            if "stop_sending" in self.how:
                self._quic.stop_stream(event.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
            if "cancel_push" in self.how:
                self.cancel_push(event.push_id)


@asynccontextmanager
async def client_of(certs: Certs, port: int, protocol: type[PushClient] = PushClient) -> AsyncIterator[Any]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    configuration.load_verify_locations(cadata=certs.ca_pem.encode())
    async with connect("127.0.0.1", port, configuration=configuration, create_protocol=protocol) as client:
        yield client  # type: ignore[misc]  # (create_protocol: it is one)


async def until(condition: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_page_pushes_its_stylesheet(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port) as client:
            page = await client.response(client.request("GET", "/page"))
            await until(lambda: any(p["ended"] for p in client.pushed.values()))
            return page, client.promises, client.pushed

    with _serve(certs) as running:
        page, promises, pushed = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body.endswith(b"page")
    assert len(promises) == 1
    promise = dict(promises[0].headers)
    assert (promise[b":method"], promise[b":scheme"], promise[b":path"]) == (b"GET", b"https", b"/style.css")
    assert promise[b":authority"] == b"localhost" and promise[b"accept"] == b"text/css"
    response = pushed[promises[0].push_id]
    assert dict(response["headers"])[b":status"] == b"200"
    assert dict(response["headers"])[b"content-type"] == b"text/css"
    assert response["body"] == b"body { color: teal }" and response["ended"]
    assert "http.response.push" in SEEN["extensions"]["/page"]
    assert "http.response.push" not in SEEN["extensions"]["/style.css"]  # a pushed response can't push
    assert SEEN["pushed_headers"] == [(b"host", b"localhost"), (b"accept", b"text/css")]
    assert set(pushed) == {promises[0].push_id}  # nothing nested


def test_a_client_that_allows_no_push_gets_the_page_and_nothing_else(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port, NoPushClient) as client:
            page = await client.response(client.request("GET", "/page"))
            again = await client.response(client.request("GET", "/other"))
            return page, again, client.promises, client.pushed, client.terminated

    with _serve(certs) as running:
        page, again, promises, pushed, terminated = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body.endswith(b"page") and again.status == 200
    assert promises == [] and pushed == {} and terminated is None
    assert "http.response.push" not in SEEN["extensions"]["/page"]


def test_pushes_beyond_the_concurrent_stream_limit_are_skipped(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port) as client:
            page = await client.response(client.request("GET", "/many"))
            await until(lambda: len(client.pushed) == 2 and all(p["ended"] for p in client.pushed.values()))
            return page, client.promises, client.pushed

    with _serve(certs, http2_max_concurrent_streams=2) as running:
        page, promises, pushed = run_client(main(quic_port(running)))
    assert page.status == 200 and page.body == b"many"
    assert [dict(p.headers)[b":path"] for p in promises] == [b"/slow.css?0", b"/slow.css?1"]
    assert all(p["body"] == b"slow" for p in pushed.values())


def _server_pem(certs: Certs) -> str:
    with open(certs.certfile) as f:
        return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(f.read()))


def test_the_tls_extension_over_http3(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with client_of(certs, port) as client:
            await client.response(client.request("GET", "/a"))
            await client.response(client.request("GET", "/b"))
            schedule = client._quic.tls.key_schedule
            assert schedule is not None
            return int(schedule.cipher_suite)

    with _serve(certs) as running:
        cipher = run_client(main(quic_port(running)))
    tls = SEEN["tls"]["/a"]
    assert tls == {
        "server_cert": _server_pem(certs),
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": cipher,
    }
    assert cipher in (0x1301, 0x1302, 0x1303)
    assert SEEN["tls"]["/b"] is tls  # computed once per connection


def test_the_tls_extension_on_a_websocket_over_http3(certs: Certs) -> None:
    async def main(port: int) -> int:
        async with client_of(certs, port) as client:
            await until(lambda: client.h3.received_settings is not None)
            sid = client.request(
                headers=[
                    (b":method", b"CONNECT"),
                    (b":protocol", b"websocket"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/ws"),
                    (b"sec-websocket-version", b"13"),
                ],
                end=False,
            )
            return (await client.response(sid)).status  # (the app closes before accepting: 403)

    with _serve(certs) as running:
        status = run_client(main(quic_port(running)))
    assert status == 403
    tls = SEEN["ws_tls"]
    assert tls is not None and tls["tls_version"] == 0x0304 and tls["server_cert"] == _server_pem(certs)


# --- cancelled pushes: the rapid-reset budget, CANCEL_PUSH ----------------------------------------


@pytest.mark.parametrize("how", ["stop_sending", "cancel_push"])
def test_cancelling_pushes_counts_toward_the_rapid_reset_limit(certs: Certs, how: str) -> None:
    class Cancelling(CancellingClient):
        pass

    Cancelling.how = (how,)

    async def main(port: int) -> tuple[int | None, int]:
        async with client_of(certs, port, Cancelling) as client:
            for _ in range(6):  # four pushes a page, each cancelled: past 10 resets on the third
                client.request("GET", "/fan")
                await until(lambda: client.closed_event.is_set() or len(client.push_resets) == len(client.pushed))
                if client.closed_event.is_set():
                    break
            await asyncio.wait_for(client.closed_event.wait(), 3)
            code = client.terminated.error_code
        async with client_of(certs, port) as other:  # other connections are served
            return code, (await other.response(other.request("GET", "/other"))).status

    with _serve(certs, http2_max_resets=10) as running:
        code, status = run_client(main(quic_port(running)))
    assert code == ErrorCode.H3_EXCESSIVE_LOAD
    assert status == 200


def test_cancelled_pushes_within_the_limit_keep_the_connection(certs: Certs) -> None:
    class Cancelling(CancellingClient):
        how = ("stop_sending", "cancel_push")  # STOP_SENDING and CANCEL_PUSH of one push count once

    async def main(port: int) -> tuple[int, int, int | None]:
        async with client_of(certs, port, Cancelling) as client:
            for pages in (1, 2):  # ten pushes, each cancelled twice: ten resets, the limit
                await client.response(client.request("GET", "/fan?5"))
                await until(lambda: len(client.pushed) == len(client.push_resets) == 5 * pages)  # noqa: B023
            page = await client.response(client.request("GET", "/other"))
            return len(client.pushed), page.status, None if client.terminated is None else client.terminated.error_code

    with _serve(certs, http2_max_resets=10) as running:
        pushed, status, closed = run_client(main(quic_port(running)))
    assert (pushed, status, closed) == (10, 200, None)
    assert SEEN["held_ended"] == 10


def test_cancel_push_stops_a_push_in_flight_and_frees_its_slot(certs: Certs) -> None:
    async def main(port: int) -> tuple[Any, ...]:
        async with client_of(certs, port) as client:
            page = await client.response(client.request("GET", "/fan?1"))
            await until(lambda: 0 in client.push_streams)  # its response started, and goes on
            client.cancel_push(0, split=True)  # (the frame's bytes in separate packets)
            client.transmit()
            push_sid = client.push_streams[0]
            await until(lambda: push_sid in client.push_resets)
            # its slot (--http2-max-concurrent-streams 1) is free: the next page's push goes out
            again = await client.response(client.request("GET", "/page"))
            await until(lambda: 1 in client.pushed and client.pushed[1]["ended"])
            client.cancel_push(1)  # a push already complete: nothing to stop
            client.cancel_push(0)  # one cancelled already: the same
            last = await client.response(client.request("GET", "/other"))
            return page.status, client.push_resets, push_sid, again.status, client.pushed[1], last, client.terminated

    with _serve(certs, http2_max_concurrent_streams=1) as running:
        status, resets, push_sid, again, pushed, last, terminated = run_client(main(quic_port(running)))
    assert status == 200 and again == 200
    assert resets == {push_sid: ErrorCode.H3_REQUEST_CANCELLED}  # only the cancelled push was reset
    assert SEEN["held_ended"] == 1  # its app saw http.disconnect and returned
    assert pushed["body"] == b"body { color: teal }"
    assert last.status == 200 and terminated is None


@pytest.mark.parametrize(
    ("push_id", "payload", "code"),
    [
        (0, None, ErrorCode.H3_ID_ERROR),  # allowed by MAX_PUSH_ID 8, but never promised
        (9, None, ErrorCode.H3_ID_ERROR),  # beyond MAX_PUSH_ID
        (0, b"\x00\x00", ErrorCode.H3_FRAME_ERROR),  # two push ids in one frame
        (0, b"", ErrorCode.H3_FRAME_ERROR),  # none
    ],
)
def test_a_bad_cancel_push_closes_the_connection(certs: Certs, push_id: int, payload: bytes | None, code: int) -> None:
    async def main(port: int) -> tuple[int, int | None]:
        async with client_of(certs, port) as client:
            status = (await client.response(client.request("GET", "/other"))).status  # (no push: none promised)
            client.cancel_push(push_id, payload)
            client.transmit()
            await asyncio.wait_for(client.closed_event.wait(), 3)
            return status, client.terminated.error_code

    with _serve(certs) as running:
        status, closed = run_client(main(quic_port(running)))
    assert status == 200 and closed == code


def test_the_control_stream_scan_finds_cancel_push_in_any_split() -> None:
    big = encode_frame(0x21, b"x" * 70000)  # a reserved frame type, skipped (a 4-byte length)
    stream = (
        encode_frame(FrameType.SETTINGS, b"\x01\x00")
        + encode_frame(FrameType.CANCEL_PUSH, encode_uint_var(3))
        + big
        + encode_frame(FrameType.CANCEL_PUSH, encode_uint_var(70000))  # (a 4-byte push id)
        + encode_frame(FrameType.GOAWAY, encode_uint_var(0))
    )
    for size in (1, 2, 3, 7, 1000, len(stream)):
        scan = ControlScan()
        found = [push_id for i in range(0, len(stream), size) for push_id in scan.feed(stream[i : i + size])]
        assert found == [3, 70000], size
        assert len(scan._head) == len(scan._payload) == 0  # nothing kept between frames
    with pytest.raises(ProtocolError):  # (aioquic's, which ServerH3 turns into CONNECTION_CLOSE)
        ControlScan().feed(encode_frame(FrameType.CANCEL_PUSH, b"\x01\x02"))
