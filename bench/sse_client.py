"""Server-sent-events load client (raw sockets on asyncio, uvloop if present).

Opens C keep-alive connections to http://HOST:PORT/ and on each one GETs an event
stream, counts its events, and when the stream ends (the terminal chunk) GETs the
next, for DURATION seconds after a warm-up. Prints a "start" line when the measured
window opens, then one JSON line: events received in the window, streams finished,
errors, p50/p99 time to first event (ms, from the GET to its first event, for the
streams that started in the window), and the client's own CPU time, so the harness
can tell when the client, not the server, was the bottleneck.

Opening: every connection first reads a one-event stream (GET /?events=1) with no
other stream running. A server busy with running streams accepts new connections
slowly (about one per event-loop turn), so opening them under load would measure
accept starvation, not streaming; and the opening is short, well within servers'
keep-alive timeouts (gunicorn's is 2 s). The first full-size streams are of
staggered lengths, so that streams end and start evenly over time from then on.

Kept cheap per event: events are counted as ``\\n\\n`` separators with
``bytes.count`` over whole reads (the chunked framing never contains one), so a
client that falls behind reads many events per call and costs less per event.
Every stream must be a chunked 200 text/event-stream with exactly the events asked for.

    python sse_client.py --port 8000 --conns 1000 --events 1000 --duration 5 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

TERMINAL = b"\r\n0\r\n\r\n"  # the last data chunk's CRLF, then the zero-size chunk
HEAD_LIMIT = 16384
OPEN_BATCH = 50


class State:
    def __init__(self, events_per_stream: int) -> None:
        self.events_per_stream = events_per_stream
        self.events = 0
        self.streams = 0
        self.errors = 0
        self.error = ""
        self.measuring = False
        self.stopping = False
        self.ttfe: list[float] = []

    def fail(self, why: str) -> None:
        self.errors += 1
        self.error = self.error or why


class StreamProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, first_request: bytes, state: State) -> None:
        self.request = request
        self.expected = 1  # events of the current stream: the first is a one-event stream
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.in_body = False
        self.count = 0  # events of the current stream
        self.last = 0  # the previous read's last byte, for a separator split across reads
        self.tail = b""  # the previous reads' last bytes, for the terminal chunk split across reads
        self.sent_at = 0.0
        self.timed = False  # this stream started in the measured window
        self.first_seen = False
        self.first_stream = asyncio.get_running_loop().create_future()  # done: the one-event stream read
        self.first_request = first_request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.get(self.first_request, 1)

    def get(self, request: bytes, expected: int) -> None:
        self.expected = expected
        self.in_body = False
        self.head.clear()
        self.count = 0
        self.last = 0
        self.tail = b""
        self.first_seen = False
        self.timed = self.state.measuring
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        st = self.state
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > HEAD_LIMIT:
                    self.abort("response head over 16 KiB")
                return
            head = bytes(self.head[:end]).lower()
            data = bytes(self.head[end + 4 :])
            if not head.startswith(b"http/1.1 200"):
                self.abort("status: " + head[:40].decode(errors="replace"))
                return
            if b"\r\ncontent-type: text/event-stream" not in head or b"transfer-encoding: chunked" not in head:
                self.abort("not a chunked text/event-stream: " + " ".join(head.decode(errors="replace").split()))
                return
            self.in_body = True
            if not data:
                return
        n = data.count(b"\n\n") + (self.last == 10 and data[0] == 10)
        self.last = data[-1]
        if n:
            self.count += n
            if st.measuring:
                st.events += n
            if not self.first_seen:
                self.first_seen = True
                if self.timed:
                    st.ttfe.append(time.perf_counter() - self.sent_at)
        if len(data) >= len(TERMINAL):
            self.tail = data[-len(TERMINAL) :]
        else:
            self.tail = (self.tail + data)[-len(TERMINAL) :]
        if self.tail == TERMINAL:
            if self.count != self.expected:
                self.abort(f"stream ended after {self.count} events, not {self.expected}")
                return
            if st.measuring:
                st.streams += 1
            if not self.first_stream.done():
                self.first_stream.set_result(None)  # the opening phase: wait for the others
            elif not st.stopping:
                self.get(self.request, st.events_per_stream)

    def abort(self, why: str) -> None:
        self.state.fail(why)
        if not self.first_stream.done():
            self.first_stream.set_exception(ConnectionError(why))
        assert self.transport is not None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.state.stopping:
            self.state.fail(f"connection lost: {exc!r}")
        if not self.first_stream.done():
            self.first_stream.set_exception(ConnectionError("closed during the first stream"))


async def main_async(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    head = f" HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nAccept: text/event-stream\r\n\r\n"
    request, first_request = (f"GET {path}{head}".encode() for path in ("/", "/?events=1"))
    state = State(args.events)
    protos: list[StreamProtocol] = []

    def abort_all() -> None:
        state.stopping = True
        for p in protos:
            if p.transport is not None:
                p.transport.abort()

    async def open_one() -> None:
        _, proto = await loop.create_connection(
            lambda: StreamProtocol(request, first_request, state), args.host, args.port
        )
        protos.append(proto)
        await proto.first_stream

    async def open_all() -> None:
        # In batches no larger than the smallest listen backlog here (Twisted's, daphne's, is 50;
        # hypercorn's 100): an overflowing backlog drops SYNs, retried after 1 s, then 3 s.
        for i in range(0, args.conns, OPEN_BATCH):
            await asyncio.gather(*(open_one() for _ in range(min(OPEN_BATCH, args.conns - i))))

    try:
        await asyncio.wait_for(open_all(), args.open_timeout)
    except Exception as exc:
        abort_all()
        why = state.error or repr(exc)
        return {"error": f"opening {args.conns} streams failed: {why}", "messages": 0, "errors": state.errors + 1}
    await asyncio.sleep(0.2)  # no byte in flight: the servers are idle when all streams start
    # The first full-size GET on connection i asks for a share of --events that grows with i,
    # so that streams end (and new ones start) evenly over time from then on, not all at once.
    for i, p in enumerate(protos):
        if p.transport is None or p.transport.is_closing():
            abort_all()
            return {"error": "a connection closed after its first stream", "messages": 0, "errors": state.errors + 1}
        n = 1 + i * args.events // len(protos)
        p.get(f"GET /?events={n}{head}".encode(), n)
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
    abort_all()
    lat = sorted(state.ttfe)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else None

    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "messages": state.events,  # the name run.py's client contract sums
        "streams": state.streams,
        "elapsed": elapsed,
        "errors": state.errors,
        "error": state.error,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1000, help="events every stream must carry")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--open-timeout", type=float, default=60.0, help="seconds for every connection's first stream")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args()
    runner = asyncio.run
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
