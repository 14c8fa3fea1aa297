"""The server: listening sockets, lifespan, graceful shutdown, signals.

Order of start-up: load the app, bind the sockets (so a busy port fails fast),
run lifespan startup, then start accepting. Shutdown (SIGINT/SIGTERM, or
:meth:`Server.shutdown`): stop accepting, close idle connections, let requests
in flight finish for up to ``timeout_graceful_shutdown`` seconds, cancel what
is left, then run lifespan shutdown. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any

from . import __version__
from .accesslog import build_observer
from .asgi.http import ASGIApp
from .asgi.lifespan import Lifespan, LifespanFailure
from .asgi.proxy import ProxyTrust
from .config import Config, Listener, parse_bind
from .importer import AppLoadError, load_app
from .logs import TRACE, reopen_log_files
from .metrics import Health, Metrics, metrics_app
from .systemd import Notifier, activated_sockets
from .transport.context import ConnectionAddresses, ServerContext
from .transport.http1 import H1Protocol
from .transport.metered import MeteredProtocol
from .transport.proxy_listener import ProxyProtocolListener

logger = logging.getLogger("heron.error")

STARTUP_FAILURE = 3


class Server:
    """Run one heron server in the current event loop.

    ``await Server(config).serve()`` returns the exit status (0, or 3 when
    start-up failed). ``started`` is set once the sockets accept connections;
    ``sockets`` then holds them (useful with ``port=0``).
    """

    def __init__(self, config: Config, *, metrics: Metrics | None = None) -> None:
        self.config = config.validate()
        #: counters kept without a listener of their own (a worker's, read by the supervisor)
        self.metrics = metrics
        #: signals that stop the server (a worker obeys only its supervisor's SIGTERM)
        self.stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
        #: log the start-up banner (a supervisor logs it once for all its workers)
        self.banner = True
        #: the loaded app takes WebSocket sessions (not a WSGI app, --ws not none)
        self.serves_websocket = True
        #: one of a supervisor's worker processes
        self.worker = False
        self.started = asyncio.Event()
        self.sockets: list[socket.socket] = []
        #: the --quic-bind UDP sockets, once bound (a worker's: handed by its supervisor)
        self.quic_sockets: list[socket.socket] = []
        #: a worker's tag, the start of its QUIC connection ids (heron.quic_steering)
        self.quic_cid_tag = b""
        #: called once when shutdown begins, whatever started it (a worker tells its supervisor)
        self.on_stopping: Callable[[], None] | None = None
        self._exit = asyncio.Event()
        self._forced = asyncio.Event()
        self.force_exit = False
        self._signal_count = 0
        self._ctx: ServerContext | None = None
        #: the --metrics-bind listener, once bound
        self.metrics_socket: socket.socket | None = None
        self._unix_paths: list[str] = []  # UNIX socket files to remove on exit
        self._ready = False
        #: sd_notify, when this process is the one systemd started and watches
        self.notifier: Notifier | None = None

    # --- public control ---------------------------------------------------

    def is_live(self) -> bool:
        """``/livez``: the event loop answers (it runs this very call)."""
        return True

    def is_ready(self) -> bool:
        """``/readyz``: serving, and no shutdown started."""
        return self._ready

    def shutdown(self, force: bool = False) -> None:
        """Ask the server to stop (thread-unsafe: call from the loop)."""
        if force:
            self.force_exit = True
            self._forced.set()
        self._exit.set()

    @property
    def connection_count(self) -> int:
        """Open client connections (read-only; 0 before start-up)."""
        ctx = self._ctx
        return len(ctx.connections) if ctx is not None else 0

    @property
    def port(self) -> int | None:
        for sock in self.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return int(name[1])
        return None

    # --- serving ----------------------------------------------------------

    async def serve(self, sockets: list[socket.socket] | None = None, install_signal_handlers: bool = True) -> int:
        """Load the app, bind, run lifespan startup, serve until told to stop, shut
        down gracefully; 0, or :data:`STARTUP_FAILURE` (logged) when start-up failed.
        ``sockets``: already-bound listeners (a worker's); they are not closed here."""
        config = self.config
        loop = asyncio.get_running_loop()
        app = self._load_app()
        tls = self._tls_arguments() if app is not None else None
        quic = self._quic_configuration() if app is not None and tls is not None else None
        if app is None or tls is None or quic is None:
            return STARTUP_FAILURE
        # before the sockets listen: a client can connect as soon as they do, and a signal
        # sent then (a test, a supervisor, a Ctrl-C) must stop heron, not kill it
        restore_signals = self._install_signals(loop) if install_signal_handlers else None
        if not self._bind_sockets(sockets):
            if restore_signals is not None:
                restore_signals()
            return STARTUP_FAILURE
        ctx = self._ctx = self._context(app, loop)
        ctx.advertise_http3([sock.getsockname()[1] for sock in self.quic_sockets], config.quic_alt_svc_max_age)
        logger.info("Started server process [%d]", os.getpid())  # (uvicorn's words: log parsers know them)
        lifespan = Lifespan(app, config.lifespan, config.timeout_lifespan or None)
        servers: list[asyncio.AbstractServer | ProxyProtocolListener] = []
        quic_listeners: list[Any] = []  # (heron.transport.http3_listener.QuicListener)
        metrics_endpoint: MetricsListener | None = None
        try:
            try:
                await lifespan.startup()
            except LifespanFailure as exc:
                logger.error("%s", exc)
                return STARTUP_FAILURE
            if self._exit.is_set():
                await lifespan.shutdown()
                return 0
            ctx.lifespan_state = lifespan.state if lifespan.supported else None
            ctx.start()
            if config.proxy_protocol:
                servers.extend(self._proxy_protocol_listeners(ctx, loop, tls))
            else:
                factory = protocol_factory(ctx, self.metrics)
                for sock in self.sockets:
                    servers.append(await loop.create_server(factory, sock=sock, backlog=config.backlog, **tls))
            if self.quic_sockets:
                from .transport.http3_listener import start_quic_listener

                for sock in self.quic_sockets:
                    quic_listeners.append(await start_quic_listener(ctx, sock, quic, self.quic_cid_tag))
            if self.metrics is not None and self.metrics_socket is not None:
                metrics_endpoint = await serve_metrics(config, self.metrics, self.metrics_socket, loop, self)
            if self.banner:
                self._log_started(loop)
            self.started.set()
            self._ready = True
            if self.notifier is not None:
                scheme = "https" if tls else "http"
                self.notifier.ready(f"Serving on {', '.join(socket_url(sock, scheme) for sock in self.sockets)}")
                self.notifier.start_watchdog(loop)
            await self._exit.wait()
            self._ready = False  # /readyz: 503 from now on
            if self.on_stopping is not None:
                self.on_stopping()
            if self.notifier is not None:
                self.notifier.stopping()
            await self._shutdown_delay()
            await self._shutdown(ctx, servers, quic_listeners)
            if not self.force_exit:
                await self._lifespan_shutdown(lifespan)
            logger.info("Finished server process [%d]", os.getpid())
            return 0
        finally:
            ctx.stop()
            for srv in servers:
                srv.close()
            for quic_listener in quic_listeners:
                quic_listener.close()
            if metrics_endpoint is not None:
                metrics_endpoint.close()
            self._release_sockets(own=sockets is None)
            if restore_signals is not None:
                restore_signals()
            if self.notifier is not None:
                self.notifier.close()

    # --- the steps of serve() ------------------------------------------------------

    def _load_app(self) -> ASGIApp | None:
        config = self.config
        try:
            app = load_app(
                config.app if config.app is not None else "heron.demo:app",
                factory=config.factory,
                app_dir=config.app_dir,
                interface=config.interface,
                wsgi_threads=config.wsgi_threads,
                multiprocess=(config.workers or 1) > 1 or self.worker,
            )
        except AppLoadError as exc:
            logger.error("Error loading ASGI app. %s", exc)
            return None
        except Exception:
            logger.exception("Error loading ASGI app.")
            return None
        from .asgi.wsgi import WSGIAdapter

        # a WSGI app refuses WebSocket upgrades (403): the banner must not offer them
        self.serves_websocket = config.ws != "none" and not isinstance(app, WSGIAdapter)
        if config.log_level in ("trace", TRACE):
            from .asgi.trace import MessageLogger

            app = MessageLogger(app)  # only at trace level: no cost otherwise
        return app

    def _tls_arguments(self) -> dict[str, Any] | None:
        """create_server() arguments for TLS ({} without TLS); None when the
        certificate or key can't be loaded (logged)."""
        config = self.config
        tls: dict[str, Any] = {}
        if config.ssl_certfile or config.ssl_keyfile:
            from .tls import TLSSetupError, create_ssl_context

            try:
                tls["ssl"] = create_ssl_context(config)
            except TLSSetupError as exc:
                logger.error("%s", exc)
                return None
            if config.timeout_request_header:
                tls["ssl_handshake_timeout"] = config.timeout_request_header
        return tls

    def _quic_configuration(self) -> Any:
        """--quic-bind: aioquic's QuicConfiguration (``False`` without QUIC); None when
        the certificate or key can't be loaded (logged)."""
        config = self.config
        if not config.quic_bind:
            return False
        try:
            from .transport.http3_quic import quic_configuration
        except ImportError as exc:  # (Config.validate found the package: a broken install)
            logger.error("--quic-bind needs aioquic (pip install 'heron[http3]'): %s", exc)
            return None
        try:
            return quic_configuration(config)
        except (OSError, ValueError) as exc:
            logger.error("Could not load the certificate or key for QUIC: %s", exc)
            return None

    def _proxy_protocol_listeners(
        self, ctx: ServerContext, loop: asyncio.AbstractEventLoop, tls: dict[str, Any]
    ) -> list[ProxyProtocolListener]:
        """--proxy-protocol: listeners that read each trusted connection's header first."""
        config, metrics = self.config, self.metrics
        trust = ProxyTrust(config.forwarded_allow_ips or "127.0.0.1,::1")

        def make_protocol(addresses: ConnectionAddresses | None) -> asyncio.Protocol:
            protocol = H1Protocol(ctx)
            protocol.proxied = addresses
            return protocol if metrics is None else MeteredProtocol(protocol, metrics)

        timeout = config.timeout_request_header or None
        return [ProxyProtocolListener(loop, sock, make_protocol, trust, tls, timeout) for sock in self.sockets]

    def _bind_sockets(self, sockets: list[socket.socket] | None) -> bool:
        """The listeners (given, or bound now) and the metrics listener; False
        (logged, nothing left bound) when one can't be bound."""
        config = self.config
        try:
            self.sockets = sockets if sockets is not None else self._bind()
            if not self.quic_sockets:  # (a worker's come from its supervisor)
                for quic_listener in config.quic_listeners:
                    self.quic_sockets.append(bind_udp(quic_listener))
            if config.metrics_bind is not None:
                listener = parse_bind(config.metrics_bind, "metrics_bind")
                self.metrics_socket = bind_listener(listener, config.backlog)
                if listener.kind == "unix":
                    self._unix_paths.append(listener.path)
        except OSError as exc:
            self._release_sockets(own=sockets is None)
            logger.error("%s", exc)
            return False
        return True

    def _context(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> ServerContext:
        """The ServerContext, handed what the transports report to."""
        config = self.config
        if self.metrics_socket is not None:
            self.metrics = Metrics()
        metrics = self.metrics
        observer = build_observer(
            config.access_log_format if config.access_log else None, config.log_format == "json", perf_counter, metrics
        )
        ctx = ServerContext(config, app, loop, metrics, observer)
        if metrics is not None:
            metrics.ctx = ctx
        if config.limit_max_requests is not None:
            ctx.requests_left = config.limit_max_requests + random.randint(0, config.limit_max_requests_jitter)
            ctx.on_request_limit = self._request_limit_reached
        return ctx

    async def _lifespan_shutdown(self, lifespan: Lifespan) -> None:
        """Lifespan shutdown; a second signal meanwhile still exits at once."""
        shutdown = asyncio.ensure_future(lifespan.shutdown())
        forced = asyncio.ensure_future(self._forced.wait())
        await asyncio.wait([shutdown, forced], return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if not shutdown.done():
            shutdown.cancel()

    def _release_sockets(self, own: bool) -> None:
        """Close the metrics listener, and the listeners when heron bound them
        (``own``); remove the UNIX sockets heron created."""
        if self.metrics_socket is not None:
            self.metrics_socket.close()
        for sock in self.quic_sockets:
            sock.close()
        if own:
            for sock in self.sockets:
                sock.close()
        for path in self._unix_paths:  # the UNIX sockets heron bound (not inherited ones)
            if os.path.exists(path):
                os.unlink(path)

    def _request_limit_reached(self) -> None:
        logger.warning(
            "Served %d requests (--limit-max-requests): shutting down, in-flight requests finish first",
            self.config.limit_max_requests,
        )
        self.shutdown()

    async def _shutdown_delay(self) -> None:
        """--shutdown-delay: keep serving, new connections included, while load balancers
        see /readyz answer 503 and stop sending; a second signal ends the wait."""
        delay = self.config.shutdown_delay
        if delay and not self.force_exit:
            logger.info("Shutdown delay: still serving for %gs (/readyz answers 503)", delay)
            try:
                await asyncio.wait_for(self._forced.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _shutdown(
        self,
        ctx: ServerContext,
        servers: list[asyncio.AbstractServer | ProxyProtocolListener],
        quic_listeners: list[Any],
    ) -> None:
        logger.info("Shutting down")
        ctx.shutting_down = True
        for srv in servers:
            srv.close()
        for quic_listener in quic_listeners:
            quic_listener.stop_accepting()  # (the socket stays open for the connections in flight)
        for connection in list(ctx.connections):
            connection.shutdown()
        timeout = self.config.timeout_graceful_shutdown
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if ctx.connections or ctx.tasks:
            logger.info("Waiting for %d connection(s) to finish", len(ctx.connections))

        def accepting() -> bool:  # (--proxy-protocol: connections still reading their header)
            return any(isinstance(srv, ProxyProtocolListener) and srv.pending for srv in servers)

        while (ctx.connections or ctx.tasks or accepting()) and not self.force_exit:
            if deadline is not None and loop.time() >= deadline:
                logger.warning(
                    "Graceful shutdown timed out after %gs: cancelling %d task(s), closing %d connection(s)",
                    timeout,
                    len(ctx.tasks),
                    len(ctx.connections),
                )
                break
            await asyncio.sleep(0.05)
        for task in list(ctx.tasks):
            task.cancel()
        if ctx.tasks:
            # the cancelled apps first answer what they had not answered yet (503), then
            # their connections go
            await asyncio.wait(list(ctx.tasks), timeout=1.0)
        for connection in list(ctx.connections):
            connection.transport.abort()

    # --- sockets ----------------------------------------------------------

    def _bind(self) -> list[socket.socket]:
        return bind_all(self.config, self._unix_paths)

    def _log_started(self, loop: asyncio.AbstractEventLoop) -> None:
        loop_name = type(loop).__module__.split(".")[0]
        log_banner(
            self.config,
            self.sockets,
            self.metrics_socket,
            f"{loop_name} loop, pid {os.getpid()}, 1 worker process",
            websocket=self.serves_websocket,
            quic_sockets=self.quic_sockets,
        )

    # --- signals ----------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        installed = []
        handlers: list[tuple[int, Callable[[int], None]]] = [(sig, self._on_signal) for sig in self.stop_signals]
        handlers.append((signal.SIGUSR1, self._on_reopen_logs))
        if not self.worker:
            handlers.append((signal.SIGHUP, self._on_hangup))
        for sig, handler in handlers:
            try:
                loop.add_signal_handler(sig, handler, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
                pass

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore

    def _on_hangup(self, sig: int) -> None:
        """SIGHUP restarts workers; one process has none to restart, and must not die of it
        (``systemctl reload`` of a one-process unit, a closed terminal)."""
        logger.warning("SIGHUP ignored: a rolling restart needs workers (--workers, or a recycling setting)")

    def _on_reopen_logs(self, sig: int) -> None:
        """SIGUSR1: reopen log files (after logrotate moved them)."""
        reopened = reopen_log_files()
        if not self.worker:  # (a worker's supervisor says it for all of them)
            logger.info("SIGUSR1: reopened %d log file(s)", reopened)

    def _on_signal(self, sig: int) -> None:
        self._signal_count += 1
        if self._signal_count > 1:
            logger.warning("Second %s: exiting now", signal.Signals(sig).name)
            self.force_exit = True
            self._forced.set()
        self._exit.set()


def protocol_factory(ctx: ServerContext, metrics: Metrics | None) -> Callable[[], asyncio.Protocol]:
    """What serves a new connection: an :class:`H1Protocol` (which switches to
    HTTP/2 or WebSocket as asked), behind a byte counter when metrics are on."""
    if metrics is None:
        return lambda: H1Protocol(ctx)
    return lambda: MeteredProtocol(H1Protocol(ctx), metrics)


class MetricsListener:
    """The ``--metrics-bind`` listener (its own HTTP/1.1 context, no access log)."""

    def __init__(self, ctx: ServerContext, server: asyncio.base_events.Server) -> None:
        self.ctx = ctx
        self.server = server

    def close(self) -> None:
        self.server.close()
        self.ctx.stop()
        for connection in list(self.ctx.connections):
            connection.transport.abort()


async def serve_metrics(
    config: Config,
    source: Metrics | Callable[[], Awaitable[str]],
    sock: socket.socket,
    loop: asyncio.AbstractEventLoop,
    health: Health | None = None,
) -> MetricsListener:
    """Answer ``GET /metrics`` on ``sock`` from ``source``: this process's
    :class:`Metrics`, or the supervisor's renderer that asks every worker;
    and ``/livez``, ``/readyz`` from ``health``."""
    app = metrics_app(source, health)
    ctx = ServerContext(config.replace(access_log=False, headers=(), proxy_protocol=False), app, loop)
    ctx.start()
    server = await loop.create_server(lambda: H1Protocol(ctx), sock=sock)
    return MetricsListener(ctx, server)


def log_banner(
    config: Config,
    sockets: list[socket.socket],
    metrics_socket: socket.socket | None,
    processes: str,
    *,
    websocket: bool = True,
    quic_sockets: Sequence[socket.socket] = (),
) -> None:
    """The start-up banner: what is served where, by which processes, and how to stop it
    (``websocket``: the app takes WebSocket sessions, which a WSGI app does not)."""
    logger.info(
        "Started heron %s (%s %s, %s)",
        __version__,
        platform.python_implementation(),
        platform.python_version(),
        processes,
    )
    tls = bool(config.ssl_certfile or config.ssl_keyfile)
    scheme = "https" if tls else "http"
    extras = []
    if config.http2:
        extras.append("HTTP/2 via ALPN" if tls else "HTTP/2 h2c")
    if websocket and config.ws != "none":
        extras.append("WebSocket")
    extras.append("TLS" if tls else "no TLS")
    for sock in sockets:
        logger.info("Serving HTTP/1.1 on %s (%s)", socket_url(sock, scheme), ", ".join(extras))
    for sock in quic_sockets:
        logger.info("Serving HTTP/3 on %s (QUIC over UDP)", socket_url(sock, "https"))
    if metrics_socket is not None:
        logger.info("Prometheus metrics on %s/metrics", socket_url(metrics_socket, "http"))
    if sockets:  # (uvicorn's line, for what watches for it)
        logger.info("Heron running on %s (Press CTRL+C to quit)", socket_url(sockets[0], scheme))
    else:
        logger.info("Press CTRL+C to quit")


def bind_all(config: Config, unix_paths: list[str], listen: bool = True) -> list[socket.socket]:
    """One listening socket per address (``bind``, or ``host``/``port``/``uds``/``fd``),
    or the sockets systemd passed (socket activation) instead; all or none: an
    address that fails closes the ones already bound. The UNIX socket files
    created are appended to ``unix_paths`` (to remove at exit). ``--reuse-port``
    sets SO_REUSEPORT on TCP sockets; ``listen=False`` leaves those bound but not
    listening (the supervisor holds the port while each worker listens on its own)."""
    activated = activated_sockets()
    if activated:  # systemd bound them (heron.socket): they replace --host/--port/--uds/--fd/--bind
        return activated
    bound: list[socket.socket] = []
    created: list[str] = []
    try:
        for listener in config.listeners:
            bound.append(bind_listener(listener, config.backlog, config.reuse_port, listen))
            if listener.kind == "unix":
                created.append(listener.path)
    except BaseException:
        for sock in bound:
            sock.close()
        for path in created:
            if os.path.exists(path):
                os.unlink(path)
        raise
    unix_paths.extend(created)
    return bound


def bind_listener(listener: Listener, backlog: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A listening, non-blocking socket for one address; OSError names the address.
    ``reuse_port``: SO_REUSEPORT on a TCP socket, and ``listen=False`` binds it only."""
    if listener.kind == "fd":
        sock = socket.socket(fileno=listener.fd)
        sock.setblocking(False)
        return sock
    if listener.kind == "unix":
        path = listener.path
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o666)
        except OSError as exc:
            sock.close()
            raise OSError(f"Could not bind to UNIX socket {path}: {exc.strerror}") from None
    else:
        family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # as asyncio does: [::] is IPv6 only, so it can be bound next to 0.0.0.0
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((listener.host, listener.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"Could not bind to {listener}: {exc.strerror}") from None
        if reuse_port and not listen:
            return sock  # (a bound socket outside the kernel's group of listeners)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_udp(listener: Listener, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket for a ``--quic-bind`` address; OSError names it.
    ``reuse_port``: SO_REUSEPORT (a supervisor binds one per worker, all to the
    same address: see :mod:`heron.quic_steering`)."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.host, listener.port))
    except OSError as exc:
        sock.close()
        raise OSError(f"Could not bind to UDP {listener} (--quic-bind): {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def socket_url(sock: socket.socket, scheme: str) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"{scheme}://[{name[0]}]:{name[1]}"
    return f"{scheme}://{name[0]}:{name[1]}"


def _new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """``auto`` (uvloop when installed), ``uvloop``, ``asyncio`` (also for uvicorn's
    ``none``), or a ``module:attribute`` callable that returns a new loop."""
    if ":" in choice:
        from .importer import import_from_string

        factory = import_from_string(choice)
        return factory()  # type: ignore[no-any-return]
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_server(
    config: Config, server: Server | None = None, main: Callable[[Server], Awaitable[int]] | None = None
) -> int:
    """Run a server until it is stopped, in a new event loop; return the process
    exit status. ``main(server)`` replaces ``server.serve()`` (a worker process
    wraps it to talk to its supervisor)."""
    try:
        loop = _new_loop(config.loop)
    except (ImportError, AppLoadError) as exc:
        logger.error("Could not create the event loop (--loop %s): %s", config.loop, exc)
        return STARTUP_FAILURE
    asyncio.set_event_loop(loop)
    if server is None:
        server = Server(config)
    try:
        return loop.run_until_complete(main(server) if main is not None else server.serve())
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def version_string() -> str:
    return f"Running heron {__version__} with {platform.python_implementation()} {platform.python_version()} on {platform.system()}"


__all__ = ["Server", "run_server", "version_string", "STARTUP_FAILURE"]
