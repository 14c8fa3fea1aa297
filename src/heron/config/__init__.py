"""heron's settings: one frozen dataclass, each field defined once.

Every field carries its own metadata: help text, section, command-line flags,
the environment variables that set it (``HERON_<FIELD>``, and uvicorn's
``UVICORN_<PARAM>`` for the options uvicorn has), whether a config file may
set it, the choices or bounds its value must be in, and a notice for values
heron accepts but does not act on (yet). The command line (:mod:`heron.cli`),
the environment and config-file loaders (:mod:`heron.sources`) and the
reference docs (``python -m heron.settings_docs`` writes ``docs/settings.md``)
are all derived from these fields, so a setting is never listed twice.
:meth:`Config.validate` is the one place values are checked.

The package, by what each module holds:

* :mod:`~heron.config.fields`: how a setting is declared (:func:`setting`,
  :class:`Bounds`, the sections) and read back (:func:`env_names`,
  :func:`cli_flags`, :func:`default_value`);
* :mod:`~heron.config.checks`: the value checks :meth:`Config.validate` runs;
* :mod:`~heron.config.listeners`: :class:`Listener` and :func:`parse_bind`;
* :mod:`~heron.config.model`: the :class:`Config` class and every field;
* :mod:`~heron.config.registry`: the fields as the command line, the loaders
  and the docs read them (:func:`settings`, :func:`field_kind`,
  :func:`describe`).
"""

from ..errors import SettingError
from .checks import Kind, parse_header
from .fields import (
    ACCESS_LOG_PRESETS,
    HTTP_IMPLEMENTATIONS,
    LOG_LEVELS,
    LOOPS,
    SECTIONS,
    WS_IMPLEMENTATIONS,
    Bounds,
    cli_flags,
    default_value,
    env_name,
    env_names,
    setting,
)
from .listeners import Listener, parse_bind
from .model import Config
from .registry import describe, field_kind, settings

__all__ = [
    "Config",
    "SettingError",
    "settings",
    "Listener",
    "parse_bind",
    "SECTIONS",
    "Bounds",
    "Kind",
    "setting",
    "field_kind",
    "describe",
    "default_value",
    "env_name",
    "env_names",
    "cli_flags",
    "parse_header",
    "LOG_LEVELS",
    "ACCESS_LOG_PRESETS",
    "HTTP_IMPLEMENTATIONS",
    "WS_IMPLEMENTATIONS",
    "LOOPS",
]
