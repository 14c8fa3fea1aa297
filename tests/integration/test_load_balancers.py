"""heron behind a real HAProxy and a real nginx, configured by the example files in
deploy/ (read here, only their placeholder ports and paths replaced), while every
instance is restarted in turn under a steady load: no request may fail.

HAProxy: PROXY protocol v2 to three instances with --workers 2, health checks on
/readyz; each instance gets a rolling worker restart (SIGHUP), then a full stop
(SIGTERM with --shutdown-delay) and a start on the same ports. The app must see the
load generator's own address and source port, not HAProxy's.

nginx: X-Forwarded-For to two instances, each stopped and started again; the same
HTTP load, plus WebSocket sessions that are closed with 1001 when their instance
stops, reconnect through nginx and resend what was not acknowledged.

The clients connect from 127.0.0.2, so the client address a proxy passes on differs
from the proxies' own (127.0.0.1, the one address heron trusts).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import http.client
import io
import json
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect as ws_connect

from ..conftest import need_program
from .test_cli import free_port, heron_server
from .test_health import wait_ready
from .test_workers import children, wait_until

pytestmark = pytest.mark.timeout(90)


def stable_port() -> int:
    """A free port below the ephemeral range, for a heron that is stopped and started
    again on it: while it is down, a client's connection could take a port from that
    range as its own local port, and the restart then fails to bind (seen once in CI)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    start = max(1024, low - 8000) + random.randrange(4000)  # (random: runs side by side)
    for port in range(start, low):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
NGINX_CONF = ROOT / "deploy" / "nginx" / "heron.conf"

#: where the load generator's connections come from (not a trusted proxy address)
CLIENT_HOST = "127.0.0.2"
#: each load thread stops after this many requests, or at DEADLINE seconds
MAX_REQUESTS = 4000
DEADLINE = 60.0
#: a pause between one thread's requests (the proxies, heron and the load share the CPUs)
PAUSE = 0.005


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each placeholder, which must occur in ``text`` exactly once."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the example config should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


# --- heron instances ------------------------------------------------------------------


class Instance:
    """One heron instance on fixed ports, stopped and started again as a whole."""

    def __init__(self, name: str, port: int, app: str, options: list[str]) -> None:
        self.name = name
        self.port = port
        self.mport = free_port()
        self.args = [app, "--host", "127.0.0.1", "--port", str(port), "--metrics-bind", f"127.0.0.1:{self.mport}"]
        self.args += ["--lifespan", "off", "--log-level", "warning", "--no-access-log", *options]
        #: the main process id of every incarnation (with --workers: the supervisor)
        self.pids: set[int] = set()
        self._stack: contextlib.ExitStack | None = None
        self.srv: Any = None

    def start(self) -> None:
        """Start the process (returns once it listens; see ready())."""
        assert self._stack is None
        stack = contextlib.ExitStack()
        self.srv = stack.enter_context(heron_server(self.args, ROOT, port=self.port))
        self._stack = stack
        self.pids.add(self.srv.proc.pid)

    def ready(self) -> None:
        wait_ready(f"http://127.0.0.1:{self.mport}/readyz")

    @property
    def pid(self) -> int:
        return int(self.srv.proc.pid)

    def alive(self) -> bool:
        return self.srv is not None and self.srv.proc.poll() is None

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit that a signal started; the exit status."""
        assert self._stack is not None
        try:
            code = int(self.srv.finish(timeout))
        finally:
            self._stack.close()
            self._stack = None
        assert code == 0, f"{self.name} exited with {code}:\n{self.srv.stderr}"
        return code

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()  # (kills a process still running)
            self._stack = None


@contextlib.contextmanager
def instances(count: int, ports: list[int], app: str, options: list[str], workers: int = 1) -> Iterator[list[Instance]]:
    options = [*options, "--workers", str(workers)] if workers > 1 else options
    fleet = [Instance(f"heron{i + 1}", ports[i], app, options) for i in range(count)]
    try:
        for instance in fleet:
            instance.start()
        for instance in fleet:
            instance.ready()
        yield fleet
    finally:
        for instance in fleet:
            instance.close()


# --- the load -------------------------------------------------------------------------


class Load:
    """Threads sending GET requests through a proxy until stopped (or bounded): some
    on one keep-alive connection each, some on a new connection per request. Every
    answer must be a 200 whose ``client`` is ``expected_client(source port)``."""

    def __init__(self, port: int, expected_client: Callable[[int], list[Any]], extra_headers: dict[str, str]) -> None:
        self.port = port
        self.expected_client = expected_client
        self.headers = extra_headers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.checked_new_connections = 0  # answers whose client port was compared
        self.failures: list[str] = []
        self.served_by: collections.Counter[tuple[int, int]] = collections.Counter()  # (pid, ppid)
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()

    def start(self, keep_alive: int = 2, new_connections: int = 2) -> None:
        for _ in range(keep_alive):
            self.threads.append(threading.Thread(target=self._keep_alive, daemon=True))
        for _ in range(new_connections):
            self.threads.append(threading.Thread(target=self._new_connections, daemon=True))
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self.threads), "a load thread hangs"

    def wait_for(self, successes: int, timeout: float = 20) -> None:
        """Until ``successes`` more requests succeeded."""
        target = self.ok + successes
        wait_until(lambda: self.ok >= target or bool(self.failures), timeout, f"{successes} more requests")

    def _running(self, count: int) -> bool:
        return not self.stop.is_set() and count < MAX_REQUESTS and time.monotonic() - self.started < DEADLINE

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5, source_address=(CLIENT_HOST, 0))

    def _check(self, conn: http.client.HTTPConnection, headers: dict[str, str], new: bool) -> None:
        conn.request("GET", "/", headers=headers)
        source_port = conn.sock.getsockname()[1]
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise AssertionError(f"status {response.status}: {body[:200]!r}")
        info = json.loads(body)
        expected = self.expected_client(source_port)
        if info["client"] != expected:
            raise AssertionError(f"the app saw client {info['client']}, not {expected}")
        with self.lock:
            self.ok += 1
            self.checked_new_connections += new
            self.served_by[(info["pid"], info["ppid"])] += 1

    def _fail(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.failures.append(f"{time.monotonic() - self.started:.2f}s {kind}: {exc!r}")

    def _keep_alive(self) -> None:
        conn = self._connection()
        count = 0
        try:
            while self._running(count):
                count += 1
                try:
                    self._check(conn, self.headers, new=False)
                except (OSError, http.client.HTTPException, AssertionError, ValueError) as exc:
                    self._fail("keep-alive", exc)
                    conn.close()
                    conn = self._connection()
                time.sleep(PAUSE)
        finally:
            conn.close()

    def _new_connections(self) -> None:
        count = 0
        while self._running(count):
            count += 1
            conn = self._connection()
            try:
                self._check(conn, {**self.headers, "Connection": "close"}, new=True)
            except (OSError, http.client.HTTPException, AssertionError, ValueError) as exc:
                self._fail("new connection", exc)
            finally:
                conn.close()
            time.sleep(PAUSE)

    def served(self, instance: Instance) -> int:
        """Requests that one of ``instance``'s processes (its workers') answered."""
        return sum(self.served_by_process(pid) for pid in instance.pids)

    def served_by_process(self, pid: int) -> int:
        """Requests that one incarnation of an instance (its workers) answered."""
        return sum(n for (worker, parent), n in self.served_by.items() if pid in (worker, parent))


# --- HAProxy --------------------------------------------------------------------------

#: a server line of the example: (the line, the server's name, its address, its check port)
SERVER_LINE = re.compile(r"^([ \t]*server\s+(\S+)\s+(127\.0\.0\.1:\d+)\s.*\b(port \d+).*)$", re.MULTILINE)


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s (a balancer that is already gone: nothing)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class HAProxy:
    def __init__(self, program: str, tmp: Path, front: int, template: str) -> None:
        self.program = program
        self.tmp = tmp
        self.front = front
        self.template = template
        self.admin = tmp / "admin.sock"
        self.log_path = tmp / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, fleet: list[Instance], servers: list[tuple[str, str, str, str]]) -> None:
        replacements = {
            "bind 127.0.0.1:8000\n": f"bind 127.0.0.1:{self.front}\n",
            "stats socket /run/haproxy/heron-admin.sock ": f"stats socket {self.admin} ",
        }
        for (line, _, address, check_port), instance in zip(servers, fleet):
            replacements[line] = line.replace(address, f"127.0.0.1:{instance.port}").replace(
                check_port, f"port {instance.mport}"
            )
        path = self.tmp / "haproxy.cfg"
        path.write_text(substitute(self.template, replacements))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.program, "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._answers() or self.proc.poll() is not None, 10, "HAProxy's stats socket")
        assert self.proc.poll() is None, self.log()

    def _answers(self) -> bool:
        try:
            self.stat()
        except OSError:
            return False
        return True

    def stat(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the runtime API: server name -> its row."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        text = data.decode().lstrip("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, server: str) -> str:
        return self.stat()[server]["status"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        terminate(self.proc)


def test_haproxy_rolling_and_full_restarts_lose_nothing(tmp_path: Path) -> None:
    program = need_program("haproxy")
    template = HAPROXY_CFG.read_text()
    servers = SERVER_LINE.findall(template)
    assert len(servers) >= 2, "the example should name its heron servers"
    front = free_port()
    options = ["--proxy-protocol", "--forwarded-allow-ips", "127.0.0.1", "--shutdown-delay", "2"]
    proxy = HAProxy(program, tmp_path, front, template)
    ports = [stable_port() for _ in servers]
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(instances(len(servers), ports, "tests.integration.apps:client_info", options, 2))
        stack.callback(proxy.stop)
        proxy.run(fleet, servers)
        names = [name for _, name, _, _ in servers]
        wait_until(lambda: all(proxy.status(name) == "UP" for name in names), 15, "HAProxy to see every heron UP")

        load = Load(front, lambda source_port: [CLIENT_HOST, source_port], {})
        stack.callback(load.stop.set)
        load.start()
        load.wait_for(50)

        # 1. a rolling restart of each instance's workers: the listening socket stays open
        for instance in fleet:
            before = children(instance.pid)
            assert len(before) == 2, before
            instance.srv.proc.send_signal(signal.SIGHUP)

            def replaced(instance: Instance = instance, before: set[int] = before) -> bool:
                now = children(instance.pid)
                return len(now) == 2 and not now & before

            wait_until(replaced, 30, f"{instance.name}'s rolling restart")
            load.wait_for(30)

        # 2. a full stop and start of each instance, on the same ports
        for name, instance in zip(names, fleet):
            instance.srv.proc.send_signal(signal.SIGTERM)
            # /readyz says 503 during --shutdown-delay: HAProxy takes the server out
            # while it still serves
            wait_until(lambda n=name: proxy.status(n).startswith("DOWN"), 10, f"HAProxy to mark {name} DOWN")
            assert instance.alive(), f"{name} had exited before HAProxy marked it DOWN"
            instance.finish()
            instance.start()
            instance.ready()
            wait_until(lambda n=name: proxy.status(n) == "UP", 15, f"HAProxy to see {name} UP again")
            load.wait_for(30)

        load.wait_for(50)
        load.finish()
        proxy_log = proxy.log()
        served = {instance.name: load.served(instance) for instance in fleet}
        # each instance before its stop and after its start again
        incarnations = {pid: load.served_by_process(pid) for instance in fleet for pid in sorted(instance.pids)}

    print(f"HAProxy: {load.ok} ok ({load.checked_new_connections} on new connections), served {served}")
    assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:10]}\n{proxy_log}"
    assert load.ok > 200, load.ok
    assert load.checked_new_connections > 50, load.checked_new_connections
    assert all(n > 0 for n in served.values()), served
    assert len(incarnations) == 2 * len(fleet) and all(n > 0 for n in incarnations.values()), incarnations
    assert sum(served.values()) == load.ok, (served, load.served_by)


# --- nginx ----------------------------------------------------------------------------


class Nginx:
    def __init__(self, program: str, tmp: Path, front: int, ports: list[int]) -> None:
        self.program = program
        self.prefix = tmp / "nginx"
        self.prefix.mkdir()
        self.front = front
        self.ports = ports
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self) -> None:
        replacements = {"listen 127.0.0.1:8000;": f"listen 127.0.0.1:{self.front};"}
        for placeholder, port in zip(("127.0.0.1:8001", "127.0.0.1:8002"), self.ports):
            replacements[f"server {placeholder} "] = f"server 127.0.0.1:{port} "
        conf = self.prefix / "heron.conf"
        conf.write_text(substitute(NGINX_CONF.read_text(), replacements))
        error_log = self.prefix / "error.log"
        command = [self.program, "-p", str(self.prefix), "-c", str(conf), "-e", str(error_log), "-g", "daemon off;"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                socket.create_connection(("127.0.0.1", self.front), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(listening, 10, "nginx to listen")

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)


#: messages a WebSocket session may have sent and not yet seen acknowledged
WINDOW = 4
#: messages one session sends at most
MAX_MESSAGES = 3000


class Session:
    """A WebSocket client through nginx that numbers its messages. The app answers
    each with its own count; when the connection closes the client connects again
    and resends, from the first message not acknowledged."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url = url
        self.stop = stop
        self.acked: list[int] = []  # message numbers, in the order their acks came
        self.sent = 0  # the next new message number
        self.closes: list[int | None] = []  # the server's close codes
        self.connections = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while len(self.acked) < self.sent or (not self.stop.is_set() and self.sent < MAX_MESSAGES):
            if time.monotonic() - started > DEADLINE:
                self.errors.append("deadline")
                return
            try:
                ws = ws_connect(self.url, open_timeout=5, close_timeout=5)
            except (OSError, WebSocketException) as exc:  # refused, or a handshake that failed (502...)
                self.errors.append(f"connect: {exc!r}")
                time.sleep(0.1)
                continue
            self.connections += 1
            with ws:
                self._converse(ws)

    def _converse(self, ws: Any) -> None:
        # resend what this session sent and never saw acknowledged: acks come in order,
        # so that is everything from len(self.acked) on
        pending: collections.deque[int] = collections.deque()
        cursor = len(self.acked)
        seq = 0  # the app's count on this connection
        try:
            while True:
                sending_new = not self.stop.is_set() and self.sent < MAX_MESSAGES
                while len(pending) < WINDOW and (cursor < self.sent or sending_new):
                    ws.send(str(cursor))
                    pending.append(cursor)
                    cursor += 1
                    self.sent = max(self.sent, cursor)
                if not pending:
                    ws.close(1000)
                    return
                ack = json.loads(ws.recv(timeout=10))
                expected = pending.popleft()
                if ack["echo"] != str(expected) or ack["seq"] != seq:
                    self.errors.append(f"ack {ack} for message {expected} (seq {seq})")
                    ws.close(1000)
                    return
                self.acked.append(expected)
                seq += 1
                time.sleep(0.01)
        except ConnectionClosed as exc:
            self.closes.append(exc.rcvd.code if exc.rcvd is not None else None)
        except (TimeoutError, OSError, ValueError) as exc:
            self.errors.append(f"{exc!r}")


def test_nginx_restarts_lose_no_request_and_no_websocket_message(tmp_path: Path) -> None:
    program = need_program("nginx")
    front = free_port()
    ports = [stable_port(), stable_port()]
    options = ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1", "--shutdown-delay", "1.5"]
    proxy = Nginx(program, tmp_path, front, ports)
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(instances(2, ports, "tests.integration.apps:ws_ack", options))
        stack.callback(proxy.stop)
        proxy.run()

        # X-Forwarded-For carries no port: heron reports port 0. A client's own
        # X-Forwarded-For is not believed (nginx appends the real address after it).
        load = Load(front, lambda _source_port: [CLIENT_HOST, 0], {"X-Forwarded-For": "203.0.113.9"})
        stack.callback(load.stop.set)
        stop_sessions = threading.Event()
        stack.callback(stop_sessions.set)
        sessions = [Session(f"ws://127.0.0.1:{front}/ws", stop_sessions) for _ in range(4)]
        load.start()
        for session in sessions:
            session.thread.start()
        load.wait_for(50)
        wait_until(lambda: all(len(s.acked) >= 10 for s in sessions), 15, "every WebSocket session to run")

        for instance in fleet:
            closes_before = sum(len(s.closes) for s in sessions)
            instance.srv.proc.send_signal(signal.SIGTERM)
            instance.finish()
            wait_until(
                lambda n=closes_before: sum(len(s.closes) for s in sessions) > n or any(s.errors for s in sessions),
                10,
                f"a session on {instance.name} to be closed",
            )
            instance.start()
            instance.ready()
            load.wait_for(50)
            acked = [len(s.acked) for s in sessions]
            wait_until(
                lambda acked=acked: all(len(s.acked) >= n + 10 for s, n in zip(sessions, acked)),
                15,
                "every session to go on",
            )
            time.sleep(2.5)  # nginx's fail_timeout: the restarted instance is tried again

        load.wait_for(50)
        load.finish()
        stop_sessions.set()
        for session in sessions:
            session.thread.join(20)
        assert not any(s.thread.is_alive() for s in sessions), "a WebSocket session hangs"
        nginx_log = proxy.log()
        served = {instance.name: load.served(instance) for instance in fleet}
        incarnations = {pid: load.served_by_process(pid) for instance in fleet for pid in sorted(instance.pids)}

    print(f"nginx: {load.ok} ok, served {served}; WebSocket sessions (messages, closes):")
    print([(len(s.acked), s.closes) for s in sessions])
    assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:10]}\n{nginx_log}"
    assert load.ok > 200, load.ok
    assert all(n > 0 for n in served.values()), served
    assert len(incarnations) == 2 * len(fleet) and all(n > 0 for n in incarnations.values()), incarnations
    assert sum(served.values()) == load.ok, (served, load.served_by)
    for session in sessions:
        assert session.errors == [], (session.errors, nginx_log)
        # every message sent was acknowledged, each once, in order
        assert session.acked == list(range(session.sent)), session.acked[-20:]
        assert session.sent > 50, session.sent
        # each stop of the instance a session was on closed it with 1001 (Going Away)
        assert session.closes and all(code == 1001 for code in session.closes), session.closes
        assert session.connections == len(session.closes) + 1
