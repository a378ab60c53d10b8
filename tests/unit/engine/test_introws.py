"""`engine.introws.unique_rows` answers as `np.unique(rows, axis=0)` does, packed or not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recon_worker.engine.introws import unique_rows

FLAGS = [
    {},
    {"return_counts": True},
    {"return_index": True},
    {"return_inverse": True},
    {"return_index": True, "return_inverse": True, "return_counts": True},
]


def as_tuple(result: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)))


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize(
    "rows",
    [
        np.random.default_rng(0).integers(0, 50, (5_000, 2)),  # many repeats (edges)
        np.random.default_rng(1).integers(0, 2_000, (3_000, 3)),  # faces
        np.array([[2**40, 1, 0], [0, 0, 0], [2**40, 1, 0]]),  # too wide to pack: numpy's own answer
        np.zeros((0, 2), np.int64),
    ],
    ids=["edges", "faces", "wide", "empty"],
)
def test_same_answer_as_numpy(rows: np.ndarray, flags: dict[str, bool]) -> None:
    expected, found = as_tuple(np.unique(rows, axis=0, **flags)), as_tuple(unique_rows(rows, **flags))
    assert len(found) == len(expected)
    for want, got in zip(expected, found, strict=True):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
        assert got.shape[0] == want.shape[0]
