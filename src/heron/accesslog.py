"""Access log lines and the per-request observer.

``--access-log-format`` takes a preset (``default``, ``common``,
``combined``, ``json``) or a format of gunicorn-style atoms, compiled once
into a Python function (:func:`compile_format`). Each finished request (or
WebSocket session) becomes one record on ``heron.access``; its message is
formatted only if a handler actually emits it, and the record carries the
structured fields (``client``, ``method``, ``path``, ``query``, ``status``,
``bytes``, ``duration_ms``, ``http_version``, ``user_agent``, ``request_id``;
and uvicorn's ``client_addr``, ``request_line``, ``status_code``) as
attributes, for ``--log-format json`` and for custom formatters.

Atoms (gunicorn's, plus the structured field names):

==============  ======================================================
``%(h)s``       client address (no port)
``%(l)s``       ``-``
``%(u)s``       user name from HTTP Basic auth, or ``-``
``%(t)s``       time the request finished, ``[10/Oct/2000:13:55:36 +0000]``
``%(r)s``       request line, ``GET /path?q=1 HTTP/1.1``
``%(m)s``       method
``%(U)s``       path (without the query)
``%(q)s``       query string
``%(H)s``       protocol, ``HTTP/1.1``
``%(s)s``       status (the close code for a WebSocket session)
``%(b)s``       response body bytes, ``-`` for none
``%(B)s``       response body bytes
``%(f)s``       ``Referer`` header
``%(a)s``       ``User-Agent`` header
``%(T)s``       duration in whole seconds
``%(D)s``       duration in microseconds
``%(M)s``       duration in milliseconds
``%(L)s``       duration in seconds, decimal
``%(p)s``       ``<pid>``
``%({x}i)s``    request header ``x``
``%({x}o)s``    response header ``x``
``%(client)s``  and the other structured field names: as in JSON
``%%``          a literal ``%``
==============  ======================================================

Header values are escaped (``\\xNN``) outside printable ASCII, so a log line
can't carry terminal control sequences.
"""

from __future__ import annotations

import http
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

access_logger = logging.getLogger("heron.access")


class MetricsSink(Protocol):
    """What a finished request or WebSocket session is counted into (:class:`heron.metrics.Metrics`)."""

    def request(self, method: bytes, status: int, duration: float, nbytes: int) -> None: ...
    def websocket_closed(self, code: int, bytes_in: int) -> None: ...


class RequestLine(Protocol):
    """What the access log and metrics read of a request: HTTP/1.1's
    :class:`~heron.protocol.http1.Request` and HTTP/2's view of a stream both have it."""

    @property
    def method(self) -> bytes: ...
    @property
    def target(self) -> bytes: ...
    @property
    def http_version(self) -> str: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...


PRESETS = {
    "common": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s',
    "combined": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
}

#: fields of a JSON access record, in order
FIELDS = (
    "client",
    "method",
    "path",
    "query",
    "http_version",
    "status",
    "bytes",
    "duration_ms",
    "user_agent",
    "request_id",
)

_ATOM = re.compile(r"%\((\{[^}]+\}[io]|[A-Za-z_]+)\)s|%%|%")

# atom -> expression on ``e`` (an :class:`AccessEntry`)
_ATOMS = {
    "h": "e.host",
    "l": "'-'",
    "u": "e.user",
    "t": "e.time_local",
    "r": "e.request_line",
    "m": "e.method",
    "U": "e.path",
    "q": "e.query",
    "H": "e.protocol",
    "s": "e.status",
    "b": "(e.nbytes or '-')",
    "B": "e.nbytes",
    "f": "e.request_header(b'referer')",
    "a": "e.request_header(b'user-agent')",
    "T": "int(e.duration)",
    "D": "int(e.duration * 1000000)",
    "M": "int(e.duration * 1000)",
    "L": "f'{e.duration:.6f}'",
    "p": "PID",
    "client": "e.peer",
    "method": "e.method",
    "path": "e.path",
    "query": "e.query",
    "status": "e.status",
    "bytes": "e.nbytes",
    "duration_ms": "f'{e.duration * 1000:.1f}'",
    "http_version": "e.http_version",
    "user_agent": "e.request_header(b'user-agent')",
    "request_id": "e.request_header(b'x-request-id')",
    "request_line": "e.request_line",
    "client_addr": "e.peer",
    "status_code": "e.status",
}


def compile_format(fmt: str) -> Callable[[AccessEntry], str]:
    """Compile a gunicorn-style format, once, into a function of an entry.
    ValueError names the first unknown atom."""
    parts: list[str] = []
    pos = 0
    for match in _ATOM.finditer(fmt):
        if match.start() > pos:
            parts.append(repr(fmt[pos : match.start()]))
        pos = match.end()
        token = match.group(0)
        if token == "%%":
            parts.append(repr("%"))
            continue
        atom = match.group(1)
        if atom is None:
            raise ValueError(f"a format of %(atom)s items (a literal % is written %%); stray '%' at {match.start()}")
        if atom.startswith("{"):
            name = atom[1:-2].lower().encode("ascii", "replace")
            getter = "request_header" if atom.endswith("i") else "response_header"
            parts.append(f"e.{getter}({name!r})")
        elif atom in _ATOMS:
            parts.append(f"str({_ATOMS[atom]})")
        else:
            raise ValueError(f"a format of known atoms (see heron.accesslog); unknown atom %({atom})s")
    if pos < len(fmt):
        parts.append(repr(fmt[pos:]))
    source = "lambda e: ''.join((" + ", ".join(parts) + ",))" if parts else "lambda e: ''"
    return eval(source, {"PID": f"<{os.getpid()}>", "int": int, "str": str})  # type: ignore[no-any-return]


def _default_http(e: AccessEntry) -> str:
    # uvicorn's line (peer - "request line" status phrase), then heron's size and time
    return f'{e.peer} - "{e.request_line}" {e.status} {_PHRASES.get(e.status, "")} {e.nbytes} {e.duration * 1000:.1f}ms'


_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}


def _default_websocket(e: AccessEntry) -> str:
    return f'{e.peer} - "WEBSOCKET {e.target}" {e.status} {e.duration * 1000:.1f}ms in={e.bytes_in} out={e.nbytes}'


def _json_line(e: AccessEntry) -> str:
    return json.dumps(e.fields(), separators=(",", ":"))


def _escape(raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.decode("ascii", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


_time_cache: list[Any] = [0, ""]


class AccessEntry:
    """One finished request or WebSocket session; atoms are computed on demand."""

    __slots__ = (
        "render",
        "peer",
        "method",
        "target",
        "http_version",
        "request_headers",
        "status",
        "nbytes",
        "bytes_in",
        "duration",
        "response_headers",
        "finished",
        "websocket",
    )

    def __init__(
        self,
        render: Callable[[AccessEntry], str],
        peer: str,
        method: str,
        target: str,
        http_version: str,
        request_headers: Iterable[tuple[bytes, bytes]],
        status: int,
        nbytes: int,
        duration: float,
        response_headers: Iterable[tuple[bytes, bytes]] | None,
        websocket: bool = False,
        bytes_in: int = 0,
    ) -> None:
        self.render = render
        self.peer = peer
        self.method = method
        self.target = target
        self.http_version = http_version
        self.request_headers = request_headers
        self.status = status
        self.nbytes = nbytes
        self.bytes_in = bytes_in
        self.duration = duration
        self.response_headers = response_headers
        self.finished = time.time()
        self.websocket = websocket

    def __str__(self) -> str:
        return self.render(self)

    # --- atoms -------------------------------------------------------------------

    @property
    def host(self) -> str:
        peer = self.peer
        if peer.startswith("["):
            return peer[1 : peer.find("]")]
        host, sep, _ = peer.rpartition(":")
        return host if sep else peer

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def protocol(self) -> str:
        return "HTTP/" + self.http_version

    @property
    def request_line(self) -> str:
        if self.websocket:
            return f"WEBSOCKET {self.target}"
        return f"{self.method} {self.target} HTTP/{self.http_version}"

    @property
    def time_local(self) -> str:
        second = int(self.finished)
        cached = _time_cache
        if cached[0] != second:
            cached[1] = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
            cached[0] = second
        return str(cached[1])

    @property
    def user(self) -> str:
        auth = self.request_header(b"authorization", None)
        if auth is None or auth[:6].lower() != "basic ":
            return "-"
        import base64
        import binascii

        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "-"
        return _escape(decoded.partition(":")[0].encode("utf-8")) or "-"

    def request_header(self, name: bytes, default: Any = "-") -> Any:
        for key, value in self.request_headers:
            if key == name:
                return _escape(value)
        return default

    def response_header(self, name: bytes, default: Any = "-") -> Any:
        for key, value in self.response_headers or ():
            if isinstance(key, bytes) and key.lower() == name:
                return _escape(value) if isinstance(value, bytes) else str(value)
        return default

    def fields(self) -> dict[str, Any]:
        """The structured fields (for JSON)."""
        fields: dict[str, Any] = {
            "client": self.peer,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "http_version": self.http_version,
            "status": self.status,
            "bytes": self.nbytes,
            "duration_ms": round(self.duration * 1000, 3),
            "user_agent": self.request_header(b"user-agent", None),
        }
        request_id = self.request_header(b"x-request-id", None)
        if request_id is not None:
            fields["request_id"] = request_id
        if self.websocket:
            fields["type"] = "websocket"
            fields["bytes_in"] = self.bytes_in
        return fields


class AccessRecord(logging.LogRecord):
    """A ``heron.access`` record. The message is the entry, rendered only when
    emitted; ``args`` is uvicorn's ``(client_addr, method, path_with_query,
    http_version, status_code)`` tuple, which uvicorn's own AccessFormatter
    unpacks (so a log config that names it works unchanged)."""

    entry: AccessEntry

    def getMessage(self) -> str:
        return str(self.msg)


class AccessLog:
    """Turns finished requests into ``heron.access`` records."""

    def __init__(self, fmt: str = "default", json_records: bool = False, logger: logging.Logger | None = None) -> None:
        self.logger = logger or access_logger
        self.format = fmt
        if fmt == "default":
            self.render_http: Callable[[AccessEntry], str] = _default_http
            self.render_ws: Callable[[AccessEntry], str] = _default_websocket
        elif fmt == "json":
            # with --log-format json the record itself is JSON: keep the message a plain line
            self.render_http = _default_http if json_records else _json_line
            self.render_ws = _default_websocket if json_records else _json_line
        else:
            render = compile_format(PRESETS.get(fmt, fmt))
            self.render_http = self.render_ws = render
        #: the format reads response headers: the transport keeps them for it
        self.wants_response_headers = "}o)s" in PRESETS.get(fmt, fmt)

    def http(
        self,
        peer: str,
        request: RequestLine,
        status: int,
        nbytes: int,
        duration: float,
        response_headers: Iterable[tuple[bytes, bytes]] | None,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        method = request.method.decode("ascii")
        entry = AccessEntry(
            self.render_http,
            peer,
            method,
            request.target.decode("ascii"),
            request.http_version,
            request.headers,
            status,
            nbytes,
            duration,
            response_headers,
        )
        self._emit(entry)

    def websocket(
        self,
        peer: str,
        request: RequestLine | None,
        target: str,
        code: int,
        bytes_in: int,
        bytes_out: int,
        duration: float,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        entry = AccessEntry(
            self.render_ws,
            peer,
            "GET",
            target,
            request.http_version if request is not None else "1.1",
            request.headers if request is not None else (),
            code,
            bytes_out,
            duration,
            None,
            websocket=True,
            bytes_in=bytes_in,
        )
        self._emit(entry)

    def _emit(self, entry: AccessEntry) -> None:
        logger = self.logger
        if logging.getLogRecordFactory() is logging.LogRecord:
            args = (entry.peer, entry.method if not entry.websocket else "WEBSOCKET", entry.target,
                    entry.http_version, entry.status)  # fmt: skip
            record: logging.LogRecord = AccessRecord(logger.name, logging.INFO, "heron.access", 0, entry, args, None)
        else:  # an app's own record factory: use it (uvicorn's AccessFormatter can't unpack these)
            record = logger.makeRecord(logger.name, logging.INFO, "heron.access", 0, entry, (), None)
        d = record.__dict__
        d["entry"] = entry
        d["client"] = d["client_addr"] = entry.peer
        d["method"] = entry.method
        d["status"] = d["status_code"] = entry.status
        d["bytes"] = entry.nbytes
        d["duration_ms"] = entry.duration * 1000.0
        d["http_version"] = entry.http_version
        d["request_line"] = entry.request_line
        d["path"] = entry.path
        d["query"] = entry.query
        if entry.websocket:
            d["bytes_in"] = entry.bytes_in
        logger.handle(record)


class RequestObserver:
    """What happens when a request or WebSocket session ends: the access log,
    metrics, or both. ``ServerContext.observer`` is None when neither is on, so
    the transports do no per-request work for them at all."""

    __slots__ = ("access", "metrics", "clock", "wants_response_headers")

    def __init__(self, access: AccessLog | None, metrics: MetricsSink | None, clock: Callable[[], float]) -> None:
        self.access = access
        self.metrics = metrics
        #: what request start times were read from (time.perf_counter: microseconds)
        self.clock = clock
        self.wants_response_headers = access is not None and access.wants_response_headers

    def http(
        self,
        peer: str,
        request: RequestLine,
        status: int,
        nbytes: int,
        started: float,
        response_headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        duration = self.clock() - started
        if self.metrics is not None:
            self.metrics.request(request.method, status, duration, nbytes)
        if self.access is not None:
            self.access.http(peer, request, status, nbytes, duration, response_headers)

    def websocket(
        self,
        peer: str,
        request: RequestLine | None,
        target: str,
        code: int,
        bytes_in: int,
        bytes_out: int,
        started: float,
    ) -> None:
        duration = self.clock() - started
        if self.metrics is not None:
            self.metrics.websocket_closed(code, bytes_in)
        if self.access is not None:
            self.access.websocket(peer, request, target, code, bytes_in, bytes_out, duration)


def build_observer(
    access_log_format: str | None, json_records: bool, clock: Callable[[], float], metrics: MetricsSink | None
) -> RequestObserver | None:
    """The observer for a server: an access log in ``access_log_format`` (None: no
    access log; ``json_records``: --log-format json), metrics, both, or None."""
    access = AccessLog(access_log_format, json_records) if access_log_format is not None else None
    if access is None and metrics is None:
        return None
    return RequestObserver(access, metrics, clock)
