"""heron: a fast, strict ASGI server."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run(app: Any = None, **settings: Any) -> int:
    """Serve ``app`` (an ASGI app or a 'module:attribute' string) until stopped.

    Keyword arguments are :class:`heron.config.Config` fields, the same names
    as the command-line options (``port=9000``, ``log_config={...}``,
    ``metrics_bind="127.0.0.1:9100"``...); the environment and config files
    are not read. Like the command line it loads ``env_file``, sets up
    logging, and logs one warning per setting heron accepts but does not
    support yet. Returns the exit status (0, or 3 when start-up failed);
    raises :class:`heron.config.SettingError` for an invalid setting.
    """
    import logging

    from .config import Config
    from .logs import setup_logging
    from .sources import load_dotenv
    from .supervisor import run as run_config

    config = Config(app=app, **settings).validate()
    if config.env_file:
        load_dotenv(config.env_file)
    setup_logging(config)
    for name, message in config.notices():
        logging.getLogger("heron.error").warning("%s: %s", name, message)
    return run_config(config)


def __getattr__(name: str) -> Any:
    if name == "Config":
        from .config import Config

        return Config
    if name == "Server":
        from .server import Server

        return Server
    raise AttributeError(name)


__all__ = ["run", "Config", "Server", "__version__"]
