"""Replacing workers without dropping requests, and what must survive a
replacement: --workers-lifetime, --workers-max-rss, /metrics totals that never
go backwards, SIGUSR1 reopening log files, and --reuse-port listeners.

Each test runs the real command line (``python -m heron``) with a bounded load
of real requests (threads, new connections and keep-alive ones) while workers
are replaced.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .test_cli import free_port, heron_server, raw_request
from .test_workers import APP_SOURCE, children, get, started, stopped, wait_until

GROW_APP = (
    APP_SOURCE.replace("async def app(", "async def _app(")
    + """
HOARD = []

async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/grow":
        HOARD.append(bytearray(96 * 1024 * 1024))  # touched below: resident, not just reserved
        HOARD[-1][:: 4096] = b"x" * len(HOARD[-1][:: 4096])
    await _app(scope, receive, send)
"""
)


#: heron_server reads the output only at the end: under load, access-log lines
#: would fill the pipe and block the workers' writes (and so their event loops)
QUIET = ("--no-access-log",)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "wapp.py").write_text(GROW_APP)
    return tmp_path


class Load:
    """Requests in background threads until stopped (at most ``limit`` seconds):
    ``new`` threads open a connection per request, ``kept`` threads reuse one.

    A keep-alive client may find its idle connection closed by a worker that is
    stopping, before any byte of the response: it retries the request once on a
    new connection, as HTTP clients do for idempotent requests (RFC 9112 9.3.1).
    Those retries are counted apart; any other error is a failure."""

    def __init__(self, port: int, new: int = 2, kept: int = 2, limit: float = 40.0) -> None:
        self.port = port
        self.ok = 0
        self.retried = 0
        self.failures: list[str] = []
        self.pids: Counter[int] = Counter()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._new_connections, daemon=True) for _ in range(new)]
        self._threads += [threading.Thread(target=self._keep_alive, daemon=True) for _ in range(kept)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _record(self, status: int, body: bytes) -> None:
        with self._lock:
            if status == 200:
                self.ok += 1
                self.pids[int(body.split()[0])] += 1
            else:
                self.failures.append(f"status {status}: {body[:80]!r}")

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def _new_connections(self) -> None:
        while self._running():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                self._record(response.status, response.read())
            except (OSError, http.client.HTTPException) as exc:
                self._fail(f"new connection: {exc!r}")
            finally:
                conn.close()

    def _keep_alive(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        reused = False
        while self._running():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if not reused:
                    self._fail(f"keep-alive, fresh connection: {exc!r}")
                    continue
                with self._lock:
                    self.retried += 1
                reused = False
                continue  # (the loop sends it again, on the new connection)
            except (OSError, http.client.HTTPException) as exc:
                self._fail(f"keep-alive: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                reused = False
                continue
            self._record(response.status, body)
            reused = True
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                reused = False
        conn.close()


def resident_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def scrape(metrics_port: int) -> dict[str, float]:
    status, _, body = raw_request(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
    assert status == 200
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_workers_lifetime_replaces_workers_under_load(app_dir: Path) -> None:
    port = free_port()
    args = ["wapp:app", "--port", str(port), "-w", "2", "--workers-lifetime", "2", *QUIET]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="two workers")
        first = children(srv.proc.pid)
        with Load(port) as load:
            # lifetimes of 2-2.2 s: within 8 s every first worker is replaced, some twice
            wait_until(lambda: len(started(app_dir)) >= 6, timeout=30, what="two generations of replacements")
        wait_until(lambda: len(children(srv.proc.pid)) == 2, what="two workers again")
        assert not children(srv.proc.pid) & first
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100, load.ok
    assert len(load.pids) >= 4, load.pids  # the replacements served too
    assert stopped(app_dir) >= first  # each old worker stopped gracefully (lifespan shutdown ran)
    assert len(re.findall(r"Replacing worker process \d+: --workers-lifetime 2 s", srv.stderr)) >= 4
    assert "Traceback" not in srv.stderr


def test_workers_max_rss_replaces_the_worker_that_grew(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as probe:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        baseline = max(resident_mib(pid) for pid in children(probe.proc.pid))
        probe.stop(signal.SIGTERM, timeout=20)
    for path in app_dir.glob("st*-*"):
        path.unlink()
    limit = int(baseline) + 48  # a worker is far below it, until it holds 96 MiB more
    args = ["wapp:app", "--port", str(port), "-w", "2", "--workers-max-rss", str(limit), *QUIET]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        time.sleep(2.5)  # a few memory checks: nobody is replaced below the limit
        assert len(started(app_dir)) == 2
        with Load(port) as load:
            status, body = get(port, "/grow")
            assert status == 200
            grown = int(body.split()[0])
            wait_until(lambda: grown not in children(srv.proc.pid), timeout=20, what="the grown worker's replacement")
            wait_until(lambda: len(children(srv.proc.pid)) == 2, what="two workers again")
            time.sleep(0.5)
        assert len(started(app_dir)) == 3  # only the one that grew was replaced
        assert grown in stopped(app_dir)  # gracefully: its lifespan shutdown ran
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20
    assert re.search(rf"Replacing worker process {grown}: resident memory \d+ MiB over --workers-max-rss", srv.stderr)


def test_metrics_totals_survive_replaced_and_killed_workers(app_dir: Path) -> None:
    port, metrics_port = free_port(), free_port()
    args = ["wapp:app", "--port", str(port), "-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}"]
    requests_total = 'heron_http_requests_total{method="GET",status="200"}'
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        for _ in range(30):
            assert get(port)[0] == 200
        before = scrape(metrics_port)
        assert before[requests_total] == 30
        srv.proc.send_signal(signal.SIGHUP)  # every worker replaced
        wait_until(lambda: len(started(app_dir)) == 4 and len(children(srv.proc.pid)) == 2, what="the restart")
        after = scrape(metrics_port)
        for name, value in before.items():
            if name.endswith(("_total", "_count", "_sum", "_bucket")) or "_bucket{" in name:
                assert after.get(name, 0) >= value, (name, value, after.get(name))
        assert after[requests_total] == 30  # the departed workers' requests, exactly
        assert after["heron_workers"] == 2
        assert after.get("heron_http_requests_in_flight", 0) == 0

        # a worker killed outright: what it counted up to the last scrape stays
        for _ in range(10):
            assert get(port)[0] == 200
        assert scrape(metrics_port)[requests_total] == 40
        victim = min(children(srv.proc.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(started(app_dir)) == 5 and len(children(srv.proc.pid)) == 2, what="a replacement")
        assert scrape(metrics_port)[requests_total] == 40
        assert srv.stop(signal.SIGTERM, timeout=20) == 0


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(process)d %(message)s"}},
    "handlers": {
        "file": {"class": "logging.FileHandler", "filename": "PATH", "formatter": "plain"},
        "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"},
    },
    "loggers": {
        "heron.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "heron.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigusr1_reopens_log_files(app_dir: Path, workers: str) -> None:
    log = app_dir / "access.log"
    config = json.loads(json.dumps(LOG_CONFIG))
    config["handlers"]["file"]["filename"] = str(log)
    (app_dir / "log.json").write_text(json.dumps(config))
    port = free_port()
    args = ["wapp:app", "--port", str(port), "-w", workers, "--log-config", "log.json"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == int(workers), what="workers")
        for _ in range(4):
            assert get(port, "/before")[0] == 200
        wait_until(lambda: log.read_text().count("/before") == 4, what="the access log lines")
        log.rename(app_dir / "access.log.1")  # what logrotate does
        srv.proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)  # (the signal reaches the workers through the supervisor)
        for _ in range(4):
            assert get(port, "/after")[0] == 200
        wait_until(lambda: log.exists() and log.read_text().count("/after") == 4, what="lines in the new file")
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    rotated = (app_dir / "access.log.1").read_text()
    assert rotated.count("/before") == 4 and "/after" not in rotated
    assert "/before" not in log.read_text()
    assert ("SIGUSR1: reopened 1 log file(s)" if workers == "1" else "SIGUSR1: reopened") in srv.stderr


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (from /proc/net/tcp: state 0A)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                count += 1
    return count


def test_reuse_port_gives_each_worker_its_own_listener(app_dir: Path) -> None:
    port = free_port()
    args = ["wapp:app", "--port", str(port), "-w", "3", "--reuse-port"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 3, what="three workers")
        workers = children(srv.proc.pid)
        # one listener per worker; the supervisor holds the port without listening,
        # so no connection waits in a queue nobody accepts from
        assert listening_sockets(port) == 3
        served: Counter[int] = Counter()
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            finally:
                sock.close()
            assert data.startswith(b"HTTP/1.1 200"), data[:100]
            served[int(data.split(b"\r\n\r\n", 1)[1].split()[0])] += 1
        assert set(served) == workers
        # the kernel spreads connections by their address hash: every worker gets a fair share
        assert min(served.values()) >= 50, served
        # a rolling restart: the new workers listen on their own sockets too
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(started(app_dir)) == 6 and len(children(srv.proc.pid)) == 3, what="the restart")
        wait_until(lambda: listening_sockets(port) == 3, what="three listeners again")
        assert get(port)[0] == 200
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
