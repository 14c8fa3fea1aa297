"""WebSocket masking: the C and pure-Python implementations agree."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heron.protocol import _mask

IMPLEMENTATIONS = [pytest.param(_mask.apply_mask_python, id="python")]
if _mask.ACCELERATED:
    IMPLEMENTATIONS.append(pytest.param(_mask.apply_mask, id="c"))


def reference(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize("apply_mask", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1000, 65536 + 3])
def test_matches_reference(apply_mask, size: int) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(size)
    mask = os.urandom(4)
    assert apply_mask(data, mask) == reference(data, mask)
    assert apply_mask(apply_mask(data, mask), mask) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4))
def test_c_and_python_agree(data: bytes, mask: bytes) -> None:
    assert _mask.apply_mask(data, mask) == _mask.apply_mask_python(data, mask) == reference(data, mask)


def test_accelerated_build_present_in_ci() -> None:
    # The C speedups must be built wherever a compiler exists (CI has one):
    # a silent fallback to the slow path would go unnoticed otherwise.
    if os.environ.get("CI") and not os.environ.get("HERON_NO_EXTENSIONS"):
        assert _mask.ACCELERATED, "heron._speedups was not built"
