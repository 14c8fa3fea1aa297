"""ASGI extensions on HTTP/1.1: 103 Early Hints and chunked trailers."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import read_response, recv_until_closed, serve


async def hints_then_answer(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    extensions = sorted(scope["extensions"])
    if "http.response.early_hint" in scope["extensions"]:
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]})
    body = json.dumps(extensions).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def test_early_hints_before_the_response() -> None:
    with serve(hints_then_answer) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _, rest = read_response(sock)
        assert status == 103
        assert headers[b"link"] == b"</style.css>; rel=preload; as=style"
        data = rest
        while b"\r\n\r\n" not in data or not data.endswith(b"]"):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert data.endswith(b'["http.response.early_hint", "http.response.pathsend"]')
        sock.close()


def test_http10_gets_no_extensions() -> None:
    with serve(hints_then_answer) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b'["http.response.pathsend"]')


async def with_trailers(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    announced = "http.response.trailers" in scope["extensions"]
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": announced})
    await send({"type": "http.response.body", "body": b"hello", "more_body": True})
    await send({"type": "http.response.body", "body": b" world"})
    if announced:
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})


def test_trailers_on_chunked_response_when_client_sent_te_trailers() -> None:
    with serve(with_trailers) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"0\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head
        assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc123\r\n\r\n"
        # the connection stays usable
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body, _ = read_response(sock)
        assert status == 200 and body == b"hello world"
        sock.close()


def test_no_trailers_announced_without_te() -> None:
    with serve(with_trailers) as srv:
        sock = srv.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body, rest = read_response(sock)
        assert status == 200 and body == b"hello world" and rest == b""
        sock.close()


def _pathsend_app(path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": path})

    return app


def test_pathsend_sends_the_file_with_a_content_length(tmp_path: Any) -> None:
    import hashlib
    import os

    import httpx

    data = os.urandom(3 * 1024 * 1024 + 17)  # several read steps, odd tail
    target = tmp_path / "blob.bin"
    target.write_bytes(data)
    with serve(_pathsend_app(str(target), [(b"content-type", b"application/octet-stream")])) as srv:
        response = httpx.get(srv.url + "/file")
        assert response.status_code == 200
        assert response.headers["content-length"] == str(len(data))
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()
        with httpx.Client(http1=False, http2=True) as client:  # the same bridge over HTTP/2
            response = client.get(srv.url + "/file")
            assert response.http_version == "HTTP/2"
            assert response.content == data


def test_pathsend_of_a_missing_file_is_a_500(tmp_path: Any) -> None:
    import httpx

    with serve(_pathsend_app(str(tmp_path / "missing"), [])) as srv:
        assert httpx.get(srv.url).status_code == 500
        assert httpx.get(srv.url).status_code == 500  # still serving
