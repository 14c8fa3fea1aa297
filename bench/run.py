#!/usr/bin/env python3
"""heron's benchmark harness: heron against its peers, side by side, on this machine.

Run from anywhere with the bench venv's python (see bench/README.md):

    bash bench/setup.sh && bench/.venv/bin/python bench/run.py

Method: every server runs one worker, pinned to core 0 with ``taskset -c 0``;
load generators run pinned to core 1. For each scenario, rounds are
interleaved across servers (A B C A B C ...); each measurement starts a fresh
server, checks its answer, runs a warm-up, then the measured run. Results are
medians over rounds; the ratio against uvicorn-httptools is computed within
each round, then the median of those ratios is taken. A run with any error
(non-2xx, socket error, timeout, failed message) is flagged as such and never
counted as a fast run.

Only the standard library and matplotlib are used, plus ``cryptography`` (when installed,
else the openssl command) for the TLS scenarios' self-signed certificate and a C compiler
for tls-handshakes (bench/no_resume.c, built into the run's temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import http.client
import importlib
import ipaddress
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import socketserver
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PY = sys.executable
VENV_BIN = Path(PY).parent
SERVER_CPU = "0"
CLIENT_CPU = "1"
BASELINE = "uvicorn-httptools"
CLIENT_BOUND_CPU = 85  # server core busy % under which a run is marked "(client-bound?)"
NOISY_CPU = 10  # % of the server's core used by other processes above which a run is marked "(contended)"


def vbin(name: str) -> str:
    """A console script from the bench venv (falls back to PATH)."""
    p = VENV_BIN / name
    return str(p) if p.exists() else (shutil.which(name) or name)


# --------------------------------------------------------------------------
# Servers: one table. {app} is "module:attr", {port} the port, {tmp} the
# server's temp dir, {key} / {cert} the run's TLS key and certificate,
# {interface} the scenario's app interface ("asgi" or "wsgi").
# "h2c": True = speaks HTTP/2 cleartext with prior knowledge (with h2_extra
# args added), False = does not (skipped with h2_note), None = probe at run time.
# "mem_extra": args added for the memory scenario only, to lift the idle
# keep-alive timeout so that held connections stay open while RSS is read
# (granian's HTTP/1 and daphne have no idle timeout to lift).
# "tls": serves HTTPS with tls_extra added (or with tls_cmd instead of cmd),
# False = skipped with tls_note. "h2_tls": HTTP/2 over TLS by ALPN, with
# h2_tls_extra (default: h2_extra) added to the TLS args; True / False
# (h2_tls_note) / None = probe at run time.
# "wsgi": serves a WSGI app with wsgi_extra added; False = skipped with
# wsgi_note. "asgi": False = a WSGI-only entry, skipped for the ASGI scenarios
# with asgi_note. "only": the scenarios an entry takes part in (only_note).
# --------------------------------------------------------------------------
SERVERS: dict[str, dict[str, Any]] = {
    "heron": {
        "cmd": [
            PY,
            "-m",
            "heron",
            "{app}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "h2c": None,
        "mem_extra": ["--timeout-keep-alive", "600"],
        "ws": None,  # probed at run time
        "tls": True,
        "tls_extra": ["--ssl-keyfile", "{key}", "--ssl-certfile", "{cert}"],
        "h2_tls": None,  # probed at run time (ALPN h2)
        # The same thread count as gunicorn-gthread's --threads 8 (heron's default is 10).
        "wsgi": True,
        "wsgi_extra": ["--interface", "wsgi", "--wsgi-threads", "8"],
        "h3": True,  # HTTP/3 on the UDP port of the same number (the aioquic extra)
        "h3_extra": ["--quic-bind", "127.0.0.1:{port}"],
        "package": "heron",
    },
    "uvicorn-httptools": {
        "cmd": [
            PY,
            "-m",
            "uvicorn",
            "{app}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "mem_extra": ["--timeout-keep-alive", "600"],
        "h2c": False,
        "h2_note": "uvicorn has no HTTP/2",
        "ws": True,
        "tls": True,
        "tls_extra": ["--ssl-keyfile", "{key}", "--ssl-certfile", "{cert}"],
        "h2_tls": False,
        "h2_tls_note": "uvicorn has no HTTP/2",
        # Deprecated, still present: uvicorn.middleware.wsgi, a fixed pool of 10 threads (no flag).
        "wsgi": True,
        "wsgi_extra": ["--interface", "wsgi"],
        "package": "uvicorn",
    },
    "uvicorn-h11": {
        "cmd": [
            PY,
            "-m",
            "uvicorn",
            "{app}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--loop",
            "uvloop",
            "--http",
            "h11",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "mem_extra": ["--timeout-keep-alive", "600"],
        "h2c": False,
        "h2_note": "uvicorn has no HTTP/2",
        "ws": True,
        "tls": True,
        "tls_extra": ["--ssl-keyfile", "{key}", "--ssl-certfile", "{cert}"],
        "h2_tls": False,
        "h2_tls_note": "uvicorn has no HTTP/2",
        # Deprecated, still present: uvicorn.middleware.wsgi, a fixed pool of 10 threads (no flag).
        "wsgi": True,
        "wsgi_extra": ["--interface", "wsgi"],
        "package": "uvicorn",
    },
    "hypercorn": {
        # No access log unless --access-logfile is given.
        "cmd": [
            PY,
            "-m",
            "hypercorn",
            "{app}",
            "--bind",
            "127.0.0.1:{port}",
            "-k",
            "uvloop",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        "mem_extra": ["--keep-alive", "600"],
        "h2c": True,
        # keep_alive_max_requests (default 1000, no CLI flag) ends an HTTP/2 connection after
        # 1000 requests: h2load counts the streams in flight then as failed. Lifted for h2.
        "h2_extra": ["--config", "{tmp}/hypercorn.toml"],
        "files": {"hypercorn.toml": "keep_alive_max_requests = 1000000000\n"},
        "ws": True,
        "tls": True,
        "tls_extra": ["--keyfile", "{key}", "--certfile", "{cert}"],
        "h2_tls": True,  # ALPN h2, http/1.1 by default
        # A WSGI app is recognised by itself (not a coroutine function); it runs in the event
        # loop's default thread pool, min(32, cpu_count + 4) threads, no flag to size it.
        "wsgi": True,
        "wsgi_extra": [],
        "h3": True,  # with aioquic installed
        "h3_extra": ["--quic-bind", "127.0.0.1:{port}"],
        "package": "hypercorn",
    },
    "granian": {
        "cmd": [
            vbin("granian"),
            "--interface",
            "{interface}",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
            # backpressure defaults to backlog/workers = 1024 and stalls new
            # connections beyond it; raised for the 10,000-connection memory scenario.
            "--backpressure",
            "20000",
            "{app}",
        ],
        "h2c": True,
        "ws": True,
        # The key must be PKCS#8 (the harness writes one); granian's minimum TLS version is 1.3.
        "tls": True,
        "tls_extra": ["--ssl-keyfile", "{key}", "--ssl-certificate", "{cert}"],
        "h2_tls": True,  # --http auto: ALPN h2 and http/1.1
        # --interface wsgi (from {interface} above). Its blocking-thread pool defaults to
        # backpressure / 2 (10,000 here); set to gunicorn-gthread's 8.
        "wsgi": True,
        "wsgi_extra": ["--blocking-threads", "8"],
        "package": "granian",
    },
    "daphne": {
        # Access log is off at verbosity 0. Daphne speaks HTTP/2 only over TLS.
        "cmd": [vbin("daphne"), "-b", "127.0.0.1", "-p", "{port}", "-v", "0", "{app}"],
        "h2c": False,
        "h2_note": "daphne speaks HTTP/2 only over TLS",
        "ws": True,
        # TLS is a Twisted endpoint string, which replaces -b/-p (both would bind the port twice).
        "tls": True,
        "tls_cmd": [
            vbin("daphne"),
            "-e",
            "ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            "-v",
            "0",
            "{app}",
        ],
        "h2_tls": None,  # only when Twisted's HTTP/2 extra (h2, priority) is installed: probed
        "wsgi": False,
        "wsgi_note": "ASGI only",
        "package": "daphne",
    },
    "gunicorn-asgi": {
        # gunicorn >= 24 ships a native asyncio ASGI worker: -k asgi
        # (gunicorn.workers.gasgi.ASGIWorker). No access log unless
        # --access-logfile is given. worker_connections defaults to 1000,
        # raised so the 10,000-connection memory scenario can run.
        "cmd": [
            vbin("gunicorn"),
            "-k",
            "asgi",
            "--workers",
            "1",
            "--asgi-loop",
            "uvloop",
            "--bind",
            "127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--worker-connections",
            "20000",
            "{app}",
        ],
        "mem_extra": ["--keep-alive", "600"],  # default keep-alive is 2 s
        "h2c": True,
        # h2c is off by default; "both" = prior knowledge and Upgrade, HTTP/1 still served.
        "h2_extra": ["--http-protocols", "h2,h1", "--http2-cleartext", "both"],
        "ws": True,
        "tls": True,
        "tls_extra": ["--keyfile", "{key}", "--certfile", "{cert}"],
        "h2_tls": True,
        "h2_tls_extra": ["--http-protocols", "h2,h1"],  # ALPN h2, then http/1.1
        "wsgi": False,
        "wsgi_note": "ASGI worker (gunicorn-gthread serves the WSGI scenarios)",
        "package": "gunicorn",
    },
    "gunicorn-gthread": {
        # gunicorn's threaded WSGI worker, for the WSGI scenarios only: 8 threads, each
        # serving one connection's request at a time; idle keep-alive connections wait in
        # its poller. worker_connections raised as for gunicorn-asgi.
        "cmd": [
            vbin("gunicorn"),
            "-k",
            "gthread",
            "--threads",
            "8",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--worker-connections",
            "20000",
            "{app}",
        ],
        "asgi": False,
        "asgi_note": "WSGI worker (gunicorn-asgi serves the ASGI scenarios)",
        "wsgi": True,
        "h2c": False,
        "h2_note": "gthread worker: HTTP/1.1 only",
        "ws": False,
        "tls": True,
        "tls_extra": ["--keyfile", "{key}", "--certfile", "{cert}"],
        "h2_tls": False,
        "h2_tls_note": "gthread worker: HTTP/1.1 only",
        "package": "gunicorn",
    },
    "nginx": {
        # Physical reference: `return 200 "Hello, world!"` from one worker.
        "cmd": ["nginx", "-p", "{tmp}", "-c", "{tmp}/nginx.conf", "-g", "daemon off;"],
        "kind": "nginx",
        "only": {"hello", "tls-hello", "tls-h2-c8m8", "tls-handshakes"},
        "only_note": "reference for hello and the TLS scenarios",
        "h2c": False,
        "h2_note": "reference for hello only",
        "ws": False,
        "tls": True,  # `listen ... ssl` (and `http2` for h2) in the generated config
        "h2_tls": True,
        "wsgi": False,
        "wsgi_note": "reference for hello and the TLS scenarios",
        "package": None,
    },
}

# An earlier heron, to measure a change against its parent in the same interleaved
# run: HERON_BASE_SRC=/path/to/checkout/src adds the server "heron-base" (the same
# command, importing heron from there; build or copy its _speedups extension first).
if os.environ.get("HERON_BASE_SRC"):
    SERVERS["heron-base"] = dict(SERVERS["heron"], pythonpath=os.environ["HERON_BASE_SRC"])

# heron with its HTTP/1.1 core compiled by mypyc (setup.py's HERON_MYPYC=1): the wheel is
# built from this checkout into the run's temp dir at start (build_mypyc_heron; needs mypy
# and setuptools>=77 in the bench venv, which bench/setup.sh installs) and imported ahead
# of the checkout. Without a build it is left out of the run, with a note.
SERVERS["heron-mypyc"] = dict(SERVERS["heron"], pythonpath=None)

NGINX_CONF = """\
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port}{listen_opts};
{tls_conf}        location / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
    }}
}}
"""

UPLOAD_LUA = BENCH_DIR / "upload.lua"
UPLOAD_LUA_TEXT = """\
-- POST a 1 MiB body on every request (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
"""
ECHO_LUA = BENCH_DIR / "echo.lua"
ECHO_LUA_TEXT = """\
-- POST a 4 KiB body on every request (wrk adds Content-Length).
wrk.method = "POST"
wrk.body = string.rep("e", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
"""
CLOSE_LUA = BENCH_DIR / "close.lua"
CLOSE_LUA_TEXT = """\
-- One request per connection: the server closes after the response, wrk reconnects.
wrk.headers["Connection"] = "close"
"""
NO_RESUME_C = BENCH_DIR / "no_resume.c"


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    kind: str  # wrk | h2 | ws | h3 | sse | memory
    app: str
    desc: str
    check: Callable[[int, bytes], bool] | None = None  # (status, body) -> ok
    method: str = "GET"
    check_body: bytes | None = None
    wrk_script: Path | None = None
    h2_args: list[str] = field(default_factory=list)
    ws_size: int = 0
    unit: str = "req/s"
    tls: bool = False  # HTTPS with the run's self-signed certificate (h2: ALPN h2)
    interface: str = "asgi"  # "wsgi": servers get their wsgi_extra args, WSGI-less ones are skipped
    # One request per connection, each a full TLS handshake: wrk with Connection: close and
    # the no_resume.c preload (wrk would otherwise resume the previous session).
    reconnect: bool = False
    h3_args: list[str] = field(default_factory=list)  # the HTTP/3 client's --conns/--streams
    sse_args: list[str] = field(default_factory=list)  # bench/sse_client.py --events (--conns from --sse-conns)


def _ok_len(n: int) -> Callable[[int, bytes], bool]:
    return lambda status, body: status == 200 and len(body) == n


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "hello",
            "wrk",
            "bench.apps:hello",
            "GET, 13-byte text/plain body with content-length (wrk -c64)",
            check=lambda st, b: st == 200 and b == b"Hello, world!",
        ),
        Scenario(
            "big", "wrk", "bench.apps:big", "GET, 64 KiB body with content-length (wrk -c64)", check=_ok_len(65536)
        ),
        Scenario(
            "upload",
            "wrk",
            "bench.apps:upload",
            "POST 1 MiB body, app reads it all and answers its length (wrk -c64, lua script)",
            method="POST",
            check_body=b"x" * 1048576,
            check=lambda st, b: st == 200 and b.strip() == b"1048576",
            wrk_script=UPLOAD_LUA,
        ),
        Scenario(
            "echo-4k",
            "wrk",
            "bench.apps:echo",
            "POST 4 KiB body, app reads it and sends it back with content-length (wrk -c64, lua script)",
            method="POST",
            check_body=b"e" * 4096,
            check=lambda st, b: st == 200 and b == b"e" * 4096,
            wrk_script=ECHO_LUA,
        ),
        Scenario(
            "stream",
            "wrk",
            "bench.apps:stream",
            "GET, 100 x 1 KiB body chunks sent with more_body=True (chunked) (wrk -c64)",
            check=_ok_len(102400),
        ),
        Scenario(
            "starlette",
            "wrk",
            "bench.app_starlette:starlette_app",
            "Starlette JSON endpoint, the 'real app' case (wrk -c64)",
            check=lambda st, b: st == 200 and b.startswith(b"{"),
        ),
        Scenario(
            "fastapi",
            "wrk",
            "bench.app_starlette:fastapi_app",
            "FastAPI JSON endpoint with a pydantic response model (wrk -c64)",
            check=lambda st, b: st == 200 and b.startswith(b"{"),
        ),
        Scenario(
            "ws-32",
            "ws",
            "bench.apps:ws_echo",
            "WebSocket echo, 32-byte messages, 64 connections, one message in flight each",
            ws_size=32,
            unit="msg/s",
        ),
        Scenario(
            "ws-64k",
            "ws",
            "bench.apps:ws_echo",
            "WebSocket echo, 64 KiB messages, 64 connections, one message in flight each",
            ws_size=65536,
            unit="msg/s",
        ),
        Scenario(
            "ws-1m",
            "ws",
            "bench.apps:ws_echo",
            "WebSocket echo, 1 MiB messages, 64 connections, one message in flight each",
            ws_size=1 << 20,
            unit="msg/s",
        ),
        Scenario(
            "sse",
            "sse",
            "bench.apps:sse",
            "Server-sent events: 1,000 keep-alive connections, each GETting text/event-stream responses of "
            "1,000 events of 50 bytes, one per http.response.body (more_body=True, chunked), sent as fast as "
            "the client reads; p50/p99 = time from the GET to its first event",
            # The check reads one whole stream: 1,000 events, as bench.apps.SSE_EVENTS says.
            check=lambda st, b: st == 200 and b.count(b"\n\n") == 1000 and b.startswith(b"data: "),
            sse_args=["--events", "1000"],
            unit="events/s",
        ),
        Scenario(
            "sse-tick",
            "sse",
            "bench.apps:sse_tick",
            "Server-sent events as sse, the app yielding to the event loop (asyncio.sleep(0)) after each "
            "event, as a token stream fed from elsewhere does: every event is a socket write of its own",
            check=lambda st, b: st == 200 and b.count(b"\n\n") == 1000 and b.startswith(b"data: "),
            sse_args=["--events", "1000"],
            unit="events/s",
        ),
        Scenario(
            "h2-hello-c8m8",
            "h2",
            "bench.apps:hello",
            "HTTP/2 h2c hello, h2load -c8 -m8",
            h2_args=["-c8", "-m8"],
            check=lambda st, b: st == 200 and b == b"Hello, world!",
        ),
        Scenario(
            "h2-hello-c64m1",
            "h2",
            "bench.apps:hello",
            "HTTP/2 h2c hello, h2load -c64 -m1",
            h2_args=["-c64", "-m1"],
            check=lambda st, b: st == 200 and b == b"Hello, world!",
        ),
        Scenario(
            "h2-big-c8m8",
            "h2",
            "bench.apps:big",
            "HTTP/2 h2c 64 KiB body, h2load -c8 -m8",
            h2_args=["-c8", "-m8"],
            check=_ok_len(65536),
        ),
        Scenario(
            "h2-big-c64m1",
            "h2",
            "bench.apps:big",
            "HTTP/2 h2c 64 KiB body, h2load -c64 -m1",
            h2_args=["-c64", "-m1"],
            check=_ok_len(65536),
        ),
        Scenario(
            "tls-hello",
            "wrk",
            "bench.apps:hello",
            "HTTPS (HTTP/1.1 over TLS, self-signed P-256 certificate) hello, wrk -c64 over long-lived connections",
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            tls=True,
        ),
        Scenario(
            "tls-h2-c8m8",
            "h2",
            "bench.apps:hello",
            "HTTP/2 over TLS (ALPN h2) hello, h2load -c8 -m8",
            h2_args=["-c8", "-m8"],
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            tls=True,
        ),
        Scenario(
            "tls-handshakes",
            "wrk",
            "bench.apps:hello",
            "new TLS connections per second: one hello request per connection (Connection: close), "
            "each a full handshake (no session resumption), wrk -c64",
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            wrk_script=CLOSE_LUA,
            unit="conn/s",
            tls=True,
            reconnect=True,
        ),
        Scenario(
            "h3-hello",
            "h3",
            "bench.apps:hello",
            "HTTP/3 over QUIC hello, 8 connections x 8 streams (bench/h3_curl_client.py: libcurl's "
            "ngtcp2/nghttp3 through curl_cffi; bench/h3_client.py, aioquic, where curl_cffi is missing)",
            h3_args=["--conns", "8", "--streams", "8"],
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            tls=True,
        ),
        Scenario(
            "wsgi-hello",
            "wrk",
            "bench.app_wsgi:flask_app",
            "WSGI: Flask route answering 13 bytes of text/plain (wrk -c64)",
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            interface="wsgi",
        ),
        Scenario(
            "wsgi-stream-1m",
            "wrk",
            "bench.app_wsgi:stream_1m",
            "WSGI: a generator yielding 1 MiB in 16 x 64 KiB pieces, no content-length (chunked) (wrk -c64)",
            check=_ok_len(1 << 20),
            interface="wsgi",
        ),
        Scenario(
            "memory",
            "memory",
            "bench.apps:hello",
            "RSS after holding 1,000 then 10,000 idle keep-alive connections (one request each)",
            check=lambda st, b: st == 200 and b == b"Hello, world!",
            unit="KiB/conn",
        ),
    ]
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pid: int) -> float:
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tck


def core_busy_seconds(cpu: int) -> float:
    """Busy time of one core from /proc/stat (everything but idle and iowait), steal included."""
    tck = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / tck
    return 0.0


class CpuWindow:
    """Server CPU % and other processes' load on the server's core over a window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0 = time.monotonic()
        self.cpu0 = tree_cpu_seconds(pid)
        self.core0 = core_busy_seconds(int(SERVER_CPU))

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.t0
        if wall <= 0:
            return {"server_cpu": None, "noise": None}
        server = (tree_cpu_seconds(self.pid) - self.cpu0) / wall * 100
        busy = (core_busy_seconds(int(SERVER_CPU)) - self.core0) / wall * 100
        return {"server_cpu": server, "noise": max(0.0, busy - server)}


def established_on_port(port: int) -> int:
    """Server-side ESTABLISHED TCP sockets whose local port is `port` (from /proc/net/tcp*)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def http_get(
    port: int,
    path: str = "/",
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
    tls: bool = False,
    info: dict[str, Any] | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request (HTTPS when tls, certificate not verified: it is the run's own).

    With tls and info, info["tls"] gets the negotiated protocol version and cipher."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream"} if body else {})
        if tls and info is not None and isinstance(conn.sock, ssl.SSLSocket):
            cipher = conn.sock.cipher()
            info["tls"] = f"{conn.sock.version()} {cipher[0] if cipher else '?'}"
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def tcp_passive_opens() -> int | None:
    """Connections accepted by this machine's TCP stack so far (PassiveOpens in /proc/net/snmp)."""
    try:
        with open("/proc/net/snmp") as f:
            lines = [line.split() for line in f if line.startswith("Tcp:")]
        return int(lines[1][lines[0].index("PassiveOpens")])
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# TLS: the run's certificate, and the client preload that prevents resumption
# --------------------------------------------------------------------------
def make_tls_files(directory: Path) -> tuple[str, str]:
    """A self-signed P-256 certificate for 127.0.0.1 and its key (PKCS#8 PEM, which granian
    requires), valid 2 days. Returns (key path, certificate path)."""
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        from bench.hostile import make_cert  # (the openssl command; its key is PKCS#8 too)

        try:
            cert_file, key_file = make_cert(str(directory))
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"openssl req failed ({e.returncode}): {' '.join(e.stderr.decode().split())[-300:]}"
            ) from None
        return key_file, cert_file
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


def build_no_resume(directory: Path) -> str:
    """Compile bench/no_resume.c (the LD_PRELOAD shim that stops wrk resuming TLS sessions)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) to build bench/no_resume.c; bash bench/setup.sh installs gcc")
    so = directory / "no_resume.so"
    rc, out, err = run_cmd([cc, "-shared", "-fPIC", "-O2", "-o", str(so), str(NO_RESUME_C), "-ldl"], timeout=120)
    if rc != 0:
        raise RuntimeError(f"cc failed ({rc}): {' '.join((err or out).split())[-300:]}")
    return str(so)


def build_mypyc_heron(directory: Path) -> str:
    """heron's wheel built with HERON_MYPYC=1 from this checkout and unpacked: the
    PYTHONPATH entry of the heron-mypyc server. Raises RuntimeError if it can't be built."""
    wheel_dir = directory / "mypyc-wheel"
    cmd = [PY, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(wheel_dir), str(REPO_DIR)]
    try:
        p = subprocess.run(cmd, env=dict(os.environ, HERON_MYPYC="1"), capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("the mypyc build took over 600 s") from e
    if p.returncode != 0:
        raise RuntimeError(f"pip wheel failed ({p.returncode}): {' '.join((p.stderr or p.stdout).split())[-300:]}")
    site = directory / "mypyc-site"
    with zipfile.ZipFile(next(wheel_dir.glob("heron-*.whl"))) as wheel:
        wheel.extractall(site)
    if not list((site / "heron" / "protocol" / "http1").glob("connection.*.so")):
        raise RuntimeError("the wheel holds no compiled modules (HERON_MYPYC not seen by setup.py?)")
    return str(site)


def wrk_resumption(tls_files: tuple[str, str], preload: str | None, seconds: int = 1) -> tuple[int, int, str]:
    """Run wrk (one request per connection) against a tiny in-process HTTPS server that issues
    session tickets and counts the handshakes it sees. Returns (full, resumed, wrk output)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files[1], tls_files[0])
    counts = {"full": 0, "resumed": 0}
    lock = threading.Lock()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                with ctx.wrap_socket(self.request, server_side=True) as tls:
                    with lock:
                        counts["resumed" if tls.session_reused else "full"] += 1
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        data = tls.recv(4096)
                        if not data:
                            return
                        buf += data
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:  # includes ssl.SSLError: a client gone mid-handshake is not counted
                pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        cmd = [
            "wrk",
            "-t1",
            "-c2",
            f"-d{seconds}s",
            "-s",
            str(CLOSE_LUA),
            f"https://127.0.0.1:{srv.server_address[1]}/",
        ]
        if preload:
            cmd = ["env", f"LD_PRELOAD={preload}", *cmd]
        rc, out, err = run_cmd(cmd, timeout=seconds + 30)
    finally:
        srv.shutdown()
        srv.server_close()
    return counts["full"], counts["resumed"], out + err


def run_cmd(cmd: list[str], timeout: float) -> tuple[int, str, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return -999, out, "timeout"


def tool_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------
class ServerStartError(Exception):
    pass


class Server:
    def __init__(
        self,
        name: str,
        spec: dict[str, Any],
        app: str,
        h2: bool = False,
        mem: bool = False,
        tls: tuple[str, str] | None = None,
        wsgi: bool = False,
        h3: bool = False,
    ) -> None:
        """tls: (key, certificate) paths to serve HTTPS with; wsgi: app is a WSGI app;
        h3: HTTP/3 too (h3_extra), on the UDP port of the same number."""
        self.name = name
        self.spec = spec
        self.app = app
        self.h2 = h2
        self.tls = tls
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix=f"heron-bench-{name}-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.tmp) / "server.log"
        values = {
            "app": app,
            "port": self.port,
            "tmp": self.tmp,
            "key": tls[0] if tls else "",
            "cert": tls[1] if tls else "",
            "interface": "wsgi" if wsgi else "asgi",
        }
        base = spec["tls_cmd"] if tls and spec.get("tls_cmd") else spec["cmd"]
        cmd = [a.format(**values) for a in base]
        extra = list(spec.get("tls_extra", [])) if tls and not spec.get("tls_cmd") else []
        if h2:
            extra += spec.get("h2_tls_extra", spec.get("h2_extra", [])) if tls else spec.get("h2_extra", [])
        extra += (spec.get("mem_extra", []) if mem else []) + (spec.get("wsgi_extra", []) if wsgi else [])
        extra += spec.get("h3_extra", []) if h3 else []
        extra = [a.format(**values) for a in extra]
        if extra:
            # Before the app argument when it comes last (gunicorn, granian), else at the end.
            at = len(cmd) - 1 if cmd[-1] == app else len(cmd)
            cmd[at:at] = extra
        self.cmd = ["taskset", "-c", SERVER_CPU] + cmd

    def display_cmd(self) -> str:
        text = shlex.join(self.cmd).replace(self.tmp, "$TMP")
        if self.tls:
            text = text.replace(str(Path(self.tls[0]).parent), "$RUN_TMP")
        return text.replace(str(self.port), "$PORT")

    def start(self, timeout: float = 20.0) -> None:
        if self.spec.get("kind") == "nginx":
            for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                os.makedirs(Path(self.tmp) / d, exist_ok=True)
            tls_conf = (
                # nginx before 1.23.4 leaves TLS 1.3 out of its default ssl_protocols.
                f"        ssl_certificate {self.tls[1]};\n        ssl_certificate_key {self.tls[0]};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                if self.tls
                else ""
            )
            listen_opts = (" ssl http2" if self.h2 else " ssl") if self.tls else ""
            (Path(self.tmp) / "nginx.conf").write_text(
                NGINX_CONF.format(tmp=self.tmp, port=self.port, listen_opts=listen_opts, tls_conf=tls_conf)
            )
        for filename, text in self.spec.get("files", {}).items():
            (Path(self.tmp) / filename).write_text(text)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.spec.get("pythonpath"):
            env["PYTHONPATH"] = self.spec["pythonpath"] + os.pathsep + env["PYTHONPATH"]
        env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        logf = open(self.log_path, "wb")  # noqa: SIM115  # (the server writes to it for its whole life)
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=REPO_DIR,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            raise ServerStartError(f"cannot execute: {e}") from e
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"exited with code {self.proc.returncode}: {self.tail_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                time.sleep(0.3)  # let multi-process servers finish booting their worker
                if self.proc.poll() is not None:
                    raise ServerStartError(f"exited with code {self.proc.returncode}: {self.tail_log()}")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"not listening on port {self.port} after {timeout:.0f}s: {self.tail_log()}")

    def tail_log(self, n: int = 400) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " ".join(text[-n:].split())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pgid = self.proc.pid  # start_new_session: the group is ours alone
            for sig, wait in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Reap stragglers of the same group (worker processes).
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float | None:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out: str) -> dict[str, Any]:
    r: dict[str, Any] = {"rps": None, "p50_ms": None, "p99_ms": None, "errors": 0, "error_detail": ""}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for q, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{q}(?:\.0+)?%\s+(\S+)", out, re.MULTILINE)
        if m:
            r[key] = _ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    details = []
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        r["errors"] += int(m.group(1))
        details.append(f"non-2xx/3xx {m.group(1)}")
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        c, rd, w, t = map(int, m.groups())
        r["errors"] += c + rd + w + t
        details.append(f"socket connect {c} read {rd} write {w} timeout {t}")
    if r["rps"] is None or r["requests"] == 0:
        r["errors"] += 1
        details.append("wrk produced no result")
    r["error_detail"] = "; ".join(details)
    return r


def wrk_cmd(port: int, duration: float, sc: Scenario, conns: int, preload: str | None = None) -> list[str]:
    """preload: the no_resume.so shim, for the reconnecting TLS scenario (LD_PRELOAD)."""
    cmd = [
        "taskset",
        "-c",
        CLIENT_CPU,
        *(["env", f"LD_PRELOAD={preload}"] if preload and sc.reconnect else []),
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if sc.wrk_script:
        cmd += ["-s", str(sc.wrk_script)]
    return cmd + [f"{'https' if sc.tls else 'http'}://127.0.0.1:{port}/"]


def run_wrk(port: int, sc: Scenario, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    if args.warmup > 0:
        run_cmd(wrk_cmd(port, args.warmup, sc, args.connections, args.no_resume), timeout=args.warmup + 60)
    cmd = wrk_cmd(port, args.duration, sc, args.connections, args.no_resume)
    opens0 = tcp_passive_opens()
    window = CpuWindow(pid)
    rc, out, err = run_cmd(cmd, timeout=args.duration + 60)
    cpu = window.stop()
    opens1 = tcp_passive_opens()
    r = parse_wrk(out)
    r.update(cpu)
    if rc != 0:
        r["errors"] += 1
        r["error_detail"] += f"; wrk exit {rc}: {err.strip()[:200]}"
    if sc.reconnect and opens0 is not None and opens1 is not None and r.get("requests"):
        # One request per connection, or the scenario measures something else: a server that
        # ignored Connection: close (and did not say it would close) would have wrk reuse the
        # connection. Accepted connections on the machine during the run, against requests.
        conns = opens1 - opens0
        r["conns"] = conns
        if conns < 0.95 * r["requests"]:
            r["errors"] += 1
            r["error_detail"] = (
                r["error_detail"]
                + f"; only {conns:,} connections accepted for {r['requests']:,} requests: connections were reused"
            ).strip("; ")
    r["raw"] = out
    return r


def h2load_cmd(port: int, sc: Scenario, duration: float, warmup: float, logfile: str) -> list[str]:
    """h2c with prior knowledge for http://; over TLS h2load offers ALPN h2 (and http/1.1)."""
    return [
        "taskset",
        "-c",
        CLIENT_CPU,
        "h2load",
        "-t1",
        *sc.h2_args,
        "-D",
        str(max(1, round(duration))),
        "--warm-up-time",
        str(max(0, round(warmup))),
        "--log-file",
        logfile,
        f"{'https' if sc.tls else 'http'}://127.0.0.1:{port}/",
    ]


def run_h2load(port: int, sc: Scenario, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    fd, logfile = tempfile.mkstemp(prefix="h2load-", suffix=".log")
    os.close(fd)
    try:
        cmd = h2load_cmd(port, sc, args.duration, args.warmup, logfile)
        window = CpuWindow(pid)  # h2load's warm-up is under full load too
        rc, out, err = run_cmd(cmd, timeout=args.duration + args.warmup + 60)
        r: dict[str, Any] = {
            "rps": None,
            "p50_ms": None,
            "p99_ms": None,
            "errors": 0,
            "error_detail": "",
            "raw": out,
            **window.stop(),
        }
        m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        if m:
            r["rps"] = float(m.group(1))
        m = re.search(
            r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
            r"(\d+) errored, (\d+) timeout",
            out,
        )
        details = []
        if m:
            total, started, done, ok, failed, errored, tmo = map(int, m.groups())
            r["requests"] = done
            if failed or errored or tmo:
                r["errors"] += failed + errored + tmo
                details.append(f"failed {failed} errored {errored} timeout {tmo}")
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        if m:
            bad = int(m.group(3)) + int(m.group(4))
            if bad:
                r["errors"] += bad
                details.append(f"4xx/5xx {bad}")
        if sc.tls:
            m = re.search(r"Application protocol: (\S+)", out)
            proto = m.group(1) if m else None
            tls_info = [re.search(rf"{k}: (.+)", out) for k in ("TLS Protocol", "Cipher", "Server Temp Key")]
            r["tls"] = " ".join(m.group(1).strip() for m in tls_info if m) + f", ALPN {proto}"
            if proto != "h2":
                r["errors"] += 1
                details.append(f"application protocol {proto or 'not reported'}, not h2")
        if r["rps"] is None or not r.get("requests"):
            r["errors"] += 1
            m = re.search(r"requests: .*", out)
            details.append(
                f"h2load produced no result (exit {rc}): "
                + (m.group(0) if m else " ".join((err or out).split())[-200:])
            )
        lat = []
        try:
            with open(logfile) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]) / 1000.0)
        except OSError:
            pass
        if lat:
            lat.sort()
            r["p50_ms"] = lat[int(0.50 * (len(lat) - 1))]
            r["p99_ms"] = lat[int(0.99 * (len(lat) - 1))]
        r["error_detail"] = "; ".join(details)
        return r
    finally:
        os.unlink(logfile)


def ws_cmds(port: int, sc: Scenario, args: argparse.Namespace) -> list[list[str]]:
    procs = max(1, args.ws_procs)
    per = [args.connections // procs + (1 if i < args.connections % procs else 0) for i in range(procs)]
    # Sample latencies sparsely for the small-message case to keep the client cheap.
    sample = 10 if sc.ws_size < 1024 else 1
    return [
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            PY,
            str(BENCH_DIR / "ws_client.py"),
            "--port",
            str(port),
            "--conns",
            str(n),
            "--size",
            str(sc.ws_size),
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--sample-every",
            str(sample),
        ]
        for n in per
        if n > 0
    ]


def h3_client() -> str:
    """The HTTP/3 load client: bench/h3_curl_client.py (libcurl, C: a fraction of a server's CPU
    per request) when curl_cffi is installed, else bench/h3_client.py (aioquic, Python: about a
    server's cost per request, so often the limit). Both print the same JSON lines."""
    import importlib.util

    return "h3_curl_client.py" if importlib.util.find_spec("curl_cffi") is not None else "h3_client.py"


def h3_cmds(port: int, sc: Scenario, args: argparse.Namespace) -> list[list[str]]:
    """HTTP/3 client processes (--h3-procs), each with the scenario's connections x streams."""
    client = h3_client()
    procs = args.h3_procs if args.h3_procs is not None else (1 if client == "h3_curl_client.py" else 2)
    return [
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            PY,
            str(BENCH_DIR / client),
            "--port",
            str(port),
            *sc.h3_args,
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            "--sample-every",
            "10",
            "--expect",
            "Hello, world!",
        ]
        for _ in range(max(1, procs))
    ]


def sse_cmds(port: int, sc: Scenario, args: argparse.Namespace) -> list[list[str]]:
    """bench/sse_client.py processes (--sse-procs), sharing --sse-conns connections."""
    procs = max(1, args.sse_procs)
    per = [args.sse_conns // procs + (1 if i < args.sse_conns % procs else 0) for i in range(procs)]
    return [
        [
            "taskset",
            "-c",
            CLIENT_CPU,
            PY,
            str(BENCH_DIR / "sse_client.py"),
            "--port",
            str(port),
            "--conns",
            str(n),
            *sc.sse_args,
            "--duration",
            str(args.duration),
            "--warmup",
            str(args.warmup),
            # Within run_ws's wait (warm-up + duration + 60 s).
            "--open-timeout",
            "45",
        ]
        for n in per
        if n > 0
    ]


def run_ws(
    port: int, sc: Scenario, args: argparse.Namespace, pid: int, cmds: list[list[str]] | None = None
) -> dict[str, Any]:
    """The WebSocket clients (or cmds: the HTTP/3 clients, which print the same JSON lines)."""
    cmds = ws_cmds(port, sc, args) if cmds is None else cmds
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results, details = [], []
    # Each client prints a "start" line when its measured window opens; the CPU
    # window opens once all have (a client that fails prints its result instead).
    first_lines = [p.stdout.readline() for p in procs]  # type: ignore[union-attr]
    window = CpuWindow(pid)
    for p, first in zip(procs, first_lines):
        try:
            out, err = p.communicate(timeout=args.duration + args.warmup + 60)
            out = first + out
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        try:
            results.append(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            results.append({"messages": 0, "errors": 1, "error": (err or out).strip()[-200:]})
    msgs = sum(r.get("messages", r.get("requests", 0)) for r in results)
    elapsed = max((r.get("elapsed", 0) for r in results), default=0) or args.duration
    errors = sum(r.get("errors", 0) for r in results)
    for r in results:
        if r.get("error"):
            details.append(r["error"])
    p50s = [r["p50_ms"] for r in results if r.get("p50_ms") is not None]
    p99s = [r["p99_ms"] for r in results if r.get("p99_ms") is not None]
    client_cpu = sum(r.get("cpu_s", 0) for r in results) / elapsed * 100
    if msgs == 0:
        errors = max(errors, 1)
    return {
        **window.stop(),
        "rps": msgs / elapsed if msgs else None,
        "p50_ms": max(p50s) if p50s else None,
        "p99_ms": max(p99s) if p99s else None,
        "errors": errors,
        "error_detail": "; ".join(details),
        "client_cpu": client_cpu,
        "requests": msgs,
    }


async def _open_idle(port: int, n: int, held: list, batch: int = 250) -> int:
    """Open n connections, one GET each, keep them open. Returns failures."""
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures += 1
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
            held.append(writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            failures += 1

    deadline = time.monotonic() + 120
    for i in range(0, n, batch):
        before = failures
        size = min(batch, n - i)
        await asyncio.gather(*(one() for _ in range(size)))
        if failures - before == size:
            # A whole batch failed: the server stopped accepting; don't wait out the rest.
            return failures + (n - i - size)
        if time.monotonic() > deadline:
            return failures + (n - i - size)
    return failures


def run_memory(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    pid = server.proc.pid  # type: ignore[union-attr]
    time.sleep(0.5)
    base = tree_rss_kib(pid)
    out: dict[str, Any] = {"baseline_kib": base, "errors": 0, "error_detail": ""}
    targets = [int(x) for x in args.mem_conns.split(",")]

    async def go() -> None:
        held: list = []
        opened = 0
        try:
            for t in targets:
                fails = await _open_idle(server.port, t - opened, held)
                opened = t
                await asyncio.sleep(1.0)
                rss = tree_rss_kib(pid)
                held_now = established_on_port(server.port)
                alive = server.proc.poll() is None  # type: ignore[union-attr]
                out[f"rss_{t}"] = rss
                out[f"held_{t}"] = held_now
                out[f"kib_per_conn_{t}"] = (rss - base) / t
                out[f"fail_{t}"] = fails
                dropped = max(0, t - fails - held_now)
                if fails or not alive or held_now < 0.99 * t:
                    out["errors"] += fails + (0 if alive else 1) + dropped
                    out["error_detail"] += (
                        f"{t} conns: {fails} failed to open, {held_now} still open when RSS was "
                        f"read{'' if alive else ', server died'}; "
                    )
        finally:
            for w in held:
                w.close()
            await asyncio.sleep(0.2)

    asyncio.run(go())
    last = targets[-1]
    out["rps"] = out.get(f"kib_per_conn_{last}")
    out["p50_ms"] = out["p99_ms"] = None
    return out


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------
def applies(name: str, spec: dict[str, Any], sc: Scenario, probes: dict[str, dict[str, bool]]) -> str | None:
    """None if the server takes part in the scenario, otherwise why not.

    probes: results of the run-time probes, by feature ("h2c", "h2_tls", "ws"), then server."""
    if spec.get("only") and sc.name not in spec["only"]:
        return f"n/a ({spec['only_note']})" if spec.get("only_note") else "n/a"
    if sc.interface == "wsgi" and not spec.get("wsgi"):
        return spec.get("wsgi_note", "no WSGI")
    if sc.interface == "asgi" and spec.get("asgi") is False:
        return spec.get("asgi_note", "no ASGI")
    if sc.tls and not spec.get("tls"):
        return "no TLS" + (f": {spec['tls_note']}" if spec.get("tls_note") else "")
    if sc.kind == "ws":
        if spec.get("ws") is False:
            return "no WebSocket"
        if spec.get("ws") is None and not probes.get("ws", {}).get(name, False):
            return "no WebSocket (probe failed, see notes)"
    if sc.kind == "h3" and not spec.get("h3"):
        return spec.get("h3_note", "no HTTP/3")
    if sc.kind == "h2":
        feature, note, label = (
            ("h2_tls", "h2_tls_note", "no HTTP/2 over TLS") if sc.tls else ("h2c", "h2_note", "no h2c")
        )
        if spec.get(feature) is False:
            return f"{label}: {spec.get(note, '')}".rstrip(": ")
        if spec.get(feature) is None and not probes.get(feature, {}).get(name, False):
            return f"{label} (probe failed, see notes)"
    return None


def probe_h2(name: str, spec: dict[str, Any], tls: tuple[str, str] | None = None) -> tuple[bool, str]:
    """h2c with prior knowledge, or with tls HTTP/2 over TLS: 20 requests, and over TLS the
    protocol ALPN chose must be h2."""
    srv = Server(name, spec, "bench.apps:hello", h2=True, tls=tls)
    try:
        srv.start()
        url = f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}/"
        rc, out, err = run_cmd(["h2load", "-n", "20", "-c", "1", url], timeout=20)
        ok = bool(re.search(r"20 succeeded", out))
        m = re.search(r"requests: .*", out)
        why = m.group(0) if m else " ".join((out + err).split())[-200:]
        if tls:
            alpn = re.search(r"Application protocol: (\S+)", out)
            if not alpn or alpn.group(1) != "h2":
                ok = False
                why = f"ALPN chose {alpn.group(1) if alpn else 'nothing'}; {why}"
        return ok, "" if ok else why
    except ServerStartError as e:
        return False, str(e)
    finally:
        srv.stop()


def probe_ws(name: str, spec: dict[str, Any]) -> tuple[bool, str]:
    srv = Server(name, spec, "bench.apps:ws_echo")
    try:
        srv.start()
        rc, out, err = run_cmd(
            [
                PY,
                str(BENCH_DIR / "ws_client.py"),
                "--port",
                str(srv.port),
                "--conns",
                "1",
                "--size",
                "32",
                "--duration",
                "0.5",
                "--warmup",
                "0.2",
            ],
            timeout=30,
        )
        try:
            r = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False, " ".join((err or out).split())[-200:]
        ok = r.get("messages", 0) > 0 and not r.get("errors")
        return ok, "" if ok else " ".join(str(r.get("error", r)).split())[:200]
    except ServerStartError as e:
        return False, str(e)
    finally:
        srv.stop()


def measure(name: str, spec: dict[str, Any], sc: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    srv = Server(
        name,
        spec,
        sc.app,
        h2=sc.kind == "h2",
        mem=sc.kind == "memory",
        tls=args.tls_files if sc.tls else None,
        wsgi=sc.interface == "wsgi",
        h3=sc.kind == "h3",
    )
    result: dict[str, Any] = {"cmd": srv.display_cmd()}
    try:
        try:
            srv.start()
        except ServerStartError as e:
            result.update(failed_start=str(e))
            return result
        # Sanity check: the server answers this scenario's app correctly.
        if sc.check is not None:
            try:
                st, body = http_get(srv.port, method=sc.method, body=sc.check_body, tls=sc.tls, info=result)
                if not sc.check(st, body):
                    result.update(bad_answer=f"status {st}, body {body[:60]!r} ({len(body)} bytes)")
                    return result
            except (OSError, http.client.HTTPException) as e:
                result.update(bad_answer=f"request failed: {e!r}")
                return result
        pid = srv.proc.pid  # type: ignore[union-attr]
        if sc.kind == "memory":
            r = run_memory(srv, args)
        elif sc.kind == "wrk":
            r = run_wrk(srv.port, sc, args, pid)
        elif sc.kind == "h2":
            r = run_h2load(srv.port, sc, args, pid)
        elif sc.kind == "h3":
            r = run_ws(srv.port, sc, args, pid, h3_cmds(srv.port, sc, args))
        elif sc.kind == "sse":
            r = run_ws(srv.port, sc, args, pid, sse_cmds(srv.port, sc, args))
        else:
            r = run_ws(srv.port, sc, args, pid)
        if srv.proc.poll() is not None:  # type: ignore[union-attr]
            r["errors"] = r.get("errors", 0) + 1
            r["error_detail"] = (r.get("error_detail", "") + f"; server exited: {srv.tail_log()}").strip("; ")
        if r.get("server_cpu") is not None and r.get("rps"):
            r["cpu_us"] = r["server_cpu"] / 100 / r["rps"] * 1e6  # server CPU time per request (message)
        result.update(r)
        return result
    finally:
        srv.stop()


def load_cmd_text(sc: Scenario, args: argparse.Namespace) -> str:
    if sc.kind == "wrk":
        w = shlex.join(wrk_cmd(0, args.duration, sc, args.connections, args.no_resume)).replace(":0/", ":$PORT/")
        if args.run_tmp:
            w = w.replace(args.run_tmp, "$RUN_TMP")
        return f"warm-up: same with -d{max(1, round(args.warmup))}s; measured: {w}"
    if sc.kind == "h2":
        return shlex.join(h2load_cmd(0, sc, args.duration, args.warmup, "$LOG")).replace(":0/", ":$PORT/")
    if sc.kind == "h3":
        cmds = h3_cmds(0, sc, args)
        return f"{len(cmds)} process(es) of: " + shlex.join(cmds[0]).replace("--port 0", "--port $PORT")
    if sc.kind in ("ws", "sse"):
        cmds = ws_cmds(0, sc, args) if sc.kind == "ws" else sse_cmds(0, sc, args)
        return f"{len(cmds)} process(es) of: " + shlex.join(cmds[0]).replace("--port 0", "--port $PORT")
    return f"in-process asyncio client opening {args.mem_conns} connections (GET / once each, then idle)"


def per_item(sc: Scenario) -> str:
    """What one unit of the scenario's rate is: req, msg, conn, event."""
    return sc.unit.split("/")[0].removesuffix("s")


def fmt(v: float | None, nd: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default 3)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run (default 2)")
    ap.add_argument("--connections", type=int, default=64, help="client connections (default 64)")
    ap.add_argument("--scenarios", default="all", help="comma list; default all: " + ",".join(SCENARIOS))
    ap.add_argument("--servers", default="all", help="comma list; default all: " + ",".join(SERVERS))
    ap.add_argument("--ws-procs", type=int, default=2, help="WebSocket client processes, all on core 1 (default 2)")
    ap.add_argument("--sse-conns", type=int, default=1000, help="SSE client connections (default 1000)")
    ap.add_argument("--sse-procs", type=int, default=1, help="SSE client processes, all on core 1 (default 1)")
    ap.add_argument(
        "--h3-procs",
        type=int,
        default=None,
        help="HTTP/3 client processes, all on core 1 (default 1 with curl_cffi's libcurl client, else 2)",
    )
    ap.add_argument("--mem-conns", default="1000,10000", help="idle connection counts for memory (default 1000,10000)")
    ap.add_argument(
        "--noisy-retries",
        type=int,
        default=1,
        help=f"re-measure a run when other processes used over {NOISY_CPU}%% of the server's core "
        "(default 1; 0 to disable)",
    )
    ap.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    ap.add_argument("--tag", default="", help="suffix for the result file name")
    args = ap.parse_args()

    scen_names = list(SCENARIOS) if args.scenarios == "all" else [s.strip() for s in args.scenarios.split(",")]
    srv_names = list(SERVERS) if args.servers == "all" else [s.strip() for s in args.servers.split(",")]
    for s in scen_names:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for s in srv_names:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}; known: {', '.join(SERVERS)}")

    missing = [t for t in ("taskset", "wrk", "h2load") if not shutil.which(t)]
    if missing:
        print(f"missing tools: {missing}; run bash bench/setup.sh", file=sys.stderr)
        return 2
    if os.cpu_count() and os.cpu_count() < 2:  # type: ignore[operator]
        print("need at least 2 CPUs (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    # The harness itself (and the in-process memory client) stays off the server's core.
    try:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    except OSError:
        pass
    nofile = raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    UPLOAD_LUA.write_text(UPLOAD_LUA_TEXT)
    ECHO_LUA.write_text(ECHO_LUA_TEXT)
    CLOSE_LUA.write_text(CLOSE_LUA_TEXT)

    started = _dt.datetime.now()
    notes: list[str] = []
    # Scenarios no server can run here (an app that does not import, no certificate, no
    # preload): scenario -> why, shown for every server.
    unavailable: dict[str, str] = {}
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))  # as the servers' PYTHONPATH has it
    for sname in scen_names:
        module, _, attr = SCENARIOS[sname].app.partition(":")
        try:
            if not callable(getattr(importlib.import_module(module), attr, None)):
                raise ImportError(f"{attr} is not an app (a package missing? run bash bench/setup.sh)")
        except ImportError as e:
            unavailable[sname] = f"app {SCENARIOS[sname].app} unavailable: {e}"
            notes.append(f"**{sname}: SKIPPED** - {unavailable[sname]}")
    # Run-wide files: the TLS certificate and key, the no-resumption preload for wrk.
    args.run_tmp = tempfile.mkdtemp(prefix="heron-bench-run-")
    args.tls_files = None
    args.no_resume = None
    try:
        return _main_run(args, scen_names, srv_names, notes, unavailable, started, nofile)
    finally:
        shutil.rmtree(args.run_tmp, ignore_errors=True)


def _main_run(args, scen_names, srv_names, notes, unavailable, started, nofile) -> int:
    if "heron-mypyc" in srv_names:
        try:
            SERVERS["heron-mypyc"]["pythonpath"] = build_mypyc_heron(Path(args.run_tmp))
            log("heron-mypyc: built (the HTTP/1.1 core compiled by mypyc)")
        except (RuntimeError, OSError, StopIteration) as e:
            srv_names.remove("heron-mypyc")
            notes.append(f"**heron-mypyc: SKIPPED** - could not build it: {e}")
    tls_scens = [s for s in scen_names if SCENARIOS[s].tls and s not in unavailable]
    if tls_scens:
        try:
            args.tls_files = make_tls_files(Path(args.run_tmp))
        except (RuntimeError, OSError, ValueError) as e:
            for s in tls_scens:
                unavailable[s] = f"no TLS certificate: {e}"
            notes.append(f"**TLS scenarios SKIPPED** - could not make a certificate: {e}")
    reconnect_scens = [s for s in scen_names if SCENARIOS[s].reconnect and s not in unavailable]
    if reconnect_scens:
        # wrk resumes the previous TLS session on each reconnect; the preload stops it. Both
        # are checked against an in-process HTTPS server that counts resumed handshakes.
        try:
            so = build_no_resume(Path(args.run_tmp))
            full0, resumed0, _ = wrk_resumption(args.tls_files, None)  # type: ignore[arg-type]
            full1, resumed1, out = wrk_resumption(args.tls_files, so)  # type: ignore[arg-type]
            log(
                f"TLS resumption check: wrk alone {resumed0} resumed / {full0} full handshakes; "
                f"with {NO_RESUME_C.name} {resumed1} resumed / {full1} full"
            )
            if resumed1 or full1 < 10:
                raise RuntimeError(
                    f"with the preload, {resumed1} resumed and {full1} full handshakes "
                    f"(wrk: {' '.join(out.split())[-200:]})"
                )
            args.no_resume = so
            notes.append(
                f"tls-handshakes: against a test HTTPS server that issues session tickets, wrk alone resumed "
                f"{resumed0} of {resumed0 + full0} handshakes in 1 s; with the `{NO_RESUME_C.name}` preload "
                f"(LD_PRELOAD) {resumed1} of {full1}: every measured connection is a full handshake"
            )
        except (RuntimeError, OSError) as e:
            for s in reconnect_scens:
                unavailable[s] = f"cannot stop wrk resuming TLS sessions: {e}"
            notes.append(f"**{', '.join(reconnect_scens)}: SKIPPED** - {unavailable[reconnect_scens[0]]}")

    # Servers that cannot even start are dropped once, loudly, up front.
    active: list[str] = []
    for name in srv_names:
        spec = SERVERS[name]
        if spec.get("kind") == "nginx" and not shutil.which("nginx"):
            notes.append(f"**{name}: SKIPPED** - nginx is not installed")
            continue
        if spec.get("asgi", True):
            srv = Server(name, spec, "bench.apps:hello")
        else:
            srv = Server(name, spec, "bench.app_wsgi:hello", wsgi=True)
        try:
            srv.start()
            active.append(name)
        except ServerStartError as e:
            msg = f"**{name}: SKIPPED - failed to start**: `{srv.display_cmd()}` -> {e}"
            notes.append(msg)
            log("!!! " + msg)
        finally:
            srv.stop()

    def wanted(sc: Scenario) -> bool:
        return sc.name in scen_names and sc.name not in unavailable

    probes: dict[str, dict[str, bool]] = {"h2c": {}, "h2_tls": {}, "ws": {}}
    for feature, label, pred in (
        ("h2c", "h2c", lambda sc: sc.kind == "h2" and not sc.tls),
        ("h2_tls", "HTTP/2 over TLS", lambda sc: sc.kind == "h2" and sc.tls),
        ("ws", "WebSocket", lambda sc: sc.kind == "ws"),
    ):
        scens = [sc for sc in SCENARIOS.values() if wanted(sc) and pred(sc)]
        for name in active:
            spec = SERVERS[name]
            if not scens or spec.get(feature, False) is not None:
                continue
            if all(applies(name, spec, sc, {feature: {name: True}}) for sc in scens):
                continue  # skipped there for another reason (WSGI-only, no TLS, ...)
            if feature == "ws":
                ok, why = probe_ws(name, spec)
            else:
                ok, why = probe_h2(name, spec, tls=args.tls_files if feature == "h2_tls" else None)
            probes[feature][name] = ok
            log(f"{label} probe {name}: {'ok' if ok else 'no'} {why}")
            if not ok:
                what = {
                    "h2c": "does not answer h2c prior-knowledge requests",
                    "h2_tls": "does not answer HTTP/2 over TLS (ALPN h2)",
                    "ws": "WebSocket echo probe failed",
                }[feature]
                notes.append(f"{name}: {what}; {', '.join(sc.name for sc in scens)} skipped ({why[:200]})")

    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    cmds: dict[str, dict[str, str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    try:
        run_all(args, scen_names, srv_names, active, probes, unavailable, results, cmds, skipped)
    except KeyboardInterrupt:
        notes.append("**run interrupted**: results below are partial")
        log("interrupted; writing partial results")
        scen_names = [s for s in scen_names if results.get(s) or (s in skipped and s in unavailable)]

    finished = _dt.datetime.now()
    write_report(args, scen_names, srv_names, results, skipped, cmds, notes, started, finished, nofile)
    return 0


def run_all(args, scen_names, srv_names, active, probes, unavailable, results, cmds, skipped) -> None:
    for sname in scen_names:
        sc = SCENARIOS[sname]
        results[sname] = {}
        skipped[sname] = {}
        cmds[sname] = {}
        part = []
        for name in srv_names:
            if sname in unavailable:
                skipped[sname][name] = unavailable[sname]
                continue
            if name not in active:
                skipped[sname][name] = "FAILED TO START (see notes)"
                continue
            why = applies(name, SERVERS[name], sc, probes)
            if why:
                skipped[sname][name] = why
            else:
                part.append(name)
                results[sname][name] = []
        for rnd in range(args.rounds):
            for name in part:
                log(f"{sname} round {rnd + 1}/{args.rounds}: {name}")
                r = measure(name, SERVERS[name], sc, args)
                tries = 0
                while (
                    tries < args.noisy_retries
                    and (r.get("noise") or 0) > NOISY_CPU
                    and not r.get("failed_start")
                    and not r.get("bad_answer")
                ):
                    tries += 1
                    log(
                        f"    contended ({fmt(r.get('noise'))}% of core {SERVER_CPU} used by other processes, "
                        f"{fmt(r.get('rps'), 1)} {sc.unit}); retry {tries}/{args.noisy_retries}"
                    )
                    again = measure(name, SERVERS[name], sc, args)
                    if (
                        again.get("failed_start")
                        or again.get("bad_answer")
                        or (again.get("noise") or 0) <= (r.get("noise") or 0)
                    ):
                        r = again  # keep the less contended of the runs
                r["retries"] = tries
                cmds[sname][name] = r.pop("cmd")
                if r.get("failed_start") or r.get("bad_answer"):
                    why = r.get("failed_start") or ("wrong answer: " + r["bad_answer"])
                    log(f"!!! {name} {sname}: {why}")
                    r["errors"] = r.get("errors", 0) + 1
                    r["error_detail"] = why
                elif sc.kind == "memory":
                    log(
                        f"    baseline {fmt(r.get('baseline_kib'))} KiB; "
                        + "; ".join(f"{k[4:]} conns: {fmt(v)} KiB" for k, v in r.items() if k.startswith("rss_"))
                        + f"; {fmt(r.get('rps'), 1)} KiB/conn at the last step; errors {r.get('errors', 0)}"
                        + (f"  [{r['error_detail']}]" if r.get("error_detail") else "")
                    )
                else:
                    log(
                        f"    {fmt(r.get('rps'), 1)} {sc.unit}  p50 {fmt(r.get('p50_ms'), 2)} ms  "
                        f"p99 {fmt(r.get('p99_ms'), 2)} ms  errors {r.get('errors', 0)}  "
                        f"server cpu {fmt(r.get('server_cpu'))}% = {fmt(r.get('cpu_us'), 1)} us/{per_item(sc)}  "
                        f"other on core 0 {fmt(r.get('noise'))}%"
                        + (f"  tls {r['tls']}" if r.get("tls") else "")
                        + (f"  {r['conns']:,} conns accepted" if r.get("conns") is not None else "")
                        + (f"  client cpu {fmt(r.get('client_cpu'))}%" if "client_cpu" in r else "")
                        + (f"  [{r['error_detail']}]" if r.get("error_detail") else "")
                    )
                r.pop("raw", None)
                results[sname][name].append(r)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def clean(r: dict[str, Any]) -> bool:
    return not r.get("errors") and r.get("rps") is not None


def summarize(sc: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    base_runs = runs.get(BASELINE, [])
    for name, rs in runs.items():
        good = [r for r in rs if clean(r)]
        s: dict[str, Any] = {"rounds": len(rs), "clean": len(good), "errors": sum(r.get("errors", 0) for r in rs)}
        s["details"] = sorted({" ".join(r["error_detail"].split()) for r in rs if r.get("error_detail")})
        if good:
            s["rps"] = statistics.median(r["rps"] for r in good)
            for k in (
                "p50_ms",
                "p99_ms",
                "server_cpu",
                "cpu_us",
                "noise",
                "client_cpu",
                "baseline_kib",
                "rss_1000",
                "rss_10000",
                "kib_per_conn_1000",
                "kib_per_conn_10000",
            ):
                vals = [r[k] for r in good if r.get(k) is not None]
                s[k] = statistics.median(vals) if vals else None
        else:
            vals = [r["rps"] for r in rs if r.get("rps") is not None]
            s["rps_errored"] = statistics.median(vals) if vals else None
        ratios = []
        for i, r in enumerate(rs):
            if i < len(base_runs) and clean(r) and clean(base_runs[i]) and base_runs[i]["rps"]:
                ratios.append(r["rps"] / base_runs[i]["rps"])
        s["ratio"] = statistics.median(ratios) if ratios else None
        out[name] = s
    return out


def chart(sc: Scenario, summary: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(summary)
    if not names:
        return False
    vals = [summary[n].get("rps") or 0 for n in names]
    colors = [
        "#d62728"
        if not summary[n].get("rps")
        else ("#1f77b4" if n == "heron" else ("#7f7f7f" if n == "nginx" else "#2ca02c"))
        for n in names
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    bars = ax.bar(names, vals, color=colors)
    for b, n in zip(bars, names):
        s = summary[n]
        label = "ERRORS" if not s.get("rps") else (f"{s['rps']:,.0f}" if sc.kind != "memory" else f"{s['rps']:.1f}")
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(("median " + sc.unit) + (" at 10,000 conns (lower is better)" if sc.kind == "memory" else ""))
    ax.set_title(title, fontsize=10)
    plt.xticks(rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def versions() -> list[tuple[str, str]]:
    from importlib import metadata

    rows = [("python", platform.python_version())]
    for pkg in (
        "heron",
        "uvicorn",
        "uvloop",
        "httptools",
        "h11",
        "hypercorn",
        "granian",
        "daphne",
        "twisted",
        "gunicorn",
        "starlette",
        "fastapi",
        "pydantic",
        "flask",
        "cryptography",
        "websockets",
        "h2",
        "aioquic",
        "curl_cffi",
        "matplotlib",
    ):
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    rows.append(("wrk", tool_version(["wrk", "-v"])))
    rows.append(("h2load", tool_version(["h2load", "--version"])))
    rows.append(("nginx", tool_version(["nginx", "-v"])))
    rows.append(("openssl (wrk, h2load, nginx)", tool_version(["openssl", "version"])))
    rows.append(("OpenSSL of Python's ssl (heron, uvicorn, hypercorn, gunicorn)", ssl.OPENSSL_VERSION))
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def write_report(args, scen_names, srv_names, results, skipped, cmds, notes, started, finished, nofile) -> None:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%d-%H%M")
    tag = f"-{args.tag}" if args.tag else ""
    md_path = out_dir / f"{stamp}{tag}-results.md"
    L: list[str] = []
    L.append(f"# heron benchmark results, {started:%Y-%m-%d %H:%M}")
    L.append("")
    L.append(f"- date: {started.isoformat(timespec='seconds')} to {finished.isoformat(timespec='seconds')}")
    L.append(f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; kernel {platform.release()}")
    L.append(
        f"- method: one worker per server on core {SERVER_CPU} (`taskset -c {SERVER_CPU}`), load generator "
        f"on core {CLIENT_CPU}; {args.rounds} interleaved round(s) per scenario, {args.duration:g} s measured "
        f"after {args.warmup:g} s warm-up, a fresh server process per measurement; medians over clean rounds; "
        f"ratio = server / {BASELINE} within the same round, median of those ratios"
    )
    L.append(f"- RLIMIT_NOFILE for servers and clients: {nofile}")
    L.append(
        "- **the machine is shared and noisy**: differences under ~10% are within noise; "
        "trust ratios over absolute numbers"
    )
    L.append(f"- invocation: `{shlex.join([sys.executable] + sys.argv)}`")
    L.append("")
    if notes:
        L.append("## Notes")
        L.append("")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    for sname in scen_names:
        sc = SCENARIOS[sname]
        summary = summarize(sc, results[sname])
        client_bound = contended = False
        L.append(f"## {sname}")
        L.append("")
        L.append(sc.desc + ".")
        L.append("")
        if sc.kind == "memory":
            counts = [int(x) for x in args.mem_conns.split(",")]
            head = (
                ["server", "baseline RSS (MiB)"]
                + [f"RSS @{c:,} (MiB)" for c in counts]
                + [f"KiB/conn @{c:,}" for c in counts]
                + ["errors", "clean rounds"]
            )
        else:
            head = (
                [
                    "server",
                    f"{sc.unit} (median)",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    f"vs {BASELINE}",
                    "server CPU %",
                    f"server CPU µs/{per_item(sc)}",
                    "other load on core 0 %",
                ]
                + (["client CPU %"] if sc.kind in ("ws", "h3", "sse") else [])
                + ["clean rounds"]
            )
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for name in srv_names:
            if name in skipped[sname]:
                L.append(f"| {name} | skipped: {skipped[sname][name]} |" + " |" * (len(head) - 2))
                continue
            s = summary.get(name)
            if s is None:
                continue
            if s.get("rps") is None:
                val = "**ERRORS**" + (
                    f" ({fmt(s.get('rps_errored'))} {sc.unit} with errors, not counted)" if s.get("rps_errored") else ""
                )
            else:
                val = fmt(s["rps"], 1 if sc.kind == "memory" else 0)
            err = str(s["errors"]) if not s["errors"] else f"**{s['errors']}**"
            if sc.kind == "memory":
                counts = [int(x) for x in args.mem_conns.split(",")]
                mib = lambda k, s=s: fmt(s[k] / 1024, 1) if s.get(k) is not None else "-"  # noqa: E731
                row = (
                    [name, mib("baseline_kib")]
                    + [mib(f"rss_{c}") for c in counts]
                    + [fmt(s.get(f"kib_per_conn_{c}"), 1) for c in counts]
                    + [err, f"{s['clean']}/{s['rounds']}"]
                )
                if s.get("rps") is None:
                    row[1] = val
            else:
                ratio = (
                    "-"
                    if s.get("ratio") is None
                    else (f"{s['ratio']:.2f}x" if s["ratio"] >= 0.1 else f"{s['ratio']:.3f}x")
                )
                if s.get("server_cpu") is not None and s.get("rps") and s["server_cpu"] < CLIENT_BOUND_CPU:
                    if (s.get("noise") or 0) > NOISY_CPU:
                        val += " (contended)"
                        contended = True
                    else:
                        val += " (client-bound?)"
                        client_bound = True
                row = (
                    [
                        name,
                        val,
                        fmt(s.get("p50_ms"), 2),
                        fmt(s.get("p99_ms"), 2),
                        err,
                        ratio,
                        fmt(s.get("server_cpu")),
                        fmt(s.get("cpu_us"), 1),
                        fmt(s.get("noise")),
                    ]
                    + ([fmt(s.get("client_cpu"))] if sc.kind in ("ws", "h3", "sse") else [])
                    + [f"{s['clean']}/{s['rounds']}"]
                )
            L.append("| " + " | ".join(row) + " |")
        L.append("")
        if sc.kind != "memory" and BASELINE not in summary:
            L.append(
                f"Ratios: n/a, {BASELINE} does not take part in this scenario "
                f"({skipped[sname].get(BASELINE, 'not selected')})."
            )
            L.append("")
        if contended:
            L.append(
                f"(contended) = other processes used over {NOISY_CPU}% of the server's core during the run "
                "(see 'other load on core 0'): the number is depressed by the shared machine; rerun."
            )
            L.append("")
        if client_bound:
            L.append(
                f"(client-bound?) = the server's core was under {CLIENT_BOUND_CPU}% busy: the load generator, "
                "alone on core 1, or the loopback, was the limit, not the server; the number is a floor."
            )
            L.append("")
        errs = {n: s["details"] for n, s in summary.items() if s["details"]}
        if errs:
            L.append("Errors:")
            L.extend(f"- {n}: " + " / ".join(d[:300] for d in ds) for n, ds in errs.items())
            L.append("")
        if sc.kind == "ws":
            L.append(
                "The client is Python (bench/ws_client.py, raw frames, uvloop) on core 1; if a server's CPU "
                "is well under 100% while the client's is near 100%, the client was the bottleneck for "
                "that server, and the number is a floor."
            )
            L.append("")
        if sc.kind == "sse":
            L.append(
                "The client is Python (bench/sse_client.py, uvloop) on core 1, counting events with bytes.count; "
                "if a server's CPU is well under 100% while the client's is near 100%, the number is a floor."
            )
            L.append("")
        png = out_dir / f"{stamp}{tag}-{sname}.png"
        if summary and chart(sc, summary, png, f"{sname}: {sc.desc}"[:110]):
            L.append(f"![{sname}]({png.name})")
            L.append("")
        if sc.tls:
            tls_seen = {name: sorted({r["tls"] for r in rs if r.get("tls")}) for name, rs in results[sname].items()}
            if any(tls_seen.values()):
                how = "h2load's report" if sc.kind == "h2" else "the harness's check request (Python's ssl client)"
                L.append(f"TLS negotiated (from {how}):")
                L.extend(f"- {n}: {' / '.join(v)}" for n, v in tls_seen.items() if v)
                L.append("")
        if sc.reconnect:
            conns = {n: [r["conns"] for r in rs if r.get("conns") is not None] for n, rs in results[sname].items()}
            reqs = {
                n: [r.get("requests", 0) for r in rs if r.get("conns") is not None] for n, rs in results[sname].items()
            }
            if any(conns.values()):
                L.append(
                    "Connections accepted by the machine's TCP stack during the measured runs (PassiveOpens, "
                    "/proc/net/snmp) against wrk's completed requests: "
                    + "; ".join(f"{n} {sum(conns[n]):,} / {sum(reqs[n]):,}" for n in conns if conns[n])
                    + " (a run with fewer connections than 95% of its requests is counted as an error)."
                )
                L.append("")
        L.append("Commands:")
        L.append("")
        L.append(f"- load: `{load_cmd_text(sc, args)}`")
        for name in srv_names:
            if name in cmds[sname]:
                L.append(f"- {name}: `{cmds[sname][name]}`")
        if sc.tls:
            L.append(
                "- `$RUN_TMP/key.pem`, `$RUN_TMP/cert.pem`: a self-signed P-256 certificate for 127.0.0.1, made for the run"
            )
        L.append("")
    L.append("## Versions")
    L.append("")
    L.append("| component | version |")
    L.append("|---|---|")
    L.extend(f"| {k} | {v} |" for k, v in versions())
    L.append("")
    text = "\n".join(L)
    md_path.write_text(text)
    (out_dir / "latest.md").write_text(text)
    log(f"wrote {md_path} and {out_dir / 'latest.md'}")


if __name__ == "__main__":
    sys.exit(main())
