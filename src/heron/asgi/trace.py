"""``--log-level trace``: log every ASGI message on ``heron.asgi``.

The server wraps the app in :class:`MessageLogger` only at trace level, so
there is no cost at all otherwise. Bodies and text frames are shown by size,
not content (uvicorn's ``uvicorn.asgi`` lines look the same).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .http import ASGIApp, Message, Scope

TRACE = 5
logger = logging.getLogger("heron.asgi")

_SHOWN_BY_SIZE = ("body", "bytes", "text")


def _short(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    shown = dict(message)
    for key in _SHOWN_BY_SIZE:
        value = shown.get(key)
        if isinstance(value, (bytes, bytearray, memoryview)):
            shown[key] = f"<{len(value)} bytes>"
        elif isinstance(value, str) and key == "text":
            shown[key] = f"<{len(value)} chars>"
    return shown


def _short_scope(scope: Scope) -> dict[str, Any]:
    return {key: value for key, value in scope.items() if key not in ("headers", "state")}


class MessageLogger:
    """ASGI middleware: log the scope, every received and sent message, and the outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = itertools.count(1)

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        number = next(self._ids)
        log = logger.log
        log(TRACE, "ASGI [%d] Started scope=%s", number, _short_scope(scope))

        async def traced_receive() -> Message:
            message = await receive()
            log(TRACE, "ASGI [%d] Receive %s", number, _short(message))
            return message

        async def traced_send(message: Message) -> None:
            log(TRACE, "ASGI [%d] Send %s", number, _short(message))
            await send(message)

        try:
            await self.app(scope, traced_receive, traced_send)
        except BaseException as exc:
            log(TRACE, "ASGI [%d] Raised %s", number, type(exc).__name__)
            raise
        log(TRACE, "ASGI [%d] Completed", number)
