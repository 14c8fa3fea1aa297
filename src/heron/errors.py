"""Errors every layer may raise: the bottom of the house, importing nothing of heron."""

from __future__ import annotations

from typing import Any

__all__ = ["SettingError"]


class SettingError(ValueError):
    """An invalid setting value; the message names the setting and what is allowed.

    ``setting`` is the field name, so a caller that knows where the value came
    from (a flag, an environment variable, a config file) can say so.
    """

    def __init__(self, message: str, setting: str | None = None, value: Any = None, allowed: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value
        self.allowed = allowed
