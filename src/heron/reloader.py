"""What ``--reload`` watches: the modification times of the files that matter.

The supervisor (:mod:`heron.supervisor`) polls a :class:`FileWatcher` every
``--reload-delay`` seconds and restarts its one worker when something changed.
Watched: ``*.py`` and ``--reload-include`` globs under ``--reload-dir``
(default: the working directory). Skipped: hidden names, ``__pycache__``,
compiled files, editor swap and backup files, virtual environments (a
directory holding ``pyvenv.cfg``: thousands of files nobody edits) and
``--reload-exclude`` globs.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any

DEFAULT_RELOAD_INCLUDES = ("*.py",)
DEFAULT_RELOAD_EXCLUDES = (".*", "*.py[cod]", ".sw.*", "~*", "__pycache__")


class FileWatcher:
    """Modification times of the watched files, compared scan to scan."""

    def __init__(self, dirs: Any, includes: tuple[str, ...], excludes: tuple[str, ...]) -> None:
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.includes = includes
        self.excludes = excludes
        self.state: dict[str, float] = {}

    def _excluded(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.excludes)

    def scan(self) -> dict[str, float]:
        found: dict[str, float] = {}
        pending = list(self.dirs)
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            if directory not in self.dirs and any(entry.name == "pyvenv.cfg" for entry in entries):
                continue  # a virtual environment: thousands of files nobody edits
            for entry in entries:
                name = entry.name
                if self._excluded(name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif any(fnmatch.fnmatch(name, pattern) for pattern in self.includes):
                        found[entry.path] = entry.stat().st_mtime
                except OSError:
                    continue  # removed while scanning
        return found

    def changes(self) -> list[str]:
        """Files added, removed or modified since the last call."""
        old, new = self.state, self.scan()
        self.state = new
        return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))


__all__ = ["FileWatcher", "DEFAULT_RELOAD_INCLUDES", "DEFAULT_RELOAD_EXCLUDES"]
