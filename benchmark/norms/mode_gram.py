"""The three mode trace norms of a 3-way tensor from one Gram matrix.

For W of shape I x J x K with J K <= I, the mode-0 unfolding A = W_(0) (I x JK) is tall and its
Gram matrix G0 = A^T A (JK x JK) holds the other two as partial traces:

    G1[j, j'] = sum_k G0[(j, k), (j', k)]   (the J x J Gram of the mode-1 unfolding)
    G2[k, k'] = sum_j G0[(j, k), (j, k')]   (the K x K Gram of the mode-2 unfolding)

so one I x JK x JK product gives all three. With Z_m = V_m diag(1/s_m) V_m^T = G_m^(-1/2), the
directions U V^T of the three unfoldings, folded back into W's shape and unfolded along mode 0,
are A Z0, A (Z1 (x) I_K) and A (I_J (x) Z2); a weighted sum of the norms (Tucker, GTTN-a, GTTN
variable, TR with d = 2 on a 3-way tensor) therefore needs one product for its gradient:

    d/dW sum_m g_m ||W_(m)||_* = A (g0 Z0 + g1 Z1 (x) I_K + g2 I_J (x) Z2)   (unfolded along mode 0)

It is the float64 route of :mod:`benchmark.norms.trace_norm` for all three at once (a float32
Gram accumulates too much error for the partial traces), used where the mode-0 flattening's route
memo is in float64 mode: late in training, where the penalty spends its time. Where any of the
three Gram matrices is beyond cond(G) 1e9, it returns None and the caller takes the per-flattening
routes (the SVD for that one).
"""

from __future__ import annotations

import torch

from .trace_norm import KAPPA_FLOAT64, KAPPA_REPROBE


def _inverse_root(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """(sum of singular values, G^(-1/2), well conditioned for float32 again) or None past KAPPA_FLOAT64."""
    eigenvalues, vectors = torch.linalg.eigh(gram)
    largest, smallest = eigenvalues[-1], eigenvalues[0]
    if not bool(largest > 0 and smallest * KAPPA_FLOAT64 >= largest):
        return None
    singular = eigenvalues.sqrt()
    return singular.sum(), (vectors / singular) @ vectors.T, bool(smallest * KAPPA_REPROBE >= largest)


class _ModeTraceNorms(torch.autograd.Function):
    """(||W_(0)||_*, ||W_(1)||_*, ||W_(2)||_*) with the directions kept for one backward product."""

    @staticmethod
    def forward(unfolded: torch.Tensor, inverse_roots: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                values: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
        return values.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        unfolded, inverse_roots, _, dims = inputs
        ctx.save_for_backward(unfolded, *inverse_roots)
        ctx.dims = dims

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        unfolded, z0, z1, z2 = ctx.saved_tensors
        j, k = ctx.dims
        g = grad_values.to(z0.dtype)
        mixed = g[0] * z0 + g[1] * torch.kron(z1, torch.eye(k, dtype=z0.dtype)) + g[2] * torch.kron(torch.eye(j, dtype=z0.dtype), z2)
        return (unfolded.to(z0.dtype) @ mixed).to(unfolded.dtype), None, None, None


def mode_trace_norms_3way(weights: torch.Tensor) -> tuple[torch.Tensor, list[bool]] | None:
    """The trace norms of the mode-0, -1 and -2 unfoldings of a 3-way ``weights`` (I x J x K,
    J K <= I) from one float64 Gram matrix, differentiable; with, per mode, whether its Gram is
    well conditioned (cond < KAPPA_REPROBE). None where it does not apply or a Gram is too
    ill-conditioned for the float64 route."""
    if weights.ndim != 3:
        return None
    i, j, k = weights.shape
    if j * k > i:
        return None
    unfolded = weights.reshape(i, j * k)  # the mode-0 unfolding: columns (j, k), j-major
    exact = unfolded.detach().to(torch.float64)
    gram = exact.T @ exact
    blocks = gram.reshape(j, k, j, k)
    roots = [_inverse_root(g) for g in (gram, torch.einsum("akbk->ab", blocks), torch.einsum("jajb->ab", blocks))]
    if any(root is None for root in roots):
        return None
    values = torch.stack([root[0] for root in roots]).to(weights.dtype)
    norms = _ModeTraceNorms.apply(unfolded, tuple(root[1] for root in roots), values, (j, k))
    return norms, [root[2] for root in roots]
