"""Raw-socket clients, for tests that must put exact bytes on the wire.

HTTP/2 (RFC 9113): frame builders (:func:`h2_frame`, :func:`settings_frame`),
a parser for what comes back (:func:`parse_h2_frames`), and :class:`RawH2`, a
blocking connection that sends hand-made frames and reads every frame until
EOF. WebSocket (RFC 6455): :func:`ws_frame` (masked client frames, or unmasked
ones for the tests that expect a refusal), the opening handshake request, and
:class:`RawWS`, a blocking client over a plain socket.

Nothing here checks what the server does; the tests do. Clients that speak
the protocols properly (h2, websockets, aiohttp, httpx) are used where exact
bytes don't matter.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

import hpack

if TYPE_CHECKING:
    from .conftest import RunningServer

#: seconds a read waits by default
WAIT = 5.0

# --- HTTP/2 ------------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR = (
    0x0,
    0x1,
    0x2,
    0x3,
    0x5,
    0x6,
)
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x8, 0x9, 0xB
# settings (RFC 9113 6.5.2, RFC 8441 3)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x2, 0x3, 0x4, 0x5
ENABLE_CONNECT_PROTOCOL = 0x8


def h2_frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame, any type, flags and length (nothing is checked)."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload


def settings_frame(*pairs: tuple[int, int]) -> bytes:
    """A SETTINGS frame (not an ACK) with these (identifier, value) pairs."""
    return h2_frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def parse_h2_frames(buf: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """The whole frames at the start of ``buf`` as (type, flags, stream id, payload)
    (the stream id without its reserved bit), and the bytes left after them."""
    frames = []
    pos = 0
    while len(buf) - pos >= 9:
        n = int.from_bytes(buf[pos : pos + 3], "big")
        if len(buf) - pos < 9 + n:
            break
        sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        frames.append((buf[pos + 3], buf[pos + 4], sid, buf[pos + 9 : pos + 9 + n]))
        pos += 9 + n
    return frames, buf[pos:]


class RawH2:
    """A cleartext HTTP/2 connection (prior knowledge) driven by hand: it sends the
    preface and a SETTINGS frame, then whatever the test writes to ``sock``."""

    def __init__(self, port: int, *settings: tuple[int, int], rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.enc = hpack.Encoder()
        self.buf = b""
        self.sock.sendall(PREFACE + settings_frame(*settings))

    def headers(
        self, sid: int, path: str = "/", flags: int = END_STREAM | END_HEADERS, extra: list[Any] | None = None
    ) -> bytes:
        """A HEADERS frame for a GET of ``path`` (encoded with this connection's HPACK state)."""
        fields = [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")] + (extra or [])
        return h2_frame(HEADERS, flags, sid, self.enc.encode(fields))

    def frames(self, timeout: float = WAIT) -> list[tuple[int, int, int, bytes]]:
        """Read until EOF (or timeout); return every frame received so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            self.buf += data
        return parse_h2_frames(self.buf)[0]


# --- WebSocket ---------------------------------------------------------------------------------------

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def mask_payload(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 5.3)."""
    if not payload:
        return b""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """A client frame: masked with a random key (``mask=False``: not masked, which
    a server must refuse). ``rsv``: the RSV bits as they sit in the first byte."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_payload(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def ws_key() -> bytes:
    """A fresh Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16))


def handshake_request(path: str = "/", extra: bytes = b"", key: bytes | None = None, method: bytes = b"GET") -> bytes:
    """The opening handshake of RFC 6455 4.1 (``extra``: more header lines, each ending in CRLF)."""
    key = ws_key() if key is None else key
    return (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def ws_frame_extent(buf: bytes | bytearray) -> tuple[int, int] | None:
    """(header length, payload length) of the unmasked (server) frame that starts
    ``buf``, once all of it is there; None before."""
    if len(buf) < 2:
        return None
    n, pos = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    return (pos, n) if len(buf) >= pos + n else None


class RawWS:
    """A WebSocket client on a plain blocking socket: frames are built and parsed here."""

    frame = staticmethod(ws_frame)

    def __init__(self, sock: socket.socket, buf: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(buf)

    @classmethod
    def open(
        cls,
        srv: RunningServer,
        path: str = "/",
        extra: bytes = b"",
        sock: socket.socket | None = None,
    ) -> tuple[RawWS, dict[bytes, bytes]]:
        """Connect (or use ``sock``) and complete the handshake: the client and the
        101 response's header fields (lowercase names). Fails on any other answer."""
        if sock is None:
            sock = srv.connect()
        sock.settimeout(WAIT)
        key = ws_key()
        sock.sendall(handshake_request(path, extra, key))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(1)  # byte by byte: nothing past the head is consumed
            if not data:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += data
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 101 "), head
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        assert headers[b"sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key + GUID).digest())
        return cls(sock), headers

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        self.sock.sendall(ws_frame(opcode, payload, **kwargs))

    def read_frame(self, timeout: float = WAIT) -> tuple[bool, int, int, bytes]:
        """(fin, rsv bits, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        while (found := ws_frame_extent(self.buf)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("frame not complete in time")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError(f"connection closed by the server (buffered {bytes(self.buf[:40])!r})")
            self.buf += data
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        pos, n = found
        payload = bytes(self.buf[pos : pos + n])
        del self.buf[: pos + n]
        return bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, payload

    def read_close(self, timeout: float = WAIT) -> tuple[int | None, str, list[tuple[int, bytes]]]:
        """Skip to the server's Close frame: (code, reason, (opcode, payload) of the frames before it)."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            _, _, opcode, payload = self.read_frame(max(0.0, deadline - time.monotonic()))
            if opcode == OP_CLOSE:
                if not payload:
                    return None, "", before
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8"), before
            before.append((opcode, payload))

    def frames_until_close(self, timeout: float = WAIT) -> tuple[list[tuple[int, bytes]], int | None]:
        """The frames before the server's Close frame (each unfragmented), and the Close frame's code."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            fin, _, opcode, payload = self.read_frame(max(0.0, deadline - time.monotonic()))
            assert fin, "heron sends no fragments"
            if opcode == OP_CLOSE:
                return before, (struct.unpack("!H", payload[:2])[0] if payload else None)
            before.append((opcode, payload))

    def closed_by_server(self, timeout: float = WAIT) -> bool:
        """True once the server has closed the TCP connection (EOF or reset); what
        arrives meanwhile is kept for :meth:`read_frame`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.buf += data
        return False

    def close(self) -> None:
        self.sock.close()
