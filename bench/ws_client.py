"""Small WebSocket echo load client (raw sockets on asyncio, uvloop if present).

Opens C connections to ws://HOST:PORT/, and on each one sends a message of
SIZE bytes, waits for the echo, and sends again, for DURATION seconds after a
warm-up. Prints one JSON line: messages echoed, errors, latency samples
(p50/p99 in ms), and the client's own CPU time so the harness can tell when the
client, not the server, was the bottleneck.

Raw frames are used rather than the websockets library so the client costs as
little CPU as possible: the masked request frame is built once and re-sent.

    python ws_client.py --port 8000 --conns 32 --size 32 --duration 5 --warmup 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import struct
import sys
import time


def build_frame(payload: bytes, binary: bool) -> bytes:
    opcode = 0x2 if binary else 0x1
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    # XOR with the repeated 4-byte mask, done once via big ints.
    rep = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big") if n else b""
    return header + mask + masked


class EchoProtocol(asyncio.Protocol):
    def __init__(self, host: str, port: int, frame: bytes, size: int, state: State) -> None:
        self.host, self.port = host, port
        self.frame = frame
        self.size = size
        self.state = state
        self.buf = bytearray()
        self.handshaken = False
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.got = 0  # payload bytes of the current echo received so far
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(req.encode())  # type: ignore[attr-defined]

    def send_one(self) -> None:
        self.got = 0
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.state.errors += 1
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(head[:80].decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self.handshaken = True
            if not self.ready.done():
                self.ready.set_result(None)
        # Parse as many complete frames as the buffer holds.
        while True:
            if len(buf) < 2:
                return
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if b1 & 0x80:
                pos += 4
            if len(buf) < pos + n:
                return
            del buf[: pos + n]
            opcode = b0 & 0x0F
            if opcode == 0x8:  # close
                assert self.transport is not None
                self.transport.close()
                return
            if opcode in (0x0, 0x1, 0x2):
                self.got += n
                if (b0 & 0x80) and self.got >= self.size:
                    st = self.state
                    if st.measuring:
                        st.messages += 1
                        if st.messages % st.sample_every == 0:
                            st.latencies.append(time.perf_counter() - self.sent_at)
                    if not st.stopping:
                        self.send_one()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.state.stopping:
            self.state.errors += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


class State:
    def __init__(self, sample_every: int) -> None:
        self.messages = 0
        self.errors = 0
        self.measuring = False
        self.stopping = False
        self.latencies: list[float] = []
        self.sample_every = sample_every


async def main_async(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    payload = b"a" * args.size
    frame = build_frame(payload, binary=args.size > 125)
    state = State(sample_every=max(1, args.sample_every))
    protos: list[EchoProtocol] = []
    for _ in range(args.conns):
        try:
            _, proto = await loop.create_connection(
                lambda: EchoProtocol(args.host, args.port, frame, args.size, state), args.host, args.port
            )
            await asyncio.wait_for(proto.ready, 10)
        except Exception as exc:
            return {"error": f"connect/handshake failed: {exc!r}", "messages": 0, "errors": state.errors + 1}
        protos.append(proto)
    for p in protos:
        p.send_one()
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
    state.stopping = True
    for p in protos:
        if p.transport is not None:
            p.transport.close()
    lat = sorted(state.latencies)

    def pct(q: float) -> float | None:
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0

    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "messages": state.messages,
        "elapsed": elapsed,
        "errors": state.errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--sample-every", type=int, default=1)
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
