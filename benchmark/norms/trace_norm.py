"""The matrix trace (nuclear) norm with a subgradient that is finite everywhere.

``||X||_* = sum_i sigma_i(X)``. Its subdifferential at X = U diag(s) V^T is
``{U_r V_r^T + Z : U_r^T Z = 0, Z V_r = 0, ||Z||_2 <= 1}`` (Watson 1992), r = rank(X).
The backward of ``torch.linalg.svdvals`` gives ``U V^T`` over all min(m, n) singular vectors of
the thin SVD -- it needs no singular vector derivatives, so unlike autograd through the full
``svd`` it never divides by differences of singular values. The vectors of the zero singular
values are orthonormal and orthogonal to U_r, V_r, so ``U V^T`` is the member with
Z = U_0 V_0^T: finite at rank-deficient and zero matrices, and non-zero at X = 0, so a penalty
moves weights even from the origin (as the TensorFlow reference code of Yang & Hospedales,
ICLR 2017, does with ``U V^T``). tests/test_trace_norm.py checks it is a valid subgradient.
"""

from __future__ import annotations

import torch


def trace_norm(matrix: torch.Tensor) -> torch.Tensor:
    """Sum of the singular values of a 2-D tensor; backward gives the subgradient ``U V^T``."""
    if matrix.ndim != 2:
        raise ValueError(f"trace_norm takes a matrix, got a tensor of shape {tuple(matrix.shape)}")
    if not matrix.is_floating_point():
        raise TypeError(f"trace_norm needs a floating-point matrix, got {matrix.dtype}")
    return torch.linalg.svdvals(matrix).sum()
