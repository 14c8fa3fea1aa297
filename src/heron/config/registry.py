"""The settings registry: every :class:`~heron.config.Config` field, in
declaration order, and what the command line, the loaders and the docs ask
of one (its :class:`~heron.config.checks.Kind`, what it accepts)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .checks import Kind, describe_kind, kinds_of
from .model import Config


def settings() -> list[dataclasses.Field[Any]]:
    """The settings registry: every Config field, in declaration order."""
    return list(dataclasses.fields(Config))


def field_kind(f: dataclasses.Field[Any]) -> Kind:
    """The value type of setting ``f``."""
    return kinds_of(Config)[f.name]


def describe(f: dataclasses.Field[Any]) -> str:
    """What a setting accepts, for error messages."""
    return describe_kind(f, field_kind(f))
