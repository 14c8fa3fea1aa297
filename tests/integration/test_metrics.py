"""Prometheus metrics (--metrics-bind), scraped over HTTP from running servers;
and the promise that with metrics and the access log off no per-request work
is done for them."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from heron.accesslog import build_observer
from heron.config import Config
from heron.metrics import Metrics
from heron.server import protocol_factory
from heron.transport.context import ServerContext
from heron.transport.http1 import H1Protocol
from heron.transport.metered import MeteredProtocol

from ..conftest import read_response, serve


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] == "websocket.receive":
            pass
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(port: int) -> dict[tuple[str, str], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, str], float] = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) heron_\w+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples[(match["name"], match["labels"] or "")] = float(match["value"])
    return samples


def metrics_port(srv: Any) -> int:
    sock = srv.server.metrics_socket
    assert sock is not None
    return int(sock.getsockname()[1])


def request(port: int, data: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return read_response(sock)[0]


def test_requests_latency_bytes_and_errors_are_counted() -> None:
    with serve(app, metrics_bind="127.0.0.1:0") as srv:
        mport = metrics_port(srv)
        for _ in range(3):
            assert request(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") == 200
        assert request(srv.port, b"POST /missing HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello") == 404
        assert request(srv.port, b"BREW / HTTP/1.1\r\nHost: t\r\n\r\n") == 200
        assert request(srv.port, b"GET / HTTP/1.1\r\nHost t\r\n\r\n") == 400
        assert request(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 501
        samples = scrape(mport)
    assert samples[("heron_http_requests_total", 'method="GET",status="200"')] == 3
    assert samples[("heron_http_requests_total", 'method="POST",status="404"')] == 1
    assert samples[("heron_http_requests_total", 'method="other",status="200"')] == 1  # bounded label values
    assert samples[("heron_http_request_duration_seconds_count", "")] == 5
    assert samples[("heron_http_request_duration_seconds_bucket", 'le="+Inf"')] == 5
    buckets = [v for (name, labels), v in samples.items() if name == "heron_http_request_duration_seconds_bucket"]
    assert buckets == sorted(buckets)  # cumulative
    assert samples[("heron_http_parse_errors_total", 'status="400",kind="bad_request"')] == 1
    assert samples[("heron_http_parse_errors_total", 'status="501",kind="not_implemented"')] == 1
    assert samples[("heron_connections_total", "")] == 7
    assert samples[("heron_received_bytes_total", "")] > 7 * 30
    assert samples[("heron_sent_bytes_total", "")] > 7 * 40
    assert samples[("heron_http_response_body_bytes_total", "")] == 10
    assert samples[("heron_info", 'version="0.1.0"')] == 1


def test_gauges_in_flight_open_connections_and_websockets() -> None:
    from websockets.sync.client import connect

    with serve(app, metrics_bind="127.0.0.1:0") as srv:
        mport = metrics_port(srv)
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(idle)  # kept alive, idle
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
                ws.send("x")
                samples = scrape(mport)
                assert samples[("heron_http_requests_in_flight", "")] == 1
                assert samples[("heron_connections_open", 'protocol="http/1.1"')] == 2
                assert samples[("heron_connections_open", 'protocol="websocket"')] == 1
                assert samples[("heron_websocket_sessions_open", "")] == 1
            assert read_response(slow)[0] == 200
        finally:
            idle.close()
            slow.close()
        deadline = 50
        while deadline:
            samples = scrape(mport)
            if samples.get(("heron_websocket_sessions_total", 'code="1000"')) == 1:
                break
            deadline -= 1
            threading.Event().wait(0.05)
        assert samples[("heron_websocket_sessions_total", 'code="1000"')] == 1
        assert samples[("heron_websocket_sessions_open", "")] == 0
        assert samples[("heron_http_requests_in_flight", "")] == 0


def test_other_paths_are_404_and_metrics_requests_are_not_counted() -> None:
    with serve(app, metrics_bind="127.0.0.1:0") as srv:
        mport = metrics_port(srv)
        assert httpx.get(f"http://127.0.0.1:{mport}/nope", timeout=5).status_code == 404
        scrape(mport)
        samples = scrape(mport)
    assert samples[("heron_http_request_duration_seconds_count", "")] == 0
    assert samples[("heron_connections_total", "")] == 0


def test_metrics_on_a_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "metrics.sock")
    with serve(app, metrics_bind=f"unix:{path}") as srv:
        request(srv.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            text = client.get("http://metrics/metrics").text
    assert 'heron_http_requests_total{method="GET",status="200"} 1' in text


def test_metrics_address_in_use_is_a_startup_failure() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        with pytest.raises(AssertionError, match="server failed to start"):
            with serve(app, metrics_bind=f"127.0.0.1:{taken}"):
                pass


# --- no cost when off ------------------------------------------------------------------------------


def test_nothing_observes_requests_when_access_log_and_metrics_are_off() -> None:
    assert build_observer(None, False, time.monotonic, None) is None
    observer = build_observer("default", False, time.monotonic, None)
    assert observer is not None and observer.metrics is None
    observer = build_observer(None, False, time.monotonic, Metrics())
    assert observer is not None and observer.access is None


def test_plain_protocol_without_metrics() -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = ServerContext(Config().validate(), app, loop)
        assert type(protocol_factory(ctx, None)()) is H1Protocol
        metered = protocol_factory(ctx, Metrics())()
        assert type(metered) is MeteredProtocol and type(metered.inner) is H1Protocol
    finally:
        loop.close()


def test_request_is_not_kept_when_unobserved() -> None:
    with serve(app, access_log=False) as srv:
        ctx = srv.server._ctx
        assert ctx is not None and ctx.observer is None
        sock = srv.connect()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(sock)
            (connection,) = list(ctx.connections)
            assert connection._request is None and connection._response_headers is None
        finally:
            sock.close()


def test_sendfile_bytes_are_counted(tmp_path: Any) -> None:
    """pathsend's os.sendfile bypasses the transport; its bytes still reach heron_sent_bytes_total."""
    payload = tmp_path / "file.bin"
    payload.write_bytes(b"x" * 300_000)

    async def file_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(payload)})

    with serve(file_app, metrics_bind="127.0.0.1:0") as srv:
        assert srv.server.metrics_socket is not None
        metrics_port = srv.server.metrics_socket.getsockname()[1]
        assert len(httpx.get(srv.url + "/").content) == 300_000
        samples = scrape(metrics_port)
    assert 300_000 < samples[("heron_sent_bytes_total", "")] < 301_000
