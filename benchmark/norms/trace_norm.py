"""The matrix trace (nuclear) norm, exact, with a hand-written subgradient that is finite everywhere.

``||X||_* = sum_i sigma_i(X)``. Its subdifferential at X = U diag(s) V^T is
``{U_r V_r^T + Z : U_r^T Z = 0, Z V_r = 0, ||Z||_2 <= 1}`` (Watson 1992), r = rank(X). The
gradient used here is ``U V^T`` over all min(m, n) singular vectors of the thin SVD: finite at
rank-deficient and zero matrices, and non-zero at X = 0, so a penalty moves weights even from
the origin (as the TensorFlow reference code of Yang & Hospedales, ICLR 2017, does).
tests/test_trace_norm.py checks it is a valid subgradient.

How it is computed, cheapest exact route first (benchmarked by ``make bench``). With A the
tall orientation of X (m >= n) and the Gram matrix G = A^T A = V diag(s^2) V^T:

    ||X||_* = sum sqrt(eig(G)),   U V^T = A V diag(1/s) V^T = A G^(-1/2)

so a value and its gradient cost two (m x n) by (n x n) products and one n x n
eigen-decomposition, instead of an SVD of the m x n matrix. A float32 Gram matrix is
accumulated in float64 (see ``_float32_gram``). Squaring the singular values squares
the condition number, so the route is chosen by how well conditioned G is:

1. float32 input and kappa(G) <= 200: eigen-decomposition and product in float32 (measured
   gradient error below 1e-5 up to there, 2e-5 at 1e3);
2. kappa(G) <= 1e9: Gram, eigen-decomposition and product in float64;
3. otherwise (numerically rank-deficient, or zero): the thin SVD in float64, U V^T explicitly.
   Singular values below the tolerance are then exact zeros of the SVD and their vectors keep
   the gradient finite.

On a GPU the eigen-decomposition is the slow, sequential part, so there the first route is
**matrix products only** (``matmul``): the coupled Newton-Schulz iteration on the float64 Gram,
scaled by its largest eigenvalue (power iteration), converges to G^(-1/2) with a residual
||I - G Z^2|| that it computes for free each iteration; it stops once that residual is below
``NS_TOLERANCE`` (each eigen-direction is then within NS_TOLERANCE / 2 of the exact one, well
inside the 1e-5 target). It gives way to the routes above where the Gram is beyond cond(G) 1e9
(read off Z, whose largest eigenvalue squared is cond(G): a rank-deficient or zero matrix, or
singular values below ~3e-5 of the largest, which the Gram cannot resolve) or after
``NS_MAX_ITERATIONS``. It is chosen
automatically on CUDA tensors; ``BENCHMARK_TRACE_NORM_ROUTE=matmul`` (or :func:`trace_norm_route`)
chooses it on the CPU too, ``eigh`` never.

A trace-norm penalty drives most singular values of a flattening to ~1e-4 of the largest within
a few epochs, after which cond(G) stays above 200 on most steps, and each step would build the
float32 Gram, decompose it, reject it and start again in float64. A :class:`RouteMemo` kept per
flattening (the regularisers keep one for each flattening of each layer) remembers a float64
outcome and goes straight to float64 until the matrix is well conditioned again (cond(G) below
``KAPPA_REPROBE`` on the float64 route) or ``REPROBE_EVERY`` calls have passed. It only ever
skips a float32 attempt for the float64 route, the more accurate one: no result gets worse.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

KAPPA_FLOAT32 = 200.0  # largest cond(G) whose float32 eigen-decomposition gives U V^T to ~1e-5
KAPPA_FLOAT64 = 1e9  # beyond this the Gram route loses the small singular values: take the SVD
GRAM_BLOCK = 8192  # rows per float32 Gram product; the blocks are summed in float64
KAPPA_REPROBE = 50.0  # a flattening in float64 mode tries float32 again once cond(G) falls below this
REPROBE_EVERY = 50  # ... or after this many calls in float64 mode
NS_TOLERANCE = 1e-7  # the matmul route stops once ||I - G Z^2||_F is below this
NS_MAX_ITERATIONS = 80  # ... and gives up after this many (cond(G) 1e9 takes about 60)
ROUTE_VARIABLE = "BENCHMARK_TRACE_NORM_ROUTE"  # auto (matmul on CUDA) | matmul | eigh
ROUTES = ("auto", "matmul", "eigh")


@dataclass
class RouteMemo:
    """The route one flattening took last: ``float64`` after a float32 attempt was rejected (or its
    input was float64), until it is well conditioned again or ``REPROBE_EVERY`` calls have passed.
    ``routes`` counts the routes taken, for the bench."""

    float64: bool = False
    calls_in_float64: int = 0
    routes: dict[str, int] | None = None

    def skip_float32(self) -> bool:
        if not self.float64 or self.calls_in_float64 >= REPROBE_EVERY:
            return False
        self.calls_in_float64 += 1
        return True

    def taken(self, route: str, well_conditioned: bool = False) -> None:
        """Record the route a call took; ``well_conditioned``: cond(G) < KAPPA_REPROBE on float64."""
        if self.routes is not None:
            self.routes[route] = self.routes.get(route, 0) + 1
        if route == "float32" or well_conditioned:
            self.float64, self.calls_in_float64 = False, 0
        elif not self.float64 or self.calls_in_float64 >= REPROBE_EVERY:  # entering, or a re-probe failed
            self.float64, self.calls_in_float64 = True, 0


def _check(matrix: torch.Tensor) -> None:
    if matrix.ndim != 2:
        raise ValueError(f"trace_norm takes a matrix, got a tensor of shape {tuple(matrix.shape)}")
    if not matrix.is_floating_point():
        raise TypeError(f"trace_norm needs a floating-point matrix, got {matrix.dtype}")


def _float32_gram(tall: torch.Tensor) -> torch.Tensor:
    """A^T A of a float32 matrix, in float64. One float32 product summing millions of rows loses
    ~1e-3 of its value (a task flattening has 2M-long rows), so rows are multiplied in blocks and
    the block products summed in float64: as fast as one float32 product, accurate to ~1e-7
    relative -- enough where cond(G) is small, which is where it is used."""
    rows, cols = tall.shape
    whole = rows - rows % GRAM_BLOCK
    gram = torch.zeros(cols, cols, dtype=torch.float64, device=tall.device)
    if whole:
        blocks = tall[:whole].reshape(-1, GRAM_BLOCK, cols)
        gram += (blocks.transpose(1, 2) @ blocks).double().sum(0)
    if whole < rows:
        rest = tall[whole:]
        gram += (rest.T @ rest).double()
    return gram


def _from_eigen(tall: torch.Tensor, eigenvalues: torch.Tensor, vectors: torch.Tensor, with_gradient: bool,
                kappa: float) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(value, U V^T = A G^(-1/2)) in the eigenvectors' dtype; None if cond(G) exceeds ``kappa``."""
    largest, smallest = eigenvalues[-1], eigenvalues[0]  # eigh sorts ascending
    if not bool(largest > 0 and smallest * kappa >= largest):
        return None
    singular = eigenvalues.sqrt()
    if not with_gradient:
        return singular.sum(), None
    return singular.sum(), tall.to(vectors.dtype) @ ((vectors / singular) @ vectors.T)


_route_override: str | None = None


@contextmanager
def trace_norm_route(route: str) -> Iterator[None]:
    """Inside: the first route is ``route`` ("matmul", "eigh" or "auto"), whatever the environment says."""
    global _route_override
    if route not in ROUTES:
        raise ValueError(f"trace norm route {route!r}; valid: {', '.join(ROUTES)}")
    previous, _route_override = _route_override, route
    try:
        yield
    finally:
        _route_override = previous


def _matmul_route(matrix: torch.Tensor) -> bool:
    route = _route_override or os.environ.get(ROUTE_VARIABLE, "auto")
    if route not in ROUTES:
        raise ValueError(f"{ROUTE_VARIABLE}={route!r}; valid: {', '.join(ROUTES)}")
    return route == "matmul" or (route == "auto" and matrix.is_cuda)


def _newton_schulz(tall: torch.Tensor, with_gradient: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(value, U V^T) of a float64 tall matrix by matrix products only; None where it does not converge."""
    gram = tall.T @ tall
    n = gram.shape[0]
    largest = _largest_eigenvalue(gram)  # within a few percent is enough to scale
    if not largest > 0:
        return None  # a zero matrix
    scale = 1.1 * largest  # eigenvalues of gram / scale within (0, 1): it converges
    identity = torch.eye(n, dtype=gram.dtype, device=gram.device)
    square, inverse_root = gram / scale, identity  # Y -> A^(1/2), Z -> A^(-1/2), A = gram / scale
    for _ in range(NS_MAX_ITERATIONS):
        # Z grows towards A^(-1/2), whose largest eigenvalue squared is 1 / lambda_min(A) >= cond(G),
        # and ||Z||_F^2 / n <= lambda_max(Z)^2: past this the Gram is beyond the float64 route's limit.
        if not bool(inverse_root.square().sum() <= KAPPA_FLOAT64 * n):
            return None
        step = 0.5 * (3 * identity - inverse_root @ square)
        # I - Z Y = 2 (T - I): the residual comes with the step.
        if bool(torch.linalg.matrix_norm(step - identity) * 2 < NS_TOLERANCE):
            # cond(G) = lambda_max(A) / lambda_min(A) = lambda_max(Z)^2 / 1.1: beyond KAPPA_FLOAT64
            # the Gram has lost the small singular values, as on the eigh route: the SVD instead.
            if _largest_eigenvalue(inverse_root) ** 2 / 1.1 > KAPPA_FLOAT64:
                return None
            value = torch.diagonal(square).sum() * scale**0.5
            return value, (tall @ inverse_root / scale**0.5 if with_gradient else None)
        square, inverse_root = square @ step, step @ inverse_root
    return None


def _largest_eigenvalue(symmetric: torch.Tensor, iterations: int = 30) -> float:
    """Power iteration on a symmetric positive semi-definite matrix (matrix products only)."""
    vector = torch.ones(symmetric.shape[0], dtype=symmetric.dtype, device=symmetric.device)
    for _ in range(iterations):
        vector = symmetric @ vector
        vector = vector / vector.norm().clamp_min(torch.finfo(vector.dtype).tiny)
    return float(vector @ symmetric @ vector)


def trace_norm_and_direction(matrix: torch.Tensor, with_gradient: bool = True,
                             memo: RouteMemo | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(||X||_*, U V^T)`` in X's dtype, by the cheapest accurate route (module docstring);
    ``memo``: the flattening's route memo, which may skip a float32 attempt bound to fail."""
    _check(matrix)
    memo = memo or RouteMemo()
    transposed = matrix.shape[0] < matrix.shape[1]
    tall = matrix.T if transposed else matrix
    result = None
    if _matmul_route(matrix):
        result = _newton_schulz(tall.to(torch.float64), with_gradient)
        if result is not None:
            memo.taken("matmul")
            memo.float64 = True  # the float32 eigh route is not tried where the matmul route runs
    if result is None and matrix.dtype == torch.float32 and not memo.skip_float32():
        result = _from_eigen(tall, *torch.linalg.eigh(_float32_gram(tall).float()), with_gradient, KAPPA_FLOAT32)
        if result is not None:
            memo.taken("float32")
    if result is None:
        exact = tall.to(torch.float64)
        eigenvalues, vectors = torch.linalg.eigh(exact.T @ exact)
        result = _from_eigen(exact, eigenvalues, vectors, with_gradient, KAPPA_FLOAT64)
        if result is not None:
            memo.taken("float64", well_conditioned=bool(eigenvalues[0] * KAPPA_REPROBE >= eigenvalues[-1]))
    if result is None:
        u, s, vh = torch.linalg.svd(tall.to(torch.float64), full_matrices=False)
        result = s.sum(), (u @ vh if with_gradient else None)
        memo.taken("svd")
    value, direction = result
    if direction is not None:
        direction = (direction.T if transposed else direction).to(matrix.dtype)
    return value.to(matrix.dtype), direction


class _TraceNorm(torch.autograd.Function):
    """The trace norm with U V^T saved by the forward pass and scaled in the backward pass.

    The backward is linear in the incoming gradient and written in torch ops, so a
    hypergradient through one differentiated step (GTTN meta, torch.func) passes through it.
    """

    @staticmethod
    def forward(matrix: torch.Tensor, memo: RouteMemo | None) -> tuple[torch.Tensor, torch.Tensor]:
        value, direction = trace_norm_and_direction(matrix, memo=memo)
        return value, direction

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, direction = output
        ctx.mark_non_differentiable(direction)
        ctx.save_for_backward(direction)

    @staticmethod
    def backward(ctx, grad_value: torch.Tensor, _grad_direction: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        (direction,) = ctx.saved_tensors
        return grad_value * direction, None


_naive = False


@contextmanager
def naive_svd_trace_norm() -> Iterator[None]:
    """Inside: autograd through ``torch.linalg.svdvals``, one flattening at a time, in the input
    dtype -- what the published TNRDMTL and GTTN code do. The baseline ``make bench`` measures
    against; its gradient is also U V^T."""
    global _naive
    previous, _naive = _naive, True
    try:
        yield
    finally:
        _naive = previous


def trace_norm(matrix: torch.Tensor, memo: RouteMemo | None = None) -> torch.Tensor:
    """Sum of the singular values of a 2-D tensor; backward gives the subgradient ``U V^T``.
    ``memo``: the route memo of the flattening this matrix is (see the module docstring)."""
    _check(matrix)
    if _naive:
        return torch.linalg.svdvals(matrix).sum()
    if torch.is_grad_enabled() and matrix.requires_grad:
        return _TraceNorm.apply(matrix, memo)[0]
    return trace_norm_and_direction(matrix, with_gradient=False, memo=memo)[0]
