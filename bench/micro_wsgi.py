"""In-process micro-benchmark of heron's WSGI path (no sockets).

64 keep-alive connections (H1Protocol over fake transports) each get a GET in
turn; a WSGI app answers in heron's thread pool, and the next round starts when
every response is written. The figure is heron's CPU cost per request (process
time, every thread) including the hand-offs between the loop and the pool.
Usage (from the repository root): PYTHONPATH=. python bench/micro_wsgi.py [N] [--flask] [--threads T] [--once]
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.micro_http1 import FakeTransport
from heron.asgi.wsgi import WSGIAdapter
from heron.config import Config
from heron.transport.context import ServerContext
from heron.transport.http1 import H1Protocol

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
CONNECTIONS = 64


class CountingTransport(FakeTransport):
    """Resolves ``counter[2]`` once ``counter[1]`` responses are written (from any connection)."""

    def __init__(self, counter: list[Any]) -> None:
        super().__init__()
        self.counter = counter

    def write(self, data: bytes) -> None:
        counter = self.counter
        counter[0] += 1
        if counter[0] == counter[1]:
            counter[2].set_result(None)


async def run(app: WSGIAdapter, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    ctx = ServerContext(Config(app=app, access_log=False), app, loop)
    counter: list[Any] = [0, 0, None]
    protocols = []
    for _ in range(CONNECTIONS):
        proto = H1Protocol(ctx)
        proto.connection_made(CountingTransport(counter))  # type: ignore[arg-type]
        protocols.append(proto)
    start = time.process_time()
    for _ in range(rounds):
        counter[1] += CONNECTIONS
        counter[2] = loop.create_future()
        for proto in protocols:
            proto.data_received(REQUEST)
        await counter[2]
    return time.process_time() - start


def main() -> None:
    args = sys.argv[1:]
    n = int(args[0]) if args and args[0].isdigit() else 40_000
    threads = int(args[args.index("--threads") + 1]) if "--threads" in args else 8
    if "--flask" in args:
        from bench.app_wsgi import flask_app as wsgi_app
    else:
        from bench.app_wsgi import hello as wsgi_app
    app = WSGIAdapter(wsgi_app, threads=threads)  # type: ignore[arg-type]
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    rounds = max(1, n // CONNECTIONS)
    if "--once" in args:  # for instruction counting (valgrind)
        loop.run_until_complete(run(app, rounds))
        return
    loop.run_until_complete(run(app, 2000 // CONNECTIONS))  # warm-up (threads started)
    best = min(loop.run_until_complete(run(app, rounds)) for _ in range(3))
    print(
        f"{best / (rounds * CONNECTIONS) * 1e6:.2f} us of CPU per request ({rounds * CONNECTIONS} requests, best of 3)"
    )


if __name__ == "__main__":
    main()
