"""The matrix trace norm: value against numpy's SVD, and a valid, finite subgradient everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.norms import trace_norm


def assert_is_subgradient(matrix: torch.Tensor, grad: torch.Tensor) -> None:
    """G is in the subdifferential of ||.||_* at X iff ||G||_2 <= 1 and <G, X> = ||X||_*."""
    assert torch.isfinite(grad).all()
    assert torch.linalg.matrix_norm(grad, ord=2) <= 1 + 1e-9
    nuclear = torch.linalg.svdvals(matrix).sum()
    torch.testing.assert_close((grad * matrix).sum(), nuclear, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (40, 2), (1, 6)])
def test_value_matches_numpy_svd(shape: tuple[int, int]) -> None:
    matrix = np.random.default_rng(0).standard_normal(shape)
    expected = np.linalg.svd(matrix, compute_uv=False).sum()
    assert trace_norm(torch.from_numpy(matrix)).item() == pytest.approx(expected, rel=1e-12)
    float32 = trace_norm(torch.from_numpy(matrix).float()).item()
    assert float32 == pytest.approx(expected, rel=1e-5)


def test_gradient_matches_finite_differences_at_a_generic_matrix() -> None:
    matrix = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trace_norm, (matrix,))


@pytest.mark.parametrize(
    "matrix",
    [
        torch.zeros(4, 3, dtype=torch.float64),
        torch.outer(torch.arange(1.0, 5.0), torch.tensor([1.0, -2.0, 0.5])).double(),  # rank 1
        torch.diag(torch.tensor([2.0, 2.0, 0.0])).double(),  # repeated and zero singular values
    ],
    ids=["zero", "rank-1", "repeated"],
)
def test_subgradient_is_valid_finite_and_non_zero_where_svd_autograd_breaks(matrix: torch.Tensor) -> None:
    leaf = matrix.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(trace_norm(leaf), leaf)
    assert_is_subgradient(matrix, grad)
    assert grad.abs().sum() > 0


def test_rejects_non_matrices() -> None:
    with pytest.raises(ValueError, match="matrix"):
        trace_norm(torch.zeros(2, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        trace_norm(torch.zeros(2, 2, dtype=torch.int64))
