"""Hostile clients against a real server process.

Each attack opens raw sockets (HTTP/1.1, HTTP/2 over h2c or TLS, WebSocket with or
without permessage-deflate) against a fresh server process running
``bench.hostile_app:app``, and measures

- the server's memory: peak RSS of its process tree during the attack, over the
  RSS before it, divided by the attacking connections (``per_conn``);
- a normal client's latency: a GET /ok on a new connection every 50 ms while the
  attack runs (``p50``, ``max``);
- what the server did about it (``outcome``: a status, a GOAWAY, a close code).

The same attacks back tests/hostile/ (heron only, smaller where that keeps CI
short, with bounds asserted). Run from the repository root, with bench/.venv for
the peers:

    bench/.venv/bin/python bench/hostile.py                                  # heron, uvicorn, hypercorn
    bench/.venv/bin/python bench/hostile.py --servers heron --attacks ws-deflate-unread
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hpack

REPO_DIR = Path(__file__).resolve().parent.parent
APP = "bench.hostile_app:app"
PY = sys.executable
MB = 1024 * 1024

# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

SERVERS: dict[str, dict[str, Any]] = {
    "heron": {
        "cmd": [
            PY,
            "-m",
            "heron",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "600",
        ],
        "tls": ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}"],
        "h2": True,
    },
    "uvicorn": {
        "cmd": [
            PY,
            "-m",
            "uvicorn",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "600",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        "tls": ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{key}"],
        "h2": False,
    },
    "hypercorn": {
        "cmd": [
            PY,
            "-m",
            "hypercorn",
            APP,
            "--bind",
            "127.0.0.1:{port}",
            "-k",
            "uvloop",
            "--log-level",
            "warning",
            "--keep-alive",
            "600",
        ],
        "tls": ["--certfile", "{cert}", "--keyfile", "{key}"],
        "h2": True,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_cert(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-subj",
            "/CN=localhost",
            "-days",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, ()))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class ServerProcess:
    """One server process on a free port; always stopped (SIGKILL after 3 s)."""

    def __init__(self, name: str, extra: list[str], *, tls: bool = False, cpu: str | None = None) -> None:
        self.name, self.port, self.tls = name, free_port(), tls
        self._tmp = tempfile.TemporaryDirectory(prefix="hostile-")
        spec = SERVERS[name]
        fill = {"port": str(self.port)}
        cmd = list(spec["cmd"])
        if tls:
            fill["cert"], fill["key"] = make_cert(self._tmp.name)
            cmd += spec["tls"]
        cmd = [a.format(**fill) for a in cmd] + extra
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.log_path = os.path.join(self._tmp.name, "server.log")
        env = dict(os.environ, PYTHONPATH=str(REPO_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{self.log()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{name} did not start:\n{self.log()}")

    def rss(self) -> int:
        return tree_rss(self.proc.pid)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Raw clients
# --------------------------------------------------------------------------


def connect(port: int, *, tls: bool = False, alpn: list[str] | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    return sock


def send_for(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send as much of ``data`` as the server reads within ``seconds``; return the count."""
    view, sent, deadline = memoryview(data), 0, time.monotonic() + seconds
    sock.settimeout(0.2)
    while sent < len(view) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
        except (TimeoutError, ssl.SSLWantWriteError):
            continue
        except OSError:
            break
    return sent


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with Content-Length; (status, body); (0, b"") when the server closed."""
    sock.settimeout(timeout)
    buf = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return 0, b""
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body
    return 0, b""


def h1_request(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# HTTP/2 frames
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


class H2Client:
    """A raw HTTP/2 connection: frames out as given; frames in collected by a reader thread
    (SETTINGS and PING answered)."""

    def __init__(self, port: int, *, tls: bool = False) -> None:
        self.sock = connect(port, tls=tls, alpn=["h2"])
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9 : 9 + length], buf[9 + length :]
                    if kind == SETTINGS and not flags & ACK:
                        self.send(frame(SETTINGS, ACK, 0))
                    elif kind == PING and not flags & ACK:
                        self.send(frame(PING, ACK, 0, payload))
                    self.frames.append((kind, flags, sid, payload))
        except (OSError, ValueError):
            pass
        self.closed.set()

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def headers(
        self, stream_id: int, method: str, path: str, *, end_stream: bool, extra: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        block = self.encoder.encode(
            [(":method", method), (":scheme", "https"), (":path", path), (":authority", "localhost"), *extra]
        )
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream_id, block)

    def statuses(self) -> dict[int, int]:
        """:status per stream among the frames received so far."""
        found = {}
        for kind, _flags, sid, payload in list(self.frames):
            if kind == HEADERS:
                for name, value in self.decoder.decode(payload):
                    if name == ":status":
                        found[sid] = int(value)
        return found

    def goaway(self) -> int | None:
        for kind, _f, _s, payload in list(self.frames):
            if kind == GOAWAY:
                return int.from_bytes(payload[4:8], "big")
        return None

    def resets(self) -> dict[int, int]:
        return {sid: int.from_bytes(p[:4], "big") for kind, _f, sid, p in list(self.frames) if kind == RST_STREAM}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class WSClient:
    """A raw WebSocket connection (client frames masked with a zero key, which RFC 6455 allows)."""

    def __init__(self, port: int, path: str, *, deflate: bool = False) -> None:
        self.sock = connect(port)
        key = base64.b64encode(os.urandom(16)).decode()
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        if deflate:
            headers["Sec-WebSocket-Extensions"] = "permessage-deflate"
        self.sock.sendall(h1_request("GET", path, headers))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.deflate = b"permessage-deflate" in head.lower()
        self.close_code: int | None = None
        self.closed = threading.Event()
        self._rest = head.partition(b"\r\n\r\n")[2]
        self.sock.settimeout(None)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = self._rest
        try:
            while True:
                while len(buf) >= 2:
                    opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
                    start = 2 + (2 if n == 126 else 8 if n == 127 else 0)
                    if len(buf) < start:
                        break
                    if n >= 126:
                        n = int.from_bytes(buf[2:start], "big")
                    if len(buf) < start + n:
                        break
                    if opcode == 8:
                        payload = buf[start : start + n]
                        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    buf = buf[start + n :]
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        self.closed.set()

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
        first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
        n = len(payload)
        if n < 126:
            head = bytes((first, 0x80 | n))
        elif n < 65536:
            head = bytes((first, 0x80 | 126)) + struct.pack(">H", n)
        else:
            head = bytes((first, 0x80 | 127)) + struct.pack(">Q", n)
        return head + b"\0\0\0\0" + payload  # zero masking key: the payload goes as it is

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


class LatencyProbe(threading.Thread):
    """GET /ok on a new connection every 50 ms; a request that fails counts as 5 s."""

    def __init__(self, port: int, *, tls: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.tls = port, tls
        self.samples: list[float] = []
        self.failures = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                with connect(self.port, tls=self.tls) as sock:
                    sock.sendall(h1_request("GET", "/ok", {"Connection": "close"}))
                    status, body = read_response(sock)
                ok = status == 200 and body == b"ok"
            except OSError:
                ok = False
            elapsed = time.monotonic() - t0
            if not ok:
                self.failures += 1
                elapsed = max(elapsed, 5.0)
            self.samples.append(elapsed)
            self.halt.wait(0.05)


class RssSampler(threading.Thread):
    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = server.rss()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.peak = max(self.peak, self.server.rss())


@dataclass
class Result:
    attack: str
    server: str
    conns: int
    base: int = 0
    peak: int = 0
    after: int = 0
    p50: float = 0.0
    max: float = 0.0
    failures: int = 0
    outcome: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_conn(self) -> float:
        return (self.peak - self.base) / max(1, self.conns)

    def row(self) -> str:
        return (
            f"| {self.attack} | {self.server} | {self.conns} | {self.per_conn / MB:.2f} MB | "
            f"{(self.after - self.base) / MB:+.1f} MB | {self.p50 * 1000:.0f} ms | {self.max * 1000:.0f} ms"
            f"{' (' + str(self.failures) + ' failed)' if self.failures else ''} | {self.outcome} |"
        )


def warm_up(server: ServerProcess, *, h2: bool) -> None:
    """Requests of each kind, so that lazy imports and first allocations are in the base RSS."""
    for _ in range(20):
        with connect(server.port, tls=server.tls) as sock:
            sock.sendall(h1_request("POST", "/read", {"Content-Length": "5", "Connection": "close"}) + b"hello")
            read_response(sock)
    if not server.tls:
        ws = WSClient(server.port, "/echo", deflate=True)
        packed = zlib.compressobj(9, zlib.DEFLATED, -15)
        ws.sock.sendall(
            WSClient.frame(2, (packed.compress(b"hello") + packed.flush(zlib.Z_SYNC_FLUSH))[:-4], rsv1=True)
            + WSClient.frame(8, struct.pack(">H", 1000))
        )
        ws.closed.wait(2.0)
        ws.close()
    if h2:
        for _ in range(5):
            c = H2Client(server.port, tls=server.tls)
            c.send(c.headers(1, "POST", "/read", end_stream=False) + frame(DATA, END_STREAM, 1, b"hello"))
            deadline = time.monotonic() + 2.0
            while 1 not in c.statuses() and time.monotonic() < deadline:
                time.sleep(0.01)
            c.close()


# --------------------------------------------------------------------------
# Attacks: each takes (server, result, scale), holds its connections open
# until it returns, and writes result.conns / result.outcome.
# --------------------------------------------------------------------------


def _parallel(fns: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(fns)

    def run(i: int) -> None:
        out[i] = fns[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def ws_deflate_unread(server: ServerProcess, result: Result, scale: float) -> None:
    """permessage-deflate messages of ~16 KB on the wire, each inflating to just under 16 MiB
    (the default --ws-max-size); the app never calls receive()."""
    conns = max(1, round(6 * scale))
    raw = b"\0" * (16 * MB - 1024)
    packed = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = packed.compress(raw) + packed.flush(zlib.Z_SYNC_FLUSH)
    message = WSClient.frame(2, payload[:-4], rsv1=True)
    clients = [WSClient(server.port, "/hold", deflate=True) for _ in range(conns)]
    assert all(c.deflate for c in clients), "permessage-deflate was not negotiated"
    sent = _parallel([lambda c=c: send_for(c.sock, message * 40, 6.0) for c in clients])
    time.sleep(1.0)
    result.conns = conns
    result.outcome = f"{sum(sent) // len(message)} of {40 * conns} messages read off the wire"
    for c in clients:
        c.close()


def _chunked_post(path: str, chunks: int, headers: dict[str, str] | None = None) -> bytes:
    head = h1_request("POST", path, {"Transfer-Encoding": "chunked", **(headers or {})})
    return head + b"1\r\nx\r\n" * chunks


def h2c_upgrade_tiny_chunks(server: ServerProcess, result: Result, scale: float) -> None:
    """An Upgrade: h2c POST whose chunked body is 1,000,000 one-byte chunks, never finished."""
    conns = max(1, round(4 * scale))
    settings = base64.urlsafe_b64encode(b"").decode()
    data = _chunked_post(
        "/hold", 1_000_000, {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": settings}
    )
    socks = [connect(server.port) for _ in range(conns)]
    sent = _parallel([lambda s=s: send_for(s, data, 8.0) for s in socks])
    time.sleep(0.5)
    answers = _parallel([lambda s=s: _peek(s) for s in socks])
    result.conns = conns
    result.outcome = f"sent {min(sent) * 100 // len(data)}-{max(sent) * 100 // len(data)}% ; {_summary(answers)}"
    for s in socks:
        s.close()


def _peek(sock: socket.socket) -> bytes:
    """What the server has answered so far (the status line), without waiting long."""
    sock.settimeout(0.3)
    try:
        data = sock.recv(4096)
    except OSError:
        return b"(nothing)"
    return data.split(b"\r\n", 1)[0] if data else b"(closed)"


def _summary(answers: list[bytes]) -> str:
    counts: dict[str, int] = {}
    for a in answers:
        key = a.decode(errors="replace")[:40]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n}x {k}" for k, n in counts.items())


def h1_tiny_chunks_unread(server: ServerProcess, result: Result, scale: float) -> None:
    """A chunked body of 300,000 one-byte chunks to an app that has not read yet."""
    conns = max(1, round(4 * scale))
    data = _chunked_post("/hold", 300_000)
    socks = [connect(server.port) for _ in range(conns)]
    sent = _parallel([lambda s=s: send_for(s, data, 6.0) for s in socks])
    time.sleep(0.5)
    result.conns = conns
    result.outcome = f"sent {min(sent) * 100 // len(data)}-{max(sent) * 100 // len(data)}%"
    for s in socks:
        s.close()


def h1_tiny_chunks_read(server: ServerProcess, result: Result, scale: float) -> None:
    """A chunked body of 2,000,000 one-byte chunks (scaled) to an app that reads it all."""
    chunks = max(1000, round(2_000_000 * scale))
    data = _chunked_post("/read", chunks) + b"0\r\n\r\n"
    t0 = time.monotonic()
    with connect(server.port) as sock:
        sent = send_for(sock, data, 30.0)
        status, body = read_response(sock, timeout=30.0)
    result.conns = 1
    result.extra["seconds"] = time.monotonic() - t0
    result.extra["ok"] = sent == len(data) and status == 200 and body == str(chunks).encode()
    result.outcome = f"{status} {body[:20].decode(errors='replace')} in {result.extra['seconds']:.1f} s"


def _h2_tiny_data(server: ServerProcess, result: Result, scale: float) -> None:
    conns = max(1, round(2 * scale))
    clients = [H2Client(server.port, tls=server.tls) for _ in range(conns)]

    def attack(c: H2Client) -> int:
        out = []
        for i in range(64):
            sid = 1 + 2 * i
            out.append(c.headers(sid, "POST", "/hold", end_stream=False))
            out.append(frame(DATA, 0, sid, b"x") * 16_000)
        return send_for(c.sock, b"".join(out), 10.0)

    sent = _parallel([lambda c=c: attack(c) for c in clients])
    time.sleep(0.5)
    result.conns = conns
    result.outcome = f"{sum(sent) // 10 // conns} frames per connection read; goaway={[c.goaway() for c in clients]}"
    for c in clients:
        c.close()


def h2_tiny_data(server: ServerProcess, result: Result, scale: float) -> None:
    """h2c: 64 streams x 16,000 one-byte DATA frames, inside the flow-control windows; app not reading."""
    _h2_tiny_data(server, result, scale)


def h2_tiny_data_tls(server: ServerProcess, result: Result, scale: float) -> None:
    """The same over TLS."""
    _h2_tiny_data(server, result, scale)


def h2_empty_data(server: ServerProcess, result: Result, scale: float) -> None:
    """1,000,000 empty DATA frames without END_STREAM on one stream."""
    c = H2Client(server.port, tls=server.tls)
    data = c.headers(1, "POST", "/hold", end_stream=False) + frame(DATA, 0, 1) * round(1_000_000 * scale)
    sent = send_for(c.sock, data, 10.0)
    c.closed.wait(3.0)
    result.conns = 1
    code = c.goaway()
    result.extra["goaway"] = code
    result.outcome = f"{sent * 100 // len(data)}% sent; GOAWAY {code}"
    c.close()


def ws_empty_continuation(server: ServerProcess, result: Result, scale: float) -> None:
    """A text message that never ends: one empty non-final frame, then 2,000,000 empty continuations."""
    c = WSClient(server.port, "/echo")
    data = WSClient.frame(1, b"", fin=False) + WSClient.frame(0, b"", fin=False) * round(2_000_000 * scale)
    sent = send_for(c.sock, data, 10.0)
    c.closed.wait(3.0)
    result.conns = 1
    result.extra["close_code"] = c.close_code
    result.outcome = f"{sent * 100 // len(data)}% sent; close {c.close_code}"
    c.close()


def h1_body_never_sent(server: ServerProcess, result: Result, scale: float) -> None:
    """A request head with Content-Length: 100 to an app waiting in receive(); no body byte ever."""
    t0 = time.monotonic()
    with connect(server.port) as sock:
        sock.sendall(h1_request("POST", "/read", {"Content-Length": "100"}))
        status, _ = read_response(sock, timeout=10.0)
    result.conns = 1
    result.extra["status"] = status
    result.outcome = f"{status or 'no answer'} after {time.monotonic() - t0:.1f} s"


def h2_body_never_sent(server: ServerProcess, result: Result, scale: float) -> None:
    """The same on an HTTP/2 stream."""
    t0 = time.monotonic()
    c = H2Client(server.port, tls=server.tls)
    c.send(c.headers(1, "POST", "/read", end_stream=False, extra=(("content-length", "100"),)))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and 1 not in c.statuses() and 1 not in c.resets() and not c.closed.is_set():
        time.sleep(0.05)
    result.conns = 1
    result.extra["status"] = c.statuses().get(1)
    result.extra["reset"] = c.resets().get(1)
    result.outcome = f"status {c.statuses().get(1)} reset {c.resets().get(1)} after {time.monotonic() - t0:.1f} s"
    c.close()


def h1_unique_fields(server: ServerProcess, result: Result, scale: float) -> None:
    """Requests whose Host and field lines are all different (parser caches); RSS after, not peak."""
    n = max(100, round(2000 * scale))
    with connect(server.port) as sock:
        for i in range(n):
            tag = f"{i:08d}"
            headers = {f"X-Unique-{j}": (tag + str(j)) * 200 for j in range(4)}
            req = h1_request("GET", "/ok", headers).replace(b"Host: localhost", f"Host: h{tag}.example".encode())
            sock.sendall(req)
            if read_response(sock)[0] != 200:
                break
    result.conns = 1
    result.extra["requests"] = n
    result.outcome = f"{n} requests, {n * 8 * 1800 // MB} MB of unique field lines"


def h2_refused_streams(server: ServerProcess, result: Result, scale: float) -> None:
    """1,000 streams at once against a limit of 100: the accepted ones must still be answered."""
    c = H2Client(server.port, tls=server.tls)
    time.sleep(0.2)
    c.send(b"".join(c.headers(1 + 2 * i, "GET", "/slow", end_stream=True) for i in range(1000)))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not c.closed.is_set():
        answered = c.statuses()
        if len(answered) + len(c.resets()) >= 1000:
            break
        time.sleep(0.1)
    result.conns = 1
    answered, resets = c.statuses(), c.resets()
    result.extra.update(answered=len(answered), refused=sum(1 for v in resets.values() if v == 7), goaway=c.goaway())
    result.outcome = f"{len(answered)} answered, {result.extra['refused']} refused, GOAWAY {c.goaway()}"
    c.close()


@dataclass
class Attack:
    run: Callable[[ServerProcess, Result, float], None]
    extra: list[str] = field(default_factory=list)  # heron settings for this attack
    tls: bool = False
    needs_h2: bool = False
    scale_in_tests: float = 1.0


ATTACKS: dict[str, Attack] = {
    "ws-deflate-unread": Attack(ws_deflate_unread, scale_in_tests=0.5),
    "h2c-upgrade-tiny-chunks": Attack(h2c_upgrade_tiny_chunks, scale_in_tests=0.5),
    "h1-tiny-chunks-unread": Attack(h1_tiny_chunks_unread),
    "h1-tiny-chunks-read": Attack(h1_tiny_chunks_read, scale_in_tests=0.25),
    "h2-tiny-data": Attack(h2_tiny_data, needs_h2=True),
    "h2-tiny-data-tls": Attack(h2_tiny_data_tls, tls=True, needs_h2=True, scale_in_tests=2.0),
    "h2-empty-data": Attack(h2_empty_data, needs_h2=True),
    "ws-empty-continuation": Attack(ws_empty_continuation),
    "h1-body-never-sent": Attack(h1_body_never_sent, extra=["--timeout-request-body", "2"]),
    "h2-body-never-sent": Attack(h2_body_never_sent, extra=["--timeout-request-body", "2"], needs_h2=True),
    "h1-unique-fields": Attack(h1_unique_fields, scale_in_tests=0.5),
    "h2-refused-streams": Attack(h2_refused_streams, needs_h2=True),
}


def run_attack(
    name: str, server_name: str, *, scale: float = 1.0, cpu: str | None = None, client_cpu: str | None = None
) -> Result:
    attack = ATTACKS[name]
    extra = attack.extra if server_name == "heron" else []
    result = Result(name, server_name, 0)
    with ServerProcess(server_name, extra, tls=attack.tls, cpu=cpu) as server:
        warm_up(server, h2=SERVERS[server_name]["h2"])
        time.sleep(0.3)
        result.base = server.rss()
        sampler, probe = RssSampler(server), LatencyProbe(server.port, tls=server.tls)
        sampler.start()
        probe.start()
        try:
            attack.run(server, result, scale)
        finally:
            probe.halt.set()
            sampler.halt.set()
            probe.join()
            sampler.join()
        time.sleep(0.5)
        result.after = server.rss()
        result.peak = sampler.peak
        samples = probe.samples or [0.0]
        result.p50, result.max, result.failures = statistics.median(samples), max(samples), probe.failures
        if server.proc.poll() is not None:
            result.outcome += f"; SERVER EXITED {server.proc.returncode}"
        result.extra["log"] = server.log()
    return result


@contextlib.contextmanager
def pinned(cpu: str | None) -> Iterator[None]:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {int(cpu)})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)
    else:
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="heron,uvicorn,hypercorn")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply connections and frame counts")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()
    lines = [
        "| attack | server | conns | peak RSS per conn | RSS after | p50 | max | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.attacks.split(","):
        for server in args.servers.split(","):
            if ATTACKS[name].needs_h2 and not SERVERS[server]["h2"]:
                line = f"| {name} | {server} | - | - | - | - | - | no HTTP/2 |"
            else:
                try:
                    with pinned("1"):
                        line = run_attack(name, server, scale=args.scale, cpu="0").row()
                except Exception as exc:
                    line = f"| {name} | {server} | - | - | - | - | - | error: {exc!r:.80} |"
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
