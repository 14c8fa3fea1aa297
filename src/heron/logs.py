"""Logging set-up.

Loggers: ``heron.error`` (server events, to stderr), ``heron.access`` (one
record per request or WebSocket session, to stdout) and ``heron.asgi`` (every
ASGI message, at ``--log-level trace``).

uvicorn's names are honoured as aliases, both ways:

* heron's default set-up configures ``uvicorn``, ``uvicorn.error`` and
  ``uvicorn.access`` exactly like the heron loggers, so an app that logs to
  ``uvicorn.error`` looks the same as under uvicorn;
* every record on ``heron.error``/``heron.access``/``heron.asgi`` also reaches
  the handlers configured on ``uvicorn.error``/``uvicorn.access``/``uvicorn.asgi``
  (and ``uvicorn``; not the root logger, and never a handler twice), and is
  dropped when that uvicorn logger is disabled, has a level above the record,
  or a filter that rejects it. So a log config or an app written for uvicorn
  (``logging.getLogger("uvicorn.access").addFilter(...)``) keeps working.

Log files (a ``logging.FileHandler`` of a ``--log-config`` file, or one the
app added) are reopened on SIGUSR1 (:func:`reopen_log_files`), so logrotate
can move them away and signal heron instead of copying and truncating them.

heron never disables loggers it did not create (``disable_existing_loggers``
is false unless a ``--log-config`` file says otherwise), and
``--no-configure-logging`` leaves logging entirely to the app.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .config import SettingError

if TYPE_CHECKING:
    from .config import Config

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

#: heron logger -> the uvicorn logger it is an alias of
ALIASES = {"heron.error": "uvicorn.error", "heron.access": "uvicorn.access", "heron.asgi": "uvicorn.asgi"}

_COLORS = {
    TRACE: "\x1b[34m",
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[91m",
}


def level_number(level: str | int | None) -> int:
    if level is None:
        return logging.INFO
    if isinstance(level, int):
        return level
    return _LEVELS[level]


class DefaultFormatter(logging.Formatter):
    """``INFO:     message``, the layout uvicorn users know; ``%(levelprefix)s``
    is coloured when ``use_colors`` (None: when stderr is a terminal)."""

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        use_colors: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fmt or "%(levelprefix)s%(message)s", datefmt, style, **kwargs)
        self.use_colors = _tty(sys.stderr) if use_colors is None else use_colors

    def formatMessage(self, record: logging.LogRecord) -> str:
        name = record.levelname
        prefix = (name + ":").ljust(10)
        if self.use_colors:
            color = _COLORS.get(record.levelno)
            if color:
                prefix = color + name + "\x1b[0m:" + " " * (9 - len(name))
        record.levelprefix = prefix
        return super().formatMessage(record)


class AccessFormatter(DefaultFormatter):
    """Kept for log configs written for uvicorn (``uvicorn.logging.AccessFormatter``):
    access records carry ``client_addr``, ``request_line`` and ``status_code``."""

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        use_colors: bool | None = None,
        **kwargs: Any,
    ) -> None:
        colors = _tty(sys.stdout) if use_colors is None else use_colors
        super().__init__(fmt, datefmt, style, use_colors=colors, **kwargs)


_STRUCTURED = (
    "client",
    "method",
    "path",
    "query",
    "http_version",
    "request_line",
    "status",
    "bytes",
    "bytes_in",
    "duration_ms",
    "user_agent",
    "request_id",
)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``,
    the structured access fields for access records, and ``exc_info`` (the
    traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = record.__dict__.get("entry")
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if entry is not None:
            data.update(entry.fields())
        else:  # access records made with extra={...} (or app records with such fields)
            attrs = record.__dict__
            for name in _STRUCTURED:
                if name in attrs:
                    data[name] = attrs[name]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, separators=(",", ":"))


def _tty(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _Alias(logging.Filter):
    """On a heron logger: apply the uvicorn alias's gates, and hand the record to
    the alias's handlers (those not already on heron's own path)."""

    def __init__(self, own: logging.Logger, alias: str) -> None:
        super().__init__()
        self.own = own
        self.alias = logging.getLogger(alias)

    def filter(self, record: logging.LogRecord) -> bool:
        alias = self.alias
        if alias.disabled or (alias.level and record.levelno < alias.level):
            return False
        for flt in alias.filters:
            result = flt.filter(record) if hasattr(flt, "filter") else flt(record)
            if not result:
                return False
        handlers = _handlers(alias, include_root=False)
        if handlers:
            ours = _handlers(self.own, include_root=True)
            for handler in handlers:
                if handler not in ours and record.levelno >= handler.level:
                    handler.handle(record)
        return True


def _handlers(logger: logging.Logger, include_root: bool) -> list[logging.Handler]:
    found: list[logging.Handler] = []
    current: Any = logger
    while current is not None:
        if not include_root and current is logging.root:
            break
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return found


def install_aliases() -> None:
    """Put the uvicorn-alias filter on heron's loggers (once)."""
    for name, alias in ALIASES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Alias) for f in logger.filters):
            logger.addFilter(_Alias(logger, alias))


def default_config(config: Config) -> dict[str, Any]:
    """heron's dictConfig: level-prefixed text (or JSON) on stderr, access on stdout."""
    level = level_number(config.log_level)
    json_records = config.log_format == "json"
    if json_records:
        default_fmt: dict[str, Any] = {"()": JSONFormatter}
        access_fmt: dict[str, Any] = {"()": JSONFormatter}
    else:
        default_fmt = {"()": DefaultFormatter, "fmt": "%(levelprefix)s%(message)s", "use_colors": config.use_colors}
        access_fmt = {
            "()": DefaultFormatter,
            # presets and custom formats are the whole line, as in gunicorn
            "fmt": "%(levelprefix)s%(message)s" if config.access_log_format == "default" else "%(message)s",
            "use_colors": _tty(sys.stdout) if config.use_colors is None else config.use_colors,
        }
    access_level = level if config.access_log else logging.CRITICAL + 1
    loggers: dict[str, Any] = {}
    for root in ("heron", "uvicorn"):
        loggers[root] = {"handlers": ["default"], "level": level, "propagate": False}
        loggers[root + ".error"] = {"level": level}
        loggers[root + ".asgi"] = {"level": level}
        loggers[root + ".access"] = {"handlers": ["access"], "level": access_level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": default_fmt, "access": access_fmt},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "loggers": loggers,
    }


def setup_logging(config: Config) -> None:
    """Configure logging for ``config`` (the CLI and :func:`heron.run` call this;
    an embedded :class:`heron.Server` leaves logging to its host).

    Raises :class:`SettingError` (setting ``log_config``) for an unusable file."""
    install_aliases()
    if not config.configure_logging:
        return
    if config.log_config is None:
        logging.config.dictConfig(default_config(config))
        return
    load_log_config(config.log_config)
    for name, alias_name in ALIASES.items():
        logger, alias = logging.getLogger(name), logging.getLogger(alias_name)
        if config.log_level is not None:
            logger.setLevel(level_number(config.log_level))
        elif logger.level == logging.NOTSET and _configured(alias):
            # a config written for uvicorn's names sets their levels: heron's follow
            logger.setLevel(alias.getEffectiveLevel())
    for name in ("heron", "heron.error", "heron.access", "heron.asgi"):
        logging.getLogger(name).disabled = False  # a file's disable_existing_loggers never silences heron


def _configured(logger: logging.Logger) -> bool:
    """True if a log config gave ``logger`` (or a parent below the root) a level or handlers."""
    current: Any = logger
    while current is not None and current is not logging.root:
        if current.level != logging.NOTSET or current.handlers:
            return True
        current = current.parent
    return False


def load_log_config(log_config: Any) -> None:
    """dictConfig for a dict, ``.json`` or ``.yaml``/``.yml`` file; fileConfig
    (``disable_existing_loggers=False``) for ``.ini`` and other files, a
    ConfigParser or a file object."""
    if isinstance(log_config, dict):
        _dict_config(dict(log_config))
        return
    if isinstance(log_config, (configparser.RawConfigParser,)) or hasattr(log_config, "readline"):
        logging.config.fileConfig(log_config, disable_existing_loggers=False)
        return
    path = str(log_config)
    if not os.path.isfile(path):
        raise _bad(path, "an existing logging config file (.json, .yaml, .yml or .ini)")
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            _dict_config(data)
        elif path.endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                raise _bad(path, "a .json or .ini file, or PyYAML installed for YAML (pip install pyyaml)") from None
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
            _dict_config(data)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except SettingError:
        raise
    except Exception as exc:  # noqa: BLE001  # json/yaml syntax, dictConfig's ValueError, fileConfig's KeyError...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _bad(path, f"a valid logging config ({detail})") from None


_UVICORN_CLASSES = {
    "uvicorn.logging.DefaultFormatter": "heron.logs.DefaultFormatter",
    "uvicorn.logging.AccessFormatter": "heron.logs.AccessFormatter",
    "uvicorn.logging.ColourizedFormatter": "heron.logs.DefaultFormatter",
}


def _dict_config(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError("the file must hold a dictConfig mapping")
    data.setdefault("disable_existing_loggers", False)
    try:
        import uvicorn.logging  # type: ignore[import-not-found,unused-ignore]  # noqa: F401  # (optional: a config written for uvicorn)
    except ImportError:
        # a config written for uvicorn names its formatters: use heron's twins
        for formatter in (data.get("formatters") or {}).values():
            if isinstance(formatter, dict):
                for key in ("()", "class"):
                    if formatter.get(key) in _UVICORN_CLASSES:
                        formatter[key] = _UVICORN_CLASSES[formatter[key]]
    logging.config.dictConfig(data)


def _bad(path: str, allowed: str) -> SettingError:
    return SettingError(f"log_config: {path!r} is not valid; expected {allowed}", "log_config", path, allowed)


def configure_logging(level: str = "info", access_log: bool = True) -> None:
    """heron's default logging set-up (kept for callers of the first API)."""
    from .config import Config

    setup_logging(Config(log_level=level, access_log=access_log))


def reopen_log_files() -> int:
    """Close and reopen the file of every ``logging.FileHandler`` (SIGUSR1):
    after logrotate renamed a log file, records go to a new file of the old
    name. Returns how many files were reopened."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    seen: set[int] = set()
    reopened = 0
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) or id(handler) in seen:
                continue
            seen.add(id(handler))
            handler.acquire()
            try:
                if handler.stream is not None:  # (delay=True: not opened yet)
                    handler.stream.close()
                    handler.stream = handler._open()
                    reopened += 1
            finally:
                handler.release()
    return reopened


__all__ = [
    "TRACE",
    "setup_logging",
    "configure_logging",
    "default_config",
    "install_aliases",
    "reopen_log_files",
    "load_log_config",
    "DefaultFormatter",
    "AccessFormatter",
    "JSONFormatter",
    "level_number",
]
