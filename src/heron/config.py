"""heron's settings: one frozen dataclass, each field defined once.

Every field carries its own metadata: help text, section, command-line flags,
the environment variables that set it (``HERON_<FIELD>``, and uvicorn's
``UVICORN_<PARAM>`` for the options uvicorn has), whether a config file may
set it, and a notice for values heron accepts but does not act on (yet). The
command line (:mod:`heron.cli`), the environment and config-file loaders
(:mod:`heron.sources`) and the reference docs (``python -m heron.config
--markdown`` writes ``docs/settings.md``) are all derived from these fields,
so a setting is never listed twice. :meth:`Config.validate` is the one place
values are checked.
"""

from __future__ import annotations

import dataclasses
import functools
import ssl
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from .accesslog import compile_format
from .errors import SettingError
from .protocol.http1 import is_field_name, is_field_value
from .tls import check_settings as check_tls_settings

__all__ = ["Config", "SettingError", "settings", "Listener", "parse_bind"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
ACCESS_LOG_PRESETS = ("default", "common", "combined", "json")
HTTP_IMPLEMENTATIONS = ("auto", "h11", "httptools", "zttp")
WS_IMPLEMENTATIONS = ("auto", "none", "websockets", "websockets-sansio", "wsproto")
LOOPS = ("auto", "asyncio", "uvloop", "none")

#: Sections, in the order the docs and ``--help`` show them.
SECTIONS = {
    "application": "Application",
    "binding": "Binding",
    "server": "Server process",
    "limits": "Limits",
    "timeouts": "Timeouts",
    "http": "HTTP",
    "websocket": "WebSocket",
    "tls": "TLS",
    "logging": "Logging",
    "metrics": "Metrics",
    "settings": "Settings sources",
    "development": "Development",
}


class Bounds(NamedTuple):
    """The range a numeric setting must be in, and how an error message says it."""

    low: float | None
    high: float | None
    text: str
    #: ``low`` itself is not allowed (a number of seconds > 0)
    above_low: bool = False

    def hold(self, value: float) -> bool:
        low, high = self.low, self.high
        if low is not None and (value <= low if self.above_low else value < low):
            return False
        return high is None or value <= high


_POSITIVE = Bounds(1, None, "a positive integer")
_NOT_NEGATIVE = Bounds(0, None, "an integer >= 0")
_SECONDS = Bounds(0, None, "a number of seconds >= 0")
_SECONDS_OR_NONE = Bounds(0, None, "a number of seconds >= 0, or none")
_SECONDS_ABOVE_0 = Bounds(0, None, "a number of seconds > 0", above_low=True)


def _s(
    default: Any,
    help: str,
    *,
    section: str = "server",
    flags: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    negatable: bool = False,
    metavar: str | None = None,
    cli: bool = True,
    file: bool = True,
    uvicorn: bool = False,
    env: tuple[str, ...] = (),
    notice: Callable[[Any], str | None] | None = None,
    default_factory: Callable[[], Any] | None = None,
    bounds: Bounds | None = None,
    clearable: bool = True,
) -> Any:
    """One setting. ``uvicorn``: also read ``UVICORN_<FIELD>`` (the field is a
    uvicorn option of the same name); ``env``: further variables read last
    (e.g. ``WEB_CONCURRENCY``); ``notice``: given a non-default value, the
    one-line warning heron logs at start-up (for accepted-but-ignored values);
    ``bounds``: the range a number must be in (checked unless it is None);
    ``clearable``: an optional setting whose None means "the default", not
    "off", takes no ``none`` from text (it would read as "off")."""
    metadata = {
        "help": help,
        "section": section,
        "flags": flags,
        "choices": choices,
        "negatable": negatable,
        "metavar": metavar,
        "cli": cli,
        "file": file,
        "uvicorn": uvicorn,
        "env": env,
        "notice": notice,
        "bounds": bounds,
        "clearable": clearable,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _http_notice(value: str) -> str | None:
    if value == "auto":
        return None
    return f"{value!r} has no effect: heron always uses its own strict HTTP/1.1 implementation"


def _ws_notice(value: str) -> str | None:
    if value in ("auto", "none"):
        return None
    return f"{value!r} has no effect: heron always uses its own WebSocket implementation (use 'none' to turn WebSocket off)"


def _loop_notice(value: str) -> str | None:
    if value == "none":
        return "'none' is served as 'asyncio': heron always creates its own event loop"
    return None


@dataclass(frozen=True)
class Config:
    """All settings. Build it with keyword arguments; call :meth:`validate`."""

    # --- application -------------------------------------------------------
    app: str | Any | None = _s(  # noqa: RUF009  # (_s declares the field: default, help, bounds)
        None,
        "The ASGI app as 'module:attribute' (default: heron's built-in demo page).",
        section="application",
        cli=False,
        uvicorn=True,
    )
    factory: bool = _s(
        False,
        "Treat APP as a factory: call it with no arguments to get the app.",
        section="application",
        uvicorn=True,
    )
    app_dir: str = _s(
        "",
        "Look for APP in this directory (put first on sys.path).",
        section="application",
        metavar="DIR",
        uvicorn=True,
    )
    interface: str = _s(
        "auto",
        "Application interface: asgi3, asgi2, wsgi, or auto (async: ASGI 3; (environ, start_response): WSGI; "
        "else ASGI 2).",
        section="application",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
        uvicorn=True,
    )
    wsgi_threads: int = _s(
        10,
        "Threads that run a WSGI app's requests (each request holds one until its response is sent).",
        section="application",
        bounds=_POSITIVE,
    )
    lifespan: str = _s(
        "auto",
        "Lifespan protocol: on (required), off, or auto (used if the app supports it).",
        section="application",
        choices=("auto", "on", "off"),
        uvicorn=True,
    )
    root_path: str = _s(
        "",
        "The ASGI root_path, for an app mounted below a path prefix.",
        section="application",
        metavar="PATH",
        uvicorn=True,
    )

    # --- binding -----------------------------------------------------------
    host: str = _s("127.0.0.1", "Bind to this address (an IPv6 literal selects IPv6).", section="binding", uvicorn=True)
    port: int = _s(
        8000,
        "Bind to this port; 0 picks a free one.",
        section="binding",
        uvicorn=True,
        bounds=Bounds(0, 65535, "an integer between 0 and 65535"),
    )
    uds: str | None = _s(None, "Bind to this UNIX domain socket path.", section="binding", metavar="PATH", uvicorn=True)
    fd: int | None = _s(
        None,
        "Serve an already-bound listening socket from this file descriptor.",
        section="binding",
        uvicorn=True,
        bounds=Bounds(0, None, "a file descriptor number (>= 0)"),
    )
    bind: tuple[str, ...] = _s(
        (),
        "Listen on ADDRESS: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N (repeatable; replaces --host/--port/--uds/--fd).",
        section="binding",
        flags=("-b", "--bind"),
        metavar="ADDRESS",
    )
    backlog: int = _s(2048, "Maximum number of pending connections.", section="binding", uvicorn=True, bounds=_POSITIVE)

    # --- server process -----------------------------------------------------
    workers: int | None = _s(
        None,
        "Number of worker processes under one supervisor (default: $WEB_CONCURRENCY or 1); "
        "more than 1 needs APP as an import string.",
        flags=("-w", "--workers"),
        uvicorn=True,
        env=("WEB_CONCURRENCY",),
        bounds=_POSITIVE,
    )
    loop: str = _s(
        "auto",
        "Event loop: uvloop, asyncio, auto (uvloop when installed), or a 'module:callable' loop factory.",
        metavar="auto|asyncio|uvloop|MODULE:FACTORY",
        uvicorn=True,
        notice=_loop_notice,
    )
    http: str = _s(
        "auto",
        "HTTP implementation (uvicorn's h11/httptools are accepted and have no effect: heron has its own).",
        section="http",
        metavar="auto|h11|httptools",
        uvicorn=True,
        notice=_http_notice,
    )
    reset_contextvars: bool = _s(
        False,
        "Run each request and WebSocket session in an empty contextvars.Context, not a copy of the server's.",
        uvicorn=True,
    )
    limit_max_requests: int | None = _s(
        None,
        "Shut down gracefully after this many requests (a worker is then replaced by its supervisor).",
        uvicorn=True,
        bounds=_POSITIVE,
    )
    limit_max_requests_jitter: int = _s(
        0,
        "Add a random 0..N requests to --limit-max-requests, per process, so workers don't restart together.",
        uvicorn=True,
        bounds=_NOT_NEGATIVE,
    )
    timeout_worker_healthcheck: float = _s(
        5.0,
        "Seconds a worker's event loop has to answer the supervisor's health check before it is killed and replaced.",
        section="timeouts",
        uvicorn=True,
        bounds=_SECONDS_ABOVE_0,
    )

    # --- limits ---------------------------------------------------------------
    limit_concurrency: int | None = _s(
        None,
        "Answer 503 to new requests while this many connections or tasks are active.",
        section="limits",
        uvicorn=True,
        bounds=_POSITIVE,
    )
    limit_request_body: int | None = _s(
        None,
        "Maximum request body size in bytes (HTTP/1.1 and HTTP/2): a larger Content-Length gets 413 before the app "
        "runs; a body that grows past it gets 413 (or a reset, once the response started); none: no limit.",
        section="limits",
        metavar="BYTES",
        bounds=_POSITIVE,
    )
    limit_request_line: int = _s(
        8190, "Maximum request line size in bytes (414 beyond).", section="limits", bounds=_POSITIVE
    )
    limit_request_fields: int = _s(
        100, "Maximum number of request header fields (431 beyond).", section="limits", bounds=_POSITIVE
    )
    limit_request_head_size: int = _s(
        65536,
        "Maximum size of the request line and header fields together, in bytes (431 beyond).",
        section="limits",
        bounds=_POSITIVE,
    )
    h11_max_incomplete_event_size: int | None = _s(
        None,
        "h11's buffer limit; has no effect (heron's parser is bounded by --limit-request-head-size).",
        section="limits",
        uvicorn=True,
        notice=lambda value: "has no effect: heron's parser is bounded by --limit-request-head-size",
    )

    # --- timeouts ----------------------------------------------------------
    timeout_keep_alive: float = _s(
        5.0,
        "Close idle keep-alive connections after this many seconds.",
        section="timeouts",
        uvicorn=True,
        bounds=_SECONDS,
    )
    timeout_request_header: float = _s(
        30.0,
        "A client must send a complete request head within this many seconds (slowloris guard); 0 disables.",
        section="timeouts",
        bounds=_SECONDS,
    )
    timeout_request_body: float = _s(
        60.0,
        "Answer 408 (HTTP/2: on the stream) when the app waits for request body bytes and none arrive for this "
        "many seconds; 0 disables.",
        section="timeouts",
        bounds=_SECONDS,
    )
    timeout_write: float = _s(
        60.0,
        "Close a connection whose client reads nothing of a pending response for this many seconds; 0 disables.",
        section="timeouts",
        bounds=_SECONDS,
    )
    timeout_graceful_shutdown: float | None = _s(
        30.0,
        "On shutdown, wait this many seconds for in-flight requests before cancelling them (none: wait forever).",
        section="timeouts",
        uvicorn=True,
        bounds=_SECONDS_OR_NONE,
    )
    timeout_lifespan: float = _s(
        60.0,
        "Maximum seconds for the app's lifespan startup and shutdown.",
        section="timeouts",
        bounds=_SECONDS,
    )

    # --- HTTP --------------------------------------------------------------
    server_header: bool = _s(True, "Send a 'Server: heron' header.", section="http", negatable=True, uvicorn=True)
    date_header: bool = _s(True, "Send a 'Date' header.", section="http", negatable=True, uvicorn=True)
    headers: tuple[tuple[str, str], ...] = _s(
        (),
        "Add a default response header 'Name: Value' (repeatable).",
        section="http",
        flags=("--header",),
        metavar="NAME:VALUE",
        uvicorn=True,
    )
    proxy_headers: bool = _s(
        True,
        "Take the client address and scheme from X-Forwarded-For/-Proto when the peer is in --forwarded-allow-ips.",
        section="http",
        negatable=True,
        uvicorn=True,
    )
    forwarded_allow_ips: str | None = _s(
        None,
        "Comma-separated IPs, networks (CIDR) or literals trusted to send proxy headers; '*' trusts all "
        "(default: $FORWARDED_ALLOW_IPS or 127.0.0.1,::1).",
        section="http",
        metavar="IPS",
        uvicorn=True,
        env=("FORWARDED_ALLOW_IPS",),
    )

    # --- HTTP/2 -------------------------------------------------------------
    http2: bool = _s(
        True,
        "Serve HTTP/2: h2c with prior knowledge and 'Upgrade: h2c' on the HTTP/1.1 port (and ALPN h2 with TLS).",
        section="http",
        negatable=True,
        uvicorn=True,
    )
    http2_max_concurrent_streams: int = _s(
        100,
        "HTTP/2: streams a client may have open at once (advertised; more are refused).",
        section="http",
        bounds=Bounds(1, 2**31 - 1, "an integer between 1 and 2**31-1"),
    )
    http2_max_header_list_size: int = _s(
        65536,
        "HTTP/2: maximum decoded size of a request's header list, in bytes (also bounds CONTINUATION frames).",
        section="http",
        bounds=Bounds(1024, None, "an integer >= 1024"),
    )
    http2_initial_window_size: int = _s(
        262144,
        "HTTP/2: request body bytes a client may send ahead on a stream (4 times this per connection).",
        section="http",
        bounds=Bounds(65535, (2**31 - 1) // 4, "an integer between 65535 and 536870911"),
    )
    http2_max_resets: int = _s(
        200,
        "HTTP/2: stream resets (by the client, or caused by it) allowed per connection in 10 seconds "
        "before GOAWAY ENHANCE_YOUR_CALM (rapid reset guard); 0 disables.",
        section="http",
        bounds=_NOT_NEGATIVE,
    )
    http2_max_empty_frames: int = _s(
        1000,
        "HTTP/2: frames that carry nothing (empty DATA, PRIORITY, unknown types, unsolicited ACKs) allowed per "
        "connection in 10 seconds before GOAWAY ENHANCE_YOUR_CALM; 0 disables.",
        section="http",
        bounds=_NOT_NEGATIVE,
    )
    http2_max_control_frames: int = _s(
        10000,
        "HTTP/2: replies (PING/SETTINGS ACKs, resets) queued for a client that doesn't read them before "
        "GOAWAY ENHANCE_YOUR_CALM (flood guard).",
        section="http",
        bounds=_POSITIVE,
    )

    # --- WebSocket ---------------------------------------------------------
    ws: str = _s(
        "auto",
        "WebSocket: auto (on) or none (upgrade requests are served as plain HTTP); "
        "uvicorn's implementation names are accepted and mean auto.",
        section="websocket",
        metavar="auto|none|websockets|websockets-sansio|wsproto",
        uvicorn=True,
        notice=_ws_notice,
    )
    ws_max_size: int = _s(
        16 * 1024 * 1024,
        "Maximum WebSocket message size in bytes (close 1009 beyond).",
        section="websocket",
        uvicorn=True,
        bounds=_POSITIVE,
    )
    ws_max_queue: int = _s(
        32,
        "Maximum received WebSocket messages waiting for the app before reading pauses.",
        section="websocket",
        uvicorn=True,
        bounds=_POSITIVE,
    )
    ws_ping_interval: float | None = _s(
        20.0,
        "Send a WebSocket ping after this many idle seconds; 0 or none disables.",
        section="websocket",
        uvicorn=True,
        bounds=_SECONDS_OR_NONE,
    )
    ws_ping_timeout: float | None = _s(
        20.0,
        "Close with 1011 if no frame arrives this many seconds after a ping; 0 or none disables.",
        section="websocket",
        uvicorn=True,
        bounds=_SECONDS_OR_NONE,
    )
    ws_per_message_deflate: bool = _s(
        True,
        "Offer permessage-deflate compression (takes a value: true/false).",
        section="websocket",
        metavar="BOOL",
        uvicorn=True,
    )

    # --- TLS (uvicorn's names; checked by heron.tls.check_settings) ----------
    ssl_keyfile: str | None = _s(
        None,
        "TLS private key file (PEM); with --ssl-certfile it turns on HTTPS.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_certfile: str | None = _s(
        None,
        "TLS certificate file (PEM): the server certificate, then any intermediates.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_keyfile_password: str | None = _s(
        None, "Password of an encrypted --ssl-keyfile.", section="tls", metavar="PASSWORD", uvicorn=True
    )
    ssl_version: int = _s(
        int(ssl.PROTOCOL_TLS_SERVER),
        "SSL protocol constant: 17 (PROTOCOL_TLS_SERVER) or 2 (PROTOCOL_TLS) for TLS 1.2-1.3, 5 for TLS 1.2 only.",
        section="tls",
        uvicorn=True,
    )
    ssl_cert_reqs: int = _s(
        int(ssl.CERT_NONE),
        "Client certificates: 0 not asked, 1 optional, 2 required (mutual TLS; needs --ssl-ca-certs).",
        section="tls",
        uvicorn=True,
    )
    ssl_ca_certs: str | None = _s(
        None,
        "CA certificates (PEM) that client certificates are verified against.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_ciphers: str | None = _s(
        None, "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's).", section="tls", metavar="CIPHERS", uvicorn=True
    )

    # --- logging -----------------------------------------------------------
    log_level: str | int | None = _s(
        None,
        "Log level (default info; with --log-config, only applied when given); trace also logs every ASGI message.",
        section="logging",
        choices=LOG_LEVELS,
        uvicorn=True,
        clearable=False,  # (none would read as "log nothing"; unset means info)
    )
    access_log: bool = _s(
        True, "Log one line per request on heron.access.", section="logging", negatable=True, uvicorn=True
    )
    access_log_format: str = _s(
        "default",
        "Access line: a preset (default, common, combined, json) or a format of gunicorn-style atoms "
        "such as '%(h)s %(t)s \"%(r)s\" %(s)s %(b)s %(D)s %({user-agent}i)s'.",
        section="logging",
        metavar="FORMAT",
    )
    log_format: str = _s(
        "text",
        "Log record layout: text, or json (one JSON object per line, with structured access fields).",
        section="logging",
        choices=("text", "json"),
    )
    log_config: str | dict[str, Any] | Any | None = _s(  # noqa: RUF009  # (as above)
        None,
        "Configure logging from this file instead: dictConfig .json or .yaml/.yml, or fileConfig .ini "
        "(existing loggers are never disabled).",
        section="logging",
        metavar="PATH",
        uvicorn=True,
    )
    use_colors: bool | None = _s(
        None,
        "Colour the log level (default: only when the output is a terminal).",
        section="logging",
        negatable=True,
        uvicorn=True,
    )
    configure_logging: bool = _s(
        True,
        "Set up heron's log handlers; --no-configure-logging leaves logging entirely to the app.",
        section="logging",
        negatable=True,
    )

    # --- metrics -------------------------------------------------------------
    metrics_bind: str | None = _s(
        None,
        "Serve Prometheus metrics at http://ADDRESS/metrics (HOST:PORT, [IPv6]:PORT or unix:PATH); off by default.",
        section="metrics",
        metavar="ADDRESS",
    )

    # --- settings sources ----------------------------------------------------
    config: str | None = _s(
        None,
        "Read settings from this TOML file (default: [tool.heron] of ./pyproject.toml, if any).",
        section="settings",
        flags=("-c", "--config"),
        metavar="PATH",
        file=False,
    )
    env_file: str | None = _s(
        None,
        "Load environment variables from this dotenv file before reading settings (existing variables win).",
        section="settings",
        metavar="PATH",
        uvicorn=True,
    )

    # --- development -----------------------------------------------------------
    reload: bool = _s(
        False,
        "Restart the worker when watched files change (development; needs APP as an import string).",
        section="development",
        uvicorn=True,
    )
    reload_dirs: tuple[str, ...] = _s(
        (),
        "Directory to watch for --reload (repeatable; default: the working directory).",
        section="development",
        flags=("--reload-dir",),
        metavar="DIR",
        uvicorn=True,
    )
    reload_includes: tuple[str, ...] = _s(
        (),
        "Glob of file names to watch for --reload, added to '*.py' (repeatable).",
        section="development",
        flags=("--reload-include",),
        metavar="GLOB",
        uvicorn=True,
    )
    reload_excludes: tuple[str, ...] = _s(
        (),
        "Glob of file or directory names --reload ignores, added to '.*', '*.py[cod]', '.sw.*', '~*' (repeatable).",
        section="development",
        flags=("--reload-exclude",),
        metavar="GLOB",
        uvicorn=True,
    )
    reload_delay: float = _s(
        0.25,
        "Seconds between two scans of the watched files for --reload.",
        section="development",
        uvicorn=True,
        bounds=_SECONDS_ABOVE_0,
    )

    # -----------------------------------------------------------------------

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Check every value; raise :class:`SettingError` naming the first bad one."""
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            choices = f.metadata.get("choices")
            if choices and isinstance(value, str) and value not in choices:
                _fail(f.name, value, "one of " + ", ".join(choices))
            bounds = f.metadata.get("bounds")
            if bounds is not None and value is not None and not bounds.hold(value):
                _fail(f.name, value, bounds.text)
        if isinstance(self.log_level, str) and self.log_level not in LOG_LEVELS:
            _fail("log_level", self.log_level, "one of " + ", ".join(LOG_LEVELS))
        for name in ("http", "ws", "loop"):
            value = getattr(self, name)
            known = {"http": HTTP_IMPLEMENTATIONS, "ws": WS_IMPLEMENTATIONS, "loop": LOOPS}[name]
            if value not in known and ":" not in value:
                _fail(name, value, "one of " + ", ".join(known) + ", or a 'module:attribute' import string")
        if self.access_log_format not in ACCESS_LOG_PRESETS:
            try:
                compile_format(self.access_log_format)
            except ValueError as exc:
                _fail("access_log_format", self.access_log_format, str(exc))
        for text in self.bind:
            parse_bind(text)
        if self.bind:
            defaults = Config()
            clash = [name for name in ("host", "port", "uds", "fd") if getattr(self, name) != getattr(defaults, name)]
            if clash:
                _fail("bind", ",".join(self.bind), f"--bind alone: it can't be combined with --{clash[0]}")
        if self.metrics_bind is not None:
            listener = parse_bind(self.metrics_bind, "metrics_bind")
            if listener.kind == "fd":
                _fail("metrics_bind", self.metrics_bind, "HOST:PORT, [IPv6]:PORT or unix:PATH")
        for header in self.headers:
            ok = isinstance(header, (tuple, list)) and len(header) == 2
            if ok:
                name, value = header
                ok = isinstance(name, str) and isinstance(value, str)
            if ok:
                raw_name, raw_value = name.encode("latin-1", "replace"), value.encode("latin-1", "replace")
                ok = is_field_name(raw_name) and is_field_value(raw_value)
            _require(ok, "headers", header, "'Name:Value' with a token name and no control characters")
        check_tls_settings(self)
        return self

    @property
    def listeners(self) -> list[Listener]:
        """Where to listen: the ``bind`` list, or ``host``/``port``/``uds``/``fd``."""
        if self.bind:
            return [parse_bind(text) for text in self.bind]
        if self.fd is not None:
            return [Listener("fd", fd=self.fd)]
        if self.uds:
            return [Listener("unix", path=self.uds)]
        return [Listener("tcp", host=self.host, port=self.port)]

    def notices(self) -> list[tuple[str, str]]:
        """(setting, message) for each value heron accepts but does not act on."""
        result = []
        for f in dataclasses.fields(self):
            notice = f.metadata.get("notice")
            if notice is None:
                continue
            value = getattr(self, f.name)
            if value == _default(f):
                continue
            message = notice(value)
            if message:
                result.append((f.name, message))
        return result


class Listener(NamedTuple):
    """One address to listen on: kind is ``tcp``, ``unix`` or ``fd``."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str, setting: str = "bind") -> Listener:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (port 8000), ``unix:PATH`` or ``fd://N``."""
    allowed = "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
    if not isinstance(text, str) or not text:
        _fail(setting, text, allowed)
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            _fail(setting, text, allowed)
        return Listener("unix", path=path)
    if text.startswith("fd://"):
        number = text[5:]
        if not number.isdigit():
            _fail(setting, text, allowed)
        return Listener("fd", fd=int(number))
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or ":" not in host or (rest and not rest.startswith(":")):
            _fail(setting, text, allowed)
        port_text = rest[1:] if rest else "8000"
    elif text.count(":") > 1:
        _fail(setting, text, allowed + " (put an IPv6 address in brackets)")
    else:
        host, _, port_text = text.partition(":")
        port_text = port_text or "8000"
        if not host:
            _fail(setting, text, allowed)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        _fail(setting, text, allowed + " with a port between 0 and 65535")
    return Listener("tcp", host=host, port=int(port_text))


def _fail(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise SettingError(f"{name}: {value!r} is not valid; expected {allowed}", name, value, allowed)


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        _fail(name, value, allowed)


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


class Kind(NamedTuple):
    """A setting's value type: ``base`` (bool, int, float, str, or Any),
    whether ``None`` is allowed, and whether it is a list (repeatable)."""

    base: Any
    optional: bool
    multiple: bool


def field_kind(f: dataclasses.Field[Any]) -> Kind:
    hint = _hints()[f.name]
    args = typing.get_args(hint)
    union = typing.get_origin(hint) in (Union, types.UnionType)  # Optional[X] or X | None
    optional = union and type(None) in args
    rest = [a for a in args if a is not type(None)] if union else [hint]
    if len(rest) == 1:
        hint = rest[0]
    if typing.get_origin(hint) is tuple:
        return Kind(str, optional, True)
    if hint in (bool, int, float, str):
        return Kind(hint, optional, False)
    if str in rest:  # str-or-something (log_level, log_config, app): read from text as str
        return Kind(str, optional, False)
    return Kind(Any, optional, False)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def describe(f: dataclasses.Field[Any]) -> str:
    """What a setting accepts, for error messages."""
    kind = field_kind(f)
    choices = f.metadata.get("choices")
    if f.name == "headers":
        text = "'Name:Value' items"
    elif choices:
        text = "one of " + ", ".join(choices)
    elif kind.multiple:
        text = "a list of strings"
    else:
        text = _TYPE_NAMES.get(kind.base, "a value")
    return text + (", or none" if kind.optional and f.metadata.get("clearable", True) else "")


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Type-check values given through the Python API (the loaders convert text first)."""
    f = _fields()[name]
    kind = field_kind(f)
    if value is None:
        if kind.optional or kind.base is Any:
            return
        _fail(name, value, describe(f))
    if kind.multiple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            _fail(name, value, describe(f))
        return
    base = kind.base
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is str and name == "log_level":
        ok = isinstance(value, (str, int)) and not isinstance(value, bool)
    elif base is str and name in ("app", "log_config"):
        ok = True  # an object (app) or a dict/ConfigParser (log_config) also do
    elif base is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        _fail(name, value, describe(f))


@functools.cache
def _fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(Config)}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def settings() -> list[dataclasses.Field[Any]]:
    """The settings registry: every Config field, in declaration order."""
    return list(dataclasses.fields(Config))


def env_name(field_name: str) -> str:
    return "HERON_" + field_name.upper()


def env_names(f: dataclasses.Field[Any]) -> list[str]:
    """The environment variables that set ``f``, first one wins."""
    names = [env_name(f.name)]
    if f.metadata.get("uvicorn"):
        names.append("UVICORN_" + f.name.upper())
    names.extend(f.metadata.get("env", ()))
    return names


def cli_flags(f: dataclasses.Field[Any]) -> tuple[str, ...]:
    return tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise SettingError(f"headers: {text!r} is not valid; expected 'Name:Value'", "headers", text, "'Name:Value'")
    return name.strip(), value.strip()
