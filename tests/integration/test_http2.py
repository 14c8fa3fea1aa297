"""HTTP/2 against a real heron: an h2 client over a raw socket, raw frames (tests/rawclients.py) for the
attacks, httpx (http2=True), curl, h2load, Starlette and FastAPI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import struct
import subprocess
import threading
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from ..conftest import serve
from ..rawclients import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    OP_CLOSE,
    OP_TEXT,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    RawH2,
    close_payload,
    ws_frame,
)
from ..rawclients import h2_frame as frame
from . import apps

# --- clients ---------------------------------------------------------------------------------------


class H2Client:
    """The h2 library as the client, over a blocking socket."""

    def __init__(self, port: int, *, enable_push: bool = True, window: int | None = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        initial = {h2.settings.SettingCodes.ENABLE_PUSH: int(enable_push)}
        if window is not None:
            initial[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = window
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=initial)
        self.conn.initiate_connection()
        self.flush()
        self.events: list[Any] = []
        self.closed = False
        self.auto_ack = True

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
        ]
        fields += headers or []
        self.conn.send_headers(sid, fields, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        view = memoryview(body)
        while True:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0 and view:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end and not view)
            self.flush()
            if not view:
                return

    def pump(self, until: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if self.closed:
                raise ConnectionError("closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("condition not reached")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError) as exc:
                if isinstance(exc, socket.timeout):
                    raise TimeoutError("condition not reached") from None
                data = b""
            if not data:
                self.closed = True
                continue
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived) and self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()

    def ended(self, sid: int) -> bool:
        return any(
            isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid for e in self.events
        )

    def response(self, sid: int, timeout: float = 5.0) -> tuple[int, dict[bytes, bytes], bytes]:
        self.pump(lambda: self.ended(sid), timeout)
        status, headers, body = 0, {}, b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                headers = dict(e.headers)
                status = int(headers[b":status"])
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamReset):
                raise ConnectionAbortedError(f"stream {sid} reset with {e.error_code!r}")
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    for kind, _, _, payload in frames:
        if kind == GOAWAY:
            return int(struct.unpack(">I", payload[4:8])[0])
    return None


def resets(frames: list[tuple[int, int, int, bytes]]) -> dict[int, int]:
    return {sid: struct.unpack(">I", p)[0] for kind, _, sid, p in frames if kind == RST_STREAM}


# --- apps ------------------------------------------------------------------------------------------


async def scope_app(scope: Any, receive: Any, send: Any) -> None:
    await apps.scope_json(scope, receive, send)


def counting_app(counter: list[int]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        counter.append(1)
        await apps.hello(scope, receive, send)

    return app


async def sha_app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the body slowly; answers its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        digest.update(message.get("body", b""))
        size += len(message.get("body", b""))
        await asyncio.sleep(0.001)
        if not message.get("more_body"):
            break
    body = f"{size} {digest.hexdigest()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def download_app(size: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % size)]})
        chunk = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})

    return app


# --- basics --------------------------------------------------------------------------------------


def test_prior_knowledge_scope() -> None:
    with serve(scope_app) as srv:
        client = H2Client(srv.port)
        status, headers, body = client.response(client.request("/a%20b?x=1", headers=[(b"x-test", b"1")]))
        assert status == 200
        assert headers[b"server"] == b"heron" and b"date" in headers
        scope = json.loads(body)
        assert scope["http_version"] == "2" and scope["scheme"] == "http"
        assert scope["path"] == "/a b" and scope["raw_path"] == "/a%20b" and scope["query_string"] == "x=1"
        assert scope["headers"][0] == ["host", "localhost"]
        assert ["x-test", "1"] in scope["headers"]
        assert scope["extensions"] == [
            "http.response.early_hint",
            "http.response.pathsend",
            "http.response.push",
            "http.response.trailers",
        ]
        client.close()


def test_multiplexing_many_concurrent_streams_each_with_its_own_scope() -> None:
    n = 50
    arrived: list[str] = []
    everyone = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        arrived.append(scope["path"])
        if len(arrived) == n:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), 5)  # all n run at once, or none answers
        body = f"{scope['path']} {scope['http_version']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with serve(app) as srv:
        client = H2Client(srv.port)
        sids = [client.request(f"/s{i}") for i in range(n)]
        for i, sid in enumerate(sids):
            assert client.response(sid)[2] == f"/s{i} 2".encode()


def test_malformed_request_is_a_stream_error_and_the_connection_goes_on() -> None:
    with serve(apps.hello) as srv:
        raw = RawH2(srv.port)
        raw.sock.sendall(
            raw.headers(1, extra=[("X-Upper", "1")]) + raw.headers(3, extra=[("connection", "close")]) + raw.headers(5)
        )
        frames = raw.frames(timeout=1.0)
        assert resets(frames) == {1: PROTOCOL_ERROR, 3: PROTOCOL_ERROR}
        assert any(kind == DATA and sid == 5 and payload == b"Hello, world!" for kind, _, sid, payload in frames)
        assert goaway_code(frames) is None


def test_post_body_and_content_length_mismatch() -> None:
    with serve(apps.echo) as srv:
        client = H2Client(srv.port)
        assert client.response(client.request("/", "POST", body=b"hello"))[2] == b"hello"
        sid = client.request("/", "POST", headers=[(b"content-length", b"10")], body=b"abc")
        with pytest.raises(ConnectionAbortedError, match="PROTOCOL_ERROR"):
            client.response(sid)
        assert client.response(client.request("/", "POST", body=b"again"))[2] == b"again"


def test_app_errors_on_http2() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/raise":
            raise RuntimeError("boom")
        if scope["path"] == "/long":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"bcd"})
        await apps.hello(scope, receive, send)

    with serve(app) as srv:
        client = H2Client(srv.port)
        assert client.response(client.request("/raise"))[0] == 500
        with pytest.raises(ConnectionAbortedError, match="INTERNAL_ERROR"):
            client.response(client.request("/long"))
        assert client.response(client.request("/ok"))[0] == 200


# --- flow control ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_big_upload_with_a_slow_reader() -> None:
    body = os.urandom(3 * 1024 * 1024)
    with serve(sha_app) as srv:
        client = H2Client(srv.port)
        sid = client.request("/", "POST", body=body)
        assert client.response(sid, timeout=30)[2] == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def test_credit_is_returned_only_as_the_app_reads() -> None:
    release = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)
        await sha_app(scope, receive, send)

    with serve(app, http2_initial_window_size=65535) as srv:
        client = H2Client(srv.port)
        sid = client.request("/", "POST", end=False)
        client.conn.send_data(sid, b"x" * 16384)
        client.conn.send_data(sid, b"x" * 16384)
        client.conn.send_data(sid, b"x" * 16384)
        client.conn.send_data(sid, b"x" * 16383)
        client.flush()
        with pytest.raises(TimeoutError):
            client.pump(lambda: client.conn.local_flow_control_window(sid) > 0, timeout=0.5)
        release.set()
        client.pump(lambda: client.conn.local_flow_control_window(sid) > 0)
        client.send_body(sid, b"y" * 100000)
        assert client.response(sid)[2].startswith(b"165535 ")


@pytest.mark.slow
def test_big_download_with_a_slow_reader_and_small_windows() -> None:
    size = 4 * 1024 * 1024
    with serve(download_app(size)) as srv:
        client = H2Client(srv.port)  # 65535-byte windows
        client.auto_ack = False
        sid = client.request()
        received = 0
        deadline = time.monotonic() + 30
        while not client.ended(sid) and time.monotonic() < deadline:
            before = len(client.events)
            client.pump(lambda before=before: len(client.events) > before)
            for e in client.events[before:]:
                if isinstance(e, h2.events.DataReceived):
                    assert len(e.data) <= 16384
                    received += len(e.data)
                    client.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            client.flush()
        assert received == size


def test_zero_window_stream_is_reset_after_timeout_write() -> None:
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            await send({"type": "http.response.body", "body": b"y"})
            outcome.append("sent")
        except OSError:
            outcome.append("disconnected")

    with serve(app, timeout_write=1) as srv:
        client = H2Client(srv.port, window=0)
        sid = client.request()
        started = time.monotonic()
        with pytest.raises(ConnectionAbortedError, match="CANCEL"):
            client.response(sid, timeout=5)
        assert 0.5 < time.monotonic() - started < 4
        # the connection itself still works
        client.conn.increment_flow_control_window(1000, None)
        client.flush()
    assert outcome == ["disconnected"]


def test_zero_connection_window_closes_the_connection() -> None:
    with serve(download_app(200000), timeout_write=1) as srv:
        client = H2Client(srv.port, window=1 << 20)
        client.auto_ack = False  # never returns connection credit
        client.request()
        with pytest.raises(ConnectionError):
            client.pump(lambda: False, timeout=5)
        terminated = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == ENHANCE_YOUR_CALM


# --- resets and shutdown -----------------------------------------------------------------------------


def test_client_reset_disconnects_that_stream_only() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            await receive()
            seen["message"] = await receive()
            return
        await asyncio.sleep(0.2)
        await apps.hello(scope, receive, send)

    with serve(app) as srv:
        client = H2Client(srv.port)
        waiting = client.request("/wait")
        other = client.request("/other")
        time.sleep(0.1)
        client.conn.reset_stream(waiting, 8)
        client.flush()
        assert client.response(other)[2] == b"Hello, world!"
        deadline = time.monotonic() + 2
        while "message" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen["message"] == {"type": "http.disconnect"}


def test_graceful_shutdown_sends_goaway_and_finishes_streams_in_flight() -> None:
    started = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await asyncio.sleep(0.5)
        await apps.hello(scope, receive, send)

    with serve(app) as srv:
        raw = RawH2(srv.port)
        raw.sock.sendall(raw.headers(1))
        assert started.wait(5)
        srv.call(srv.server.shutdown)
        frames = raw.frames(timeout=5)  # until the server closes the connection
        kinds = [(kind, sid) for kind, _, sid, _ in frames]
        goaway = next(p for kind, _, _, p in frames if kind == GOAWAY)
        assert struct.unpack(">II", goaway[:8]) == (1, 0)  # last stream id 1, NO_ERROR
        assert kinds.index((GOAWAY, 0)) < kinds.index((DATA, 1))
        assert any(kind == DATA and sid == 1 and flags & END_STREAM for kind, flags, sid, _ in frames)


# --- DoS protections, each with a raw-frame attack ------------------------------------------------


def test_streams_beyond_max_concurrent_streams_are_refused() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/release":
            release.set()
        else:
            await asyncio.wait_for(release.wait(), 5)
        await apps.hello(scope, receive, send)

    with serve(app, http2_max_concurrent_streams=2) as srv:
        raw = RawH2(srv.port)
        raw.sock.sendall(raw.headers(1) + raw.headers(3) + raw.headers(5))
        frames = raw.frames(timeout=0.5)
        assert resets(frames) == {5: REFUSED_STREAM}
        raw2 = RawH2(srv.port)
        raw2.sock.sendall(raw2.headers(1, "/release"))
        raw2.frames(timeout=0.5)
        frames = raw.frames(timeout=0.5)
        assert {sid for kind, flags, sid, _ in frames if kind == DATA and flags & END_STREAM} == {1, 3}


@pytest.mark.parametrize("provoked", [False, True], ids=["rapid-reset", "made-you-reset"])
def test_reset_flood_gets_goaway_enhance_your_calm(provoked: bool) -> None:
    counter: list[int] = []
    with serve(counting_app(counter), http2_max_resets=100) as srv:
        raw = RawH2(srv.port)
        burst = []
        for i in range(300):
            sid = 1 + 2 * i
            if provoked:  # a malformed request: the server resets it
                burst.append(raw.headers(sid, extra=[("X-Bad", "1")]))
            else:
                burst.append(raw.headers(sid, flags=END_HEADERS))
                burst.append(frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
        raw.sock.sendall(b"".join(burst))
        frames = raw.frames(timeout=2)
        assert goaway_code(frames) == ENHANCE_YOUR_CALM
        assert counter == []  # the app never ran for a stream opened and reset in the same read
        # the server as a whole keeps serving
        client = H2Client(srv.port)
        assert client.response(client.request())[0] == 200


def test_continuation_flood_is_cut_off() -> None:
    with serve(apps.hello) as srv:
        raw = RawH2(srv.port)
        raw.sock.sendall(raw.headers(1, flags=END_STREAM))
        junk = frame(CONTINUATION, 0, 1, raw.enc.encode([("x-f", "a" * 8000)]) * 2)
        sent = 0
        try:
            for _ in range(200):
                raw.sock.sendall(junk)
                sent += len(junk)
        except OSError:
            pass
        frames = raw.frames(timeout=2)
        assert goaway_code(frames) == ENHANCE_YOUR_CALM


def test_hpack_bomb_and_header_list_size() -> None:
    with serve(apps.hello) as srv:
        raw = RawH2(srv.port)
        raw.sock.sendall(raw.headers(1, extra=[("x-bomb", "a" * 4000)]))
        raw.sock.sendall(
            frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                3,
                raw.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/")]) + b"\xbe" * 4000,
            )
        )
        assert goaway_code(raw.frames(timeout=2)) == ENHANCE_YOUR_CALM

    with serve(apps.hello, http2_max_header_list_size=4096) as srv:
        client = H2Client(srv.port)
        client.request(headers=[(b"x-big", b"b" * 5000)])
        with pytest.raises(ConnectionError):
            client.pump(lambda: False)
        terminated = [e for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated[0].error_code == ENHANCE_YOUR_CALM
        assert client.conn.remote_settings.max_header_list_size == 4096


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_from_a_peer_that_does_not_read(kind: str) -> None:
    """The server stops reading once its replies pile up, then drops the connection."""
    with serve(apps.hello, timeout_write=1, http2_max_control_frames=2000) as srv:
        raw = RawH2(srv.port, rcvbuf=4096)
        one = frame(PING, 0, 0, b"12345678") if kind == "ping" else frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535))
        burst = one * 2000
        raw.sock.settimeout(0.5)
        started = time.monotonic()
        blocked = False
        try:
            while time.monotonic() - started < 10:
                raw.sock.sendall(burst)
        except TimeoutError:
            blocked = True  # the server stopped reading
        except OSError:
            pass  # the server closed the connection
        assert time.monotonic() - started < 10
        # the connection ends (GOAWAY ENHANCE_YOUR_CALM, or dropped after timeout_write)
        deadline = time.monotonic() + 5
        closed = False
        raw.sock.settimeout(0.2)
        while time.monotonic() < deadline and not closed:
            try:
                closed = raw.sock.recv(1 << 20) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
        assert closed, f"still open (blocked={blocked})"
        assert srv.server.connection_count == 0


# --- extensions -------------------------------------------------------------------------------------


def test_server_push_runs_the_pushed_request_through_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/":
            await send({"type": "http.response.push", "path": "/style.css", "headers": [(b"accept", b"text/css")]})
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"page"})
        else:
            headers = dict(scope["headers"])
            body = f"{scope['method']} {scope['path']} {headers.get(b'accept', b'').decode()}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    with serve(app) as srv:
        client = H2Client(srv.port)
        sid = client.request("/")
        assert client.response(sid)[2] == b"page"
        promise = next(e for e in client.events if isinstance(e, h2.events.PushedStreamReceived))
        assert dict(promise.headers)[b":path"] == b"/style.css"
        assert client.response(promise.pushed_stream_id)[2] == b"GET /style.css text/css"

        quiet = H2Client(srv.port, enable_push=False)
        assert quiet.response(quiet.request("/"))[2] == b"page"
        assert not any(isinstance(e, h2.events.PushedStreamReceived) for e in quiet.events)


def test_trailers_and_early_hints() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-more", b"1")]})

    with serve(app) as srv:
        client = H2Client(srv.port)
        sid = client.request()
        assert client.response(sid)[2] == b"data"
        hint = next(e for e in client.events if isinstance(e, h2.events.InformationalResponseReceived))
        assert dict(hint.headers)[b":status"] == b"103"
        assert dict(hint.headers)[b"link"] == b"</style.css>; rel=preload; as=style"
        trailers = next(e for e in client.events if isinstance(e, h2.events.TrailersReceived))
        assert trailers.headers == [(b"x-checksum", b"abc"), (b"x-more", b"1")]


def test_http11_announces_only_its_own_extensions() -> None:
    # no push on HTTP/1.1; trailers only with TE: trailers (tests/integration/test_http1_extensions.py)
    with serve(scope_app) as srv:
        assert httpx.get(srv.url).json()["extensions"] == ["http.response.early_hint", "http.response.pathsend"]


def test_websocket_over_http2() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket" and scope["http_version"] == "2" and scope["scheme"] == "ws"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "chat"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + message["text"]})

    with serve(app) as srv:
        client = H2Client(srv.port)
        client.pump(lambda: client.conn.remote_settings.enable_connect_protocol == 1)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            sid,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":path", b"/ws"),
                (b":authority", b"localhost"),
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-protocol", b"chat"),
            ],
        )
        client.conn.send_data(sid, ws_frame(OP_TEXT, b"hi"))
        client.flush()
        client.pump(lambda: any(isinstance(e, h2.events.DataReceived) for e in client.events))
        response = next(e for e in client.events if isinstance(e, h2.events.ResponseReceived))
        assert dict(response.headers)[b":status"] == b"200"
        assert dict(response.headers)[b"sec-websocket-protocol"] == b"chat"
        data = b"".join(e.data for e in client.events if isinstance(e, h2.events.DataReceived))
        assert data == b"\x81\x07echo:hi"
        client.conn.send_data(sid, ws_frame(OP_CLOSE, close_payload(1000)), end_stream=True)
        client.flush()
        client.pump(lambda: client.ended(sid))
        data = b"".join(e.data for e in client.events if isinstance(e, h2.events.DataReceived))
        assert data.endswith(b"\x88\x02\x03\xe8")


# --- real clients --------------------------------------------------------------------------------------


def test_httpx_http2_concurrent_requests() -> None:
    async def main(url: str) -> list[Any]:
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            return await asyncio.gather(*(client.post(url + f"/p{i}", content=b"x" * i * 1000) for i in range(20)))

    with serve(apps.echo) as srv:
        responses = asyncio.run(main(srv.url))
        for i, response in enumerate(responses):
            assert response.http_version == "HTTP/2"
            assert response.content == b"x" * i * 1000
            assert json.loads(response.headers["x-scope"])["path"] == f"/p{i}"


@pytest.mark.usefixtures("curl_path")
def test_curl_prior_knowledge_and_upgrade_with_a_body() -> None:
    with serve(apps.echo) as srv:
        out = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_version}", srv.url + "/pk"],
            capture_output=True,
            timeout=20,
            check=True,
        ).stdout
        assert out.endswith(b" 2")
        out = subprocess.run(
            ["curl", "-sS", "--http2", "-d", "hello body", "-w", " %{http_version}", srv.url + "/up"],
            capture_output=True,
            timeout=20,
            check=True,
        ).stdout
        assert out == b"hello body 2"


def test_upgrade_ignored_with_no_http2() -> None:
    with serve(apps.echo, http2=False) as srv:
        sock = srv.connect()
        sock.sendall(
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            b"http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()
        sock = srv.connect()
        sock.sendall(PREFACE)
        assert not sock.recv(100).startswith(b"\x00")  # an HTTP/1.1 error, not a SETTINGS frame
        sock.close()


@pytest.mark.usefixtures("h2load_path")
def test_h2load() -> None:
    with serve(apps.hello) as srv:
        out = subprocess.run(
            ["h2load", "-n", "400", "-c", "4", "-m", "8", srv.url + "/"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "400 succeeded, 0 failed, 0 errored" in out, out


def test_starlette_and_fastapi_over_http2() -> None:
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def item(request: Any) -> Any:
        body = await request.body()
        return JSONResponse({"id": request.path_params["id"], "len": len(body), "v": request.scope["http_version"]})

    async def stream(request: Any) -> Any:
        async def gen() -> Any:
            for i in range(5):
                yield b"part%d " % i

        return StreamingResponse(gen())

    star = Starlette(routes=[Route("/items/{id}", item, methods=["POST"]), Route("/stream", stream)])
    api = FastAPI()

    @api.get("/users/{uid}")
    async def user(uid: int, q: str = "") -> dict[str, Any]:
        return {"uid": uid, "q": q}

    with serve(star) as srv, httpx.Client(http1=False, http2=True) as client:
        r = client.post(srv.url + "/items/7", content=b"abc")
        assert r.http_version == "HTTP/2" and r.json() == {"id": "7", "len": 3, "v": "2"}
        assert client.get(srv.url + "/stream").content == b"part0 part1 part2 part3 part4 "
    with serve(api) as srv, httpx.Client(http1=False, http2=True) as client:
        r = client.get(srv.url + "/users/5?q=z")
        assert r.http_version == "HTTP/2" and r.json() == {"uid": 5, "q": "z"}
        assert client.get(srv.url + "/users/x").status_code == 422


def test_http2_requests_reach_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    async def main(url: str) -> list[Any]:
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            return [await client.get(url + "/logged?x=1")]

    with caplog.at_level(logging.INFO, logger="heron.access"):
        # a custom format goes through the same observer as HTTP/1.1 (and metrics)
        with serve(apps.hello, access_log=True, access_log_format="custom %(m)s %(U)s %(q)s %(H)s %(s)s %(b)s") as srv:
            (response,) = asyncio.run(main(srv.url))
            assert response.http_version == "HTTP/2"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any("/logged" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "heron.access"]
    assert any(line.endswith("custom GET /logged x=1 HTTP/2 200 13") for line in lines), lines
