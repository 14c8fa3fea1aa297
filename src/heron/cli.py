"""The ``heron`` command. Options are derived from :class:`heron.config.Config`.

Precedence: command line > environment (``HERON_*``, then ``UVICORN_*``) >
config file (``--config``, else ``[tool.heron]`` in ``./pyproject.toml``) >
defaults; see :mod:`heron.sources`. Invalid values exit with status 2 and one
line naming the setting, its source and what is allowed; start-up failures
(import, bind, lifespan) exit with status 3.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .config import SECTIONS, SettingError, cli_flags, env_names, field_kind, settings
from .settings_docs import show_default
from .sources import Resolved, resolve, setting_error

EXIT_INVALID = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the option, like heron's own value errors (argparse
        # would print the whole, very long, usage first).
        hint = self._suggestion(message)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}{hint} (see '{self.prog} --help')\n")

    def _suggestion(self, message: str) -> str:
        """'; did you mean --port?' for a mistyped option (the nearest known one)."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = [option for option in self._option_string_actions if option.startswith("--")]
        for word in message[len(prefix) :].split():
            name = word.split("=", 1)[0]
            if name.startswith("--"):
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                if close:
                    return f"; did you mean {close[0]}?"
        return ""


# Actions that also record the option string as typed (``-b`` or ``--bind``),
# so an error can name it.


def _record(namespace: argparse.Namespace, dest: str, option_string: str | None) -> None:
    namespace._sources[dest] = option_string or dest


class _Store(argparse.Action):
    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        if values is None:  # an optional positional (APP) that was not given
            return
        setattr(namespace, self.dest, values)
        _record(namespace, self.dest, option_string)


class _Append(argparse.Action):
    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)
        _record(namespace, self.dest, option_string)


class _Flag(argparse.Action):
    """``--flag`` (and ``--no-flag`` when negatable)."""

    def __init__(self, option_strings: list[str], dest: str, negatable: bool = False, **kwargs: Any) -> None:
        strings = list(option_strings)
        if negatable:
            strings += ["--no-" + s[2:] for s in option_strings if s.startswith("--")]
        super().__init__(strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, not str(option_string).startswith("--no-"))
        _record(namespace, self.dest, option_string)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="heron",
        description="heron: a fast, strict ASGI server.",
        epilog=(
            "Every option can also be set as an environment variable HERON_<OPTION> (e.g. HERON_PORT=9000; "
            "uvicorn's UVICORN_<OPTION> names work too) or in a TOML config file (--config, or [tool.heron] "
            "in ./pyproject.toml). Precedence: command line > environment > config file > default."
        ),
    )
    parser.add_argument(
        "app", nargs="?", metavar="APP", action=_Store, help="the ASGI app, 'module:attribute' (default: a demo page)"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    fields = [f for f in settings() if f.metadata.get("cli", True)]
    order = {name: i for i, name in enumerate(SECTIONS)}
    for f in sorted(fields, key=lambda f: order.get(f.metadata["section"], len(order))):
        meta = f.metadata
        section = meta["section"]
        if section not in groups:
            groups[section] = parser.add_argument_group(SECTIONS.get(section, section))
        group = groups[section]
        flags = cli_flags(f)
        kind = field_kind(f)
        help_text = f"{meta['help']} [env {', '.join(env_names(f))}; default: {show_default(f)}]".replace("%", "%%")
        if kind.base is bool and meta["metavar"] != "BOOL":
            group.add_argument(
                *flags, dest=f.name, action=_Flag, negatable=meta["negatable"], default=None, help=help_text
            )
        elif kind.multiple:
            group.add_argument(
                *flags, dest=f.name, action=_Append, default=None, metavar=meta["metavar"], help=help_text
            )
        else:
            group.add_argument(
                *flags,
                dest=f.name,
                action=_Store,
                default=None,
                metavar=meta["metavar"]
                or ("{" + ",".join(meta["choices"]) + "}" if meta["choices"] else None)
                or f.name.split("_")[-1].upper(),
                help=help_text,
            )
    return parser


def parse_command_line(argv: Sequence[str] | None = None) -> tuple[dict[str, tuple[Any, str]], bool]:
    """argv -> ({setting: (raw value, option as typed)}, --version given)."""
    parser = build_parser()
    namespace = argparse.Namespace(_sources={})
    parser.parse_args(argv, namespace=namespace)
    given: dict[str, tuple[Any, str]] = {}
    for name, option in namespace._sources.items():
        value = getattr(namespace, name)
        given[name] = (value, "APP" if name == "app" else option)
    return given, bool(namespace.version)


def load(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[Resolved, bool]:
    """Parse argv, the environment and the config file; ``SettingError`` on a bad value."""
    given, show_version = parse_command_line(argv)
    return resolve(given, environ, cwd), show_version


def config_from_args(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> tuple[Any, bool]:
    """(validated Config, --version given); exits with status 2 on an invalid value."""
    try:
        resolved, show_version = load(argv, environ)
    except SettingError as exc:
        _exit_invalid(exc)
    return resolved.config, show_version


def _exit_invalid(exc: SettingError) -> NoReturn:
    sys.stderr.write(f"heron: error: {exc}\n")
    sys.exit(EXIT_INVALID)


def main(argv: Sequence[str] | None = None) -> None:
    from .logs import setup_logging
    from .server import version_string
    from .supervisor import run

    given, show_version = parse_command_line(argv)
    if show_version:
        print(version_string())
        sys.exit(0)
    try:
        resolved = resolve(given)
    except SettingError as exc:
        _exit_invalid(exc)
    try:
        setup_logging(resolved.config)
    except SettingError as exc:  # an unusable --log-config
        name = exc.setting or "log_config"
        _exit_invalid(setting_error(name, exc.value, resolved.sources.get(name, ""), exc.allowed or ""))
    logger = logging.getLogger("heron.error")
    for line in resolved.notices:
        logger.warning("%s", line)
    sys.exit(run(resolved.config))


__all__ = ["main", "build_parser", "config_from_args", "load", "parse_command_line", "__version__"]
