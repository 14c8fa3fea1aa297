"""Worker processes under the supervisor (--workers, --reload, --limit-max-requests,
health checks, signals, aggregated metrics), through the real command line.

Every test starts ``python -m heron`` as a subprocess; ``heron_server`` kills the
supervisor at the end, and its workers then exit on their own (their pipe to
the supervisor closes), which ``test_workers_exit_when_the_supervisor_is_killed``
checks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import read_response
from .test_cli import clean_env, free_port, heron_server, raw_request, run

APP_SOURCE = """
import os, pathlib, time, asyncio

HERE = pathlib.Path(__file__).parent
VERSION = "v1"

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                (HERE / f"started-{os.getpid()}").write_text("")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                (HERE / f"stopped-{os.getpid()}").write_text("")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/block":
        time.sleep(60)  # blocks the event loop: the health check must notice
    if path == "/slow":
        (HERE / "slow-started").write_text("")
        await asyncio.sleep(1.0)
    body = f"{os.getpid()} {VERSION}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

GET = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "wapp.py").write_text(APP_SOURCE)
    return tmp_path


def children(pid: int) -> set[int]:
    """Live worker processes of ``pid`` (from /proc; zombies and multiprocessing's
    resource tracker, a helper process the spawn method starts, excluded)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"resource_tracker" in f.read():
                        continue
            except OSError:
                continue
            found.add(int(entry))
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def started(app_dir: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in app_dir.glob("started-*")}


def stopped(app_dir: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in app_dir.glob("stopped-*")}


def get(port: int, path: str = "/") -> tuple[int, str]:
    """(status, body) of one request on a new connection."""
    status, _, body = raw_request(port, GET.replace(b"GET / ", f"GET {path} ".encode()))
    return status, body.decode()


def worker_pid(port: int) -> int:
    status, body = get(port)
    assert status == 200, body
    return int(body.split()[0])


def test_workers_serve_and_stop_gracefully(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="two workers' lifespan startup")
        workers = children(srv.proc.pid)
        assert workers == started(app_dir)
        for _ in range(10):
            assert worker_pid(port) in workers
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert stopped(app_dir) == workers  # each worker ran lifespan shutdown
    assert children(srv.proc.pid) == set()
    assert "supervisor pid" in srv.stderr and "2 worker processes" in srv.stderr
    assert "Traceback" not in srv.stderr


def test_sigterm_lets_a_workers_in_flight_request_finish(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_until((app_dir / "slow-started").exists, what="the slow request")
            srv.proc.send_signal(signal.SIGTERM)
            status, _, body, _ = read_response(sock, timeout=10)
            assert status == 200 and body.endswith(b"v1")
        finally:
            sock.close()
        assert srv.finish(20) == 0


def test_a_dead_worker_is_replaced(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        victim = min(children(srv.proc.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(started(app_dir)) == 3, what="a replacement worker")
        live = children(srv.proc.pid)
        assert victim not in live and len(live) == 2
        for _ in range(5):
            assert worker_pid(port) in live
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert "exited (signal SIGKILL); starting a new one" in srv.stderr


def test_workers_exit_when_the_supervisor_is_killed(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        workers = children(srv.proc.pid)
        srv.proc.kill()
        srv.proc.wait(10)
        wait_until(lambda: stopped(app_dir) == workers, what="the orphaned workers to shut down")
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in workers), what="exit")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_start_up_failure_exits_3(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database')\n")
    port = free_port()
    result = run(["broken:app", "--port", str(port), "--workers", "2"], tmp_path, timeout=30)
    assert result.returncode == 3, result.stderr
    assert "no database" in result.stderr
    assert "A worker process failed to start" in result.stderr


def test_app_object_needs_an_import_string(tmp_path: Path) -> None:
    code = "import sys, heron\nasync def app(scope, receive, send): pass\nsys.exit(heron.run(app, workers=2, port=0))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 3
    assert "need the app as an import string" in result.stderr


def test_limit_max_requests_single_process_exits_0(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "--limit-max-requests", "2"], app_dir, port=port) as srv:
        assert get(port)[0] == 200
        assert get(port)[0] == 200
        assert srv.finish(20) == 0
    assert "Served 2 requests (--limit-max-requests)" in srv.stderr


def test_limit_max_requests_recycles_workers(app_dir: Path) -> None:
    port = free_port()
    args = ["wapp:app", "--port", str(port), "-w", "2", "--limit-max-requests", "3"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        seen = set()
        for _ in range(12):
            status, body = get(port)
            assert status == 200
            seen.add(int(body.split()[0]))
        # 12 requests, at most 3 per worker: at least 4 worker processes served them
        assert len(seen) >= 4, seen
        assert srv.stop(signal.SIGTERM, timeout=20) == 0


def test_health_check_replaces_a_blocked_worker(app_dir: Path) -> None:
    port = free_port()
    args = ["wapp:app", "--port", str(port), "-w", "2", "--timeout-worker-healthcheck", "1"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        try:
            sock.sendall(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
            # the blocked worker is killed: its connection ends without a response
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
        finally:
            sock.close()
        wait_until(lambda: len(started(app_dir)) == 3, what="a replacement worker")
        assert get(port)[0] == 200
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert "did not answer the health check in 1 s" in srv.stderr


def test_sighup_restarts_every_worker(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        before = children(srv.proc.pid)
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(started(app_dir)) == 4 and stopped(app_dir) == before, what="the rolling restart")
        # a retired worker may still be exiting after its lifespan shutdown
        wait_until(lambda: len(children(srv.proc.pid)) == 2, what="the old workers to exit")
        after = children(srv.proc.pid)
        assert not after & before
        assert worker_pid(port) in after
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert "Rolling restart done: 2 worker process(es)" in srv.stderr


def test_sighup_does_not_stop_a_single_process(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port)], app_dir, port=port) as srv:
        pid = worker_pid(port)
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert srv.proc.poll() is None
        assert worker_pid(port) == pid  # the same process, still serving
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert "SIGHUP ignored: a rolling restart needs workers" in srv.stderr


def test_sigttin_and_sigttou_change_the_worker_count(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["wapp:app", "--port", str(port), "-w", "2"], app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        srv.proc.send_signal(signal.SIGTTIN)
        wait_until(lambda: len(started(app_dir)) == 3 and len(children(srv.proc.pid)) == 3, what="a third worker")
        srv.proc.send_signal(signal.SIGTTOU)
        wait_until(lambda: len(stopped(app_dir)) == 1 and len(children(srv.proc.pid)) == 2, what="one worker fewer")
        assert srv.stop(signal.SIGTERM, timeout=20) == 0


def test_metrics_are_added_up_across_workers(app_dir: Path) -> None:
    port, metrics_port = free_port(), free_port()
    args = ["wapp:app", "--port", str(port), "-w", "2", "--metrics-bind", f"127.0.0.1:{metrics_port}"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 2, what="workers")
        pids = set()
        for _ in range(40):
            pids.add(worker_pid(port))
        status, _, text = raw_request(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        assert status == 200
        body = text.decode()
        assert re.search(r'^heron_http_requests_total\{method="GET",status="200"\} 40$', body, re.MULTILINE), body
        assert re.search(r"^heron_workers 2$", body, re.MULTILINE), body
        # 40 requests plus heron_server's readiness probe, each on its own connection
        assert re.search(r"^heron_connections_total 41$", body, re.MULTILINE), body
        assert srv.stop(signal.SIGTERM, timeout=20) == 0


def test_reload_serves_the_changed_code(app_dir: Path) -> None:
    port = free_port()
    args = ["wapp:app", "--port", str(port), "--reload", "--reload-dir", str(app_dir), "--reload-delay", "0.1"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_until(lambda: len(started(app_dir)) == 1, what="the worker")
        assert get(port)[1].endswith("v1")
        source = app_dir / "wapp.py"

        def edit(text: str) -> None:
            # One change, made at once: the watcher never sees the new text with the
            # old mtime (and then again), which would reload twice
            draft = app_dir / "wapp.py.draft"
            draft.write_text(text)
            later = time.time() + 2  # a different mtime even on coarse file systems
            os.utime(draft, (later, later))
            os.replace(draft, source)

        edit(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v2"'))
        wait_until(lambda: _body(port).endswith("v2"), what="the reloaded app")
        # a broken edit: the supervisor stays up and waits for the next change
        # (it leaves a mark before it fails, so the wait below is for the worker
        # that ran it, not for the moment between the old worker and the new)
        edit(APP_SOURCE + "\n(HERE / 'broken-ran').write_text('')\nraise RuntimeError('a broken edit')\n")
        wait_until(
            lambda: (app_dir / "broken-ran").exists() and not children(srv.proc.pid), what="the broken worker to exit"
        )
        assert len(stopped(app_dir)) == 2
        assert srv.proc.poll() is None
        edit(APP_SOURCE.replace('VERSION = "v1"', 'VERSION = "v3"'))
        wait_until(lambda: _body(port).endswith("v3"), what="the fixed app")
        assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert "Detected changes in" in srv.stderr and "reloading" in srv.stderr
    assert "The reloaded app failed to start; waiting for file changes" in srv.stderr


def _body(port: int) -> str:
    try:
        return get(port)[1]
    except OSError:
        return ""
