"""heron: a fast, strict ASGI server."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run(app: Any = None, **settings: Any) -> int:
    """Serve ``app`` (an ASGI app or a 'module:attribute' string) until stopped.

    Keyword arguments are :class:`heron.config.Config` fields. Returns the exit
    status (0, or 3 when start-up failed).
    """
    from .config import Config
    from .logs import configure_logging
    from .server import run_server

    config = Config(app=app, **settings).validate()
    configure_logging(config.log_level, config.access_log)
    return run_server(config)


def __getattr__(name: str) -> Any:
    if name == "Config":
        from .config import Config

        return Config
    if name == "Server":
        from .server import Server

        return Server
    raise AttributeError(name)


__all__ = ["run", "Config", "Server", "__version__"]
