"""The ASGI lifespan protocol (asgiref ``lifespan`` spec 2.0).

``mode`` is ``"on"`` (the app must support lifespan: an error is a startup
failure), ``"auto"`` (an app that raises before answering startup is treated
as having no lifespan support, quietly) or ``"off"``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .http import ASGIApp, Message

logger = logging.getLogger("heron.error")


class LifespanFailure(Exception):
    """Startup failed or timed out; the server must exit with status 3."""


class Lifespan:
    def __init__(self, app: ASGIApp, mode: str = "auto", timeout: float | None = 60.0) -> None:
        self.app = app
        self.mode = mode
        self.timeout = timeout
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=2)
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._failure: str | None = None
        self._answered_startup = False
        self._shutdown_failed = False
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        message_type = message.get("type") if isinstance(message, dict) else None
        if message_type in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._answered_startup:
                raise RuntimeError(f"ASGI lifespan: {message_type!r} sent twice")
            self._answered_startup = True
            if message_type == "lifespan.startup.failed":
                self._failure = str(message.get("message", ""))
            self._startup_done.set()
        elif message_type in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not self._startup_done.is_set():
                raise RuntimeError(f"ASGI lifespan: {message_type!r} before startup completed")
            if message_type == "lifespan.shutdown.failed":
                self._shutdown_failed = True
                logger.error("Application shutdown failed: %s", message.get("message", ""))
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"ASGI lifespan: unexpected message {message!r:.200}")

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not self._answered_startup:
                if self.mode == "auto":
                    logger.info("ASGI 'lifespan' protocol appears unsupported by the app.")
                    logger.debug("lifespan error", exc_info=exc)
                    self.supported = False
                else:
                    logger.error("Exception in 'lifespan' protocol", exc_info=exc)
                    self._failure = f"{type(exc).__name__}: {exc}"
            elif self._failure is not None or self._shutdown_failed:
                # the app reported its failure already (Starlette sends the traceback
                # as the message, then raises it again): say it once
                logger.debug("Exception in 'lifespan' protocol after the app reported its failure", exc_info=exc)
            else:
                logger.error("Exception in 'lifespan' protocol", exc_info=exc)
        finally:
            # Whatever happened, nobody waits forever on an event that won't come.
            self._startup_done.set()
            self._shutdown_done.set()

    async def startup(self) -> None:
        """Run startup; raise :class:`LifespanFailure` on failure or timeout."""
        if self.mode == "off":
            return
        logger.info("Waiting for application startup.")
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        try:
            await asyncio.wait_for(self._startup_done.wait(), self.timeout)
        except asyncio.TimeoutError:
            self._task.cancel()
            raise LifespanFailure(f"Application startup timed out after {self.timeout:g} s") from None
        if self._failure is not None:
            raise LifespanFailure(f"Application startup failed: {self._failure}".rstrip(": "))
        if self.supported and not self._answered_startup:
            # the app returned without answering, in "on" mode that's a failure
            if self.mode == "on":
                raise LifespanFailure("Application startup failed: the app returned without answering")
            self.supported = False
        if self.supported:
            logger.info("Application startup complete.")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        logger.info("Waiting for application shutdown.")
        if self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), self.timeout)
        except asyncio.TimeoutError:
            logger.error("Application shutdown timed out after %g s", self.timeout)
            self._task.cancel()
            return
        logger.info("Application shutdown complete.")
