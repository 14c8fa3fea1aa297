"""How a setting is declared: :func:`setting` makes a :class:`~heron.config.Config`
field and stores its metadata, and the readers below (:func:`env_names`,
:func:`cli_flags`, :func:`default_value`) are what the command line, the
loaders and the docs take from it.

The metadata of a field: help text, section, command-line flags, the
environment variables that set it, whether a config file may set it, the
choices or numeric :class:`Bounds` its value must be in, and a notice for
values heron accepts but does not act on (yet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

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


POSITIVE = Bounds(1, None, "a positive integer")
NOT_NEGATIVE = Bounds(0, None, "an integer >= 0")
SECONDS = Bounds(0, None, "a number of seconds >= 0")
SECONDS_OR_NONE = Bounds(0, None, "a number of seconds >= 0, or none")
SECONDS_ABOVE_0 = Bounds(0, None, "a number of seconds > 0", above_low=True)


def setting(
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
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# --- notices: what heron logs for a value it accepts and does not act on ------


def http_notice(value: str) -> str | None:
    if value == "auto":
        return None
    return f"{value!r} has no effect: heron always uses its own strict HTTP/1.1 implementation"


def ws_notice(value: str) -> str | None:
    if value in ("auto", "none"):
        return None
    return f"{value!r} has no effect: heron always uses its own WebSocket implementation (use 'none' to turn WebSocket off)"


def loop_notice(value: str) -> str | None:
    if value == "none":
        return "'none' is served as 'asyncio': heron always creates its own event loop"
    return None


# --- reading a declaration --------------------------------------------------------


def default_value(f: dataclasses.Field[Any]) -> Any:
    """The value ``f`` has when nothing sets it."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


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
