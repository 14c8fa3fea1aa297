"""Real HTTP clients against heron: curl, aiohttp, http.client, httpx streaming, raw sockets.

The 100 MB streaming tests also check that the server (a thread of this test process)
keeps its memory bounded: the process's peak RSS is reset before the transfer and read after.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import need_program, recv_until_closed, serve
from . import apps

WAIT = 5.0
MiB = 1024 * 1024
CHUNK = 64 * 1024


# --- apps ------------------------------------------------------------------------------------------


async def read_body(receive: Any) -> tuple[bytes, int]:
    """The whole request body and how many http.request messages carried it."""
    parts = []
    messages = 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        messages += 1
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts), messages


async def send_json(send: Any, data: Any, status: int = 200) -> None:
    payload = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def inspect_app(scope: Any, receive: Any, send: Any) -> None:
    """Echoes what it saw: version, method, headers, body size and hash, client port."""
    body, messages = await read_body(receive)
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    await send_json(
        send,
        {
            "http_version": scope["http_version"],
            "method": scope["method"],
            "path": scope["path"],
            "headers": headers,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "messages": messages,
            "client_port": scope["client"][1],
        },
    )


def pattern_chunk(i: int, base: bytes) -> bytes:
    """64 KiB chunk number ``i``: distinct per index, so loss, reordering or duplication shows."""
    return i.to_bytes(8, "big") + base[8:]


def make_stream_app(total: int, base: bytes, chunk: int = CHUNK) -> Any:
    """Streams ``total`` bytes of pattern_chunk() without a content-length; ``/upload`` hashes a body."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/upload":
            digest = hashlib.sha256()
            size = 0
            messages = 0
            largest = 0
            while True:
                message = await receive()
                assert message["type"] == "http.request"
                body = message.get("body", b"")
                digest.update(body)
                size += len(body)
                messages += 1
                largest = max(largest, len(body))
                if not message.get("more_body"):
                    break
            await send_json(
                send, {"size": size, "sha256": digest.hexdigest(), "messages": messages, "largest": largest}
            )
            return
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        sent = 0
        i = 0
        while sent < total:
            piece = pattern_chunk(i, base)[: min(chunk, total - sent)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            sent += len(piece)
            i += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def expected_stream(total: int, base: bytes) -> tuple[int, str]:
    digest = hashlib.sha256()
    sent = 0
    i = 0
    while sent < total:
        piece = pattern_chunk(i, base)[: min(CHUNK, total - sent)]
        digest.update(piece)
        sent += len(piece)
        i += 1
    return sent, digest.hexdigest()


# --- curl ------------------------------------------------------------------------------------------


def curl(*args: str, timeout: float = 20.0, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    curl_path = need_program("curl")
    return subprocess.run(
        [curl_path, "--silent", "--show-error", "--noproxy", "*", *args],
        capture_output=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def test_curl_is_installed() -> None:
    assert curl("--version").returncode == 0


def test_curl_get() -> None:
    with serve(inspect_app) as srv:
        result = curl("--include", srv.url + "/hello?x=1")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nserver: heron" in head
    data = json.loads(body)
    assert data["method"] == "GET" and data["path"] == "/hello" and data["http_version"] == "1.1"
    assert data["headers"]["user-agent"][0].startswith("curl/")
    assert int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"content-length"]) == len(body)


def test_curl_head() -> None:
    with serve(apps.hello) as srv:
        result = curl("-I", srv.url + "/", "--max-time", "5")
    assert result.returncode == 0, result.stderr
    head = result.stdout
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    # the length of the body a GET would have had ("Hello, world!"), but no body (curl would
    # print it after the head, or time out waiting for it)
    assert b"\r\ncontent-length: 13\r\n" in head
    assert b"Hello" not in head


def test_curl_chunked_upload_from_file(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 17)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    with serve(inspect_app) as srv:
        result = curl("--data-binary", f"@{upload}", "-H", "Transfer-Encoding: chunked", srv.url + "/up")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["method"] == "POST"
    assert info["headers"]["transfer-encoding"] == ["chunked"]
    assert "content-length" not in info["headers"]
    assert info["size"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()


def test_curl_http10() -> None:
    base = os.urandom(CHUNK)
    total = 300_000
    with serve(inspect_app) as srv:
        result = curl("--http1.0", "--include", srv.url + "/old")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert json.loads(body)["http_version"] == "1.0"
    assert b"connection: close" in head.lower()
    # a streamed response (no content-length) to HTTP/1.0 is close-delimited, not chunked
    with serve(make_stream_app(total, base)) as srv:
        result = curl("--http1.0", "--include", srv.url + "/")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert (len(body), hashlib.sha256(body).hexdigest()) == expected_stream(total, base)


def test_curl_keep_alive_reuses_one_connection() -> None:
    with serve(inspect_app) as srv:
        result = curl(
            "-w",
            "\n%{num_connects} %{http_code}\n",
            "-v",
            srv.url + "/first",
            srv.url + "/second",
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[2])
    assert (first["path"], second["path"]) == ("/first", "/second")
    counts = [line.split() for line in (lines[1], lines[3])]
    assert counts == [["1", "200"], ["0", "200"]], lines
    assert sum(int(c[0]) for c in counts) == 1
    assert first["client_port"] == second["client_port"]
    assert b"Re-using existing connection" in result.stderr


def test_curl_expect_100_continue(tmp_path: Path) -> None:
    # curl adds "Expect: 100-continue" by itself for big bodies (1 MiB and more in curl 7.88; older
    # releases did it above 1 KiB), so the small body asks for it explicitly. curl then waits for
    # the interim response (here up to 10 s) before sending the body anyway.
    big = os.urandom(MiB + 1000)
    (tmp_path / "big.bin").write_bytes(big)
    small = os.urandom(2048)
    (tmp_path / "small.bin").write_bytes(small)
    with serve(inspect_app) as srv:
        started = time.monotonic()
        result = curl("-v", "--expect100-timeout", "10", "--data-binary", f"@{tmp_path / 'big.bin'}", srv.url)
        elapsed_big = time.monotonic() - started
        started = time.monotonic()
        small_result = curl(
            "-v",
            "--expect100-timeout",
            "10",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{tmp_path / 'small.bin'}",
            srv.url,
        )
        elapsed_small = time.monotonic() - started
    for res, body, elapsed in ((result, big, elapsed_big), (small_result, small, elapsed_small)):
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert info["headers"]["expect"] == ["100-continue"]
        assert info["size"] == len(body) and info["sha256"] == hashlib.sha256(body).hexdigest()
        assert b"< HTTP/1.1 100 Continue" in res.stderr
        # answered promptly: curl did not have to give up waiting (10 s) for the 100
        assert elapsed < 5, elapsed


def test_curl_limit_rate_slow_download(tmp_path: Path) -> None:
    base = os.urandom(CHUNK)
    total = MiB
    out = tmp_path / "download.bin"
    with serve(make_stream_app(total, base), timeout_write=10) as srv:
        # 256 KiB/s: about 4 s if curl limits from the first byte. curl's limiter averages over
        # seconds, so on loopback (where 1 MiB fits in the socket buffers) it often lets most of
        # the body through at full speed: no lower bound on the time is asserted, only that
        # the body is complete and intact and that the server kept the slow reader.
        result = curl(
            "--limit-rate", "256K", "-o", str(out), "-w", "%{size_download} %{http_code}", srv.url + "/", timeout=25
        )
        again = curl(
            "--limit-rate", "256K", "-o", "/dev/null", "-w", "%{size_download} %{http_code}", srv.url + "/", timeout=25
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"%d 200" % total
    body = out.read_bytes()
    assert (len(body), hashlib.sha256(body).hexdigest()) == expected_stream(total, base)
    assert again.returncode == 0 and again.stdout == b"%d 200" % total, again


# --- aiohttp ---------------------------------------------------------------------------------------


def test_aiohttp_keep_alive_and_chunked_upload() -> None:
    import aiohttp  # a declared test dependency: missing, this fails (never skips)

    async def main(url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            results = []
            for i in range(8):
                async with session.post(f"{url}/r{i}", data=b"p" * (i * 1000)) as resp:
                    assert resp.status == 200
                    results.append(await resp.json())

            async def gen() -> Any:
                for i in range(50):
                    yield bytes([i]) * 4096
                    await asyncio.sleep(0)

            async with session.post(f"{url}/chunked", data=gen()) as resp:
                chunked = await resp.json()
        return results, chunked

    with serve(inspect_app) as srv:
        results, chunked = asyncio.run(main(srv.url))
    assert [r["path"] for r in results] == [f"/r{i}" for i in range(8)]
    assert [r["size"] for r in results] == [i * 1000 for i in range(8)]
    assert len({r["client_port"] for r in results}) == 1, "aiohttp opened more than one connection"
    assert chunked["headers"]["transfer-encoding"] == ["chunked"]
    expected = b"".join(bytes([i]) * 4096 for i in range(50))
    assert chunked["size"] == len(expected) and chunked["sha256"] == hashlib.sha256(expected).hexdigest()
    assert chunked["client_port"] == results[0]["client_port"]


# --- http.client (stdlib) ----------------------------------------------------------------------------


def test_http_client_keep_alive_several_requests() -> None:
    with serve(inspect_app) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
        try:
            ports = set()
            for i in range(10):
                method = "POST" if i % 2 else "GET"
                body = b"b" * i if method == "POST" else None
                conn.request(method, f"/n{i}", body=body)
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200 and data["path"] == f"/n{i}" and data["method"] == method
                assert resp.getheader("connection") is None  # persistent by default on 1.1
                ports.add(data["client_port"])
                sock = conn.sock
                assert sock is not None  # still connected
            assert len(ports) == 1
        finally:
            conn.close()


def test_http_client_chunked_upload() -> None:
    pieces = [os.urandom(n) for n in (1, 100, 70_000, 3, 300_000)]
    expected = b"".join(pieces)
    with serve(inspect_app) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT)
        try:
            for _attempt in range(2):  # twice: the connection survives a chunked body
                conn.request(
                    "PUT", "/chunks", body=iter(pieces), encode_chunked=True, headers={"Transfer-Encoding": "chunked"}
                )
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200
                assert data["headers"]["transfer-encoding"] == ["chunked"]
                assert data["size"] == len(expected)
                assert data["sha256"] == hashlib.sha256(expected).hexdigest()
        finally:
            conn.close()


# --- raw sockets: a client that closes or half-closes ----------------------------------------------


def test_client_close_wakes_app_waiting_for_disconnect() -> None:
    """An app that waits on receive() after the body (long-poll) must learn the client left."""
    seen: list[str] = []
    waiting = threading.Event()
    done = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        waiting.set()
        try:
            message = await asyncio.wait_for(receive(), WAIT)
            seen.append(message["type"])
        except asyncio.TimeoutError:
            seen.append("timeout")
        finally:
            done.set()

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        assert waiting.wait(WAIT)
        sock.close()
        assert done.wait(WAIT + 2)
    assert seen == ["http.disconnect"]


def test_half_closed_client_still_gets_its_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body, _ = await read_body(receive)
        await asyncio.sleep(0.2)  # the client's FIN arrives while the app is working
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve(app) as srv:
        sock = srv.connect()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        sock.shutdown(socket.SHUT_WR)
        data = recv_until_closed(sock)
        sock.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nhello")


# --- httpx: 100 MB each way, bounded memory ----------------------------------------------------------

BIG = 100 * 1000 * 1000  # 100 MB
RSS_BUDGET = 64 * MiB


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak RSS growth of this process (server thread included) over a block, via VmHWM."""

    def __enter__(self) -> PeakRSS:
        # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.baseline = _status_kib("VmRSS") * 1024
        assert _status_kib("VmHWM") * 1024 <= self.baseline + MiB, "VmHWM reset did not work"
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = _status_kib("VmHWM") * 1024 - self.baseline


@pytest.mark.slow
def test_httpx_streaming_upload_100mb_bounded_memory() -> None:
    base = os.urandom(CHUNK)
    n_chunks = -(-BIG // CHUNK)
    total = n_chunks * CHUNK

    def body() -> Iterator[bytes]:
        for i in range(n_chunks):
            yield pattern_chunk(i, base)

    expected = hashlib.sha256()
    for i in range(n_chunks):
        expected.update(pattern_chunk(i, base))

    with serve(make_stream_app(0, base)) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            client.get("/warm-up")  # connection pools, imports: outside the measurement
            with PeakRSS() as rss:
                started = time.monotonic()
                r = client.post("/upload", content=body())
                elapsed = time.monotonic() - started
    assert r.status_code == 200
    info = r.json()
    assert info["size"] == total and info["sha256"] == expected.hexdigest()
    assert r.request.headers.get("transfer-encoding") == "chunked"
    # the body reached the app in pieces, never all at once
    assert info["messages"] > 100 and info["largest"] < 4 * MiB
    assert rss.growth < RSS_BUDGET, f"peak RSS grew by {rss.growth / MiB:.1f} MiB"
    assert elapsed < 20, elapsed


@pytest.mark.slow
def test_httpx_streaming_download_100mb_bounded_memory() -> None:
    base = os.urandom(CHUNK)
    size, expected = expected_stream(BIG, base)
    with serve(make_stream_app(BIG, base)) as srv:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            client.get("/upload")  # warm-up
            digest = hashlib.sha256()
            received = 0
            with PeakRSS() as rss:
                started = time.monotonic()
                with client.stream("GET", "/") as r:
                    assert r.status_code == 200
                    assert r.headers["transfer-encoding"] == "chunked"
                    for piece in r.iter_raw():
                        digest.update(piece)
                        received += len(piece)
                elapsed = time.monotonic() - started
            # the connection is still good after 100 MB
            assert client.get("/upload").json()["size"] == 0
    assert received == size == BIG
    assert digest.hexdigest() == expected
    assert rss.growth < RSS_BUDGET, f"peak RSS grew by {rss.growth / MiB:.1f} MiB"
    assert elapsed < 20, elapsed
