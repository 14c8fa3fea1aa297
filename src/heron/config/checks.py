"""Checking a setting's value: its type (:class:`Kind`), the choices and
bounds its declaration gives, and the few settings whose text has a grammar
of its own. Each check raises :class:`~heron.errors.SettingError` naming the
setting, the value and what it accepts; :meth:`heron.config.Config.validate`
runs them in order, so the first bad value is the one reported.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import types
import typing
from typing import Any, NamedTuple, Union

from ..accesslog import compile_format
from ..errors import SettingError
from ..protocol.http1 import is_field_name, is_field_value
from .fields import ACCESS_LOG_PRESETS


def fail(name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise SettingError(f"{name}: {value!r} is not valid; expected {allowed}", name, value, allowed)


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        fail(name, value, allowed)


class Kind(NamedTuple):
    """A setting's value type: ``base`` (bool, int, float, str, or Any),
    whether ``None`` is allowed, and whether it is a list (repeatable)."""

    base: Any
    optional: bool
    multiple: bool


def kind_of(hint: Any) -> Kind:
    """The :class:`Kind` of a field annotated ``hint`` (a resolved type hint)."""
    args = typing.get_args(hint)
    union = typing.get_origin(hint) in (Union, types.UnionType)  # Optional[X] or X | None
    optional = union and type(None) in args
    rest = [a for a in args if a is not type(None)] if union else [hint]
    if len(rest) == 1:
        hint = rest[0]
    if typing.get_origin(hint) is tuple:
        return Kind(str, optional, True)
    if hint in (bool, int, float, str):
        return Kind(hint, optional, False)
    if str in rest:  # str-or-something (log_level, log_config, app): read from text as str
        return Kind(str, optional, False)
    return Kind(Any, optional, False)


@functools.cache
def kinds_of(settings: type) -> dict[str, Kind]:
    """The :class:`Kind` of each field of the dataclass ``settings`` (its
    annotations are text until resolved here, against its own module)."""
    hints = typing.get_type_hints(settings)
    return {f.name: kind_of(hints[f.name]) for f in dataclasses.fields(settings)}


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def describe_kind(f: dataclasses.Field[Any], kind: Kind) -> str:
    """What setting ``f`` of ``kind`` accepts, for error messages."""
    choices = f.metadata.get("choices")
    if f.name == "headers":
        text = "'Name:Value' items"
    elif choices:
        text = "one of " + ", ".join(choices)
    elif kind.multiple:
        text = "a list of strings"
    else:
        text = _TYPE_NAMES.get(kind.base, "a value")
    return text + (", or none" if kind.optional and f.metadata.get("clearable", True) else "")


def check_field(f: dataclasses.Field[Any], kind: Kind, value: Any) -> None:
    """What the declaration of ``f`` asks of its value: type, choices, bounds."""
    check_type(f, kind, value)
    choices = f.metadata.get("choices")
    if choices and isinstance(value, str) and value not in choices:
        fail(f.name, value, "one of " + ", ".join(choices))
    bounds = f.metadata.get("bounds")
    if bounds is not None and value is not None and not bounds.hold(value):
        fail(f.name, value, bounds.text)


def check_type(f: dataclasses.Field[Any], kind: Kind, value: Any) -> None:
    """Type-check values given through the Python API (the loaders convert text first)."""
    name = f.name
    if value is None:
        if kind.optional or kind.base is Any:
            return
        fail(name, value, describe_kind(f, kind))
    if kind.multiple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            fail(name, value, describe_kind(f, kind))
        return
    base = kind.base
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is str and name == "log_level":
        ok = isinstance(value, (str, int)) and not isinstance(value, bool)
    elif base is str and name in ("app", "log_config"):
        ok = True  # an object (app) or a dict/ConfigParser (log_config) also do
    elif base is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        fail(name, value, describe_kind(f, kind))


def check_implementation(name: str, value: str, known: tuple[str, ...]) -> None:
    """``http``, ``ws``, ``loop``: one of the names heron knows, or an import string."""
    if value not in known and ":" not in value:
        fail(name, value, "one of " + ", ".join(known) + ", or a 'module:attribute' import string")


def check_access_log_format(value: str) -> None:
    """A preset, or a format string the access log can compile."""
    if value not in ACCESS_LOG_PRESETS:
        try:
            compile_format(value)
        except ValueError as exc:
            fail("access_log_format", value, str(exc))


def check_header(header: Any) -> None:
    """One ``headers`` item: a (name, value) pair of strings that is a valid field."""
    ok = isinstance(header, (tuple, list)) and len(header) == 2
    if ok:
        name, value = header
        ok = isinstance(name, str) and isinstance(value, str)
    if ok:
        raw_name, raw_value = name.encode("latin-1", "replace"), value.encode("latin-1", "replace")
        ok = is_field_name(raw_name) and is_field_value(raw_value)
    require(ok, "headers", header, "'Name:Value' with a token name and no control characters")


def parse_header(text: str) -> tuple[str, str]:
    """A ``headers`` item from text: ``Name:Value``."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise SettingError(f"headers: {text!r} is not valid; expected 'Name:Value'", "headers", text, "'Name:Value'")
    return name.strip(), value.strip()


def check_forwarded_allow_ips(value: str | None) -> None:
    """Each entry an IP address or network (CIDR), or ``*``: an entry that is neither
    (a host name, a typo) would silently trust nobody, so it is an error."""
    if value is None:
        return
    for item in (part.strip() for part in value.split(",")):
        if not item or item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            fail("forwarded_allow_ips", value, f"IP addresses or networks (CIDR), or '*'; {item!r} is neither")
