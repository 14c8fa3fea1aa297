"""HTTP/3 over QUIC (--quic-bind), through real UDP sockets on 127.0.0.1.

The client is aioquic's own (``aioquic.asyncio.connect`` with an
``H3Connection``), against heron serving in a background thread with a
trustme certificate. Responses are checked at event level (status, fields,
body, trailers, stream resets, the GOAWAY frame on the server's control
stream, the connection's close code).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aioquic.asyncio.client import connect  # (the http3 extra: requirements-test.txt installs it)
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived, StreamReset

from heron.config import Config, SettingError

from ..conftest import RunningServer, serve
from .test_cli import run

pytestmark = pytest.mark.timeout(30)

WINDOW = 262144  # --http2-initial-window-size, the default: a stream's receive window


# --- the app --------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the app saw, for the tests to read (set from the server's thread)."""

    disconnects: list[str] = field(default_factory=list)
    read_gate: asyncio.Event | None = None


SEEN = Seen()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    text = [(b"content-type", b"text/plain")]
    if path == "/echo":
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                SEEN.disconnects.append(path)
                return
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": text})
        for start in range(0, len(body), 100_000):  # several body messages: send() waits as it must
            await send({"type": "http.response.body", "body": body[start : start + 100_000], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/gated":  # reads nothing until the test opens the gate
        SEEN.read_gate = asyncio.Event()
        await SEEN.read_gate.wait()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": text})
        await send({"type": "http.response.body", "body": b"%d" % size})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": text})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        assert "http.response.trailers" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": text, "trailers": True})
        await send({"type": "http.response.body", "body": b"body", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
    elif path == "/hint":
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
        await send({"type": "http.response.start", "status": 200, "headers": text})
        await send({"type": "http.response.body", "body": b"hinted"})
    elif path == "/file":
        await send({"type": "http.response.start", "status": 200, "headers": text})
        await send({"type": "http.response.pathsend", "path": __file__})
    elif path == "/slow":
        await asyncio.sleep(0.4)
        await send({"type": "http.response.start", "status": 200, "headers": text})
        await send({"type": "http.response.body", "body": b"finished"})
    else:
        info = {
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
            "method": scope["method"],
            "path": path,
            "query_string": scope["query_string"].decode(),
            "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
        }
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(info).encode()})


# --- certificates and the server -------------------------------------------------------------


@dataclass
class Certs:
    ca_pem: str
    certfile: str
    keyfile: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("h3certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(certfile))
    leaf.private_key_pem.write_to_path(str(keyfile))
    return Certs(ca.cert_pem.bytes().decode(), str(certfile), str(keyfile))


@pytest.fixture
def server(certs: Certs) -> Iterator[RunningServer]:
    with _serve(certs) as running:
        yield running


@contextmanager
def _serve(certs: Certs, **settings: Any) -> Iterator[RunningServer]:
    SEEN.disconnects.clear()
    settings.setdefault("timeout_graceful_shutdown", 5)
    with serve(
        app, quic_bind=("127.0.0.1:0",), ssl_certfile=certs.certfile, ssl_keyfile=certs.keyfile, **settings
    ) as running:
        yield running


def quic_port(running: RunningServer) -> int:
    return int(running.server.quic_sockets[0].getsockname()[1])


# --- the client --------------------------------------------------------------------------------


@dataclass
class Response:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)  # 1xx heads
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None  # the server's RESET_STREAM code
    chunks: int = 0  # DATA events received
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])


class Client(QuicConnectionProtocol):
    """An HTTP/3 client: one ``Response`` per request stream."""

    h3_class: type[H3Connection] = H3Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = self.h3_class(self._quic)
        self.responses: dict[int, Response] = {}
        self.control = b""  # what arrived on the server's control stream (id 3)
        self.terminated: ConnectionTerminated | None = None
        self.closed_event = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id == 3:
            self.control += event.data
        if isinstance(event, StreamReset) and event.stream_id in self.responses:
            response = self.responses[event.stream_id]
            response.reset = event.error_code
            response.done.set()
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.closed_event.set()
            for response in self.responses.values():
                response.done.set()
        for h3_event in self.h3.handle_event(event):
            self._on_h3(h3_event)

    def _on_h3(self, event: H3Event) -> None:
        if not isinstance(event, (HeadersReceived, DataReceived)):
            return
        response = self.responses.get(event.stream_id)
        if response is None:
            return
        if isinstance(event, HeadersReceived):
            if dict(event.headers).get(b":status", b"").startswith(b"1"):
                response.informational.append(list(event.headers))
            elif response.headers:
                response.trailers = list(event.headers)
            else:
                response.headers = list(event.headers)
        else:
            response.body += event.data
            response.chunks += 1
        if event.stream_ended:
            response.done.set()

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes | None = None,
        end: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        sid = self._quic.get_next_available_stream_id()
        self.responses[sid] = Response()
        if headers is None:
            headers = [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path.encode()),
            ]
        self.h3.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=end)
        self.transmit()
        return sid

    async def response(self, sid: int, timeout: float = 3.0) -> Response:
        response = self.responses[sid]
        await asyncio.wait_for(response.done.wait(), timeout)
        return response

    def goaway_ids(self) -> list[int]:
        """The stream ids of the GOAWAY frames on the server's control stream."""
        data, ids = self.control, []
        _, pos = _varint(data, 0)  # the stream type (0: control)
        while pos < len(data):
            start = pos
            kind, pos = _varint(data, pos)
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                break
            if kind == 0x7:
                ids.append(_varint(data, pos)[0])
            pos += length
            assert pos > start
        return ids


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 16) at ``pos``: (value, next position)."""
    first = data[pos]
    size = 1 << (first >> 6)
    value = first & 0x3F
    for byte in data[pos + 1 : pos + size]:
        value = (value << 8) | byte
    return value, pos + size


@asynccontextmanager
async def h3_client(certs: Certs, port: int) -> AsyncIterator[Client]:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    configuration.load_verify_locations(cadata=certs.ca_pem.encode())
    async with connect("127.0.0.1", port, configuration=configuration, create_protocol=Client) as client:
        yield client  # type: ignore[misc]  # (create_protocol=Client: it is one)


def run_client(coro: Any, timeout: float = 10) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --- requests ----------------------------------------------------------------------------------


def test_get_has_the_http3_scope_and_no_alt_svc(certs: Certs, server: RunningServer) -> None:
    async def main() -> Response:
        async with h3_client(certs, quic_port(server)) as client:
            return await client.response(client.request("GET", "/info?x=1"))

    response = run_client(main())
    assert response.status == 200
    info = json.loads(response.body)
    assert info["http_version"] == "3"
    assert info["scheme"] == "https"
    assert (info["method"], info["path"], info["query_string"]) == ("GET", "/info", "x=1")
    assert info["headers"][0] == ["host", "localhost"]  # :authority becomes host, first
    fields = dict(response.headers)
    assert fields[b"server"] == b"heron" and b"date" in fields
    assert b"alt-svc" not in fields


def test_post_body_larger_than_the_windows_echoes_both_ways(certs: Certs, server: RunningServer) -> None:
    body = bytes(range(256)) * (6 * WINDOW // 256)  # 1.5 MiB: six stream windows, past the connection's

    async def main() -> Response:
        async with h3_client(certs, quic_port(server)) as client:
            return await client.response(client.request("POST", "/echo", body), timeout=8)

    response = run_client(main())
    assert response.status == 200
    assert response.body == body


def test_the_window_moves_only_as_the_app_reads(certs: Certs, server: RunningServer) -> None:
    loop = server.loop

    async def main() -> tuple[int, int, Response]:
        async with h3_client(certs, quic_port(server)) as client:
            sid = client.request("POST", "/gated", b"x" * (4 * WINDOW), end=True)
            await asyncio.sleep(0.3)  # the client sends what the windows allow, then waits
            stream = client._quic._streams[sid]
            granted_before = stream.max_stream_data_remote
            loop.call_soon_threadsafe(lambda: SEEN.read_gate.set() if SEEN.read_gate else None)
            response = await client.response(sid, timeout=5)
            return granted_before, stream.max_stream_data_remote, response

    before, after, response = run_client(main())
    assert before <= WINDOW + WINDOW // 2, before  # not doubled while nothing was read
    assert after >= 4 * WINDOW  # ... and moved on as the app read the body
    assert response.status == 200 and response.body == b"%d" % (4 * WINDOW)


class ReorderingRelay(asyncio.DatagramProtocol):
    """A UDP relay between the client and the server that delays one datagram of the
    client's (``hold``) by 150 ms, so what was sent after it arrives first."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.client: Any = None
        self.hold = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.server:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if self.hold:
            self.hold = False
            asyncio.get_running_loop().call_later(0.15, self.transport.sendto, data, self.server)
        else:
            self.transport.sendto(data, self.server)


def test_requests_arriving_out_of_order_are_all_answered(certs: Certs, server: RunningServer) -> None:
    async def main() -> list[Response]:
        loop = asyncio.get_running_loop()
        transport, relay = await loop.create_datagram_endpoint(
            lambda: ReorderingRelay(("127.0.0.1", quic_port(server))), local_addr=("127.0.0.1", 0)
        )
        try:
            async with h3_client(certs, transport.get_extra_info("sockname")[1]) as client:
                relay.hold = True
                first = client.request("GET", "/first")  # (delayed by the relay)
                await asyncio.sleep(0.02)
                second = client.request("GET", "/second")
                return [await client.response(first), await client.response(second)]
        finally:
            transport.close()

    responses = run_client(main())
    assert [json.loads(r.body)["path"] for r in responses] == ["/first", "/second"]


def test_streaming_response_arrives_in_pieces(certs: Certs, server: RunningServer) -> None:
    async def main() -> Response:
        async with h3_client(certs, quic_port(server)) as client:
            return await client.response(client.request("GET", "/stream"))

    response = run_client(main())
    assert response.status == 200
    assert response.body == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
    assert response.chunks >= 5


def test_trailers(certs: Certs, server: RunningServer) -> None:
    async def main() -> Response:
        async with h3_client(certs, quic_port(server)) as client:
            return await client.response(client.request("GET", "/trailers"))

    response = run_client(main())
    assert response.status == 200 and response.body == b"body"
    assert response.trailers == [(b"x-checksum", b"abc")]


def test_early_hint_and_pathsend(certs: Certs, server: RunningServer) -> None:
    async def main() -> tuple[Response, Response]:
        async with h3_client(certs, quic_port(server)) as client:
            hint, file = client.request("GET", "/hint"), client.request("GET", "/file")
            return await client.response(hint), await client.response(file)

    hint, file = run_client(main())
    assert [dict(h)[b":status"] for h in hint.informational] == [b"103"]
    assert (b"link", b"</style.css>; rel=preload; as=style") in hint.informational[0]
    assert hint.status == 200 and hint.body == b"hinted"
    assert file.status == 200 and file.body == Path(__file__).read_bytes()
    assert dict(file.headers)[b"content-length"] == b"%d" % len(file.body)


def test_client_reset_mid_body_disconnects_that_app_only(certs: Certs, server: RunningServer) -> None:
    async def main() -> tuple[Response, Response]:
        async with h3_client(certs, quic_port(server)) as client:
            sid = client.request("POST", "/echo", b"partial", end=False)
            await asyncio.sleep(0.1)
            client._quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            client._quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            client.transmit()
            await asyncio.sleep(0.1)
            after = await client.response(client.request("GET", "/after"))
            return client.responses[sid], after

    cancelled, after = run_client(main())
    assert after.status == 200  # the connection serves on
    assert not cancelled.headers
    assert SEEN.disconnects == ["/echo"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"GET"), (b":authority", b"localhost"), (b":path", b"/")],  # no :scheme
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"nope")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"), (b"host", b"b")],
    ],
    ids=["no-scheme", "relative-path", "host-differs"],
)
def test_malformed_request_is_a_stream_error(
    certs: Certs, server: RunningServer, headers: list[tuple[bytes, bytes]]
) -> None:
    async def main() -> tuple[Response, Response]:
        async with h3_client(certs, quic_port(server)) as client:
            bad = await client.response(client.request(headers=headers))
            good = await client.response(client.request("GET", "/"))
            return bad, good

    bad, good = run_client(main())
    assert bad.reset == ErrorCode.H3_MESSAGE_ERROR and not bad.headers
    assert good.status == 200


def test_header_section_over_the_limit_gets_431(certs: Certs) -> None:
    async def main(port: int) -> Response:
        async with h3_client(certs, port) as client:
            headers = [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/"),
                (b"x-big", b"v" * 3000),
            ]
            return await client.response(client.request(headers=headers))

    with _serve(certs, http2_max_header_list_size=2048) as running:
        response = run_client(main(quic_port(running)))
    assert response.status == 431


def test_shutdown_sends_goaway_and_lets_the_request_in_flight_finish(certs: Certs, server: RunningServer) -> None:
    async def main() -> tuple[Client, Response, Response, int]:
        async with h3_client(certs, quic_port(server)) as client:
            sid = client.request("GET", "/slow")
            await asyncio.sleep(0.1)  # the app is running
            server.loop.call_soon_threadsafe(server.server.shutdown)
            for _ in range(40):
                if client.goaway_ids():
                    break
                await asyncio.sleep(0.02)
            late = await client.response(client.request("GET", "/late"))
            slow = await client.response(sid)
            await asyncio.wait_for(client.closed_event.wait(), 3)
            return client, slow, late, sid

    client, slow, late, sid = run_client(main())
    assert client.goaway_ids() == [sid + 4]  # the first stream id not processed
    assert slow.status == 200 and slow.body == b"finished"
    assert late.reset == ErrorCode.H3_REQUEST_REJECTED
    assert client.terminated is not None and client.terminated.error_code == ErrorCode.H3_NO_ERROR


def test_access_log_says_http3(certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="heron.access")

    async def main(port: int) -> Response:
        async with h3_client(certs, port) as client:
            return await client.response(client.request("GET", "/logged?q=1"))

    with _serve(certs, access_log=True) as running:
        assert run_client(main(quic_port(running))).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "heron.access"]
    assert any('"GET /logged?q=1 HTTP/3" 200' in line for line in lines), lines


# --- Alt-Svc on the TCP listener ----------------------------------------------------------------


def test_https_responses_advertise_http3(certs: Certs, server: RunningServer) -> None:
    context = ssl.create_default_context(cadata=certs.ca_pem)
    for http2 in (False, True):
        with httpx.Client(verify=context, http2=http2) as client:
            response = client.get(f"https://localhost:{server.server.port}/")
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert response.headers["alt-svc"] == f'h3=":{quic_port(server)}"; ma=86400'


def test_alt_svc_max_age_0_turns_the_header_off(certs: Certs) -> None:
    with _serve(certs, quic_alt_svc_max_age=0) as running:
        context = ssl.create_default_context(cadata=certs.ca_pem)
        response = httpx.get(f"https://localhost:{running.server.port}/", verify=context)
        assert response.status_code == 200 and "alt-svc" not in response.headers


# --- settings --------------------------------------------------------------------------------------


def test_quic_bind_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"quic_bind.*--ssl-certfile"):
        Config(quic_bind=("127.0.0.1:8443",)).validate()
    with pytest.raises(SettingError, match=r"quic_bind.*UDP address"):
        Config(quic_bind=("unix:/tmp/x",)).validate()
    (tmp_path / "h3app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    result = run(["h3app:app", "--quic-bind", "127.0.0.1:8443"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("heron: error: ") and "quic_bind" in result.stderr
    assert "--ssl-certfile and --ssl-keyfile" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_quic_bind_without_aioquic_is_a_clear_error(tmp_path: Path, certs: Certs) -> None:
    (tmp_path / "noquic.py").write_text(
        "import sys\nsys.modules['aioquic'] = None  # as if not installed\nfrom heron.cli import main\nmain()\n"
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "noquic.py", "--quic-bind", "127.0.0.1:8443", "--ssl-certfile", certs.certfile,
         "--ssl-keyfile", certs.keyfile],
        cwd=tmp_path, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "pip install 'heron[http3]'" in result.stderr and "Traceback" not in result.stderr
    # without --quic-bind nothing of heron needs aioquic
    script = "import sys; sys.modules['aioquic'] = None\nimport heron.cli, heron.server, heron.supervisor, heron.worker"
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert imported.returncode == 0, imported.stderr


# --- limits -------------------------------------------------------------------------------------


def test_concurrent_streams_and_idle_timeout_are_the_servers(certs: Certs) -> None:
    async def main(port: int) -> tuple[int, float]:
        async with h3_client(certs, port) as client:
            allowed = client._quic._remote_max_streams_bidi  # the server's initial_max_streams_bidi
            ok = await client.response(client.request("GET", "/"))
            assert ok.status == 200
            start = asyncio.get_running_loop().time()
            await asyncio.wait_for(client.closed_event.wait(), 3)  # nothing sent: the idle timeout
            return allowed, asyncio.get_running_loop().time() - start

    with _serve(certs, http2_max_concurrent_streams=7, quic_idle_timeout=0.5) as running:
        allowed, idle = run_client(main(quic_port(running)))
        for _ in range(50):  # (the server's idle timer runs on its own clock: within a tick of the client's)
            if running.server.connection_count == 0:
                break
            time.sleep(0.02)
        assert running.server.connection_count == 0  # the server forgot the connection too
    assert allowed == 7
    assert 0.4 < idle < 2.0


def test_request_body_limit(certs: Certs) -> None:
    async def main(port: int) -> tuple[Response, Response, Response]:
        async with h3_client(certs, port) as client:
            declared = client.request(
                headers=[
                    (b":method", b"POST"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/echo"),
                    (b"content-length", b"2000"),
                ],
                end=False,
            )
            grown = client.request("POST", "/echo", b"y" * 5000)
            small = client.request("POST", "/echo", b"z" * 100)
            return await client.response(declared), await client.response(grown), await client.response(small)

    with _serve(certs, limit_request_body=1000) as running:
        declared, grown, small = run_client(main(quic_port(running)))
    assert declared.status == 413 and grown.status == 413
    assert small.status == 200 and small.body == b"z" * 100


def test_a_stalled_request_body_gets_408(certs: Certs) -> None:
    async def main(port: int) -> tuple[Response, float]:
        async with h3_client(certs, port) as client:
            start = asyncio.get_running_loop().time()
            response = await client.response(client.request("POST", "/echo", b"part", end=False), timeout=3)
            return response, asyncio.get_running_loop().time() - start

    with _serve(certs, timeout_request_body=0.5) as running:
        response, waited = run_client(main(quic_port(running)))
    assert response.status == 408
    assert 0.4 < waited < 1.8  # (deadlines fire up to a tick late)


def test_a_request_aioquic_rejects_closes_only_that_connection(certs: Certs, server: RunningServer) -> None:
    """aioquic's own header checks (here: an uppercase field name) are connection errors
    H3_MESSAGE_ERROR; the server goes on serving other connections."""

    async def main() -> tuple[ConnectionTerminated | None, Response]:
        async with h3_client(certs, quic_port(server)) as client:
            headers = [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/"),
                (b"X-Upper", b"1"),
            ]
            client.request(headers=headers)
            await asyncio.wait_for(client.closed_event.wait(), 3)
            terminated = client.terminated
        async with h3_client(certs, quic_port(server)) as other:
            return terminated, await other.response(other.request("GET", "/"))

    terminated, other = run_client(main())
    assert terminated is not None and terminated.error_code == ErrorCode.H3_MESSAGE_ERROR
    assert other.status == 200


def test_metrics_count_http3(certs: Certs) -> None:
    from .test_metrics import metrics_port, scrape

    async def main(port: int) -> None:
        async with h3_client(certs, port) as client:
            for _ in range(3):
                assert (await client.response(client.request("GET", "/"))).status == 200

    with _serve(certs, metrics_bind="127.0.0.1:0") as running:
        run_client(main(quic_port(running)))
        samples = scrape(metrics_port(running))
    assert samples[("heron_http_requests_total", 'method="GET",status="200"')] == 3
    assert samples[("heron_connections_total", "")] == 1
    assert samples[("heron_received_bytes_total", "")] > 1200  # (at least the client's Initial)
    assert samples[("heron_sent_bytes_total", "")] > 1200


# --- workers -------------------------------------------------------------------------------------


def test_workers_share_the_udp_port_and_keep_each_connection(certs: Certs, tmp_path: Path) -> None:
    import socket

    from .test_cli import free_port, heron_server

    (tmp_path / "pidapp.py").write_text(
        "import os\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': str(os.getpid()).encode()})\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = probe.getsockname()[1]
    tcp = free_port()
    args = ["pidapp:app", "--workers", "2", "--port", str(tcp), "--quic-bind", f"127.0.0.1:{udp}"]
    args += ["--ssl-certfile", certs.certfile, "--ssl-keyfile", certs.keyfile]

    async def one_connection() -> set[bytes]:
        async with h3_client(certs, udp) as client:
            pids = set()
            for _ in range(3):
                response = await client.response(client.request("GET", "/"))
                assert response.status == 200
                pids.add(response.body)
            return pids

    async def main() -> list[set[bytes]]:
        for _ in range(50):  # until both workers are up (the supervisor holds the TCP port only)
            try:
                await asyncio.wait_for(one_connection(), 1)
                break
            except (asyncio.TimeoutError, ConnectionError):
                await asyncio.sleep(0.1)
        return [await one_connection() for _ in range(6)]

    with heron_server(args, tmp_path, port=tcp):
        per_connection = run_client(main(), 20)
    assert all(len(pids) == 1 for pids in per_connection), per_connection  # each connection stays on one worker


def test_the_clients_control_stream_is_not_held_to_one_window(certs: Certs) -> None:
    """Only request streams wait for the app: the client's control stream (here a reserved
    frame type, RFC 9114 7.2.8, of four windows, which the server must read and ignore)
    keeps flowing, and requests are answered meanwhile."""
    from aioquic.h3.connection import encode_frame

    window = 65535

    async def main(port: int) -> tuple[int, int, Response]:
        async with h3_client(certs, port) as client:
            control = client.h3._local_control_stream_id
            assert control is not None
            client._quic.send_stream_data(control, encode_frame(0x21 + 0x1F, b"\0" * (4 * window)))
            client.transmit()
            stream = client._quic._streams[control]
            for _ in range(100):
                if not stream.sender._buffer:
                    break
                await asyncio.sleep(0.02)
            response = await client.response(client.request("GET", "/"))
            return len(stream.sender._buffer), stream.max_stream_data_remote, response

    with _serve(certs, http2_initial_window_size=window) as running:
        unsent, granted, response = run_client(main(quic_port(running)))
    assert unsent == 0 and granted > 4 * window
    assert response.status == 200
