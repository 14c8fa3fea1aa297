#!/usr/bin/env python3
"""A fast HTTP/3 load generator: libcurl's multi interface (ngtcp2/nghttp3) through curl_cffi.

The same contract as bench/h3_client.py, so bench/run.py can use either: N QUIC
connections, each carrying M request streams at once (a new GET on a stream's
easy handle as each response ends), for a warm-up and then D measured seconds.
Prints one JSON line ``{"event": "start"}`` when the measured window opens, and
at the end one JSON line: requests, elapsed, errors (curl errors, non-2xx,
wrong bodies, responses that were not HTTP/3), p50/p99 latency in ms (every
``--sample-every``-th request), the process's CPU seconds in the window, and
the protocol the responses came over (``alpn``: ``["h3"]``).

Why libcurl: the QUIC and HTTP/3 work (packets, TLS, QPACK, loss recovery) is C
in libcurl, and Python only runs once per response (take the finished handle
off the multi handle, check it, put it back), so one process costs a small
fraction of a Python server's CPU per request; the aioquic client costs about
as much as the servers it measures.

How the connections x streams shape is kept: one multi handle with
CURLPIPE_MULTIPLEX, CURLMOPT_MAX_HOST_CONNECTIONS = N and
CURLMOPT_MAX_CONCURRENT_STREAMS = M, and N x M easy handles with CURLOPT_PIPEWAIT
(a transfer waits for a connection with room instead of opening its own), so
libcurl opens N connections and runs M streams on each. ``connections`` in the
result is how many connections libcurl opened in all (CURLINFO_NUM_CONNECTS):
N on a clean run; more means connections were lost and re-opened.

    bench/.venv/bin/python bench/h3_curl_client.py --port 8443 --conns 8 --streams 8 --duration 5
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import sys
import time
from typing import Any

from curl_cffi import Curl, CurlHttpVersion, CurlInfo, CurlMOpt, CurlOpt
from curl_cffi._wrapper import ffi, lib  # type: ignore[import-not-found]  # (a cffi module: no stubs)

CURLPIPE_MULTIPLEX = 2
CURL_HTTP_VERSION_3 = 30  # what CURLINFO_HTTP_VERSION answers for a response over HTTP/3
CURLMSG_DONE = 1
# A body larger than this is an error (the expected bodies are small); bounds each handle's buffer.
MAX_BODY = 1 << 20
MAX_WAIT_S = 0.05  # longest epoll wait: a safety net (as curl_cffi's own loop has) for a missed timer
CURL_POLL_IN, CURL_POLL_OUT, CURL_POLL_REMOVE = 1, 2, 4
CURL_CSELECT_IN, CURL_CSELECT_OUT, CURL_CSELECT_ERR = 1, 2, 4
CURL_SOCKET_TIMEOUT = -1


class Transfer:
    """One reusable easy handle: its request is re-run each time its response ends."""

    __slots__ = ("curl", "handle", "body", "size", "started", "overflow")

    def __init__(self, url: str, timeout_s: float) -> None:
        self.curl = Curl()
        self.body: list[bytes] = []
        self.size = 0
        self.started = 0.0
        self.overflow = False
        c = self.curl
        c.setopt(CurlOpt.URL, url)
        c.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
        c.setopt(CurlOpt.SSL_VERIFYPEER, 0)  # the harness's self-signed certificate
        c.setopt(CurlOpt.SSL_VERIFYHOST, 0)
        c.setopt(CurlOpt.PIPEWAIT, 1)
        c.setopt(CurlOpt.USERAGENT, "heron-bench-h3-curl")
        c.setopt(CurlOpt.TIMEOUT_MS, int(timeout_s * 1000))
        c.setopt(CurlOpt.NOSIGNAL, 1)
        c.setopt(CurlOpt.WRITEFUNCTION, self._write)
        self.handle = c._curl

    def _write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > MAX_BODY:
            self.overflow = True
            return 0  # (libcurl ends the transfer with CURLE_WRITE_ERROR)
        self.body.append(chunk)
        return len(chunk)

    def reset(self) -> None:
        self.body.clear()
        self.size = 0
        self.overflow = False


class Load:
    """The multi handle, the transfers on it, and what the measured window counted."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.expect = args.expect.encode() if args.expect is not None else None
        self.sample_every = max(1, args.sample_every)
        self.multi = lib.curl_multi_init()
        self._msetopt(CurlMOpt.PIPELINING, CURLPIPE_MULTIPLEX)
        self._msetopt(CurlMOpt.MAX_HOST_CONNECTIONS, args.conns)
        self._msetopt(CurlMOpt.MAX_TOTAL_CONNECTIONS, args.conns)
        self._msetopt(CurlMOpt.MAX_CONCURRENT_STREAMS, args.streams)
        url = f"https://{args.host}:{args.port}{args.path}"
        self.transfers = [Transfer(url, args.request_timeout) for _ in range(args.conns * args.streams)]
        self.by_handle = {t.handle: t for t in self.transfers}
        self.measuring = False
        self.stopping = False
        self.requests = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.latencies: list[float] = []
        self.versions: dict[int, int] = {}
        self.connections = 0
        # Preallocated out-parameters, so the per-response path allocates no cffi objects.
        self._running = ffi.new("int *")
        self._queued = ffi.new("int *")
        self._long = ffi.new("long *")
        self.epoll = select.epoll()
        self.watched: dict[int, int] = {}  # fd -> the epoll mask libcurl asked for
        self.timer_at: float | None = None
        # The callbacks must outlive the multi handle: libcurl keeps the bare pointers.
        self._socket_cb = ffi.callback("int(void *, int, int, void *, void *)", self._on_socket)
        self._timer_cb = ffi.callback("int(void *, long, void *)", self._on_timer)
        for option, cb in ((CurlMOpt.SOCKETFUNCTION, self._socket_cb), (CurlMOpt.TIMERFUNCTION, self._timer_cb)):
            if lib.curl_multi_setopt(self.multi, option, ffi.cast("void *", cb)) != 0:
                raise RuntimeError(f"curl_multi_setopt({option}) failed")

    def _msetopt(self, option: int, value: int) -> None:
        # curl_cffi declares libcurl's variadic curl_multi_setopt with a void * third argument
        # and no glue (unlike its easy setopt): a long option's value goes as the pointer's
        # bits, the way the x86-64 and arm64 calling conventions pass a long there too.
        rc = lib.curl_multi_setopt(self.multi, option, ffi.cast("void *", value))
        if rc != 0:
            raise RuntimeError(f"curl_multi_setopt({option}) failed: {rc}")

    def _info_long(self, handle: Any, info: int) -> int:
        lib.curl_easy_getinfo(handle, info, self._long)
        return int(self._long[0])

    def error(self, kind: str) -> None:
        if self.measuring:
            self.errors += 1
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def start(self, t: Transfer) -> None:
        t.reset()
        t.started = time.perf_counter()
        rc = lib.curl_multi_add_handle(self.multi, t.handle)
        if rc != 0:
            raise RuntimeError(f"curl_multi_add_handle failed: {rc}")

    def _finished(self, handle: Any, result: int) -> None:
        t = self.by_handle[handle]
        now = time.perf_counter()
        lib.curl_multi_remove_handle(self.multi, handle)
        self.connections += self._info_long(handle, CurlInfo.NUM_CONNECTS)
        if result != 0:
            if t.overflow:
                self.error(f"body over {MAX_BODY} bytes")
            else:
                self.error(f"curl error {result}: {ffi.string(lib.curl_easy_strerror(result)).decode()}")
        else:
            status = self._info_long(handle, CurlInfo.RESPONSE_CODE)
            version = self._info_long(handle, CurlInfo.HTTP_VERSION)
            self.versions[version] = self.versions.get(version, 0) + 1
            if not 200 <= status < 300:
                self.error(f"status {status}")
            elif version != CURL_HTTP_VERSION_3:
                self.error(f"not HTTP/3 (CURLINFO_HTTP_VERSION {version})")
            elif self.expect is not None and b"".join(t.body) != self.expect:
                self.error("wrong body")
            elif self.measuring:
                self.requests += 1
                if self.requests % self.sample_every == 0:
                    self.latencies.append(now - t.started)
        if not self.stopping:
            self.start(t)

    def _on_socket(self, easy: Any, fd: int, what: int, clientp: Any, socketp: Any) -> int:
        """CURLMOPT_SOCKETFUNCTION: libcurl says which events it wants on fd."""
        if what == CURL_POLL_REMOVE:
            if self.watched.pop(fd, None) is not None:
                self.epoll.unregister(fd)
            return 0
        mask = (select.EPOLLIN if what & CURL_POLL_IN else 0) | (select.EPOLLOUT if what & CURL_POLL_OUT else 0)
        if fd in self.watched:
            self.epoll.modify(fd, mask)
        else:
            self.epoll.register(fd, mask)
        self.watched[fd] = mask
        return 0

    def _on_timer(self, multi: Any, timeout_ms: int, clientp: Any) -> int:
        """CURLMOPT_TIMERFUNCTION: when libcurl next wants a timeout action (-1: none)."""
        self.timer_at = None if timeout_ms < 0 else time.perf_counter() + timeout_ms / 1000.0
        return 0

    def _action(self, fd: int, events: int) -> None:
        rc = lib.curl_multi_socket_action(self.multi, fd, events, self._running)
        if rc != 0:
            raise RuntimeError(f"curl_multi_socket_action failed: {rc}")
        multi, queued = self.multi, self._queued
        while True:
            msg = lib.curl_multi_info_read(multi, queued)
            if msg == ffi.NULL:
                return
            if msg.msg == CURLMSG_DONE:
                self._finished(msg.easy_handle, int(msg.data.result))

    def run_until(self, deadline: float) -> None:
        """Drive every transfer until perf_counter() passes deadline.

        The socket interface (curl_multi_socket_action on the ready socket only), not
        curl_multi_perform: perform visits every transfer on every call, and with 64
        transfers that walk (a recvmmsg and an egress pass each) was most of the client's
        CPU; here a readable connection wakes only its own streams."""
        poll, action = self.epoll.poll, self._action
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            if self.timer_at is not None and self.timer_at <= now:
                self.timer_at = None
                action(CURL_SOCKET_TIMEOUT, 0)
                continue
            wait = deadline - now if self.timer_at is None else min(deadline, self.timer_at) - now
            for fd, ev in poll(min(wait, MAX_WAIT_S)):
                action(
                    fd,
                    (CURL_CSELECT_IN if ev & (select.EPOLLIN | select.EPOLLHUP) else 0)
                    | (CURL_CSELECT_OUT if ev & select.EPOLLOUT else 0)
                    | (CURL_CSELECT_ERR if ev & select.EPOLLERR else 0),
                )

    def close(self) -> None:
        self.stopping = True
        for t in self.transfers:
            lib.curl_multi_remove_handle(self.multi, t.handle)
        lib.curl_multi_cleanup(self.multi)
        self.epoll.close()
        for t in self.transfers:
            t.curl.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = Load(args)
    try:
        for t in load.transfers:
            load.start(t)
        load.run_until(time.perf_counter() + args.warmup)
        sys.stdout.write(json.dumps({"event": "start"}) + "\n")
        sys.stdout.flush()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        load.measuring = True
        load.run_until(t0 + args.duration)
        load.measuring = False
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        load.close()
    lat = sorted(load.latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0 if lat else None

    if load.requests == 0 and not load.errors:
        load.errors, load.error_kinds = 1, {"no response in the measured window": 1}
    names = {CURL_HTTP_VERSION_3: "h3", 3: "h2", 2: "http/1.1"}
    return {
        "requests": load.requests,
        "elapsed": elapsed,
        "errors": load.errors,
        "error": "; ".join(f"{k} x{n}" for k, n in sorted(load.error_kinds.items())),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "alpn": sorted(names.get(v, f"curl http version {v}") for v in load.versions),
        "connections": load.connections,
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
    ap.add_argument("--request-timeout", type=float, default=10.0, help="seconds one request may take (default 10)")
    ap.add_argument("--no-uvloop", action="store_true", help="accepted for h3_client.py's command line; no effect")
    args = ap.parse_args()
    sys.stdout.write(json.dumps(run(args)) + "\n")


if __name__ == "__main__":
    main()
