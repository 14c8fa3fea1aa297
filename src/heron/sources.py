"""Where settings come from, and in which order they win.

Precedence, per setting: the command line > the environment (``HERON_<FIELD>``,
then ``UVICORN_<FIELD>`` where uvicorn has the option, then extra names such as
``WEB_CONCURRENCY``) > a config file (``--config PATH``, else ``[tool.heron]``
of ``./pyproject.toml``) > the default. ``--env-file`` is loaded into the
environment before any environment variable is read.

Every value is converted here, from text (argv, environment) or TOML types,
and every error names the setting, where the value came from and what is
allowed (:class:`~heron.config.SettingError`). :mod:`heron.cli` turns that
into exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from .config import Config, SettingError, cli_flags, describe, env_names, field_kind, parse_header, settings

__all__ = ["resolve", "Resolved", "read_dotenv", "load_dotenv", "split_list", "setting_error"]

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


@dataclasses.dataclass
class Resolved:
    """The outcome of :func:`resolve`."""

    config: Config
    #: setting name -> where its value came from ("--port", "HERON_PORT", "heron.toml: port")
    sources: dict[str, str]
    #: one-line warnings to log once logging is set up
    notices: list[str]
    #: the config file that was read, if any
    config_file: str | None = None


def setting_error(name: str, raw: Any, source: str, allowed: str) -> SettingError:
    shown = raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else repr(raw)
    where = f" (from {source})" if source and source != name else ""
    return SettingError(f"invalid value {shown} for {name}{where}: expected {allowed}", name, raw, allowed)


def split_list(text: str) -> list[str]:
    """A list setting from one environment variable: whitespace-separated, as
    click does for uvicorn; a value containing newlines is split on newlines
    only (so an item, e.g. a header value, may contain spaces)."""
    if "\n" in text:
        return [item.strip() for item in text.splitlines() if item.strip()]
    return text.split()


def convert_text(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """Convert text from argv or the environment (a list for repeatable flags)."""
    kind = field_kind(f)
    name = f.name
    if kind.multiple:
        items = split_list(raw) if isinstance(raw, str) else list(raw)
        if name == "headers":
            try:
                return tuple(parse_header(item) for item in items)
            except SettingError as exc:
                raise setting_error(name, exc.value, source, "'Name:Value'") from None
        return tuple(items)
    assert isinstance(raw, (str, bool)), raw
    if isinstance(raw, bool):
        return raw
    text = raw.strip()
    if kind.optional and (not text or (text.lower() == "none" and f.metadata["clearable"])):
        return None
    base = kind.base
    try:
        if base is bool:
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise setting_error(name, raw, source, describe(f)) from None
    choices = f.metadata.get("choices")
    if choices and text not in choices:
        raise setting_error(name, raw, source, describe(f))
    return text


def convert_file(f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """Convert a TOML value; text is read as on the command line."""
    kind = field_kind(f)
    name = f.name
    if isinstance(raw, str):
        if kind.multiple:
            return convert_text(f, [raw], source)
        return convert_text(f, raw, source)
    if kind.multiple:
        if name == "headers" and isinstance(raw, dict):
            raw = [f"{key}:{value}" for key, value in raw.items()]
        if not isinstance(raw, list):
            raise setting_error(name, raw, source, describe(f))
        items = []
        for item in raw:
            if name == "headers" and isinstance(item, list) and len(item) == 2:
                item = f"{item[0]}:{item[1]}"
            if not isinstance(item, str):
                raise setting_error(name, raw, source, describe(f))
            items.append(item)
        return convert_text(f, items, source)
    base = kind.base
    if base is bool and isinstance(raw, bool):
        return raw
    if base is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if base is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if name == "log_level" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    raise setting_error(name, raw, source, describe(f))


# --- dotenv ------------------------------------------------------------------------


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a dotenv file: ``KEY=VALUE`` lines, optional ``export`` prefix,
    ``#`` comments (whole line, or after an unquoted value following a space),
    single quotes (literal) and double quotes (``\\n``, ``\\t``, ``\\"``,
    ``\\\\`` escapes; may span lines). No variable expansion."""
    text = Path(path).read_text(encoding="utf-8")
    result: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith(("export ", "export\t")):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or not (key.replace("_", "a").replace(".", "a").isalnum()) or key[0].isdigit():
            raise ValueError(f"line {index}: expected KEY=VALUE, got {lines[index - 1].strip()!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            body = value[1:]
            while _closing_quote(body, quote) < 0:
                if index >= len(lines):
                    raise ValueError(f"line {index}: unterminated {quote} quote for {key}")
                body += "\n" + lines[index]
                index += 1
            end = _closing_quote(body, quote)
            rest = body[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"{key}: unexpected text after the closing quote: {rest!r}")
            body = body[:end]
            value = _unescape(body) if quote == '"' else body
        else:
            hash_at = value.find(" #")
            if hash_at < 0:
                hash_at = value.find("\t#")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        result[key] = value
    return result


def _closing_quote(body: str, quote: str) -> int:
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and quote == '"':
            i += 2
            continue
        if ch == quote:
            return i
        i += 1
    return -1


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unescape(body: str) -> str:
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def load_dotenv(
    path: str | os.PathLike[str], environ: MutableMapping[str, str] | None = None, source: str = "env_file"
) -> dict[str, str]:
    """Load ``path`` into ``environ`` (``os.environ``); variables already set win.
    Raises :class:`SettingError` naming ``source`` if the file can't be read."""
    environ = os.environ if environ is None else environ
    try:
        values = read_dotenv(path)
    except OSError as exc:
        raise setting_error("env_file", str(path), source, f"a readable dotenv file ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise setting_error("env_file", str(path), source, f"a dotenv file of KEY=VALUE lines ({exc})") from None
    for key, value in values.items():
        environ.setdefault(key, value)
    return values


# --- config files ---------------------------------------------------------------------


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def read_config_file(path: str, source: str, explicit: bool) -> tuple[dict[str, tuple[Any, str]], str | None]:
    """Settings from a TOML file: ``[tool.heron]`` if the file has it, else the
    top level (for ``--config``). Returns ({name: (value, source)}, path read)."""
    file_path = Path(path)
    try:
        document = _load_toml(file_path)
    except FileNotFoundError:
        if not explicit:
            return {}, None
        raise setting_error("config", path, source, "an existing TOML file") from None
    except OSError as exc:
        raise setting_error("config", path, source, f"a readable TOML file ({exc.strerror})") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise setting_error("config", path, source, f"valid TOML ({exc})") from None
    tool = document.get("tool")
    if isinstance(tool, dict) and "heron" in tool:
        table = tool["heron"]
        prefix = f"{path} [tool.heron]"
    elif explicit:
        table = document
        prefix = path
    else:
        return {}, None
    if not isinstance(table, dict):
        raise setting_error("config", path, source, "a table of settings under [tool.heron]")
    fields = {f.name: f for f in settings()}
    values: dict[str, tuple[Any, str]] = {}
    for key, value in table.items():
        if not explicit and key == "tool":
            continue
        name = key.replace("-", "_")
        f = fields.get(name)
        where = f"{prefix}: {key}"
        if f is None:
            if explicit and table is document and isinstance(value, dict):
                continue  # another tool's table in a shared file
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingError(f"unknown setting {key!r} in {prefix}{hint}", "config", key, "a setting name")
        if not f.metadata.get("file", True):
            raise SettingError(f"{key!r} can't be set in a config file ({prefix})", name, value, "")
        values[name] = (value, where)
    return values, str(file_path)


# --- resolution ----------------------------------------------------------------------


def resolve(
    cli: Mapping[str, tuple[Any, str]],
    environ: MutableMapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Resolved:
    """Merge the command line (``{name: (raw value, flag as typed)}``), the
    environment and the config file into a validated :class:`Config`.

    ``environ`` defaults to ``os.environ``, and ``--env-file`` is loaded into it.
    Raises :class:`SettingError` with a message naming the source.
    """
    environ = os.environ if environ is None else environ
    cwd = Path(cwd if cwd is not None else os.getcwd())
    fields = {f.name: f for f in settings()}

    def from_env(name: str) -> tuple[str, str] | None:
        for var in env_names(fields[name]):
            if var in environ:
                return environ[var], var
        return None

    # 1. --env-file from the command line or the environment: load it first
    env_file_loaded = None
    found = cli.get("env_file") or from_env("env_file")
    if found is not None and found[0]:
        load_dotenv(_relative(cwd, found[0]), environ, found[1])
        env_file_loaded = found

    # 2. the config file
    found = cli.get("config") or from_env("config")
    if found is not None and found[0]:
        file_values, file_path = read_config_file(str(_relative(cwd, found[0])), found[1], explicit=True)
    else:
        file_values, file_path = read_config_file(str(cwd / "pyproject.toml"), "pyproject.toml", explicit=False)
    if env_file_loaded is None and "env_file" in file_values:
        raw, where = file_values["env_file"]
        if not isinstance(raw, str):
            raise setting_error("env_file", raw, where, "a path")
        load_dotenv(_relative(cwd, raw), environ, where)

    # 3. every setting: command line > environment > file > default
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    rank: dict[str, int] = {}  # 0 command line, 1 environment, 2 file
    for name, f in fields.items():
        if name in cli:
            raw, where = cli[name]
            values[name] = convert_text(f, raw, where)
            rank[name] = 0
        else:
            env = from_env(name)
            if env is not None:
                raw, where = env
                values[name] = convert_text(f, raw, where)
                rank[name] = 1
            elif name in file_values:
                raw, where = file_values[name]
                values[name] = convert_file(f, raw, where)
                rank[name] = 2
            else:
                continue
        sources[name] = where
    if values.get("bind"):
        # --bind replaces host/port/uds/fd given at a lower precedence (e.g. -b on the
        # command line over port in a config file); at the same level they clash
        for name in ("host", "port", "uds", "fd"):
            if name in values and rank[name] > rank["bind"]:
                del values[name], sources[name]
    try:
        config = Config(**values).validate()
    except SettingError as exc:
        # a SettingError without details still starts with "setting: "
        name = exc.setting or str(exc).partition(":")[0]
        source = sources.get(name, "")
        if exc.allowed is not None:
            raise setting_error(name, exc.value, source, exc.allowed) from None
        raise SettingError(f"{exc}" + (f" (from {source})" if source and source != name else ""), name) from None
    notices = []
    for name, message in config.notices():
        where = sources.get(name) or cli_flags(fields[name])[-1]
        notices.append(f"{where}: {message}")
    return Resolved(config, sources, notices, file_path)


def _relative(cwd: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else cwd / p
