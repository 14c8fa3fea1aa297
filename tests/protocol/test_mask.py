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


JOIN_IMPLEMENTATIONS = [pytest.param(_mask.apply_mask_join_python, id="python")]
if _mask.ACCELERATED:
    JOIN_IMPLEMENTATIONS.append(pytest.param(_mask.apply_mask_join, id="c"))


@pytest.mark.parametrize("apply_mask_join", JOIN_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "sizes", [[], [0], [5], [1, 1, 1, 1, 1], [3, 0, 9, 2], [7, 8, 9], [65536 + 3, 1, 4095], [256, 257, 255]]
)
def test_join_matches_reference(apply_mask_join, sizes: list[int]) -> None:  # type: ignore[no-untyped-def]
    pieces = [os.urandom(n) for n in sizes]
    mask = os.urandom(4)
    assert apply_mask_join(pieces, mask) == reference(b"".join(pieces), mask)


@pytest.mark.parametrize("apply_mask_join", JOIN_IMPLEMENTATIONS)
def test_join_takes_any_buffer(apply_mask_join) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(1000)
    mask = os.urandom(4)
    pieces = [memoryview(data)[:333], bytearray(data[333:700]), data[700:]]
    assert apply_mask_join(pieces, mask) == reference(data, mask)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.binary(min_size=4, max_size=4))
def test_join_c_and_python_agree(pieces: list[bytes], mask: bytes) -> None:
    expected = reference(b"".join(pieces), mask)
    assert _mask.apply_mask_join(pieces, mask) == _mask.apply_mask_join_python(pieces, mask) == expected
