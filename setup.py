"""heron's compiled code, all of it optional: pyproject.toml holds the rest of the build.

- ``heron._speedups`` (src/heron/_ext/speedups.c): the WebSocket mask XOR. Built when a C
  compiler is there, skipped when not (``optional``); its pure twin is always installed.
- With ``HERON_MYPYC=1`` in the build's environment, the HTTP/1.1 sans-IO core (the modules
  in ``MYPYC_MODULES``) is compiled by mypyc from the same typed sources, which still ship
  and are what runs without it. It needs mypy in the build environment, so build without
  isolation: ``HERON_MYPYC=1 pip install --no-build-isolation .`` (mypy from
  requirements-test.txt). Not for an editable install: the compiled modules would be
  built next to the sources and shadow later edits of them.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

#: What mypyc compiles: the HTTP/1.1 core, whose classes nothing outside subclasses
#: (mypyc's native classes cannot be subclassed by interpreted ones, and the HTTP/2 and
#: WebSocket cores are assembled from mixins, which it does not compile).
MYPYC_MODULES = [
    "src/heron/protocol/http1/connection.py",
    "src/heron/protocol/http1/events.py",
    "src/heron/protocol/http1/grammar.py",
    "src/heron/protocol/http1/writer.py",
]

ext_modules = [Extension("heron._speedups", ["src/heron/_ext/speedups.c"], optional=True)]
if os.environ.get("HERON_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules += mypycify(MYPYC_MODULES, opt_level="3")

setup(ext_modules=ext_modules)
