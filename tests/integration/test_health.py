"""/livez and /readyz on the metrics listener, and --shutdown-delay, through real processes.

What a load balancer or Kubernetes sees: ready while serving; from the signal on,
/readyz says 503 while the app is still served (new connections included) for
--shutdown-delay seconds; then the graceful shutdown.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from .test_cli import APP_SOURCE, free_port, heron_server


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "healthapp.py").write_text(APP_SOURCE)
    return tmp_path


def status(url: str) -> int:
    # a new connection each time, as a probe makes
    return httpx.get(url, timeout=5, headers={"connection": "close"}).status_code


def wait_ready(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if status(url) == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_readyz_turns_503_during_the_shutdown_delay(app_dir: Path, workers: int) -> None:
    port, mport = free_port(), free_port()
    args = ["healthapp:app", "--port", str(port), "--metrics-bind", f"127.0.0.1:{mport}"]
    args += ["--workers", str(workers), "--shutdown-delay", "2"]
    with heron_server(args, app_dir, port=port) as srv:
        base = f"http://127.0.0.1:{mport}"
        wait_ready(base + "/readyz")
        assert status(base + "/livez") == 200
        assert status(f"http://127.0.0.1:{port}/") == 200
        response = httpx.get(base + "/readyz", timeout=5)
        assert response.text == "ok\n" and response.headers["cache-control"] == "no-store"
        srv.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        deadline = signalled + 1.5
        while status(base + "/readyz") != 503:
            assert time.monotonic() < deadline, "/readyz did not turn 503"
            time.sleep(0.05)
        # still serving, new connections included, and still alive
        assert status(f"http://127.0.0.1:{port}/") == 200
        assert status(base + "/livez") == 200
        assert time.monotonic() - signalled < 1.9  # (the checks above ran inside the delay)
        code = srv.finish(timeout=20)
        elapsed = time.monotonic() - signalled
    assert code == 0, srv.stderr
    assert elapsed >= 2.0, elapsed  # the delay was kept
    assert "Shutdown delay: still serving for 2s" in srv.stderr


def test_a_second_signal_ends_the_delay(app_dir: Path) -> None:
    port, mport = free_port(), free_port()
    args = ["healthapp:app", "--port", str(port), "--metrics-bind", f"127.0.0.1:{mport}", "--shutdown-delay", "30"]
    with heron_server(args, app_dir, port=port) as srv:
        wait_ready(f"http://127.0.0.1:{mport}/readyz")
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        srv.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert srv.finish(timeout=10) == 0, srv.stderr
        assert time.monotonic() - started < 5


def test_health_paths_without_a_delay_and_unknown_paths(app_dir: Path) -> None:
    port, mport = free_port(), free_port()
    args = ["healthapp:app", "--port", str(port), "--metrics-bind", f"127.0.0.1:{mport}"]
    with heron_server(args, app_dir, port=port) as srv:
        base = f"http://127.0.0.1:{mport}"
        wait_ready(base + "/readyz")
        assert status(base + "/livez") == 200
        assert status(base + "/nothing") == 404
        head = httpx.head(base + "/readyz", timeout=5)
        assert head.status_code == 200 and head.content == b""
        assert srv.stop() == 0
