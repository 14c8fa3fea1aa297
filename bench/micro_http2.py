"""In-process micro-benchmark of heron's HTTP/2 per-request path (no sockets).

Feeds h2load-like client frames into H2Protocol over a fake transport and runs
a bare ASGI app for each stream, so the figure is heron's own CPU cost per
request (HTTP/2 core, transport protocol, ASGI bridge) without syscalls.

Each "read" delivers ``-m`` HEADERS frames (one batch of streams in flight on
a connection) plus the WINDOW_UPDATE that returns the connection credit the
previous batch used, as h2load does; ``-c`` connections are served round-robin
(``-c64 -m1`` is 64 connections, one stream each per read).
The client's request headers are HPACK-encoded once per connection by an
``h2`` client, so later requests are mostly indexed fields, as from nghttp2.

    python bench/micro_http2.py                  # hello, -c8 -m8, 100k requests
    python bench/micro_http2.py -c64 -m1 --big   # 64 KiB responses
    python bench/micro_http2.py --profile        # cProfile, top functions
    python bench/micro_http2.py --check          # decode the output with an h2 client and verify it
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from heron.config import Config
from heron.transport.context import ServerContext
from heron.transport.http2 import H2Protocol

HELLO = b"Hello, world!"
BIG = b"x" * 65536
_HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
_BIG_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"65536")]


async def hello(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": _HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


async def big(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": _BIG_HEADERS})
    await send({"type": "http.response.body", "body": BIG})


class FakeTransport:
    def __init__(self, keep: bool) -> None:
        self.writes = 0
        self.nbytes = 0
        self.keep = keep
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.nbytes += len(data)
        if self.keep:
            self.out.append(bytes(data))

    def writelines(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.write(c)
        self.writes -= len(chunks) - 1

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def set_protocol(self, protocol: object) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False


def window_update(sid: int, increment: int) -> bytes:
    return struct.pack(">I", 4)[1:] + bytes([8, 0]) + struct.pack(">I", sid) + struct.pack(">I", increment)


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


class Client:
    """One h2load-like connection: the preface, then batches of ``m`` GETs.

    The preface comes from an ``h2`` client (which also decodes the output in
    ``--check``); the HEADERS frames are built with that client's HPACK encoder
    directly, so their dynamic-table indexing matches a real client's."""

    def __init__(self, m: int, body_size: int) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(2**31 - 1 - 65535)
        self.encoder = self.h2.encoder
        self.m = m
        self.next_sid = 1
        self.block = b""
        self.credit = window_update(0, m * body_size) if body_size else b""
        self.batches = 0
        self.fields = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"127.0.0.1:8000"),
            (b"user-agent", b"h2load nghttp2/1.52.0"),
        ]

    def preface(self) -> bytes:
        return self.h2.data_to_send()

    def batch(self) -> bytes:
        out = []
        for _ in range(self.m):
            # from the second request on, the block is the same bytes (indexed fields only)
            if self.next_sid <= 3:
                self.block = self.encoder.encode(self.fields)
            out.append(frame(1, 0x5, self.next_sid, self.block))
            self.next_sid += 2
        # the connection credit the previous batch's responses used (from the second batch on)
        self.batches += 1
        if self.batches > 1:
            out.append(self.credit)
        return b"".join(out)

    def expect(self, total: int) -> None:
        """Make the h2 client aware of the streams it opened behind its back (for --check)."""
        from h2.stream import StreamState

        for sid in range(1, self.next_sid, 2):
            stream = self.h2._begin_new_stream(sid, h2.connection.AllowedStreamIDs.ODD)
            stream.state_machine.state = StreamState.HALF_CLOSED_LOCAL
            stream.state_machine.headers_sent = True
            stream.state_machine.client = True


async def run(
    n: int,
    c: int,
    m: int,
    app,
    body_size: int,
    check: bool = False,  # type: ignore[no-untyped-def]
    profiler: cProfile.Profile | None = None,
) -> tuple[float, int, int]:
    loop = asyncio.get_running_loop()
    ctx = ServerContext(Config(app=app, access_log=False), app, loop)
    conns = []
    for _ in range(c):
        proto = H2Protocol(ctx)
        transport = FakeTransport(keep=check)
        proto.connection_made(transport)  # type: ignore[arg-type]
        client = Client(m, body_size)
        proto.data_received(client.preface())
        conns.append((proto, transport, client))
    # settle: SETTINGS ACKs
    await asyncio.sleep(0)
    batches_per_conn = max(1, n // (c * m))
    # pre-build the input so that the client's own HPACK encoding isn't timed
    inputs = [[client.batch() for _ in range(batches_per_conn)] for _, _, client in conns]
    writes0 = sum(t.writes for _, t, _ in conns)
    total = batches_per_conn * c * m
    if profiler is not None:
        profiler.enable()
    start = time.process_time()  # CPU time: the machine may be shared
    for i in range(batches_per_conn):
        for j, (proto, _transport, _) in enumerate(conns):
            proto.data_received(inputs[j][i])
        # let the app tasks run and the scheduled flushes go out
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elapsed = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    writes = sum(t.writes for _, t, _ in conns) - writes0
    if check:
        ended = 0
        for _proto, transport, client in conns:
            client.expect(total)
            for ev in client.h2.receive_data(b"".join(transport.out)):
                if isinstance(ev, h2.events.StreamEnded):
                    ended += 1
                elif isinstance(ev, h2.events.DataReceived):
                    client.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.ResponseReceived):
                    assert dict(ev.headers)[b":status"] == b"200", ev.headers
        assert ended == total, (ended, total)
    for proto, _, _ in conns:
        proto.connection_lost(None)
    return elapsed, total, writes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", nargs="?", type=int, default=100_000)
    p.add_argument("-c", type=int, default=8, help="connections (default 8)")
    p.add_argument("-m", type=int, default=8, help="streams per read per connection (default 8)")
    p.add_argument("--big", action="store_true", help="64 KiB responses instead of hello")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--check", action="store_true", help="verify every response with an h2 client")
    p.add_argument("--once", action="store_true", help="one run, no warm-up (for py-spy / valgrind)")
    p.add_argument("--asyncio", action="store_true", help="asyncio's loop instead of uvloop")
    args = p.parse_args()
    app, size = (big, len(BIG)) if args.big else (hello, 0)
    loop = asyncio.new_event_loop()
    if not args.asyncio:
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            pass
    if args.check:
        _, total, writes = loop.run_until_complete(run(min(args.n, 5000), args.c, args.m, app, size, check=True))
        print(f"check ok: {total} responses, {writes} writes")
        return
    if args.profile:
        profiler = cProfile.Profile()
        loop.run_until_complete(run(args.n, args.c, args.m, app, size, profiler=profiler))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    if args.once:
        loop.run_until_complete(run(args.n, args.c, args.m, app, size))
        return
    loop.run_until_complete(run(2000, args.c, args.m, app, size))  # warm-up
    results = [loop.run_until_complete(run(args.n, args.c, args.m, app, size)) for _ in range(3)]
    best, total, writes = min(results)
    print(
        f"{best / total * 1e6:.2f} us (CPU) per request ({total} requests, -c{args.c} -m{args.m}, "
        f"{'64 KiB' if args.big else 'hello'}, {writes / total:.2f} writes per request, best of 3)"
    )


if __name__ == "__main__":
    main()
