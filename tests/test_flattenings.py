"""Flattenings against explicit numpy reshapes and tensorly's unfold; GTTN enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import tensorly
import torch

from benchmark.norms import (
    Flattening,
    gttn_flattenings,
    gttn_subsets,
    mode_flattening,
    mode_flattenings,
    tr_flattenings,
    tt_flattenings,
)

SHAPES = [(6, 3), (4, 5, 3), (3, 4, 2, 3), (2, 3, 2, 2, 3)]


def bipartition(ndim: int, row_axes: tuple[int, ...]) -> frozenset[frozenset[int]]:
    rows = frozenset(row_axes)
    return frozenset({rows, frozenset(range(ndim)) - rows})


@pytest.mark.parametrize("shape", SHAPES)
def test_mode_flattening_equals_tensorly_unfold(shape: tuple[int, ...]) -> None:
    tensor = np.random.default_rng(1).standard_normal(shape)
    for axis in range(len(shape)):
        ours = mode_flattening(len(shape), axis).apply(torch.from_numpy(tensor)).numpy()
        np.testing.assert_array_equal(ours, tensorly.base.unfold(tensor, axis))


@pytest.mark.parametrize("shape", SHAPES)
def test_tt_flattening_is_row_major_reshape(shape: tuple[int, ...]) -> None:
    tensor = np.random.default_rng(2).standard_normal(shape)
    flattenings = tt_flattenings(len(shape))
    assert len(flattenings) == len(shape) - 1
    for i, flattening in enumerate(flattenings, start=1):
        expected = tensor.reshape(math.prod(shape[:i]), -1)
        np.testing.assert_array_equal(flattening.apply(torch.from_numpy(tensor)).numpy(), expected)


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("span", [1, 2])
def test_tr_flattening_is_circular_unfolding(shape: tuple[int, ...], span: int) -> None:
    tensor = np.random.default_rng(3).standard_normal(shape)
    p = len(shape)
    flattenings = tr_flattenings(p, span)
    assert len(flattenings) == p
    for start, flattening in enumerate(flattenings):
        order = [(start + j) % p for j in range(p)]
        permuted = tensor.transpose(order)
        expected = permuted.reshape(math.prod(permuted.shape[:span]), -1)
        np.testing.assert_array_equal(flattening.apply(torch.from_numpy(tensor)).numpy(), expected)


@pytest.mark.parametrize(("p", "count"), [(2, 1), (3, 3), (4, 7), (5, 15), (6, 31)])
def test_gttn_has_one_flattening_per_bipartition(p: int, count: int) -> None:
    subsets = gttn_subsets((2,) * p)
    assert len(subsets) == count == 2 ** (p - 1) - 1
    partitions = {bipartition(p, s) for s in subsets}
    assert len(partitions) == count, "two subsets are complementary or repeated"
    every_bipartition = {
        bipartition(p, s) for r in range(1, p) for s in itertools.combinations(range(p), r)
    }
    assert partitions == every_bipartition
    assert all(0 < len(s) < p for s in subsets)


def test_gttn_for_three_way_tensors_is_the_tucker_set() -> None:
    gttn = {bipartition(3, f.row_axes) for f in gttn_flattenings((4, 5, 3))}
    tucker = {bipartition(3, f.row_axes) for f in mode_flattenings(3)}
    assert gttn == tucker


def test_pool5_gttn_flattenings_are_not_repeated_mode_flattenings() -> None:
    """Public GTTN code bug 3: its pool5 '15 flattenings' were the 5 mode ones three times."""
    flattenings = gttn_flattenings((7, 7, 512, 128, 3))
    shapes = [f.matrix_shape((7, 7, 512, 128, 3)) for f in flattenings]
    assert len(flattenings) == 15
    assert len({bipartition(5, f.row_axes) for f in flattenings}) == 15
    assert sum(1 for f in flattenings if len(f.row_axes) in (1, 4)) == 5
    assert (49, 512 * 128 * 3) in shapes  # the spatial 7x7 block on the rows, a non-mode flattening


def test_gttn_subset_flattening_matches_explicit_permute_reshape() -> None:
    shape = (2, 3, 4, 2)
    tensor = np.random.default_rng(4).standard_normal(shape)
    for flattening, subset in zip(gttn_flattenings(shape), gttn_subsets(shape), strict=True):
        rest = [a for a in range(4) if a not in subset]
        expected = tensor.transpose([*subset, *rest]).reshape(math.prod(shape[a] for a in subset), -1)
        np.testing.assert_array_equal(flattening.apply(torch.from_numpy(tensor)).numpy(), expected)


def test_bad_flattenings_are_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="permutation"):
        Flattening((0, 0, 1), 1)
    with pytest.raises(ValueError, match="n_row_axes"):
        Flattening((0, 1, 2), 3)
    with pytest.raises(ValueError, match="out of range"):
        mode_flattening(3, 3)
    with pytest.raises(ValueError, match="span"):
        tr_flattenings(3, 3)
    with pytest.raises(ValueError, match="3-way"):
        mode_flattening(3, 0).apply(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2 axes"):
        gttn_subsets((5,))
