"""systemd integration, without libsystemd: socket activation and ``sd_notify``.

Both are detected from the environment systemd sets, with no flag:

* **Socket activation** (``LISTEN_FDS``, ``LISTEN_PID``, optional
  ``LISTEN_FDNAMES``; sd_listen_fds(3)): the listening sockets start at file
  descriptor 3. heron serves on them instead of binding its own, with any
  number of workers (the supervisor hands them on as it does the ones it
  binds). The variables are removed once read, so no child mistakes them for
  its own.
* **Notification** (``NOTIFY_SOCKET``; sd_notify(3)): ``READY=1`` once every
  worker serves, ``RELOADING=1`` (SIGHUP, with ``MONOTONIC_USEC`` as
  ``Type=notify-reload`` requires) then ``READY=1`` again, ``STOPPING=1`` when a
  shutdown starts, ``STATUS=`` lines a human reads in ``systemctl status``, and
  ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the main process's event loop
  (a loop that stops answering stops the pings, and systemd restarts the
  service). Only the main process notifies: ``NOTIFY_SOCKET`` is removed from
  the environment before workers start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import MutableMapping

logger = logging.getLogger("heron.error")

#: the first file descriptor systemd passes (SD_LISTEN_FDS_START)
LISTEN_FDS_START = 3


def listen_fds(environ: MutableMapping[str, str] = os.environ) -> list[tuple[int, str]]:
    """The sockets systemd passed to this process, as (fd, name); [] when none.

    ``LISTEN_PID`` must name this process (the variables may have been meant for
    a parent). The variables are removed either way: they describe this
    process's descriptors and would be wrong in any child.
    """
    pid, count, names = (environ.pop(key, None) for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if pid is None or count is None:
        return []
    if not (pid.isdigit() and int(pid) == os.getpid()):
        return []
    if not count.isdigit() or int(count) == 0:
        return []
    n = int(count)
    labels = names.split(":") if names else []
    if len(labels) != n:
        labels = ["unknown"] * n  # as sd_listen_fds_with_names(3) does
    return [(LISTEN_FDS_START + i, labels[i]) for i in range(n)]


def activated_sockets(environ: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """Listening sockets from socket activation, non-blocking; [] when not activated.

    ``OSError`` if a descriptor is not a listening stream socket (a unit that
    passes, say, a datagram socket is a configuration mistake worth failing on).
    """
    found = []
    for fd, name in listen_fds(environ):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise OSError(f"systemd passed file descriptor {fd} ({name}), which is not a socket: {exc}") from None
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise OSError(f"systemd passed file descriptor {fd} ({name}), which is not a listening stream socket")
        sock.setblocking(False)
        logger.info("Using socket %s from systemd (fd %d, %s)", _name(sock), fd, name)
        found.append(sock)
    return found


def _name(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return f"{name[0]}:{name[1]}"


class Notifier:
    """sd_notify over ``NOTIFY_SOCKET`` (a path, or ``@`` for the abstract namespace)."""

    def __init__(self, address: str, watchdog_usec: int | None) -> None:
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        #: seconds between two WATCHDOG=1 (half the interval systemd allows), or None
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier | None:
        """The notifier for this process, if systemd asked for one; takes ``NOTIFY_SOCKET``
        (and the watchdog variables) out of the environment so that workers do not notify."""
        address = environ.pop("NOTIFY_SOCKET", None)
        usec = environ.pop("WATCHDOG_USEC", None)
        watchdog_pid = environ.pop("WATCHDOG_PID", None)
        if not address or address[0] not in "/@":
            return None
        watchdog = int(usec) if usec and usec.isdigit() and int(usec) > 0 else None
        if watchdog_pid is not None and watchdog_pid != str(os.getpid()):
            watchdog = None  # the watchdog is some other process's
        return cls(address, watchdog)

    def notify(self, *lines: str) -> None:
        """Send ``KEY=value`` lines in one datagram; a failure is logged, never raised
        (systemd gone is no reason to stop serving)."""
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", self._address, exc)

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self, status: str = "Reloading: replacing worker processes") -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", f"STATUS={status}")

    def stopping(self, status: str = "Stopping: finishing open requests") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping ``WATCHDOG=1`` from ``loop`` until :meth:`close`."""
        if self.watchdog_interval is None:
            return

        def ping() -> None:
            self.notify("WATCHDOG=1")
            assert self.watchdog_interval is not None
            self._watchdog = loop.call_later(self.watchdog_interval, ping)

        ping()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._sock.close()
