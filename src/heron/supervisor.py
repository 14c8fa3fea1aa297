"""Worker processes under one supervisor: ``--workers N`` and ``--reload``.

The supervisor binds every listening socket itself (so a busy port fails at
once, with exit status 3) and starts the workers with the ``spawn`` method:
each worker is a fresh interpreter that imports the app and serves the
inherited sockets, and the kernel spreads new connections between them.
Nothing about a worker's state survives into another one.

Each worker has a pipe to the supervisor, read by the worker's *event loop*,
so a worker whose loop is stuck (a blocking call in the app) is noticed:

* ``ready``: sent once the worker accepts connections (after lifespan startup);
* ``ping`` / ``pong``: the health check. A worker that leaves a ping
  unanswered for ``--timeout-worker-healthcheck`` seconds is killed (SIGKILL)
  and replaced;
* ``metrics``: with ``--metrics-bind`` the supervisor owns the metrics
  listener and, per scrape, asks every worker for its counters and adds them
  up; ``final``: a stopping worker's last counters. The supervisor keeps what
  the workers that are gone counted (their counters, not their gauges), so a
  total in ``/metrics`` never goes backwards when a worker is replaced;
* end of file: the supervisor is gone, so the worker shuts down gracefully.

(The worker's side is :mod:`heron.worker`.)

Lifecycle:

* A worker that dies is replaced. One that dies before it was ready (the app
  can't be imported, lifespan startup failed) fails the whole start-up (exit
  status 3); later, the replacement is retried with a growing delay (up to
  10 s) rather than in a tight loop.
* ``--limit-max-requests``: a worker that served its share shuts down
  gracefully and is replaced.
* Recycling: ``--workers-lifetime`` (plus a random 0-10% per worker) and
  ``--workers-max-rss`` (resident memory, read from ``/proc`` every second)
  replace a worker the way a rolling restart does: a new worker first, the old
  one retired once the new one is ready, so nothing is dropped. Replacements
  (these and SIGHUP's) happen one at a time.
* ``--reuse-port``: the supervisor binds each TCP address with SO_REUSEPORT but
  does not listen on it (it only holds the port); every worker listens on a
  socket of its own for the same address, and the kernel spreads new
  connections evenly between them. When such a worker stops, connections that
  were still in its own accept queue are reset by the kernel unless
  ``net.ipv4.tcp_migrate_req`` is 1 (Linux 5.14+): shared sockets (the default)
  drop nothing in a restart.
* ``--quic-bind``: the supervisor binds one UDP socket per worker for each
  address and holds them; each worker's connection ids carry a tag that a
  kernel program on the port reads, so a datagram reaches the worker that
  holds its connection whatever else restarts (:mod:`heron.quic_steering`).
* SIGINT/SIGTERM: SIGTERM to every worker, which finishes its in-flight
  requests (``--timeout-graceful-shutdown``) and runs lifespan shutdown; a
  worker still alive 5 s after that timeout is killed. A second signal asks
  the workers to stop at once. Workers ignore SIGINT themselves: a Ctrl-C in
  a terminal reaches the whole process group, and the supervisor decides.
* SIGHUP: rolling restart, one worker at a time, each old worker retired only
  once its replacement is ready. SIGTTIN / SIGTTOU: one worker more / fewer.
  SIGUSR1: reopen log files (the supervisor's, and every worker's).

``--reload`` runs one worker under the same supervisor and polls the watched
files (``--reload-dir``, default the working directory; ``*.py`` plus
``--reload-include``; hidden names, ``__pycache__``, compiled files, editor
swap files, virtual environments and ``--reload-exclude`` skipped) every
``--reload-delay`` seconds. A change stops the worker and starts a new one;
a worker that fails to start waits for the next change instead of exiting.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import signal
import socket
from multiprocessing.connection import Connection
from typing import Any

from .config import Config, Listener, parse_bind
from .logs import reopen_log_files
from .metrics import counters_only, merge, render
from .quic_steering import QuicClaim, QuicSocketGroup
from .reloader import DEFAULT_RELOAD_EXCLUDES, DEFAULT_RELOAD_INCLUDES, FileWatcher
from .server import (
    STARTUP_FAILURE,
    MetricsListener,
    Server,
    bind_all,
    bind_listener,
    log_banner,
    run_server,
    serve_metrics,
    socket_url,
)
from .systemd import Notifier
from .worker import worker_main

logger = logging.getLogger("heron.error")

#: seconds a worker may outlive --timeout-graceful-shutdown before SIGKILL
KILL_MARGIN = 5.0
#: longest wait between attempts to replace a worker that fails to start
MAX_RESTART_DELAY = 10.0
#: how long a scrape waits for each worker's counters
METRICS_TIMEOUT = 2.0
#: --workers-lifetime: each worker lives up to this fraction longer, at random
LIFETIME_JITTER = 0.1


def run(config: Config) -> int:
    """Serve ``config``: in this process, or under a supervisor when it asks
    for several workers or for reloading. Returns the process exit status."""
    workers = config.workers or 1
    if not config.reload and (config.reload_dirs or config.reload_includes or config.reload_excludes):
        logger.warning("--reload-dir/--reload-include/--reload-exclude have no effect without --reload")
    # recycling replaces a worker without a gap: that takes a supervisor, even for one
    recycled = config.workers_lifetime is not None or config.workers_max_rss is not None
    if not config.reload and workers == 1 and not recycled:
        server = Server(config)
        server.notifier = Notifier.from_environ()
        return run_server(config, server)
    if config.app is not None and not isinstance(config.app, str):
        logger.error(
            "--workers above 1 and --reload need the app as an import string ('module:attribute'), "
            "not an app object: each worker process imports it"
        )
        return STARTUP_FAILURE
    if config.reload and workers > 1:
        logger.warning("--workers %d is ignored with --reload: one worker is reloaded", workers)
    return Supervisor(config).run()


def resident_memory(pid: int) -> int | None:
    """The resident memory of process ``pid`` in bytes (0: it is gone; None: this
    system has no ``/proc/PID/statm``, which Linux has)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0 if os.path.exists("/proc/self/statm") else None
    return pages * os.sysconf("SC_PAGE_SIZE")


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, process: Any, conn: Connection, ready: asyncio.Future[bool]) -> None:
        self.process = process
        self.conn = conn
        self.ready = ready  # True once serving; False if it died first
        self.exited = asyncio.get_running_loop().create_future()
        self.ping_sent: float | None = None
        self.retiring = False  # asked to stop: its exit is expected, not replaced
        self.replacing = False  # a replacement is being started (recycling)
        self.retire_at: float | None = None  # --workers-lifetime: loop time to be replaced
        self.metrics_waiters: list[asyncio.Future[Any]] = []
        #: its --quic-bind sockets and connection-id tag (None without QUIC)
        self.quic: QuicClaim | None = None
        #: the latest counters it sent (used when it doesn't answer, and once it is gone)
        self.last_metrics: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


class Supervisor:
    """Start, watch, restart and stop worker processes (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.target = 1 if config.reload else (config.workers or 1)
        self.workers: list[_Worker] = []
        self._serves_websocket = True  # what the workers' app does (they say when ready)
        self.sockets: list[socket.socket] = []
        #: the --quic-bind sockets, held for the supervisor's whole life (heron.quic_steering)
        self.quic = QuicSocketGroup(config.quic_listeners)
        self.metrics_socket: socket.socket | None = None
        self._unix_paths: list[str] = []
        self._mp = multiprocessing.get_context("spawn")
        self._stopping = False
        self._second_signal: asyncio.Event | None = None  # ends --shutdown-delay early
        #: sd_notify (taken out of the environment here, before any worker is spawned)
        self.notifier = Notifier.from_environ()
        self._signals = 0
        self._stop: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._failures = 0  # replacements in a row that failed to start
        self._started = False  # the first workers are ready: deaths are replaced from now on
        #: what the workers that are gone counted (counters only), or None
        self._departed_metrics: dict[str, Any] | None = None
        self._turnover: asyncio.Lock | None = None  # one replacement at a time
        self._rss_unsupported = False

    # --- process entry ----------------------------------------------------------

    def run(self) -> int:
        config = self.config
        try:
            # (--reuse-port: TCP addresses bound, not listened on; see _spawn)
            self.sockets = bind_all(config, self._unix_paths, listen=not config.reuse_port)
            self.quic.bind()
            if config.metrics_bind is not None:
                listener = parse_bind(config.metrics_bind, "metrics_bind")
                self.metrics_socket = bind_listener(listener, config.backlog)
                if listener.kind == "unix":
                    self._unix_paths.append(listener.path)
        except OSError as exc:
            logger.error("%s", exc)
            self._close_sockets()
            return STARTUP_FAILURE
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._main())
        finally:
            for task in self._background:
                task.cancel()
            if self._background:
                loop.run_until_complete(asyncio.gather(*self._background, return_exceptions=True))
            asyncio.set_event_loop(None)
            loop.close()
            self._close_sockets()
            if self.notifier is not None:
                self.notifier.close()

    def _close_sockets(self) -> None:
        for sock in self.sockets + ([self.metrics_socket] if self.metrics_socket else []):
            sock.close()
        self.quic.close()
        for path in self._unix_paths:
            if os.path.exists(path):
                os.unlink(path)

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        logger.info("Started parent process [%d]", os.getpid())
        self._stop = asyncio.Event()
        self._turnover = asyncio.Lock()
        self._install_signals(loop)
        watcher = None
        if self.config.reload:
            # the reference scan comes first: an edit made while the worker starts is a change
            watcher = FileWatcher(
                self.config.reload_dirs or (os.getcwd(),),
                DEFAULT_RELOAD_INCLUDES + tuple(self.config.reload_includes),
                DEFAULT_RELOAD_EXCLUDES + tuple(self.config.reload_excludes),
            )
            watcher.changes()
        # One worker first, then the others: an app that can't start fails once,
        # with one traceback, not once per worker (the others then start side by
        # side: N workers take about two start-ups, not N).
        ready = [await self._start_worker()] if self.target else []
        if all(ready) and not self._stop.is_set():
            ready += await asyncio.gather(*(self._start_worker() for _ in range(self.target - 1)))
        if not all(ready) and not self.config.reload:
            logger.error("A worker process failed to start: stopping")
            await self._stop_workers()
            return STARTUP_FAILURE
        if self._stop.is_set():  # a signal during start-up
            await self._stop_workers()
            return 0
        self._started = True
        self._log_banner(loop)
        if self.notifier is not None:
            self.notifier.ready(self._status())
            self.notifier.start_watchdog(loop)
        self._spawn_task(self._health_checks())
        if watcher is not None:
            self._spawn_task(self._watch_files(watcher))
        metrics_server = await self._serve_metrics(loop)
        await self._stop.wait()
        if self.notifier is not None:
            self.notifier.stopping()
        await self._shutdown_delay()
        await self._stop_workers()
        if metrics_server is not None:  # /readyz said 503 until the last worker stopped
            metrics_server.close()
        logger.info("Stopping parent process [%d]", os.getpid())
        return 0

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- workers -----------------------------------------------------------------

    async def _start_worker(self) -> bool:
        """Start one worker; True once it is ready, False if it failed first (or could
        not be started at all: no process, a socket that can't be bound; logged)."""
        try:
            worker = self._spawn()
        except OSError as exc:
            logger.error("Could not start a worker process: %s", exc)
            return False
        return await worker.ready

    def _spawn(self) -> _Worker:
        loop = asyncio.get_running_loop()
        quic = self.quic.claim() if self.quic.listeners else None  # (OSError: the caller's)
        quic_sockets, tag = (quic.sockets, quic.cid_tag) if quic is not None else ([], b"")
        parent, child = self._mp.Pipe()
        # (the supervisor keeps the shutdown delay: its workers stop when it tells them)
        worker_config = self.config.replace(metrics_bind=None, reload=False, workers=1, shutdown_delay=0.0)
        inherited, own = self._worker_listeners()
        process = self._mp.Process(
            target=worker_main,
            args=(worker_config, inherited, own, child, self.config.metrics_bind is not None, quic_sockets, tag),
            name="heron-worker",
        )
        try:
            process.start()
        except BaseException:
            if quic is not None:
                self.quic.release(quic)
            parent.close()
            child.close()
            raise
        child.close()
        worker = _Worker(process, parent, loop.create_future())
        worker.quic = quic
        self.workers.append(worker)
        loop.add_reader(parent.fileno(), self._on_message, worker)
        loop.add_reader(process.sentinel, self._on_exit, worker)
        return worker

    def _worker_listeners(self) -> tuple[list[socket.socket], list[Listener]]:
        """The sockets a worker inherits, and the addresses it listens on itself
        (``--reuse-port``: every socket the supervisor bound without listening)."""
        inherited: list[socket.socket] = []
        own: list[Listener] = []
        for sock in self.sockets:
            if sock.family != socket.AF_UNIX and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                host, port = sock.getsockname()[:2]
                own.append(Listener("tcp", host=host, port=port))
            else:
                inherited.append(sock)
        return inherited, own

    def _on_message(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            return
        self._handle(worker, message)

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self._serves_websocket = bool(message[1])
            if worker.quic is not None and not worker.retiring:
                self.quic.accepting(worker.quic)
            if not worker.ready.done():
                worker.ready.set_result(True)
            lifetime = self.config.workers_lifetime
            if lifetime is not None:
                jitter = 1.0 + random.random() * LIFETIME_JITTER  # (spreading restarts, not secrets)
                worker.retire_at = asyncio.get_running_loop().time() + lifetime * jitter
        elif kind == "stopping":  # (it began its shutdown: asked to, or by itself)
            if worker.quic is not None:
                self.quic.draining(worker.quic)
        elif kind == "pong":
            worker.ping_sent = None
        elif kind == "metrics":
            if message[1] is not None:
                worker.last_metrics = message[1]
            if worker.metrics_waiters:
                waiter = worker.metrics_waiters.pop(0)
                if not waiter.done():
                    waiter.set_result(message[1])
        elif kind == "final":
            worker.last_metrics = message[1]

    def _on_exit(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.process.sentinel)
        try:
            loop.remove_reader(worker.conn.fileno())
        except (OSError, ValueError):
            pass
        worker.process.join()
        try:
            while worker.conn.poll():  # what it sent last (its final counters) may still wait
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError):
            pass
        worker.conn.close()
        if worker.quic is not None:
            self.quic.release(worker.quic)
        if worker.last_metrics is not None:
            departed = [counters_only(worker.last_metrics)]
            if self._departed_metrics is not None:
                departed.append(self._departed_metrics)
            self._departed_metrics = merge(departed)
        if worker in self.workers:
            self.workers.remove(worker)
        if not worker.ready.done():
            worker.ready.set_result(False)
        for waiter in worker.metrics_waiters:
            if not waiter.done():
                waiter.set_result(None)
        worker.exited.set_result(worker.process.exitcode)
        if self._stopping or worker.retiring or not self._started:
            return  # expected, or start-up (which _main judges)
        code = worker.process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"status {code}"
        if self.config.reload:
            logger.warning("Worker process %d exited (%s); waiting for file changes to start it again", worker.pid, how)
            return
        level = logging.INFO if code == 0 else logging.WARNING  # 0: e.g. --limit-max-requests
        logger.log(level, "Worker process %d exited (%s); starting a new one", worker.pid, how)
        self._spawn_task(self._replace())

    async def _replace(self) -> None:
        """Start one worker; if it fails to start, try again later (growing delay)."""
        while not self._stopping and len(self.workers) < self.target:
            if await self._start_worker():
                self._failures = 0
                return
            self._failures += 1
            delay = min(0.5 * 2**self._failures, MAX_RESTART_DELAY)
            logger.error("A new worker process failed to start; trying again in %g s", delay)
            await asyncio.sleep(delay)

    async def _retire(self, worker: _Worker, timeout: float | None) -> None:
        """Stop one worker gracefully; kill it if it outlives ``timeout``."""
        worker.retiring = True
        if worker.quic is not None:  # new QUIC connections go to the others; its own still reach it
            self.quic.draining(worker.quic)
        worker.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(worker.exited), timeout)
        except asyncio.TimeoutError:
            logger.warning("Worker process %d did not stop in %g s: killing it", worker.pid, timeout)
            worker.signal(signal.SIGKILL)
            await worker.exited

    def _grace(self) -> float | None:
        timeout = self.config.timeout_graceful_shutdown
        return None if timeout is None else timeout + KILL_MARGIN

    # --- health (/livez, /readyz on the metrics listener) ----------------------------

    def is_live(self) -> bool:
        """At least one worker process serves (and this loop answers)."""
        return any(w.ready.done() and w.ready.result() and not w.retiring for w in self.workers)

    def is_ready(self) -> bool:
        """Serving, and no shutdown started."""
        return self._started and self._stop is not None and not self._stop.is_set() and self.is_live()

    async def _shutdown_delay(self) -> None:
        """--shutdown-delay: the workers keep serving while /readyz says 503; a second
        signal ends the wait."""
        delay = self.config.shutdown_delay
        if delay and self._signals < 2:
            logger.info("Shutdown delay: still serving for %gs (/readyz answers 503)", delay)
            self._second_signal = asyncio.Event()
            try:
                await asyncio.wait_for(self._second_signal.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _stop_workers(self) -> None:
        self._stopping = True
        workers = list(self.workers)
        if workers:
            await asyncio.gather(*(self._retire(worker, self._grace()) for worker in workers))

    async def _rolling_restart(self) -> None:
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            for old in list(self.workers):
                if self._stopping:
                    return
                if old.retiring:
                    continue  # (replaced meanwhile)
                if not await self._replace_worker(old):
                    logger.error("Rolling restart stopped: a new worker process failed to start")
                    return
            logger.info("Rolling restart done: %d worker process(es)", len(self.workers))
        finally:
            if self.notifier is not None and not self._stopping:
                self.notifier.ready(self._status())

    async def _replace_worker(self, old: _Worker) -> bool:
        """Start a new worker, then retire ``old`` once the new one is ready
        (one replacement at a time). False: the new one failed to start."""
        assert self._turnover is not None
        async with self._turnover:
            if self._stopping or old.retiring or old not in self.workers:
                return True  # nothing to do any more
            if not await self._start_worker():
                return False
            await self._retire(old, self._grace())
            return True

    async def _recycle(self, worker: _Worker, reason: str) -> None:
        """--workers-lifetime / --workers-max-rss: replace ``worker`` without a gap."""
        worker.replacing = True
        logger.info("Replacing worker process %d: %s", worker.pid, reason)
        try:
            if not await self._replace_worker(worker):
                logger.error("The new worker process failed to start; worker %d keeps serving", worker.pid)
                if worker.retire_at is not None:
                    worker.retire_at = asyncio.get_running_loop().time() + MAX_RESTART_DELAY  # try again later
        finally:
            worker.replacing = False

    def _check_recycling(self, now: float) -> None:
        """Start the replacement of each worker past its lifetime or memory limit."""
        max_rss = self.config.workers_max_rss
        for worker in list(self.workers):
            if worker.retiring or worker.replacing or not worker.ready.done() or not worker.ready.result():
                continue
            if worker.retire_at is not None and now >= worker.retire_at:
                self._spawn_task(self._recycle(worker, f"--workers-lifetime {self.config.workers_lifetime:g} s"))
            elif max_rss is not None and not self._rss_unsupported:
                rss = resident_memory(worker.pid)
                if rss is None:
                    self._rss_unsupported = True
                    logger.warning("--workers-max-rss: this system has no /proc/PID/statm; the limit is not applied")
                elif rss > max_rss * 1024 * 1024:
                    mib = rss / (1024 * 1024)
                    self._spawn_task(self._recycle(worker, f"resident memory {mib:.0f} MiB over --workers-max-rss"))

    def _status(self) -> str:
        """The STATUS= line systemd shows."""
        scheme = "https" if self.config.ssl_certfile or self.config.ssl_keyfile else "http"
        where = ", ".join(socket_url(sock, scheme) for sock in self.sockets)
        return f"{len(self.workers)} worker process(es) serving on {where}"

    # --- health checks ----------------------------------------------------------

    async def _health_checks(self) -> None:
        timeout = self.config.timeout_worker_healthcheck
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            now = loop.time()
            if not self._stopping:
                self._check_recycling(now)
            for worker in list(self.workers):
                if not worker.ready.done() or worker.retiring:
                    continue
                if worker.ping_sent is None:
                    worker.ping_sent = now
                    try:
                        worker.conn.send(("ping",))
                    except OSError:
                        pass  # it is exiting; _on_exit follows
                elif now - worker.ping_sent > timeout:
                    logger.error(
                        "Worker process %d did not answer the health check in %g s (is its event loop blocked?): "
                        "killing it",
                        worker.pid,
                        timeout,
                    )
                    worker.ping_sent = None
                    worker.signal(signal.SIGKILL)

    # --- metrics -------------------------------------------------------------------

    async def _serve_metrics(self, loop: asyncio.AbstractEventLoop) -> MetricsListener | None:
        if self.metrics_socket is None:
            return None
        return await serve_metrics(self.config, self._render_metrics, self.metrics_socket, loop, self)

    async def _render_metrics(self) -> str:
        loop = asyncio.get_running_loop()
        waiters = []
        for worker in list(self.workers):
            if worker.ready.done() and worker.ready.result() and not worker.retiring:
                waiter = loop.create_future()
                worker.metrics_waiters.append(waiter)
                try:
                    worker.conn.send(("metrics",))
                except OSError:
                    worker.metrics_waiters.remove(waiter)
                    continue
                waiters.append(waiter)
        if waiters:
            await asyncio.wait(waiters, timeout=METRICS_TIMEOUT)
        # Every worker still here counts with its latest figures (a retiring one, or
        # one that did not answer in time, with the last it sent), the departed with
        # what they counted: so no total goes backwards from one scrape to the next.
        snapshots = [w.last_metrics for w in self.workers if w.last_metrics is not None]
        if self._departed_metrics is not None:
            snapshots.append(self._departed_metrics)
        answered = sum(1 for w in waiters if w.done() and w.result() is not None)
        return render(merge(snapshots), workers=answered)

    # --- reload ----------------------------------------------------------------

    async def _watch_files(self, watcher: FileWatcher) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.reload_delay)
            changed = await loop.run_in_executor(None, watcher.changes)
            if not changed:
                continue
            shown = ", ".join(os.path.relpath(path) for path in changed[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            logger.warning("Detected changes in %s%s: reloading", shown, more)
            for worker in list(self.workers):
                await self._retire(worker, self._grace())
            if not self._stopping and not await self._start_worker():
                logger.error("The reloaded app failed to start; waiting for file changes")

    # --- signals and banner -----------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        handlers = {
            signal.SIGINT: self._on_stop_signal,
            signal.SIGTERM: self._on_stop_signal,
            signal.SIGHUP: lambda sig: self._spawn_task(self._rolling_restart()),
            signal.SIGTTIN: self._on_more,
            signal.SIGTTOU: self._on_fewer,
            signal.SIGUSR1: self._on_reopen_logs,
        }
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler, sig)

    def _on_stop_signal(self, sig: int) -> None:
        assert self._stop is not None
        self._signals += 1
        if self._signals > 1:
            logger.warning("Second %s: asking the workers to stop now", signal.Signals(sig).name)
            if self._second_signal is not None:
                self._second_signal.set()
            for worker in self.workers:
                worker.signal(signal.SIGTERM)  # a worker's second signal skips its graceful wait
        else:
            logger.info("Stopping %d worker process(es)", len(self.workers))
        self._stop.set()

    def _on_reopen_logs(self, sig: int) -> None:
        reopened = reopen_log_files()
        logger.info("SIGUSR1: reopened %d log file(s); asking the workers to do the same", reopened)
        for worker in self.workers:
            worker.signal(signal.SIGUSR1)

    def _on_more(self, sig: int) -> None:
        if self.config.reload or self._stopping:
            return
        self.target += 1
        logger.info("SIGTTIN: starting a worker process (%d in all)", self.target)
        self._spawn_task(self._replace())

    def _on_fewer(self, sig: int) -> None:
        if self.config.reload or self._stopping or self.target <= 1:
            return
        self.target -= 1
        logger.info("SIGTTOU: stopping a worker process (%d left)", self.target)
        candidates = [worker for worker in self.workers if not worker.retiring]
        if len(candidates) > self.target:
            self._spawn_task(self._retire(candidates[-1], self._grace()))

    def _log_banner(self, loop: asyncio.AbstractEventLoop) -> None:
        mode = "reloading on file changes" if self.config.reload else f"{len(self.workers)} worker processes"
        log_banner(
            self.config,
            self.sockets,
            self.metrics_socket,
            f"supervisor pid {os.getpid()}, {mode}",
            websocket=self._serves_websocket,
            quic_sockets=[group[0] for group in self.quic.sockets],
        )


__all__ = ["run", "Supervisor"]
