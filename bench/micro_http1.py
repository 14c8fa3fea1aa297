"""In-process micro-benchmark of heron's HTTP/1.1 per-request path (no sockets).

Feeds keep-alive GET requests into one H1Protocol over a fake transport and
runs a minimal ASGI app for each, so the figure is heron's own CPU cost per
request without syscalls. Usage: python bench/micro_http1.py [N] [--profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time

from heron.config import Config
from heron.transport.context import ServerContext
from heron.transport.http1 import H1Protocol

REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


async def hello(scope, receive, send):  # type: ignore[no-untyped-def]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool:
        return False


async def run(n: int) -> float:
    loop = asyncio.get_running_loop()
    ctx = ServerContext(Config(app=hello, access_log=False), hello, loop)
    proto = H1Protocol(ctx)
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(n):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)  # the app task runs
    elapsed = time.perf_counter() - start
    assert transport.written == n, transport.written
    return elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 100_000
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    if "--profile" in sys.argv:
        profiler = cProfile.Profile()
        profiler.enable()
        loop.run_until_complete(run(n))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    if "--once" in sys.argv:  # for instruction counting (valgrind)
        loop.run_until_complete(run(n))
        return
    loop.run_until_complete(run(2000))  # warm-up
    best = min(loop.run_until_complete(run(n)) for _ in range(3))
    print(f"{best / n * 1e6:.2f} us per request ({n} requests, best of 3)")


if __name__ == "__main__":
    main()
