"""Headless Chromium loads a page and its resources from heron over HTTP/3.

heron serves TLS on a TCP port and QUIC (``quic_bind``) on the same UDP port,
with a trustme certificate; Chromium is told to use QUIC for that origin from
the first request (``--origin-to-force-quic-on``) and to accept the
certificate by the SHA-256 of its public key
(``--ignore-certificate-errors-spki-list``). heron's access log shows which
HTTP version served each request; the page's script reports back to ``/done``
and writes what it saw into the title, which ``--dump-dom`` prints.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..conftest import CHROMIUM_FLAGS, RunningServer, need_program, serve

pytestmark = pytest.mark.timeout(60)

PAGE = b"""<!doctype html>
<html><head><title>loading</title>
<script src="/app.js"></script>
</head><body>
<img id="a" src="/a.svg"><img id="b" src="/b.svg">
<script>
window.addEventListener("load", () => {
  const shown = [...document.images].filter((img) => img.complete && img.naturalWidth === 10).length;
  fetch("/done?images=" + shown + "&ran=" + window.ran.join(","))
    .then((response) => response.text())
    .then((text) => { document.title = "ran:" + window.ran.join(",") + " images:" + shown + " done:" + text; });
});
</script>
</body></html>
"""
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
RESOURCES = {"/", "/app.js", "/a.svg", "/b.svg", "/done"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/":
        body, ctype = PAGE, b"text/html; charset=utf-8"
    elif path == "/app.js":
        body, ctype = b'(window.ran = window.ran || []).push("app.js");', b"text/javascript"
    elif path.endswith(".svg"):
        body, ctype = SVG, b"image/svg+xml"
    elif path == "/done":
        body, ctype = b"ok", b"text/plain"
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


class AccessLines(logging.Handler):
    """heron.access messages, as the server's thread logs them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.lines_lock = threading.Lock()  # (not self.lock: Handler.handle() holds that one around emit())

    def emit(self, record: logging.LogRecord) -> None:
        with self.lines_lock:
            self.lines.append(record.getMessage())

    def snapshot(self) -> list[str]:
        with self.lines_lock:
            return list(self.lines)


@contextlib.contextmanager
def access_log() -> Iterator[AccessLines]:
    logger = logging.getLogger("heron.access")
    handler, level = AccessLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def serve_tcp_and_udp(certfile: str, keyfile: str) -> Iterator[RunningServer]:
    """heron with TLS on a TCP port and QUIC on the same port number over UDP.

    The port number comes from the kernel (a UDP socket bound to port 0); the
    test binds the TCP socket on that number itself and hands it to heron
    (``fd``), then lets the UDP port go for heron to bind. Another process
    taking either in between stops that attempt: three are made."""
    for attempt in range(3):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                tcp.close()
                continue  # that number is taken over TCP
            tcp.listen(64)
        settings = {"ssl_certfile": certfile, "ssl_keyfile": keyfile, "quic_bind": (f"127.0.0.1:{port}",)}
        with contextlib.ExitStack() as stack:
            try:  # (heron owns the socket from here, and closes it, started or not)
                running = stack.enter_context(
                    serve(app, fd=tcp.detach(), access_log=True, timeout_graceful_shutdown=2, **settings)
                )
            except AssertionError:  # serve's "server failed to start": the UDP port was taken
                if attempt == 2:
                    raise
                continue
            assert running.port == port
            assert running.server.quic_sockets[0].getsockname() == ("127.0.0.1", port)
            yield running
            return
    raise AssertionError("no port number free over both TCP and UDP in three attempts")


def spki_sha256(cert_pem: bytes) -> str:
    """base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (what Chromium pins)."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def quic_errors(net_log: Path) -> list[str]:
    """The QUIC session's close and error events from Chromium's net-log, for a failure message."""
    try:
        data = json.loads(net_log.read_text(errors="replace"))
    except (OSError, ValueError):
        return [f"(no readable net-log at {net_log})"]
    names = {v: k for k, v in data.get("constants", {}).get("logEventTypes", {}).items()}
    found = []
    for event in data.get("events", []):
        name = names.get(event.get("type"), "?")
        if "QUIC" in name and ("CLOSE" in name or "ERROR" in name or "FAIL" in name):
            found.append(f"{name} {json.dumps(event.get('params', {}))[:300]}")
    return found[-10:]


def make_certificate(tmp_path: Path) -> tuple[str, str, str]:
    """A trustme certificate for 127.0.0.1: (certfile, keyfile, the SPKI pin Chromium takes)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(certfile))
    leaf.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile), spki_sha256(leaf.cert_chain_pems[0].bytes())


def load_page(chromium: str, origin: str, spki: str, tmp_path: Path) -> tuple[bool, str, str, Path]:
    """Chromium, forced onto QUIC for ``origin``, loads its page: (timed out, the DOM,
    its stderr, its net-log)."""
    profile, net_log = tmp_path / "profile", tmp_path / "netlog.json"
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--disable-quic"]
    command = [
        chromium,
        *flags,
        f"--user-data-dir={profile}",
        "--enable-quic",
        f"--origin-to-force-quic-on={origin}",
        f"--ignore-certificate-errors-spki-list={spki}",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        f"https://{origin}/",
    ]
    # (a new session: killed as a group, with its helper processes, whatever happens)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # chromium's helper processes too
        proc.wait(10)
    return timed_out, out.decode(errors="replace"), err.decode(errors="replace"), net_log


def check_page_served_over_http3(dom: str, lines: list[str], why: Any) -> None:
    """The page's script ran, both images loaded and /done answered, every resource over
    HTTP/3 (the access log) and on one QUIC connection."""
    assert "<title>ran:app.js images:2 done:ok</title>" in dom, why
    served = {}
    for line in lines:
        for path in RESOURCES:
            query = "?images=2&ran=app.js" if path == "/done" else ""
            if f'"GET {path}{query} HTTP/' in line:
                served[path] = line
    assert set(served) == RESOURCES, why
    for path, line in served.items():
        assert ' HTTP/3" 200 ' in line, (path, line)
    clients = {line.split(" - ", 1)[0] for line in served.values()}
    assert len(clients) == 1, served  # one QUIC connection


def test_headless_chromium_loads_a_page_over_http3(tmp_path: Path) -> None:
    chromium = need_program("chromium", "chromium-browser")  # (skips before anything starts)
    certfile, keyfile, spki = make_certificate(tmp_path)
    with access_log() as log, serve_tcp_and_udp(certfile, keyfile) as srv:
        timed_out, dom, err, net_log = load_page(chromium, f"127.0.0.1:{srv.port}", spki, tmp_path)
    lines = log.snapshot()
    why = (timed_out, dom[-1000:], err[-1500:], lines, quic_errors(net_log))
    check_page_served_over_http3(dom, lines, why)


def wait_for_a_worker(port: int) -> None:
    """Until a worker answers over TLS on ``port`` (the supervisor's socket takes
    connections before any worker is ready; QUIC goes to the ready ones only)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # (readiness only)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(b"GET /done HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if tls.recv(64).startswith(b"HTTP/1.1 200"):
                        return
        except OSError:
            pass
        assert time.monotonic() < deadline, "no worker answered"
        time.sleep(0.1)


def test_headless_chromium_loads_a_page_over_http3_from_several_workers(tmp_path: Path) -> None:
    """The same page from ``--workers 3``: Chromium's datagrams, to the connection ids
    the worker that answered issued, all reach that worker (heron.quic_steering)."""
    from .test_cli import free_port, heron_server

    chromium = need_program("chromium", "chromium-browser")
    certfile, keyfile, spki = make_certificate(tmp_path)
    (tmp_path / "pageapp.py").write_text(f"from {__name__} import app\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = probe.getsockname()[1]
    tcp = free_port()
    args = ["pageapp:app", "--workers", "3", "--port", str(tcp), "--quic-bind", f"127.0.0.1:{udp}", "--access-log"]
    args += ["--ssl-certfile", certfile, "--ssl-keyfile", keyfile, "--timeout-graceful-shutdown", "2"]
    root = Path(__file__).resolve().parents[2]
    with heron_server(args, tmp_path, port=tcp, PYTHONPATH=str(root)) as heron:
        wait_for_a_worker(tcp)
        timed_out, dom, err, net_log = load_page(chromium, f"127.0.0.1:{udp}", spki, tmp_path)
        heron.stop()
    lines = [line for line in (heron.stdout + heron.stderr).splitlines() if " HTTP/" in line]
    why = (timed_out, dom[-1000:], err[-1500:], heron.stderr[-3000:], quic_errors(net_log))
    check_page_served_over_http3(dom, lines, why)
