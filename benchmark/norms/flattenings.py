"""Matrix flattenings of a stacked weight tensor (SPEC.md section 1).

A stacked weight tensor W has shape D1 x ... x D(p-1) x T: the task axis is last. Every
flattening used by a tensor trace norm is "permute the axes, then split them into a row
group and a column group", so one small value type, :class:`Flattening`, describes them
all and one function applies them. Axes are 0-based here (the papers count modes from 1).

Flattening families (Zhang, Zhang & Wang, KDD 2021, arXiv 2002.04799, section 3):

- mode-i (Tucker, LAF, LAF-i): ``W_(i) = reshape(permute(W, [i, rest in order]), [Di, -1])``;
- TT: ``W_[i] = reshape(W, [D1...Di, D(i+1)...Dp])``, i = 1..p-1, no permutation;
- TR with span d: the circular unfolding with modes k..k+d-1 (mod p) as rows, k = 1..p;
- GTTN: one flattening per bipartition {s, not-s} of the modes. ``W_{not s}`` is the transpose
  of ``W_{s}`` (same singular values), so only the subsets containing the first mode are kept:
  2^(p-1) - 1 of them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class Flattening:
    """Permute a tensor's axes by ``order``, then put the first ``n_row_axes`` axes on the rows."""

    order: tuple[int, ...]
    n_row_axes: int

    def __post_init__(self) -> None:
        if sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"order {self.order} is not a permutation of 0..{len(self.order) - 1}")
        if not 1 <= self.n_row_axes <= len(self.order) - 1:
            raise ValueError(
                f"n_row_axes must be in 1..{len(self.order) - 1} for a {len(self.order)}-way tensor, "
                f"got {self.n_row_axes}"
            )

    @property
    def row_axes(self) -> tuple[int, ...]:
        return self.order[: self.n_row_axes]

    @property
    def bipartition(self) -> frozenset[frozenset[int]]:
        """{row axes, column axes}: what the trace norm depends on. Reordering the axes within a
        group permutes the matrix's rows or columns, and swapping the groups transposes it; neither
        changes the singular values."""
        return frozenset({frozenset(self.row_axes), frozenset(self.order[self.n_row_axes:])})

    def matrix_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        rows = math.prod(shape[a] for a in self.row_axes)
        return rows, math.prod(shape) // rows

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        """The flattening of ``tensor`` as a matrix (a copy only when the permutation needs one)."""
        if tensor.ndim != len(self.order):
            raise ValueError(
                f"this flattening is for {len(self.order)}-way tensors, got shape {tuple(tensor.shape)}"
            )
        rows, cols = self.matrix_shape(tuple(tensor.shape))
        return tensor.permute(self.order).reshape(rows, cols)


def _check_order(ndim: int) -> None:
    if ndim < 2:
        raise ValueError(f"a stacked weight tensor has at least 2 axes (features x tasks), got {ndim}")


def mode_flattening(ndim: int, axis: int) -> Flattening:
    """Mode-``axis`` unfolding: that axis on the rows, the others in order on the columns."""
    _check_order(ndim)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-way tensor (valid: {-ndim}..{ndim - 1})")
    axis %= ndim
    rest = tuple(a for a in range(ndim) if a != axis)
    return Flattening((axis, *rest), 1)


@lru_cache(maxsize=None)
def mode_flattenings(ndim: int) -> tuple[Flattening, ...]:
    """The p mode unfoldings W_(1), ..., W_(p) (Tucker trace norm)."""
    return tuple(mode_flattening(ndim, axis) for axis in range(ndim))


@lru_cache(maxsize=None)
def tt_flattenings(ndim: int) -> tuple[Flattening, ...]:
    """The p-1 tensor-train unfoldings W_[i] = reshape(W, [D1...Di, D(i+1)...Dp])."""
    _check_order(ndim)
    identity = tuple(range(ndim))
    return tuple(Flattening(identity, i) for i in range(1, ndim))


@lru_cache(maxsize=None)
def tr_flattenings(ndim: int, span: int = 2) -> tuple[Flattening, ...]:
    """The p circular (tensor-ring) unfoldings with ``span`` consecutive modes on the rows.

    For start k the axis order is k, k+1, ..., k+p-1 (mod p); the first ``span`` are rows.
    ``span = 1`` gives the mode unfoldings; for p = 3 and span 2 each unfolding is the transpose
    of a mode unfolding, so the TR norm equals the Tucker norm there.
    """
    _check_order(ndim)
    if not 1 <= span <= ndim - 1:
        raise ValueError(f"TR span d must be in 1..{ndim - 1} for a {ndim}-way tensor, got {span}")
    return tuple(
        Flattening(tuple((start + j) % ndim for j in range(ndim)), span) for start in range(ndim)
    )


@lru_cache(maxsize=None)
def gttn_subsets(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The 2^(p-1) - 1 mode subsets of the generalized tensor trace norm, computed once per shape.

    Every subset that contains axis 0 except the full set: each bipartition {s, not-s} of the
    axes appears exactly once (its complement would give the transposed matrix).
    """
    ndim = len(shape)
    _check_order(ndim)
    others = range(1, ndim)
    return tuple(
        (0, *extra)
        for size in range(ndim - 1)
        for extra in itertools.combinations(others, size)
    )


def subset_flattening(ndim: int, row_axes: tuple[int, ...]) -> Flattening:
    """W_{s}: the axes in ``row_axes`` (in order) on the rows, the rest (in order) on the columns."""
    _check_order(ndim)
    rest = tuple(a for a in range(ndim) if a not in row_axes)
    return Flattening((*row_axes, *rest), len(row_axes))


@lru_cache(maxsize=None)
def gttn_flattenings(shape: tuple[int, ...]) -> tuple[Flattening, ...]:
    """The GTTN flattenings W_{s}, one per subset of :func:`gttn_subsets`."""
    return tuple(subset_flattening(len(shape), s) for s in gttn_subsets(tuple(shape)))
