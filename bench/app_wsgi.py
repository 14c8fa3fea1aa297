"""WSGI apps used by the benchmark's wsgi-* scenarios, identical for every server.

    flask_app   Flask route answering 200 text/plain "Hello, world!" (the framework case)
    stream_1m   plain WSGI: 200, a 1 MiB body yielded by a generator in 16 pieces of 64 KiB,
                no content-length (HTTP/1.1 servers send it chunked)
    hello       plain WSGI: 200 text/plain "Hello, world!" with content-length (the harness's
                start-up check for WSGI-only servers)

Flask is imported lazily enough that the plain apps work without it: when it is missing,
``flask_app`` is None and the harness skips the scenario (bash bench/setup.sh installs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

HELLO_BODY = b"Hello, world!"
PIECE = b"z" * (64 * 1024)
N_PIECES = 16  # 16 x 64 KiB = 1 MiB

StartResponse = Callable[..., Any]


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO_BODY)))])
    return [HELLO_BODY]


def _pieces() -> Iterator[bytes]:
    for _ in range(N_PIECES):
        yield PIECE


def stream_1m(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _pieces()


try:
    from flask import Flask
except ImportError:  # bench/setup.sh installs it; the harness skips wsgi-hello without it
    flask_app = None
else:
    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> tuple[str, int, dict[str, str]]:
        return "Hello, world!", 200, {"Content-Type": "text/plain"}
