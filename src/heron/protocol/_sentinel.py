"""A named marker a core returns instead of an event (``NEED_DATA``, ``PAUSED``...)."""

from __future__ import annotations


class Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name
