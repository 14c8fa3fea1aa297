"""Which build of the HTTP/1.1 core the tests are running: the mypyc build
(``HERON_MYPYC=1``, setup.py) only when the run says so (``HERON_EXPECT_COMPILED=1``,
.ci/run's second pass), so neither pass can quietly test the other build."""

from __future__ import annotations

import os
from pathlib import Path

from heron.protocol.http1 import connection, events, grammar, writer


def test_the_build_under_test_is_the_one_expected() -> None:
    expected = os.environ.get("HERON_EXPECT_COMPILED") == "1"
    for module in (connection, events, grammar, writer):
        assert module.__file__ is not None
        compiled = Path(module.__file__).suffix != ".py"
        assert compiled == expected, (module.__name__, module.__file__)
