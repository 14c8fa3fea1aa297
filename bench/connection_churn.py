"""Memory after many short connections: RSS of a heron server before and after
N connections (a third send nothing, a third are reset mid-request, a third
complete a request). Usage: python bench/connection_churn.py [N]
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

APP = "bench.apps:hello"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def churn(port: int, count: int) -> None:
    linger = struct.pack("ii", 1, 0)
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        kind = i % 3
        if kind == 1:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)  # reset
        elif kind == 2:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
        sock.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    port = free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen(
        [sys.executable, "-m", "heron", APP, "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=root,
    )
    try:
        time.sleep(1.5)
        churn(port, 3000)  # warm-up: caches, allocator arenas
        time.sleep(1)
        before = rss_kib(server.pid)
        start = time.monotonic()
        churn(port, count)
        elapsed = time.monotonic() - start
        time.sleep(2)
        after = rss_kib(server.pid)
        print(f"{count} connections in {elapsed:.1f} s: RSS {before} KiB -> {after} KiB ({after - before:+d} KiB)")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
