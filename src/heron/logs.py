"""Logging set-up. Loggers: ``heron.error`` (server events) and ``heron.access``
(one line per request). Existing loggers are never disabled."""

from __future__ import annotations

import logging
import logging.config


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


class _Formatter(logging.Formatter):
    """``INFO:     message``, the layout uvicorn users know."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = (record.levelname + ":").ljust(10)
        return super().format(record)


def configure_logging(level: str = "info", access_log: bool = True) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "default": {"()": _Formatter, "format": "%(levelprefix)s%(message)s"},
                "access": {"()": _Formatter, "format": "%(levelprefix)s%(message)s"},
            },
            "handlers": {
                "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"},
                "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
            },
            "loggers": {
                "heron": {"handlers": ["default"], "level": _LEVELS[level], "propagate": False},
                "heron.error": {"level": _LEVELS[level]},
                "heron.access": {
                    "handlers": ["access"],
                    "level": _LEVELS[level] if access_log else logging.CRITICAL + 1,
                    "propagate": False,
                },
            },
        }
    )

