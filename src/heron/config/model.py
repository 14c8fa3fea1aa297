"""The :class:`Config` dataclass: every setting of heron, each field declared
once with :func:`~heron.config.fields.setting` (the registry that lists them
for the command line, the loaders and the docs is :mod:`heron.config.registry`).
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from typing import Any

from ..tls import check_settings as check_tls_settings
from .checks import (
    check_access_log_format,
    check_field,
    check_forwarded_allow_ips,
    check_header,
    check_implementation,
    fail,
    kinds_of,
)
from .fields import (
    HTTP_IMPLEMENTATIONS,
    LOG_LEVELS,
    LOOPS,
    NOT_NEGATIVE,
    POSITIVE,
    SECONDS,
    SECONDS_ABOVE_0,
    SECONDS_OR_NONE,
    WS_IMPLEMENTATIONS,
    Bounds,
    default_value,
    http_notice,
    loop_notice,
    setting,
    ws_notice,
)
from .listeners import Listener, check_metrics_bind, check_quic_bind, parse_bind, parse_quic_bind


@dataclass(frozen=True)
class Config:
    """All settings. Build it with keyword arguments; call :meth:`validate`."""

    # --- application -------------------------------------------------------
    app: str | Any | None = setting(  # noqa: RUF009  # (setting() declares the field: default, help, bounds)
        None,
        "The ASGI app as 'module:attribute' (default: heron's built-in demo page).",
        section="application",
        cli=False,
        uvicorn=True,
    )
    factory: bool = setting(
        False,
        "Treat APP as a factory: call it with no arguments to get the app.",
        section="application",
        uvicorn=True,
    )
    app_dir: str = setting(
        "",
        "Look for APP in this directory (put first on sys.path).",
        section="application",
        metavar="DIR",
        uvicorn=True,
    )
    interface: str = setting(
        "auto",
        "Application interface: asgi3, asgi2, wsgi, or auto (async: ASGI 3; (environ, start_response): WSGI; "
        "else ASGI 2).",
        section="application",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
        uvicorn=True,
    )
    wsgi_threads: int = setting(
        10,
        "Threads that run a WSGI app's requests (each request holds one until its response is sent).",
        section="application",
        bounds=POSITIVE,
    )
    lifespan: str = setting(
        "auto",
        "Lifespan protocol: on (required), off, or auto (used if the app supports it).",
        section="application",
        choices=("auto", "on", "off"),
        uvicorn=True,
    )
    root_path: str = setting(
        "",
        "The ASGI root_path, for an app mounted below a path prefix.",
        section="application",
        metavar="PATH",
        uvicorn=True,
    )

    # --- binding -----------------------------------------------------------
    host: str = setting(
        "127.0.0.1", "Bind to this address (an IPv6 literal selects IPv6).", section="binding", uvicorn=True
    )
    port: int = setting(
        8000,
        "Bind to this port; 0 picks a free one.",
        section="binding",
        uvicorn=True,
        bounds=Bounds(0, 65535, "an integer between 0 and 65535"),
    )
    uds: str | None = setting(
        None, "Bind to this UNIX domain socket path.", section="binding", metavar="PATH", uvicorn=True
    )
    fd: int | None = setting(
        None,
        "Serve an already-bound listening socket from this file descriptor.",
        section="binding",
        uvicorn=True,
        bounds=Bounds(0, None, "a file descriptor number (>= 0)"),
    )
    bind: tuple[str, ...] = setting(
        (),
        "Listen on ADDRESS: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N (repeatable; replaces --host/--port/--uds/--fd).",
        section="binding",
        flags=("-b", "--bind"),
        metavar="ADDRESS",
    )
    backlog: int = setting(
        2048, "Maximum number of pending connections.", section="binding", uvicorn=True, bounds=POSITIVE
    )
    reuse_port: bool = setting(
        False,
        "With --workers: each worker listens on its own SO_REUSEPORT socket (TCP addresses; Linux, BSD), so the "
        "kernel spreads new connections evenly between workers.",
        section="binding",
    )

    # --- server process -----------------------------------------------------
    workers: int | None = setting(
        None,
        "Number of worker processes under one supervisor (default: $WEB_CONCURRENCY or 1); "
        "more than 1 needs APP as an import string.",
        flags=("-w", "--workers"),
        uvicorn=True,
        env=("WEB_CONCURRENCY",),
        bounds=POSITIVE,
    )
    loop: str = setting(
        "auto",
        "Event loop: uvloop, asyncio, auto (uvloop when installed), or a 'module:callable' loop factory.",
        metavar="auto|asyncio|uvloop|MODULE:FACTORY",
        uvicorn=True,
        notice=loop_notice,
    )
    http: str = setting(
        "auto",
        "HTTP implementation (uvicorn's h11/httptools are accepted and have no effect: heron has its own).",
        section="http",
        metavar="auto|h11|httptools",
        uvicorn=True,
        notice=http_notice,
    )
    reset_contextvars: bool = setting(
        False,
        "Run each request and WebSocket session in an empty contextvars.Context, not a copy of the server's.",
        uvicorn=True,
    )
    limit_max_requests: int | None = setting(
        None,
        "Shut down gracefully after this many requests (a worker is then replaced by its supervisor).",
        uvicorn=True,
        bounds=POSITIVE,
    )
    limit_max_requests_jitter: int = setting(
        0,
        "Add a random 0..N requests to --limit-max-requests, per process, so workers don't restart together.",
        uvicorn=True,
        bounds=NOT_NEGATIVE,
    )
    workers_max_rss: int | None = setting(
        None,
        "Replace a worker whose resident memory is over this many MiB (checked every second; Linux): a new "
        "worker starts, and the old one stops gracefully once the new one is ready.",
        metavar="MIB",
        bounds=POSITIVE,
    )
    workers_lifetime: float | None = setting(
        None,
        "Replace each worker after this many seconds, plus a random 0-10% so workers don't restart together: "
        "a new worker starts, and the old one stops gracefully once the new one is ready.",
        metavar="SECONDS",
        bounds=SECONDS_ABOVE_0,
    )
    timeout_worker_healthcheck: float = setting(
        5.0,
        "Seconds a worker's event loop has to answer the supervisor's health check before it is killed and replaced.",
        section="timeouts",
        uvicorn=True,
        bounds=SECONDS_ABOVE_0,
    )

    # --- limits ---------------------------------------------------------------
    limit_concurrency: int | None = setting(
        None,
        "Answer 503 to new requests while this many connections or tasks are active.",
        section="limits",
        uvicorn=True,
        bounds=POSITIVE,
    )
    limit_request_body: int | None = setting(
        None,
        "Maximum request body size in bytes (every HTTP version): a larger Content-Length gets 413 before the app "
        "runs; a body that grows past it gets 413 (or a reset, once the response started); none: no limit.",
        section="limits",
        metavar="BYTES",
        bounds=POSITIVE,
    )
    limit_request_line: int = setting(
        8190, "Maximum request line size in bytes (414 beyond).", section="limits", bounds=POSITIVE
    )
    limit_request_fields: int = setting(
        100, "Maximum number of request header fields (431 beyond).", section="limits", bounds=POSITIVE
    )
    limit_request_head_size: int = setting(
        65536,
        "Maximum size of the request line and header fields together, in bytes (431 beyond).",
        section="limits",
        bounds=POSITIVE,
    )
    h11_max_incomplete_event_size: int | None = setting(
        None,
        "h11's buffer limit; has no effect (heron's parser is bounded by --limit-request-head-size).",
        section="limits",
        uvicorn=True,
        notice=lambda value: "has no effect: heron's parser is bounded by --limit-request-head-size",
    )

    # --- timeouts ----------------------------------------------------------
    timeout_keep_alive: float = setting(
        5.0,
        "Close idle keep-alive connections after this many seconds.",
        section="timeouts",
        uvicorn=True,
        bounds=SECONDS,
    )
    timeout_request_header: float = setting(
        30.0,
        "A client must send a complete request head within this many seconds (slowloris guard); 0 disables.",
        section="timeouts",
        bounds=SECONDS,
    )
    timeout_request_body: float = setting(
        60.0,
        "Answer 408 (HTTP/2 and HTTP/3: on the stream) when the app waits for request body bytes and none arrive for this "
        "many seconds; 0 disables.",
        section="timeouts",
        bounds=SECONDS,
    )
    timeout_write: float = setting(
        60.0,
        "Close a connection whose client reads nothing of a pending response for this many seconds; 0 disables.",
        section="timeouts",
        bounds=SECONDS,
    )
    shutdown_delay: float = setting(
        0.0,
        "After SIGTERM/SIGINT, keep serving (and accepting) this many seconds with /readyz answering 503, "
        "so load balancers stop sending before the listener closes; then shut down gracefully.",
        section="timeouts",
        bounds=SECONDS,
    )
    timeout_graceful_shutdown: float | None = setting(
        30.0,
        "On shutdown, wait this many seconds for in-flight requests before cancelling them (none: wait forever).",
        section="timeouts",
        uvicorn=True,
        bounds=SECONDS_OR_NONE,
    )
    timeout_lifespan: float = setting(
        60.0,
        "Maximum seconds for the app's lifespan startup and shutdown.",
        section="timeouts",
        bounds=SECONDS,
    )

    # --- HTTP --------------------------------------------------------------
    server_header: bool = setting(True, "Send a 'Server: heron' header.", section="http", negatable=True, uvicorn=True)
    date_header: bool = setting(True, "Send a 'Date' header.", section="http", negatable=True, uvicorn=True)
    headers: tuple[tuple[str, str], ...] = setting(
        (),
        "Add a default response header 'Name: Value' (repeatable).",
        section="http",
        flags=("--header",),
        metavar="NAME:VALUE",
        uvicorn=True,
    )
    proxy_headers: bool = setting(
        True,
        "Take the client address and scheme from X-Forwarded-For/-Proto when the peer is in --forwarded-allow-ips.",
        section="http",
        negatable=True,
        uvicorn=True,
    )
    proxy_protocol: bool = setting(
        False,
        "Read a PROXY protocol header (v1 or v2, as HAProxy's send-proxy/send-proxy-v2 and AWS NLB send) "
        "at the start of each connection from a peer in --forwarded-allow-ips: its client address is the "
        "connection's. Such a peer must send one; a malformed one closes the connection.",
        section="http",
    )
    forwarded_allow_ips: str | None = setting(
        None,
        "Comma-separated IPs and networks (CIDR) trusted to send proxy headers and PROXY protocol headers; "
        "'*' trusts all (default: $FORWARDED_ALLOW_IPS or 127.0.0.1,::1).",
        section="http",
        metavar="IPS",
        uvicorn=True,
        env=("FORWARDED_ALLOW_IPS",),
    )

    # --- HTTP/2 -------------------------------------------------------------
    http2: bool = setting(
        True,
        "Serve HTTP/2: h2c with prior knowledge and 'Upgrade: h2c' on the HTTP/1.1 port (and ALPN h2 with TLS).",
        section="http",
        negatable=True,
        uvicorn=True,
    )
    http2_max_concurrent_streams: int = setting(
        100,
        "HTTP/2 and HTTP/3: streams a client may have open at once (advertised; more are refused).",
        section="http",
        bounds=Bounds(1, 2**31 - 1, "an integer between 1 and 2**31-1"),
    )
    http2_max_header_list_size: int = setting(
        65536,
        "HTTP/2 and HTTP/3: maximum decoded size of a request's header list, in bytes (also bounds CONTINUATION "
        "frames; 431 over HTTP/3).",
        section="http",
        bounds=Bounds(1024, None, "an integer >= 1024"),
    )
    http2_initial_window_size: int = setting(
        262144,
        "HTTP/2 and HTTP/3: request body bytes a client may send ahead on a stream (4 times this per connection).",
        section="http",
        bounds=Bounds(65535, (2**31 - 1) // 4, "an integer between 65535 and 536870911"),
    )
    http2_max_resets: int = setting(
        200,
        "HTTP/2 and HTTP/3: stream resets (by the client, or caused by it) allowed per connection in 10 seconds "
        "before GOAWAY ENHANCE_YOUR_CALM (HTTP/3: CONNECTION_CLOSE H3_EXCESSIVE_LOAD; rapid reset guard); "
        "0 disables.",
        section="http",
        bounds=NOT_NEGATIVE,
    )
    http2_max_empty_frames: int = setting(
        1000,
        "HTTP/2: frames that carry nothing (empty DATA, PRIORITY, unknown types, unsolicited ACKs) allowed per "
        "connection in 10 seconds before GOAWAY ENHANCE_YOUR_CALM; 0 disables.",
        section="http",
        bounds=NOT_NEGATIVE,
    )
    http2_max_control_frames: int = setting(
        10000,
        "HTTP/2: replies (PING/SETTINGS ACKs, resets) queued for a client that doesn't read them before "
        "GOAWAY ENHANCE_YOUR_CALM (flood guard).",
        section="http",
        bounds=POSITIVE,
    )

    # --- HTTP/3 -------------------------------------------------------------
    quic_bind: tuple[str, ...] = setting(
        (),
        "Also serve HTTP/3 over QUIC on this UDP address, HOST:PORT or [IPv6]:PORT (repeatable; needs "
        "--ssl-certfile/--ssl-keyfile and the aioquic package: pip install 'heron[http3]').",
        section="http",
        flags=("--quic-bind",),
        metavar="HOST:PORT",
    )
    quic_alt_svc_max_age: int = setting(
        86400,
        "With --quic-bind: TCP responses carry 'alt-svc: h3=\":PORT\"; ma=SECONDS' so browsers find HTTP/3; "
        "0 sends no Alt-Svc header.",
        section="http",
        metavar="SECONDS",
        bounds=NOT_NEGATIVE,
    )
    quic_idle_timeout: float = setting(
        60.0,
        "HTTP/3: close a QUIC connection after this many seconds without a packet from the client.",
        section="timeouts",
        metavar="SECONDS",
        bounds=SECONDS_ABOVE_0,
    )
    quic_handshake_timeout: float = setting(
        10.0,
        "HTTP/3: drop a QUIC connection (silently) whose TLS handshake is not complete this many seconds after "
        "the client's first packet.",
        section="timeouts",
        metavar="SECONDS",
        bounds=SECONDS_ABOVE_0,
    )
    quic_max_handshakes: int = setting(
        1000,
        "HTTP/3: QUIC connections per worker still in their handshake. From half of it on, a new client's "
        "Initial is answered with Retry (the client proves its address first); beyond it, dropped. The total of "
        "QUIC connections per worker is --limit-concurrency, when set.",
        section="limits",
        bounds=POSITIVE,
    )
    quic_max_handshakes_per_address: int | None = setting(
        None,
        "HTTP/3: QUIC connections per worker still in their handshake from one client address (IPv6: one /64), "
        "counted apart for clients that came back with a Retry token and those that did not; default a tenth of "
        "--quic-max-handshakes. Past it, an Initial without a token gets Retry, one with a token is dropped.",
        section="limits",
        metavar="HANDSHAKES",
        bounds=POSITIVE,
        clearable=False,  # (unset: a tenth of --quic-max-handshakes, not "no limit")
    )

    # --- WebSocket ---------------------------------------------------------
    ws: str = setting(
        "auto",
        "WebSocket: auto (on) or none (upgrade requests are served as plain HTTP); "
        "uvicorn's implementation names are accepted and mean auto.",
        section="websocket",
        metavar="auto|none|websockets|websockets-sansio|wsproto",
        uvicorn=True,
        notice=ws_notice,
    )
    ws_max_size: int = setting(
        16 * 1024 * 1024,
        "Maximum WebSocket message size in bytes (close 1009 beyond).",
        section="websocket",
        uvicorn=True,
        bounds=POSITIVE,
    )
    ws_max_queue: int = setting(
        32,
        "Maximum received WebSocket messages waiting for the app before reading pauses.",
        section="websocket",
        uvicorn=True,
        bounds=POSITIVE,
    )
    ws_ping_interval: float | None = setting(
        20.0,
        "Send a WebSocket ping after this many idle seconds; 0 or none disables.",
        section="websocket",
        uvicorn=True,
        bounds=SECONDS_OR_NONE,
    )
    ws_ping_timeout: float | None = setting(
        20.0,
        "Close with 1011 if no frame arrives this many seconds after a ping; 0 or none disables.",
        section="websocket",
        uvicorn=True,
        bounds=SECONDS_OR_NONE,
    )
    ws_per_message_deflate: bool = setting(
        True,
        "Offer permessage-deflate compression (takes a value: true/false).",
        section="websocket",
        metavar="BOOL",
        uvicorn=True,
    )

    # --- TLS (uvicorn's names; checked by heron.tls.check_settings) ----------
    ssl_keyfile: str | None = setting(
        None,
        "TLS private key file (PEM); with --ssl-certfile it turns on HTTPS.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_certfile: str | None = setting(
        None,
        "TLS certificate file (PEM): the server certificate, then any intermediates.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_keyfile_password: str | None = setting(
        None, "Password of an encrypted --ssl-keyfile.", section="tls", metavar="PASSWORD", uvicorn=True
    )
    ssl_version: int = setting(
        int(ssl.PROTOCOL_TLS_SERVER),
        "SSL protocol constant: 17 (PROTOCOL_TLS_SERVER) or 2 (PROTOCOL_TLS) for TLS 1.2-1.3, 5 for TLS 1.2 only.",
        section="tls",
        uvicorn=True,
    )
    ssl_cert_reqs: int = setting(
        int(ssl.CERT_NONE),
        "Client certificates: 0 not asked, 1 optional, 2 required (mutual TLS; needs --ssl-ca-certs).",
        section="tls",
        uvicorn=True,
    )
    ssl_ca_certs: str | None = setting(
        None,
        "CA certificates (PEM) that client certificates are verified against.",
        section="tls",
        metavar="PATH",
        uvicorn=True,
    )
    ssl_ciphers: str | None = setting(
        None, "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's).", section="tls", metavar="CIPHERS", uvicorn=True
    )

    # --- logging -----------------------------------------------------------
    log_level: str | int | None = setting(
        None,
        "Log level (default info; with --log-config, only applied when given); trace also logs every ASGI message.",
        section="logging",
        choices=LOG_LEVELS,
        uvicorn=True,
        clearable=False,  # (none would read as "log nothing"; unset means info)
    )
    access_log: bool = setting(
        True, "Log one line per request on heron.access.", section="logging", negatable=True, uvicorn=True
    )
    access_log_format: str = setting(
        "default",
        "Access line: a preset (default, common, combined, json) or a format of gunicorn-style atoms "
        "such as '%(h)s %(t)s \"%(r)s\" %(s)s %(b)s %(D)s %({user-agent}i)s'.",
        section="logging",
        metavar="FORMAT",
    )
    log_format: str = setting(
        "text",
        "Log record layout: text, or json (one JSON object per line, with structured access fields).",
        section="logging",
        choices=("text", "json"),
    )
    log_config: str | dict[str, Any] | Any | None = setting(  # noqa: RUF009  # (as above)
        None,
        "Configure logging from this file instead: dictConfig .json or .yaml/.yml, or fileConfig .ini "
        "(existing loggers are never disabled).",
        section="logging",
        metavar="PATH",
        uvicorn=True,
    )
    use_colors: bool | None = setting(
        None,
        "Colour the log level (default: only when the output is a terminal).",
        section="logging",
        negatable=True,
        uvicorn=True,
    )
    configure_logging: bool = setting(
        True,
        "Set up heron's log handlers; --no-configure-logging leaves logging entirely to the app.",
        section="logging",
        negatable=True,
    )

    # --- metrics -------------------------------------------------------------
    metrics_bind: str | None = setting(
        None,
        "Serve Prometheus metrics at http://ADDRESS/metrics (HOST:PORT, [IPv6]:PORT or unix:PATH); off by default.",
        section="metrics",
        metavar="ADDRESS",
    )

    # --- settings sources ----------------------------------------------------
    config: str | None = setting(
        None,
        "Read settings from this TOML file (default: [tool.heron] of ./pyproject.toml, if any).",
        section="settings",
        flags=("-c", "--config"),
        metavar="PATH",
        file=False,
    )
    env_file: str | None = setting(
        None,
        "Load environment variables from this dotenv file before reading settings (existing variables win).",
        section="settings",
        metavar="PATH",
        uvicorn=True,
    )

    # --- development -----------------------------------------------------------
    reload: bool = setting(
        False,
        "Restart the worker when watched files change (development; needs APP as an import string).",
        section="development",
        uvicorn=True,
    )
    reload_dirs: tuple[str, ...] = setting(
        (),
        "Directory to watch for --reload (repeatable; default: the working directory).",
        section="development",
        flags=("--reload-dir",),
        metavar="DIR",
        uvicorn=True,
    )
    reload_includes: tuple[str, ...] = setting(
        (),
        "Glob of file names to watch for --reload, added to '*.py' (repeatable).",
        section="development",
        flags=("--reload-include",),
        metavar="GLOB",
        uvicorn=True,
    )
    reload_excludes: tuple[str, ...] = setting(
        (),
        "Glob of file or directory names --reload ignores, added to '.*', '*.py[cod]', '.sw.*', '~*' (repeatable).",
        section="development",
        flags=("--reload-exclude",),
        metavar="GLOB",
        uvicorn=True,
    )
    reload_delay: float = setting(
        0.25,
        "Seconds between two scans of the watched files for --reload.",
        section="development",
        uvicorn=True,
        bounds=SECONDS_ABOVE_0,
    )

    # -----------------------------------------------------------------------

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Check every value; raise :class:`SettingError` naming the first bad one."""
        kinds = kinds_of(Config)
        for f in dataclasses.fields(self):
            check_field(f, kinds[f.name], getattr(self, f.name))
        check_implementation("http", self.http, HTTP_IMPLEMENTATIONS)
        check_implementation("ws", self.ws, WS_IMPLEMENTATIONS)
        check_implementation("loop", self.loop, LOOPS)
        check_access_log_format(self.access_log_format)
        for text in self.bind:
            parse_bind(text)
        if self.bind:
            defaults = Config()
            clash = [name for name in ("host", "port", "uds", "fd") if getattr(self, name) != getattr(defaults, name)]
            if clash:
                fail("bind", ",".join(self.bind), f"--bind alone: it can't be combined with --{clash[0]}")
        if self.metrics_bind is not None:
            check_metrics_bind(self.metrics_bind)
        for header in self.headers:
            check_header(header)
        check_tls_settings(self)
        check_quic_bind(self.quic_bind, bool(self.ssl_certfile), self.ssl_cert_reqs)
        check_forwarded_allow_ips(self.forwarded_allow_ips)
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

    @property
    def quic_listeners(self) -> list[Listener]:
        """The UDP addresses of ``--quic-bind`` (kind ``udp``)."""
        return [parse_quic_bind(text) for text in self.quic_bind]

    def notices(self) -> list[tuple[str, str]]:
        """(setting, message) for each value heron accepts but does not act on."""
        result = []
        for f in dataclasses.fields(self):
            notice = f.metadata.get("notice")
            if notice is None:
                continue
            value = getattr(self, f.name)
            if value == default_value(f):
                continue
            message = notice(value)
            if message:
                result.append((f.name, message))
        return result
