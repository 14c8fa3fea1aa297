#!/usr/bin/env python3
"""A small HTTP/3 load generator on aioquic: bench/run.py's fallback for its h3 scenarios
when curl_cffi (bench/h3_curl_client.py, libcurl's HTTP/3, far cheaper per request) is missing.

N QUIC connections, each keeping M request streams in flight (a new GET as each
response ends), for a warm-up and then D measured seconds. Prints one JSON line
``{"event": "start"}`` when the measured window opens, and at the end one JSON
line: requests, elapsed, errors (non-2xx, stream resets, wrong bodies, lost
connections), p50/p99 latency in ms (every ``--sample-every``-th request), the
process's CPU seconds in the window, and the ALPN the connections negotiated.

The Debian h2load is built without QUIC, hence this client. It is Python, so it
can be the bottleneck: run several processes (bench/run.py --h3-procs) and read
the client CPU it reports (``cpu_s`` over ``elapsed`` near 1.0 per process means
the client was saturated).

    bench/.venv/bin/python bench/h3_client.py --port 8443 --conns 8 --streams 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset


class State:
    def __init__(self, sample_every: int, expect: bytes | None) -> None:
        self.sample_every = sample_every
        self.expect = expect
        self.measuring = False
        self.stopping = False
        self.requests = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.latencies: list[float] = []

    def error(self, kind: str) -> None:
        if self.measuring:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class LoadClient(QuicConnectionProtocol):
    """One connection: ``streams`` requests in flight, each replaced as it ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.state: State | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.inflight: dict[int, tuple[float, int, bytearray]] = {}  # stream -> (start, status, body)
        self.lost = asyncio.Event()

    def setup(self, state: State, authority: bytes, path: bytes) -> None:
        self.state = state
        self.headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
            (b"user-agent", b"heron-bench-h3"),
        ]

    def send_one(self) -> None:
        stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, self.headers, end_stream=True)
        self.inflight[stream_id] = (time.perf_counter(), 0, bytearray())
        self.transmit()

    def _done(self, stream_id: int, ok: bool, kind: str = "") -> None:
        start, _, _ = self.inflight.pop(stream_id)
        state = self.state
        assert state is not None
        if not ok:
            state.error(kind)
        elif state.measuring:
            state.requests += 1
            if state.requests % state.sample_every == 0:
                state.latencies.append(time.perf_counter() - start)
        if not state.stopping:
            self.send_one()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            if self.state is not None and not self.state.stopping:
                self.state.error(f"connection closed: {event.error_code} {event.reason_phrase}")
            self.lost.set()
            return
        if isinstance(event, StreamReset) and event.stream_id in self.inflight:
            self._done(event.stream_id, False, f"stream reset {event.error_code}")
            return
        for h3_event in self.h3.handle_event(event):
            if not isinstance(h3_event, (HeadersReceived, DataReceived)):
                continue
            stream_id = h3_event.stream_id
            if stream_id not in self.inflight:
                continue
            start, status, body = self.inflight[stream_id]
            if isinstance(h3_event, HeadersReceived):
                if not status:
                    status = int(dict(h3_event.headers).get(b":status", b"0"))
                    self.inflight[stream_id] = (start, status, body)
            elif isinstance(h3_event, DataReceived):
                body += h3_event.data
            if h3_event.stream_ended:
                expect = self.state.expect if self.state else None
                if not 200 <= status < 300:
                    self._done(stream_id, False, f"status {status}")
                elif expect is not None and bytes(body) != expect:
                    self._done(stream_id, False, "wrong body")
                else:
                    self._done(stream_id, True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE)
    config.server_name = args.host
    state = State(max(1, args.sample_every), args.expect.encode() if args.expect is not None else None)
    authority = f"{args.host}:{args.port}".encode()
    async with asyncio.timeout(args.warmup + args.duration + 30):
        contexts = []
        clients: list[LoadClient] = []
        try:
            for _ in range(args.conns):
                try:
                    cm = connect(args.host, args.port, configuration=config, create_protocol=LoadClient)
                    client = await asyncio.wait_for(cm.__aenter__(), 10)
                except Exception as exc:  # (any failure to connect ends the run: reported, not raised)
                    return {"error": f"connect/handshake failed: {exc!r}", "requests": 0, "errors": 1}
                contexts.append(cm)
                assert isinstance(client, LoadClient)
                client.setup(state, authority, args.path.encode())
                clients.append(client)
            alpn = sorted({str(c._quic.tls.alpn_negotiated) for c in clients})
            for c in clients:
                for _ in range(args.streams):
                    c.send_one()
            await asyncio.sleep(args.warmup)
            sys.stdout.write(json.dumps({"event": "start"}) + "\n")
            sys.stdout.flush()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            state.measuring = True
            await asyncio.sleep(args.duration)
            state.measuring = False
            elapsed = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            state.stopping = True
            for c in clients:
                c.close()
            for cm in contexts:
                try:
                    await asyncio.wait_for(cm.__aexit__(None, None, None), 2)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
    lat = sorted(state.latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else None

    return {
        "requests": state.requests,
        "elapsed": elapsed,
        "errors": state.errors,
        "error": "; ".join(f"{k} x{n}" for k, n in sorted(state.error_kinds.items())),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "alpn": alpn,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=8, help="QUIC connections (default 8)")
    ap.add_argument("--streams", type=int, default=8, help="requests in flight per connection (default 8)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--sample-every", type=int, default=1, help="keep every Nth latency (default 1)")
    ap.add_argument("--expect", default=None, help="the body every response must have")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    runner: Any = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    result = runner(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
