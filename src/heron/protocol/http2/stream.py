"""What the HTTP/2 core keeps per stream, and the counter of events per time window."""

from __future__ import annotations

from typing import Any

from .limits import RESET_WINDOW


class _WindowCount:
    """How often something happened within the last ``RESET_WINDOW`` seconds
    (a fixed window that restarts once it is over); ``limit`` 0: never too often."""

    __slots__ = ("limit", "count", "start")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.start = 0.0

    def hit(self, now: float) -> bool:
        """Count one; True when that makes more than ``limit``."""
        if not self.limit:
            return False
        if now - self.start > RESET_WINDOW:
            self.start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


class _Stream:
    """One stream's state: both directions, windows, queued output."""

    __slots__ = (
        "sid",
        "live",
        "counted",
        "pushed",
        "recv_closed",
        "send_closed",
        "rwin",
        "rproc",
        "unacked",
        "expected",
        "received",
        "swin",
        "method",
        "scheme",
        "authority",
        "chunks",
        "size",
        "end",
        "trailers",
        "remaining",
        "no_body",
    )

    def __init__(self, sid: int, rwin: int, swin: int, recv_closed: bool) -> None:
        self.sid = sid
        #: reported to the caller and not yet forgotten (stream_done, reset, END_STREAM sent)
        self.live = True
        #: counted against max_concurrent_streams
        self.counted = False
        self.pushed = False
        self.recv_closed = recv_closed
        self.send_closed = False
        self.rwin = rwin  # receive window left
        self.rproc = 0  # consumed bytes not yet credited back
        self.unacked = 0  # bytes reported in DataReceived, not yet acknowledged
        self.expected: int | None = None  # declared content-length
        self.received = 0
        self.swin = swin  # send window
        self.method = b""
        self.scheme = b""
        self.authority = b""
        #: queued response body pieces (None until the head is sent, and once forgotten)
        self.chunks: list[Any] | None = None
        self.size = 0
        self.end = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: declared content-length still to send (None: not declared)
        self.remaining: int | None = None
        self.no_body = False
