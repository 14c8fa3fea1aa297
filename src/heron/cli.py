"""The ``heron`` command. Options are derived from :class:`heron.config.Config`.

Precedence: command line > ``HERON_*`` environment variables > defaults.
Invalid values exit with status 2 and one line naming the setting and its
source; start-up failures (import, bind, lifespan) exit with status 3.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Any, NoReturn, Sequence

from . import __version__
from .config import Config, SettingError, env_name, parse_header, settings
from .logs import configure_logging


def _field_type(f: dataclasses.Field[Any]) -> Any:
    hints = typing.get_type_hints(Config)
    hint = hints[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return args[0], True
    return hint, False


def _convert(f: dataclasses.Field[Any], raw: Any) -> Any:
    """Turn a string (from argv or the environment) into the field's type."""
    kind, optional = _field_type(f)
    if f.name == "headers":
        return tuple(parse_header(item) for item in raw)
    if isinstance(raw, str) and optional and raw.lower() in ("none", ""):
        return None
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        lowered = str(raw).lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the option, like heron's own value errors (argparse
        # would print the whole, very long, usage first).
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="heron",
        description="heron: a fast, strict ASGI server.",
        epilog="Every option can also be set as an environment variable HERON_<OPTION>, e.g. HERON_PORT=9000.",
    )
    parser.add_argument("app", nargs="?", metavar="APP", help="the ASGI app, 'module:attribute' (default: a demo page)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in settings():
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        section = meta["section"]
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(section))
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        kind, _ = _field_type(f)
        help_text = f"{meta['help']} [env {env_name(f.name)}; default: {_show_default(f)}]"
        if kind is bool and meta["metavar"] == "BOOL":
            # uvicorn's valued boolean, e.g. --ws-per-message-deflate false
            group.add_argument(*flags, dest=f.name, default=None, metavar="BOOL", help=help_text)
        elif kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "headers":
            group.add_argument(*flags, dest=f.name, action="append", default=None, metavar=meta["metavar"], help=help_text)
        else:
            group.add_argument(
                *flags,
                dest=f.name,
                default=None,
                choices=meta["choices"],
                metavar=meta["metavar"] or (None if meta["choices"] else f.name.split("_")[-1].upper()),
                help=help_text,
            )
    return parser


def _show_default(f: dataclasses.Field[Any]) -> str:
    value = f.default if f.default is not dataclasses.MISSING else None
    if value in (None, "", ()):
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def config_from_args(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> tuple[Config, bool]:
    """Parse argv and the environment into a validated Config; (config, show_version)."""
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser()
    namespace = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in settings():
        if not f.metadata.get("cli", True) and f.name != "app":
            continue
        given = getattr(namespace, f.name, None)
        source = (f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))[0]  # as the user typed it
        if given is None and env_name(f.name) in environ:
            given = environ[env_name(f.name)]
            source = env_name(f.name)
            if f.name == "headers":
                given = [h for h in given.split("\n") if h.strip()]
        if given is None:
            continue
        try:
            value = _convert(f, given)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
        except (ValueError, SettingError) as exc:
            shown = "" if isinstance(given, list) else f" {given!r}"  # a list: exc names the bad item
            parser.exit(2, f"heron: error: invalid value{shown} for {source}: {exc}\n")
        values[f.name] = value
    try:
        config = Config(**values).validate()
    except SettingError as exc:
        parser.exit(2, f"heron: error: {exc}\n")
    return config, bool(namespace.version)


def main(argv: Sequence[str] | None = None) -> None:
    from .server import run_server, version_string

    config, show_version = config_from_args(argv)
    if show_version:
        print(version_string())
        sys.exit(0)
    configure_logging(config.log_level, config.access_log)
    sys.exit(run_server(config))


__all__ = ["main", "build_parser", "config_from_args", "__version__"]
