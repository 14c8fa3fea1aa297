"""systemd without systemd: socket activation and sd_notify, as a unit would see them.

The test plays systemd: it binds the listening socket and hands it over as file
descriptor 3 with ``LISTEN_FDS``/``LISTEN_PID`` (set by a tiny exec wrapper, so
that ``LISTEN_PID`` is heron's own pid), and it listens on a ``NOTIFY_SOCKET``
datagram socket for what heron reports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from heron.systemd import listen_fds

from .test_cli import clean_env

# the exec wrapper: fd 3 <- the socket, LISTEN_PID <- this pid, then become heron
WRAPPER = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'heron', *sys.argv[2:]])\n"
)


class Notifications:
    """A NOTIFY_SOCKET: the datagrams heron sends, as lists of lines."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[list[str]] = []

    def wait_for(self, line: str, timeout: float = 20) -> list[str]:
        """The first datagram (received from now on, or already) that has ``line``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.received:
                if line in message:
                    self.received.remove(message)
                    return message
            left = deadline - time.monotonic()
            assert left > 0, f"no {line!r} within {timeout}s; got {self.received}"
            self.sock.settimeout(left)
            try:
                self.received.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    def drain(self) -> list[list[str]]:
        self.sock.settimeout(0.05)
        try:
            while True:
                self.received.append(self.sock.recv(4096).decode().split("\n"))
        except (TimeoutError, BlockingIOError):
            pass
        found, self.received = self.received, []
        return found


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    try:
        yield n
    finally:
        n.sock.close()


def start(args: list[str], cwd: Path, listener: socket.socket | None = None, **env: str) -> subprocess.Popen[str]:
    if listener is None:
        command = [sys.executable, "-m", "heron", *args]
        fds: tuple[int, ...] = ()
    else:
        command = [sys.executable, "-c", WRAPPER, str(listener.fileno()), *args]
        fds = (listener.fileno(),)
    return subprocess.Popen(
        command, cwd=cwd, env=clean_env(**env), pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return err


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def get(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


# --- the environment, read as sd_listen_fds(3) does -------------------------------------------


def test_listen_fds_reads_and_removes_the_variables() -> None:
    pid = str(os.getpid())
    env = {"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin", "OTHER": "x"}
    assert listen_fds(env) == [(3, "web"), (4, "admin")]
    assert env == {"OTHER": "x"}
    assert listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"}) == [
        (3, "unknown"),
        (4, "unknown"),
    ]
    assert listen_fds({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []  # meant for another process
    assert listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "0"}) == []
    assert listen_fds({"LISTEN_PID": pid, "LISTEN_FDS": "x"}) == []
    assert listen_fds({"LISTEN_FDS": "1"}) == []


# --- real processes ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_socket_activation_serves_on_the_passed_socket(tmp_path: Path, notify: Notifications, workers: int) -> None:
    listener = listening_socket()
    port = listener.getsockname()[1]
    args = ["--port", "1", "--workers", str(workers)]  # --port is ignored: systemd's socket wins
    proc = start(args, tmp_path, listener, LISTEN_FDS="1", LISTEN_FDNAMES="heron.socket", NOTIFY_SOCKET=notify.path)
    listener.close()  # heron holds its own copy now, as a service does
    try:
        ready = notify.wait_for("READY=1")
        status = next(line for line in ready if line.startswith("STATUS="))
        assert f"127.0.0.1:{port}" in status and (workers == 1 or "2 worker process(es)" in status), status
        assert {get(port).status_code for _ in range(4)} == {200}
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    assert f"Using socket 127.0.0.1:{port} from systemd (fd 3, heron.socket)" in err
    assert "Traceback" not in err


def test_sd_notify_ready_reloading_stopping(tmp_path: Path, notify: Notifications) -> None:
    listener = listening_socket()
    port = listener.getsockname()[1]
    proc = start(["--workers", "2"], tmp_path, listener, LISTEN_FDS="1", NOTIFY_SOCKET=notify.path)
    listener.close()
    try:
        notify.wait_for("READY=1")
        proc.send_signal(signal.SIGHUP)  # a rolling restart: RELOADING=1, then READY=1 once done
        reloading = notify.wait_for("RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") and line[15:].isdigit() for line in reloading), reloading
        notify.wait_for("READY=1", timeout=30)
        assert get(port).status_code == 200
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    # only the main process notifies: two workers started (twice) and none said READY=1
    assert not [m for m in notify.drain() if "READY=1" in m]


def test_sd_notify_watchdog_pings(tmp_path: Path, notify: Notifications) -> None:
    listener = listening_socket()
    proc = start([], tmp_path, listener, LISTEN_FDS="1", NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="200000")
    listener.close()
    try:
        notify.wait_for("READY=1")
        started = time.monotonic()
        for _ in range(3):
            notify.wait_for("WATCHDOG=1", timeout=5)
        assert time.monotonic() - started < 3  # every 0.1 s (half of WATCHDOG_USEC), not once
    finally:
        stop(proc)


def test_without_systemd_nothing_changes(tmp_path: Path) -> None:
    """LISTEN_FDS meant for another process is ignored: heron binds its own port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = start(["--port", str(port)], tmp_path, LISTEN_FDS="1", LISTEN_PID="1")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert get(port).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        err = stop(proc)
    assert "from systemd" not in err
