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
import signal
import socket
import threading
from typing import Any

from . import __version__
from .asgi.lifespan import Lifespan, LifespanFailure
from .config import Config
from .importer import AppLoadError, load_app
from .transport.context import ServerContext
from .transport.http1 import H1Protocol

logger = logging.getLogger("heron.error")

STARTUP_FAILURE = 3


class Server:
    """Run one heron server in the current event loop.

    ``await Server(config).serve()`` returns the exit status (0, or 3 when
    start-up failed). ``started`` is set once the sockets accept connections;
    ``sockets`` then holds them (useful with ``port=0``).
    """

    def __init__(self, config: Config) -> None:
        self.config = config.validate()
        self.started = asyncio.Event()
        self.sockets: list[socket.socket] = []
        self._exit = asyncio.Event()
        self._forced = asyncio.Event()
        self.force_exit = False
        self._signal_count = 0
        self._ctx: ServerContext | None = None

    # --- public control ---------------------------------------------------

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
        config = self.config
        loop = asyncio.get_running_loop()
        try:
            app = load_app(
                config.app if config.app is not None else "heron.demo:app",
                factory=config.factory,
                app_dir=config.app_dir,
                interface=config.interface,
            )
        except AppLoadError as exc:
            logger.error("Error loading ASGI app. %s", exc)
            return STARTUP_FAILURE
        except Exception:
            logger.exception("Error loading ASGI app.")
            return STARTUP_FAILURE

        try:
            self.sockets = sockets if sockets is not None else self._bind()
        except OSError as exc:
            logger.error("%s", exc)
            return STARTUP_FAILURE

        ctx = self._ctx = ServerContext(config, app, loop)
        lifespan = Lifespan(app, config.lifespan, config.timeout_lifespan or None)
        restore_signals = self._install_signals(loop) if install_signal_handlers else None
        servers: list[asyncio.base_events.Server] = []
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
            for sock in self.sockets:
                servers.append(
                    await loop.create_server(lambda: H1Protocol(ctx), sock=sock, backlog=config.backlog)
                )
            self._log_started(loop)
            self.started.set()
            await self._exit.wait()
            await self._shutdown(ctx, servers)
            if not self.force_exit:
                # a second signal during lifespan shutdown still exits at once
                shutdown = asyncio.ensure_future(lifespan.shutdown())
                forced = asyncio.ensure_future(self._forced.wait())
                await asyncio.wait([shutdown, forced], return_when=asyncio.FIRST_COMPLETED)
                forced.cancel()
                if not shutdown.done():
                    shutdown.cancel()
            return 0
        finally:
            ctx.stop()
            for srv in servers:
                srv.close()
            if sockets is None:
                for sock in self.sockets:
                    sock.close()
                if config.uds and os.path.exists(config.uds):
                    os.unlink(config.uds)
            if restore_signals is not None:
                restore_signals()

    async def _shutdown(self, ctx: ServerContext, servers: list[asyncio.base_events.Server]) -> None:
        logger.info("Shutting down")
        ctx.shutting_down = True
        for srv in servers:
            srv.close()
        for connection in list(ctx.connections):
            connection.shutdown()
        timeout = self.config.timeout_graceful_shutdown
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if ctx.connections or ctx.tasks:
            logger.info("Waiting for %d connection(s) to finish", len(ctx.connections))
        while (ctx.connections or ctx.tasks) and not self.force_exit:
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
        for connection in list(ctx.connections):
            connection.transport.abort()
        if ctx.tasks:
            await asyncio.wait(list(ctx.tasks), timeout=1.0)

    # --- sockets ----------------------------------------------------------

    def _bind(self) -> list[socket.socket]:
        config = self.config
        if config.fd is not None:
            sock = socket.socket(fileno=config.fd)
            sock.setblocking(False)
            return [sock]
        if config.uds:
            path = config.uds
            if os.path.exists(path):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                os.chmod(path, 0o666)
            except OSError as exc:
                sock.close()
                raise OSError(f"Could not bind to UNIX socket {path}: {exc.strerror}") from None
            sock.listen(config.backlog)
            sock.setblocking(False)
            return [sock]
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((config.host, config.port))
        except OSError as exc:
            sock.close()
            host = f"[{config.host}]" if family == socket.AF_INET6 else config.host
            raise OSError(f"Could not bind to {host}:{config.port}: {exc.strerror}") from None
        sock.listen(config.backlog)
        sock.setblocking(False)
        return [sock]

    def _log_started(self, loop: asyncio.AbstractEventLoop) -> None:
        loop_name = type(loop).__module__.split(".")[0]
        logger.info("Started heron %s (pid %d, %s loop)", __version__, os.getpid(), loop_name)
        for sock in self.sockets:
            name = sock.getsockname()
            if sock.family == socket.AF_UNIX:
                where = f"unix:{name}"
            elif sock.family == socket.AF_INET6:
                where = f"http://[{name[0]}]:{name[1]}"
            else:
                where = f"http://{name[0]}:{name[1]}"
            logger.info("Serving HTTP/1.1 on %s (Press CTRL+C to quit)", where)

    # --- signals ----------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
                pass

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore

    def _on_signal(self, sig: int) -> None:
        self._signal_count += 1
        if self._signal_count > 1:
            logger.warning("Second %s: exiting now", signal.Signals(sig).name)
            self.force_exit = True
            self._forced.set()
        self._exit.set()


def _new_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def run_server(config: Config) -> int:
    """Run a server until it is stopped; return the process exit status."""
    loop = _new_loop(config.loop)
    asyncio.set_event_loop(loop)
    server = Server(config)
    try:
        return loop.run_until_complete(server.serve())
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
