"""The worker side of ``--workers``: one process the supervisor started.

A worker is a fresh, spawned interpreter that imports the app and serves the
listening sockets it inherited (or, with ``--reuse-port``, sockets of its own
bound to the same addresses). It talks to its supervisor over one pipe, read
by the worker's event loop (see :mod:`heron.supervisor` for the messages):
it answers health-check pings and metrics requests, and, when it stops, sends
its final counters so that ``/metrics`` totals never go backwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

from .config import Config, Listener
from .metrics import Metrics
from .server import STARTUP_FAILURE, Server, bind_listener, run_server

logger = logging.getLogger("heron.error")


class SupervisorLink:
    """The worker's end of the pipe, served by the worker's event loop."""

    def __init__(self, conn: Connection, server: Server) -> None:
        self.conn = conn
        self.server = server

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.conn.fileno(), self._on_message, loop)

    def send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError:
            pass  # the supervisor is gone; _on_message sees the end of file

    def send_final_metrics(self) -> None:
        """The counters as they are at the end (the supervisor keeps them)."""
        metrics = self.server.metrics
        if metrics is not None:
            self.send(("final", metrics.snapshot()))

    def _on_message(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(self.conn.fileno())
            logger.warning("Worker process %d lost its supervisor: shutting down", os.getpid())
            self.server.shutdown()
            return
        if message[0] == "ping":
            self.send(("pong",))
        elif message[0] == "metrics":
            metrics = self.server.metrics
            self.send(("metrics", metrics.snapshot() if metrics is not None else None))


def worker_main(
    config: Config,
    sockets: list[socket.socket],
    own: list[Listener],
    conn: Connection,
    collect_metrics: bool,
    quic_sockets: list[socket.socket],
    quic_cid_tag: bytes,
) -> None:
    """Entry point of a worker process (runs in a fresh, spawned interpreter).

    ``sockets``: listeners inherited from the supervisor; ``own``: addresses to
    listen on with a SO_REUSEPORT socket of this worker's own (``--reuse-port``);
    ``quic_sockets`` and ``quic_cid_tag``: this worker's UDP sockets for
    ``--quic-bind`` and its connection-id tag (see :mod:`heron.quic_steering`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # see heron.supervisor's docstring
    # SIGUSR1 (reopen log files) is forwarded by the supervisor: until the loop's
    # handler is installed it must not kill a worker that is still starting
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # SIGHUP is the supervisor's (a rolling restart); a worker that gets one too,
    # from a closed terminal's process group, keeps serving
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from .logs import setup_logging

    try:
        setup_logging(config)
    except Exception as exc:  # noqa: BLE001  # already checked by the supervisor's own set-up
        sys.stderr.write(f"heron worker: logging set-up failed: {exc}\n")
    server = Server(config, metrics=Metrics() if collect_metrics else None)
    server.stop_signals = (signal.SIGTERM,)
    server.banner = False
    server.worker = True
    for sock in quic_sockets:
        sock.setblocking(False)
    server.quic_sockets = list(quic_sockets)
    server.quic_cid_tag = quic_cid_tag
    link = SupervisorLink(conn, server)
    # (whatever stops it: SIGTERM, --limit-max-requests, a lost supervisor; QUIC's new clients go elsewhere)
    server.on_stopping = lambda: link.send(("stopping",))
    try:
        # (the supervisor holds these addresses already: this can only fail if the
        # kernel refuses, e.g. another user's socket joined the port meanwhile)
        sockets = sockets + [bind_listener(listener, config.backlog, reuse_port=True) for listener in own]
    except OSError as exc:
        logger.error("%s", exc)
        sys.exit(STARTUP_FAILURE)

    async def main(server: Server) -> int:
        loop = asyncio.get_running_loop()
        link.start(loop)

        def announce(_: Any) -> None:
            if server.started.is_set():
                logger.info("Worker process %d ready", os.getpid())
                link.send(("ready", server.serves_websocket))

        started = loop.create_task(server.started.wait())
        started.add_done_callback(announce)
        try:
            return await server.serve(sockets=sockets)
        finally:
            started.cancel()
            link.send_final_metrics()

    sys.exit(run_server(config, server, main))  # serve() reports start-up failures itself (status 3)


__all__ = ["worker_main", "SupervisorLink"]
