"""The ``heron`` command, run as a subprocess (``python -m heron``): options and
environment, exit statuses, signals, logging."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import heron
from heron.config import Config

from ..conftest import read_response

APP_SOURCE = """
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/slow":
        open("slow-started", "w").close()
        await asyncio.sleep(1.5)
        body = b"slow done"
    elif path == "/hang":
        open("hang-started", "w").close()
        await asyncio.sleep(60)
        body = b"never"
    else:
        body = b"hello from app"
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP_SOURCE + "\n\napplication = app\nnot_an_app = None\n")
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, timeout: float = 20, **env: str) -> subprocess.CompletedProcess[str]:
    """Run heron to completion (for commands that exit by themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "heron", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Heron:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout = ""
        self.stderr = ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send ``sig``, wait for the exit, collect the output; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 10) -> int:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            self.stdout, self.stderr = out, err
            raise AssertionError(f"heron did not exit within {timeout}s; stderr:\n{err}") from None
        self.stdout, self.stderr = out, err
        return self.proc.returncode


@contextlib.contextmanager
def heron_server(
    args: list[str], cwd: Path, port: int | None = None, uds: str | None = None, **env: str
) -> Iterator[Heron]:
    """Start heron and wait until it accepts connections (on ``port`` or ``uds``); always killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "heron", *args],
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Heron(proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                out, err = proc.communicate(timeout=10)
                raise AssertionError(f"heron exited with {proc.returncode}:\n{err}\n{out}")
            try:
                if uds is not None:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(uds)
                else:
                    assert port is not None
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("heron did not start listening") from None
                time.sleep(0.05)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def raw_request(port: int, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(data)
        status, headers, body, _ = read_response(sock)
        return status, headers, body
    finally:
        sock.close()


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "heron exited"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- information ---------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path)
    assert result.returncode == 0
    assert f"heron {heron.__version__}" in result.stdout
    assert result.stderr == ""


def test_help_lists_options_and_environment(tmp_path: Path) -> None:
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for option in ("--port", "--uds", "--lifespan", "--timeout-keep-alive", "--limit-concurrency", "--header"):
        assert option in result.stdout
    assert "HERON_PORT" in result.stdout


def test_demo_page_without_app(tmp_path: Path) -> None:
    port = free_port()
    with heron_server(["--port", str(port)], tmp_path, port=port) as srv:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "heron" in response.text and heron.__version__ in response.text
        assert srv.stop() == 0
    startup = srv.stderr
    assert f"Serving HTTP/1.1 on http://127.0.0.1:{port}" in startup
    assert "Traceback" not in startup


# --- start-up failures: exit 3 with one clear line -------------------------------------------


@pytest.mark.parametrize(
    "target, expected",
    [
        ("no_such_module_xyz:app", "no_such_module_xyz"),
        ("cliapp:missing_attribute", "missing_attribute"),
        ("cliapp", "module:attribute"),
        ("cliapp:aplication", "did you mean 'application'?"),
        ("cliapp:not_an_app", "is NoneType, not a callable"),
    ],
    ids=["module-not-found", "attribute-not-found", "no-colon", "nearest-name", "not-callable"],
)
def test_app_load_failure_exits_3_with_one_line(app_dir: Path, target: str, expected: str) -> None:
    result = run([target, "--port", str(free_port())], app_dir)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines(result.stderr)) == 1, result.stderr
    assert expected in result.stderr
    assert result.stdout == ""


def test_port_in_use_exits_3_naming_the_address(app_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run(["cliapp:app", "--port", str(port)], app_dir)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert len(lines(result.stderr)) == 1, result.stderr


# --- invalid options: exit 2, one line naming the option -------------------------------------


@pytest.mark.parametrize(
    "args, named",
    [
        (["--port", "abc"], "--port"),
        (["--port", "70000"], "port"),
        (["--lifespan", "maybe"], "--lifespan"),
        (["--limit-concurrency", "0"], "limit_concurrency"),
        (["--header", "no-colon-here"], "--header"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_invalid_option_exits_2_with_one_line_naming_it(app_dir: Path, args: list[str], named: str) -> None:
    result = run(["cliapp:app", *args], app_dir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines(result.stderr)) == 1, result.stderr
    assert named in result.stderr
    # the option a user typed is named as typed (not as the internal setting name)
    if named.startswith("--"):
        assert re.search(re.escape(named) + r"\b", result.stderr)


def test_invalid_environment_value_exits_2_naming_the_variable(app_dir: Path) -> None:
    result = run(["cliapp:app"], app_dir, HERON_PORT="abc")
    assert result.returncode == 2
    assert len(lines(result.stderr)) == 1, result.stderr
    assert "HERON_PORT" in result.stderr


# --- environment and precedence ---------------------------------------------------------------


def test_environment_variables_are_honoured(app_dir: Path) -> None:
    port = free_port()
    with heron_server(
        ["cliapp:app"],
        app_dir,
        port=port,
        HERON_PORT=str(port),
        HERON_HEADERS="x-a:1\nx-b: 2\n",
        HERON_ACCESS_LOG="false",
    ) as srv:
        _, headers, body = raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert body == b"hello from app"
        assert headers[b"x-a"] == b"1" and headers[b"x-b"] == b"2"  # one Name:Value per line
        assert srv.stop() == 0
    assert srv.stdout == ""  # HERON_ACCESS_LOG=false


def test_command_line_beats_environment(app_dir: Path) -> None:
    port, env_port = free_port(), free_port()
    # the environment's value isn't even parsed when the command line gives one
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port, HERON_PORT="not-a-port") as srv:
        assert raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        assert srv.stop() == 0
    with heron_server(
        ["cliapp:app", "--port", str(port), "--header", "x-from:cli"],
        app_dir,
        port=port,
        HERON_PORT=str(env_port),
        HERON_HEADERS="x-from:env",
    ) as srv:
        _, headers, _ = raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert headers[b"x-from"] == b"cli"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", env_port), timeout=1).close()
        assert srv.stop() == 0


# --- response headers ------------------------------------------------------------------------------


def test_default_headers_and_header_switches(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        _, headers, _ = raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert headers[b"server"] == b"heron" and b"date" in headers
        assert srv.stop() == 0
    with heron_server(
        [
            "cliapp:app",
            "--port",
            str(port),
            "--header",
            "x-a:1",
            "--header",
            "X-B: two words",
            "--no-server-header",
            "--no-date-header",
        ],
        app_dir,
        port=port,
    ) as srv:
        status, headers, body = raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (status, body) == (200, b"hello from app")
        assert headers[b"x-a"] == b"1" and headers[b"x-b"] == b"two words"
        assert b"server" not in headers and b"date" not in headers
        assert srv.stop() == 0


# --- UNIX socket ----------------------------------------------------------------------------------


def test_unix_domain_socket(app_dir: Path) -> None:
    path = str(app_dir / "heron.sock")
    with heron_server(["cliapp:app", "--uds", path], app_dir, uds=path) as srv:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as client:
            response = client.get("http://localhost/")
        assert response.status_code == 200 and response.text == "hello from app"
        assert srv.stop() == 0
    assert f"unix:{path}" in srv.stderr
    assert not os.path.exists(path)  # removed on shutdown


# --- signals ----------------------------------------------------------------------------------------


def test_sigterm_lets_in_flight_request_finish(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for_file(app_dir / "slow-started", srv.proc)
            srv.proc.send_signal(signal.SIGTERM)
            status, headers, body, _ = read_response(sock, timeout=10)
            assert (status, body) == (200, b"slow done")
            assert headers[b"connection"] == b"close"
        finally:
            sock.close()
        assert srv.finish(10) == 0
    assert "Shutting down" in srv.stderr


def test_second_sigint_exits_promptly(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for_file(app_dir / "hang-started", srv.proc)
            srv.proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            assert srv.proc.poll() is None  # graceful: still waiting for the request
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGINT)
            status = srv.finish(10)
            assert time.monotonic() - start < 3
            # the hanging request was cancelled: it is answered 503, and its connection closed
            sock.settimeout(5)
            assert recv_all(sock).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        finally:
            sock.close()
    assert status == 0
    assert "Traceback" not in srv.stderr


def test_sigint_when_idle_exits_0(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        start = time.monotonic()
        assert srv.stop(signal.SIGINT) == 0
        assert time.monotonic() - start < 5
    assert "Traceback" not in srv.stderr and "KeyboardInterrupt" not in srv.stderr


# --- logging -------------------------------------------------------------------------------------------

ACCESS_LINE = re.compile(
    r'^INFO: +127\.0\.0\.1:(\d+) - "(?P<line>[^"]*)" (?P<status>\d{3}) (?P<phrase>[A-Za-z -]*) (?P<bytes>\d+) (?P<ms>\d+\.\d)ms$'
)
#: what log parsers written for uvicorn match (its access line; heron's fields follow the phrase)
UVICORN_ACCESS_LINE = re.compile(r'^INFO: +(\S+) - "(\S+) (\S+) HTTP/([\d.]+)" (\d{3}) ([A-Za-z -]+)')


def test_access_log_format(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        raw_request(port, b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        raw_request(port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        assert srv.stop() == 0
    access = [m for m in map(ACCESS_LINE.match, lines(srv.stdout)) if m]
    assert len(access) == 2, srv.stdout
    assert access[0]["line"] == "GET /hello?x=1 HTTP/1.1"
    assert (access[0]["status"], access[0]["phrase"], access[0]["bytes"]) == ("200", "OK", "14")
    assert all(UVICORN_ACCESS_LINE.match(line) for line in lines(srv.stdout)), srv.stdout
    assert access[1]["line"] == "POST /p HTTP/1.1" and access[1]["status"] == "200"
    assert "Started heron" in srv.stderr and "Started heron" not in srv.stdout


def test_no_access_log_and_log_level(app_dir: Path) -> None:
    port = free_port()
    with heron_server(
        ["cliapp:app", "--port", str(port), "--no-access-log", "--log-level", "warning"], app_dir, port=port
    ) as srv:
        assert raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        assert srv.stop() == 0
    assert srv.stdout == ""
    assert "Started heron" not in srv.stderr  # INFO is below the level


def test_control_characters_cannot_reach_the_access_log(app_dir: Path) -> None:
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port)], app_dir, port=port) as srv:
        # percent-encoded CR LF: served, and logged as received (still percent-encoded)
        status, _, _ = raw_request(port, b"GET /a%0d%0aINFO:%20forged HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200
        # raw control characters in the target: refused, never logged as a request
        for target in (b"/b\x1b[31mred", b"/c\rINFO: forged", b"/d\x00"):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
                sock.settimeout(5)
                assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
            finally:
                sock.close()
        assert srv.stop() == 0
    out = lines(srv.stdout)
    assert len(out) == 1, out
    match = ACCESS_LINE.match(out[0])
    assert match and match["line"] == "GET /a%0d%0aINFO:%20forged HTTP/1.1", out
    for stream in (srv.stdout, srv.stderr):
        assert "\x1b" not in stream and "\x00" not in stream
        assert not any(line.startswith(("INFO: forged", "INFO:forged")) for line in stream.splitlines())
        assert "\r" not in stream
    assert srv.stderr.count("Bad request from 127.0.0.1:") == 3


def test_log_level_none_is_refused_not_silently_info(app_dir: Path) -> None:
    """None means "the default level" for log_level: the word none would read as "log nothing"."""
    result = run(["cliapp:app", "--log-level", "none"], app_dir)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "log_level" in line and "trace" in line and "none" not in line.split("expected")[1], line
    result = run(["cliapp:app", "--log-level", "nope"], app_dir, HERON_LOG_LEVEL="")
    assert result.returncode == 2 and "or none" not in result.stderr


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.0/33", "127.0.0.1,lb"])
def test_forwarded_allow_ips_that_are_not_addresses_are_refused(app_dir: Path, value: str) -> None:
    for args, env in ((["--forwarded-allow-ips", value], {}), ([], {"FORWARDED_ALLOW_IPS": value})):
        result = run(["cliapp:app", "--port", str(free_port()), *args], app_dir, **env)
        assert result.returncode == 2, result.stderr
        assert "forwarded_allow_ips" in result.stderr and "is neither" in result.stderr, result.stderr
    assert Config(forwarded_allow_ips="10.0.0.0/8, ::1,192.0.2.7,*").validate()


WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_banner_of_a_wsgi_app_offers_no_websocket(tmp_path: Path, workers: str) -> None:
    """A WSGI app refuses WebSocket upgrades (403): the banner says what is served."""
    (tmp_path / "wsgiapp.py").write_text(WSGI_APP)
    (tmp_path / "asgiapp.py").write_text("async def app(scope, receive, send):\n    pass\n")
    for target, websocket in (("wsgiapp:app", False), ("asgiapp:app", True)):
        port = free_port()
        with heron_server([target, "--port", str(port), "--workers", workers], tmp_path, port=port) as srv:
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code in (200, 500)
            if workers != "1":
                time.sleep(1.5)  # the supervisor's banner follows once every worker is ready
            assert srv.stop() == 0
        (line,) = [line for line in srv.stderr.splitlines() if "Serving HTTP/1.1 on" in line]
        assert ("WebSocket" in line) == websocket, line


def test_mistyped_option_gets_the_nearest_one(tmp_path: Path) -> None:
    result = run(["--prot", "8000"], tmp_path)
    assert result.returncode == 2 and "did you mean --port?" in result.stderr, result.stderr
    result = run(["--timeout-keepalive=3"], tmp_path)
    assert "did you mean --timeout-keep-alive?" in result.stderr, result.stderr
    result = run(["--zzzz"], tmp_path)
    assert result.returncode == 2 and "did you mean" not in result.stderr, result.stderr


UVICORN_BANNER = [
    r"INFO: +Started server process \[(\d+)\]",
    r"INFO: +Waiting for application startup\.",
    r"INFO: +Application startup complete\.",
    r"INFO: +Heron running on http://127\.0\.0\.1:{port} \(Press CTRL\+C to quit\)",
    r"INFO: +Shutting down",
    r"INFO: +Waiting for application shutdown\.",
    r"INFO: +Application shutdown complete\.",
    r"INFO: +Finished server process \[(\d+)\]",
]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_start_and_stop_lines_are_uvicorns(app_dir: Path, workers: str) -> None:
    """What a log pipeline written for uvicorn looks for, in uvicorn's order (heron's own
    lines may come between); with workers, the parent process says so too."""
    port = free_port()
    with heron_server(["cliapp:app", "--port", str(port), "--workers", workers], app_dir, port=port) as srv:
        assert raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0] == 200
        time.sleep(1.0 if workers != "1" else 0)  # (the parent's banner follows the workers' start)
        assert srv.stop() == 0
    text = srv.stderr
    position = 0
    for pattern in UVICORN_BANNER:
        match = re.compile(pattern.format(port=port), re.MULTILINE).search(text, position)
        assert match is not None, (pattern, text)
        position = match.end()
    pids = re.findall(r"Started server process \[(\d+)\]", text)
    assert len(pids) == int(workers) and re.findall(r"Finished server process \[(\d+)\]", text) != []
    if workers != "1":
        assert re.search(r"Started parent process \[\d+\]", text) and re.search(r"Stopping parent process", text)


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_request_cancelled_at_shutdown_is_answered_and_logged_503(app_dir: Path) -> None:
    """When --timeout-graceful-shutdown is up, a request still without a response gets
    503 (retryable) before its connection closes, and the access log says 503, not 0."""
    port = free_port()
    args = ["cliapp:app", "--port", str(port), "--timeout-graceful-shutdown", "1"]
    with heron_server(args, app_dir, port=port) as srv:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for_file(app_dir / "hang-started", srv.proc)
            srv.proc.send_signal(signal.SIGTERM)
            response = recv_all(sock)
        finally:
            sock.close()
        assert srv.finish(15) == 0
    assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), response
    assert b"connection: close" in response.lower()
    (line,) = [line for line in lines(srv.stdout) if "GET /hang" in line]
    assert '"GET /hang HTTP/1.1" 503 Service Unavailable' in line, line
