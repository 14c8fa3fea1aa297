"""heron's settings: one frozen dataclass, each field defined once.

Every field carries its own metadata (help text, section, CLI flags). The CLI
(:mod:`heron.cli`), the ``HERON_*`` environment variables and the reference
docs are all derived from these fields, so a setting is never listed twice.
:meth:`Config.validate` is the one place values are checked.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

__all__ = ["Config", "SettingError", "settings"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class SettingError(ValueError):
    """An invalid setting value; the message names the setting and what is allowed."""


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
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    metadata = {
        "help": help,
        "section": section,
        "flags": flags,
        "choices": choices,
        "negatable": negatable,
        "metavar": metavar,
        "cli": cli,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    """All settings. Build it with keyword arguments; call :meth:`validate`."""

    # --- application -------------------------------------------------------
    app: Union[str, Any, None] = _s(
        None,
        "The ASGI app as 'module:attribute' (default: heron's built-in demo page).",
        section="application",
        cli=False,
    )
    factory: bool = _s(
        False, "Treat APP as a factory: call it with no arguments to get the app.", section="application"
    )
    app_dir: str = _s(
        "", "Look for APP in this directory (put first on sys.path).", section="application", metavar="DIR"
    )
    interface: str = _s(
        "auto",
        "Application interface: asgi3, asgi2, or auto-detect.",
        section="application",
        choices=("auto", "asgi3", "asgi2"),
    )
    lifespan: str = _s(
        "auto",
        "Lifespan protocol: on (required), off, or auto (used if the app supports it).",
        section="application",
        choices=("auto", "on", "off"),
    )
    root_path: str = _s(
        "", "The ASGI root_path, for an app mounted below a path prefix.", section="application", metavar="PATH"
    )

    # --- binding -----------------------------------------------------------
    host: str = _s("127.0.0.1", "Bind to this address (an IPv6 literal selects IPv6).", section="binding")
    port: int = _s(8000, "Bind to this port; 0 picks a free one.", section="binding")
    uds: Optional[str] = _s(None, "Bind to this UNIX domain socket path.", section="binding", metavar="PATH")
    fd: Optional[int] = _s(None, "Serve an already-bound listening socket from this file descriptor.", section="binding")
    backlog: int = _s(2048, "Maximum number of pending connections.", section="binding")

    # --- event loop and limits ------------------------------------------------
    loop: str = _s(
        "auto", "Event loop: uvloop, asyncio, or auto (uvloop when installed).", choices=("auto", "asyncio", "uvloop")
    )
    limit_concurrency: Optional[int] = _s(
        None, "Answer 503 to new requests while this many connections or tasks are active.", section="limits"
    )
    limit_request_line: int = _s(8190, "Maximum request line size in bytes (414 beyond).", section="limits")
    limit_request_fields: int = _s(100, "Maximum number of request header fields (431 beyond).", section="limits")
    limit_request_head_size: int = _s(
        65536, "Maximum size of the request line and header fields together, in bytes (431 beyond).", section="limits"
    )

    # --- timeouts ----------------------------------------------------------
    timeout_keep_alive: float = _s(5.0, "Close idle keep-alive connections after this many seconds.", section="timeouts")
    timeout_request_header: float = _s(
        30.0,
        "A client must send a complete request head within this many seconds (slowloris guard); 0 disables.",
        section="timeouts",
    )
    timeout_write: float = _s(
        60.0,
        "Close a connection whose client reads nothing of a pending response for this many seconds; 0 disables.",
        section="timeouts",
    )
    timeout_graceful_shutdown: Optional[float] = _s(
        30.0,
        "On shutdown, wait this many seconds for in-flight requests before cancelling them.",
        section="timeouts",
    )
    timeout_lifespan: float = _s(
        60.0, "Maximum seconds for the app's lifespan startup and shutdown.", section="timeouts"
    )

    # --- HTTP --------------------------------------------------------------
    server_header: bool = _s(True, "Send a 'Server: heron' header.", section="http", negatable=True)
    date_header: bool = _s(True, "Send a 'Date' header.", section="http", negatable=True)
    headers: tuple[tuple[str, str], ...] = _s(
        (),
        "Add a default response header 'Name: Value' (repeatable).",
        section="http",
        flags=("--header",),
        metavar="NAME:VALUE",
    )

    # --- WebSocket ---------------------------------------------------------
    ws: str = _s(
        "auto",
        "WebSocket support: auto (on) or none (upgrade requests are served as plain HTTP).",
        section="websocket",
        choices=("auto", "none"),
    )
    ws_max_size: int = _s(16 * 1024 * 1024, "Maximum WebSocket message size in bytes (close 1009 beyond).", section="websocket")
    ws_max_queue: int = _s(
        32, "Maximum received WebSocket messages waiting for the app before reading pauses.", section="websocket"
    )
    ws_ping_interval: Optional[float] = _s(
        20.0, "Send a WebSocket ping after this many idle seconds; 0 or none disables.", section="websocket"
    )
    ws_ping_timeout: Optional[float] = _s(
        20.0, "Close with 1011 if no frame arrives this many seconds after a ping; 0 or none disables.", section="websocket"
    )
    ws_per_message_deflate: bool = _s(
        True, "Offer permessage-deflate compression (takes a value: true/false).", section="websocket", metavar="BOOL"
    )

    # --- logging -----------------------------------------------------------
    log_level: str = _s("info", "Log level.", section="logging", choices=LOG_LEVELS)
    access_log: bool = _s(True, "Log one line per request.", section="logging", negatable=True)

    # -----------------------------------------------------------------------

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Check every value; raise :class:`SettingError` naming the first bad one."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise SettingError(f"{f.name}: {value!r} is not one of {', '.join(choices)}")
        _require(0 <= self.port <= 65535, "port", self.port, "an integer between 0 and 65535")
        _require(self.backlog > 0, "backlog", self.backlog, "a positive integer")
        if self.limit_concurrency is not None:
            _require(self.limit_concurrency > 0, "limit_concurrency", self.limit_concurrency, "a positive integer")
        for name in ("limit_request_line", "limit_request_fields", "limit_request_head_size", "ws_max_size", "ws_max_queue"):
            _require(getattr(self, name) > 0, name, getattr(self, name), "a positive integer")
        for name in ("timeout_keep_alive", "timeout_request_header", "timeout_write", "timeout_lifespan"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "a number of seconds >= 0")
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None:
                _require(value >= 0, name, value, "a number of seconds >= 0, or none")
        if self.timeout_graceful_shutdown is not None:
            _require(
                self.timeout_graceful_shutdown >= 0,
                "timeout_graceful_shutdown",
                self.timeout_graceful_shutdown,
                "a number of seconds >= 0",
            )
        for name, value in self.headers:
            from .protocol.http1 import _BAD_VALUE_CHAR, _TOKEN

            raw_name, raw_value = name.encode("latin-1", "replace"), value.encode("latin-1", "replace")
            _require(
                _TOKEN.fullmatch(raw_name) is not None and _BAD_VALUE_CHAR.search(raw_value) is None,
                "header",
                f"{name}:{value}",
                "'Name:Value' with a token name and no control characters",
            )
        return self


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise SettingError(f"{name}: {value!r} is not valid; expected {allowed}")


def settings() -> list[dataclasses.Field[Any]]:
    """The settings registry: every Config field, in declaration order."""
    return list(dataclasses.fields(Config))


def env_name(field_name: str) -> str:
    return "HERON_" + field_name.upper()


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise SettingError(f"header: {text!r} is not valid; expected 'Name:Value'")
    return name.strip(), value.strip()


def from_environ(environ: "os._Environ[str] | dict[str, str]") -> dict[str, Any]:
    """Settings given as ``HERON_*`` environment variables (strings converted by the CLI)."""
    return {f.name: environ[env_name(f.name)] for f in settings() if env_name(f.name) in environ}
