"""Every regulariser against explicit SVDs of explicit flattenings (golden values), and its gradients.

The numpy references below build flattenings and the GTTN bipartitions independently of
benchmark.norms, so a wrong enumeration or reshape in the library fails here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from benchmark.norms import (
    flattening_norms,
    gttn_flattenings,
    gttn_subsets,
    gttn_weighted_norm,
    naive_svd_trace_norm,
    regulariser,
    regulariser_names,
)

SHAPES = [(6, 3), (4, 5, 3), (3, 4, 2, 3), (2, 3, 2, 2, 3)]
EXPECTED_NAMES = ["gttn_a", "gttn_max", "gttn_min", "gttn_var", "laf", "laf_i", "prod", "tr", "tt", "tucker"]


# ---- independent numpy references ---------------------------------------------------------------


def nuclear(matrix: np.ndarray) -> float:
    return float(np.linalg.svd(matrix, compute_uv=False).sum())


def mode_norms(w: np.ndarray) -> list[float]:
    return [nuclear(np.moveaxis(w, i, 0).reshape(w.shape[i], -1)) for i in range(w.ndim)]


def tt_norms(w: np.ndarray) -> list[float]:
    return [nuclear(w.reshape(math.prod(w.shape[:i]), -1)) for i in range(1, w.ndim)]


def tr_norms(w: np.ndarray, span: int) -> list[float]:
    p = w.ndim
    norms = []
    for start in range(p):
        permuted = w.transpose([(start + j) % p for j in range(p)])
        norms.append(nuclear(permuted.reshape(math.prod(permuted.shape[:span]), -1)))
    return norms


def bipartition_norms(w: np.ndarray) -> dict[frozenset[int], float]:
    """||W_{s}||_* for one s of every unordered bipartition {s, not-s}, keyed by the part holding axis 0."""
    p = w.ndim
    norms: dict[frozenset[int], float] = {}
    for size in range(1, p):
        for rows in itertools.combinations(range(p), size):
            key = frozenset(rows) if 0 in rows else frozenset(range(p)) - frozenset(rows)
            rest = [a for a in range(p) if a not in rows]
            matrix = w.transpose([*rows, *rest]).reshape(math.prod(w.shape[a] for a in rows), -1)
            norms.setdefault(key, nuclear(matrix))
    return norms


def reference(name: str, w: np.ndarray) -> float:
    gttn = list(bipartition_norms(w).values())
    return {
        "laf": lambda: mode_norms(w)[-1],
        "laf_i": lambda: mode_norms(w)[1],
        "tucker": lambda: float(np.mean(mode_norms(w))),
        "tt": lambda: float(np.mean(tt_norms(w))),
        "tr": lambda: float(np.mean(tr_norms(w, span=min(2, w.ndim - 1)))),
        "prod": lambda: float(np.prod(mode_norms(w))),
        "gttn_a": lambda: float(np.mean(gttn)),
        "gttn_var": lambda: float(np.mean(gttn)),  # logits start at 0: equal weights
        "gttn_min": lambda: min(gttn),
        "gttn_max": lambda: max(gttn),
    }[name]()


def build(name: str, ndim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    params = {"laf_i": {"axis": 1}, "gttn_var": {"ndim": ndim}, "tr": {"d": min(2, ndim - 1)}}
    return regulariser(name, **params.get(name, {}))


def value_and_grad(name: str, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = w.clone().requires_grad_(True)
    value = build(name, w.ndim)(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


# ---- golden values --------------------------------------------------------------------------------


def test_registry_holds_every_regulariser_of_the_spec() -> None:
    assert regulariser_names() == EXPECTED_NAMES


def test_unknown_regulariser_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown regulariser 'tuker'.*gttn_a.*tucker"):
        regulariser("tuker")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"p{len(s)}")
@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_value_equals_explicit_svd_of_explicit_flattenings(name: str, shape: tuple[int, ...]) -> None:
    w = np.random.default_rng(len(shape)).standard_normal(shape)
    ours = build(name, len(shape))(torch.from_numpy(w)).item()
    assert ours == pytest.approx(reference(name, w), rel=1e-10)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_float32_value_is_close_to_the_float64_reference(name: str) -> None:
    w = np.random.default_rng(7).standard_normal((4, 5, 3))
    ours = build(name, 3)(torch.from_numpy(w).float()).item()
    assert ours == pytest.approx(reference(name, w), rel=1e-5)


def test_tr_with_span_two_equals_tucker_for_three_way_tensors_only() -> None:
    three_way = torch.randn(4, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(regulariser("tr", d=2)(three_way), regulariser("tucker")(three_way))
    four_way = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    assert not torch.isclose(regulariser("tr", d=2)(four_way), regulariser("tucker")(four_way))


def test_gttn_a_differs_from_tucker_on_five_way_tensors() -> None:
    """Bug 3 (15 'flattenings' = 5 mode flattenings x 3) would make GTTN-a equal Tucker here."""
    w = torch.randn(2, 3, 2, 2, 3, dtype=torch.float64)
    assert not torch.isclose(regulariser("gttn_a")(w), regulariser("tucker")(w), rtol=1e-3)


# ---- normalisation: every multi-flattening norm averages, none sums (bug 8) ---------------------------


@pytest.mark.parametrize("name", [n for n in EXPECTED_NAMES if n != "prod"])
def test_on_a_matrix_every_normalised_regulariser_is_the_matrix_trace_norm(name: str) -> None:
    """For p = 2 every flattening has the same singular values: a sum instead of a mean shows here."""
    w = torch.randn(6, 3, dtype=torch.float64)
    params = {"laf_i": {"axis": 0}, "gttn_var": {"ndim": 2}, "tr": {"d": 1}}
    value = regulariser(name, **params.get(name, {}))(w)
    torch.testing.assert_close(value, torch.linalg.svdvals(w).sum())


@pytest.mark.parametrize("name", [n for n in EXPECTED_NAMES if n != "prod"])
def test_value_is_a_convex_combination_of_its_flattening_norms(name: str) -> None:
    w = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    reg = build(name, 4)
    norms = flattening_norms(w, reg.flattenings(tuple(w.shape)))
    value = reg(w)
    assert norms.min() - 1e-12 <= value <= norms.max() + 1e-12


def test_gttn_a_weights_are_exactly_equal_and_not_learned() -> None:
    """Bug 2: the public pool5 'equal weights' model used softmax weights."""
    reg = regulariser("gttn_a")
    assert list(reg.parameters()) == []
    w = torch.randn(2, 3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    n = len(gttn_flattenings(tuple(w.shape)))
    assert n == 15
    # d value / d ||W_s||_* = 1/N for every s: perturbing W along one flattening's subgradient.
    norms = flattening_norms(w, reg.flattenings(tuple(w.shape)))
    weights = torch.autograd.grad(reg(w), w)[0]
    per_norm = [torch.autograd.grad(norms[i], w, retain_graph=True)[0] for i in range(n)]
    torch.testing.assert_close(weights, sum(per_norm) / n)
    torch.testing.assert_close(reg(w), gttn_weighted_norm(w, torch.full((n,), 1 / n, dtype=w.dtype)))


# ---- invariances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_positive_homogeneity(name: str) -> None:
    w = torch.randn(3, 4, 2, 3, dtype=torch.float64)
    reg = build(name, 4)
    degree = 4 if name == "prod" else 1  # Prod multiplies p norms
    for scale in (0.5, 3.0):
        torch.testing.assert_close(reg(scale * w), scale**degree * reg(w))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_invariant_under_permuting_tasks(name: str) -> None:
    w = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    reg = build(name, 4)
    torch.testing.assert_close(reg(w[..., torch.tensor([3, 0, 4, 2, 1])]), reg(w))


# ---- gradients reach the weights: finite, non-zero, also where SVD autograd fails --------------------


def rank_deficient(shape: tuple[int, ...]) -> torch.Tensor:
    """A CP rank-1 tensor: every flattening has rank 1 (repeated zero singular values)."""
    factors = [torch.linspace(1.0, 2.0, d, dtype=torch.float64) for d in shape]
    out = factors[0]
    for factor in factors[1:]:
        out = torch.tensordot(out, factor, dims=0)
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"p{len(s)}")
@pytest.mark.parametrize("name", EXPECTED_NAMES)
@pytest.mark.parametrize("point", ["random", "rank_deficient", "zero"])
def test_gradient_reaches_the_weights_finite_and_non_zero(name: str, shape: tuple[int, ...], point: str) -> None:
    w = {
        "random": lambda: torch.randn(shape, dtype=torch.float64),
        "rank_deficient": lambda: rank_deficient(shape),
        "zero": lambda: torch.zeros(shape, dtype=torch.float64),
    }[point]()
    value, grad = value_and_grad(name, w)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if name == "prod" and point == "zero":
        # A product of p >= 2 norms is homogeneous of degree p: its gradient at 0 is exactly 0.
        assert value == 0 and grad.abs().sum() == 0
    else:
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_gradient_matches_finite_differences(name: str) -> None:
    w = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(build(name, 3), (w,))


def test_gttn_min_and_max_route_the_gradient_through_the_active_flattening() -> None:
    w = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    norms = flattening_norms(w, gttn_flattenings(tuple(w.shape)))
    for name, active in (("gttn_min", norms.argmin()), ("gttn_max", norms.argmax())):
        (grad,) = torch.autograd.grad(regulariser(name)(w), w)
        (expected,) = torch.autograd.grad(norms[active], w, retain_graph=True)
        torch.testing.assert_close(grad, expected)


# ---- gttn_var: learned weights (bug 1) -----------------------------------------------------------


def test_gttn_var_gives_gradients_to_both_weights_and_logits() -> None:
    """Bug 1: the public code rebuilt the norms with torch.FloatTensor(list), so W got no gradient."""
    reg = regulariser("gttn_var", ndim=4)
    w = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        reg.logits.copy_(torch.linspace(-1.0, 1.0, 7))
    grad_w, grad_logits = torch.autograd.grad(reg(w), [w, reg.logits])
    assert torch.isfinite(grad_w).all() and grad_w.abs().sum() > 0
    assert torch.isfinite(grad_logits).all() and grad_logits.abs().sum() > 0
    # d/d beta_s sum_t softmax(beta)_t n_t = alpha_s (n_s - value)
    norms = flattening_norms(w.detach(), gttn_flattenings(tuple(w.shape)))
    alpha = torch.softmax(reg.logits.detach().double(), 0)
    expected = alpha * (norms - (alpha * norms).sum())
    torch.testing.assert_close(grad_logits.double(), expected, rtol=1e-5, atol=1e-6)


def test_gttn_var_weights_follow_the_subset_order() -> None:
    reg = regulariser("gttn_var", ndim=3)
    with torch.no_grad():
        reg.logits.copy_(torch.tensor([0.0, 3.0, -2.0]))
    w = np.random.default_rng(5).standard_normal((4, 5, 3))
    by_part = bipartition_norms(w)
    alpha = torch.softmax(torch.tensor([0.0, 3.0, -2.0], dtype=torch.float64), 0).numpy()
    expected = sum(a * by_part[frozenset(s)] for a, s in zip(alpha, gttn_subsets(w.shape), strict=True))
    assert reg(torch.from_numpy(w)).item() == pytest.approx(expected, rel=1e-6)


def test_unknown_parameters_name_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"tr takes parameter\(s\) \['d'\], not \['span'\]"):
        regulariser("tr", span=3)
    with pytest.raises(ValueError, match="tucker takes parameter.*none"):
        regulariser("tucker", d=2)


def test_gttn_var_needs_and_checks_the_tensor_order() -> None:
    with pytest.raises(ValueError, match="ndim"):
        regulariser("gttn_var")
    with pytest.raises(ValueError, match="3-way"):
        regulariser("gttn_var", ndim=3)(torch.zeros(2, 2, 2, 2))


# ---- one Gram matrix for the three mode flattenings of a 3-way tensor, late in training ------------


def _penalty_trained_tensor(seed: int = 0) -> torch.Tensor:
    """40 x 6 x 3, one strong rank-1 term and the rest 1e-4 of it: cond(G) 9e7, 8e6, 3e6 by mode,
    as a penalty leaves a stacked layer (J K = 18 <= I = 40, the shape the shared Gram needs)."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = torch.randn(40, generator=g), torch.randn(6, generator=g), torch.randn(3, generator=g)
    return (torch.einsum("i,j,k->ijk", a, b, c) + 1e-3 * torch.randn(40, 6, 3, generator=g)).float()


def _explicit(name: str, weights: torch.Tensor, **params) -> tuple[float, torch.Tensor]:
    """The regulariser through float64 SVDs of its explicit flattenings (the naive path)."""
    leaf = weights.double().requires_grad_(True)
    with naive_svd_trace_norm():
        value = regulariser(name, ndim=3, **params)(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.item(), grad


@pytest.mark.parametrize("name", ["tucker", "gttn_a", "tr", "gttn_var", "gttn_min", "gttn_max", "prod"])
def test_the_shared_mode_gram_is_exact_at_cond_1e8(name: str) -> None:
    reg = regulariser(name, ndim=3)
    for seed in range(3):  # the first call finds the float64 route, the next ones share one Gram
        if seed == 1:
            for memo in reg._route_memos.values():
                memo.routes = {}
        weights = _penalty_trained_tensor(seed)
        leaf = weights.clone().requires_grad_(True)
        value = reg(leaf)
        (grad,) = torch.autograd.grad(value, leaf)
        expected_value, expected_grad = _explicit(name, weights)
        assert value.item() == pytest.approx(expected_value, rel=1e-5)
        assert (grad.double() - expected_grad).norm() <= 1e-5 * expected_grad.norm()
    assert all(memo.float64 and memo.routes == {"mode_gram": 2} for memo in reg._route_memos.values())


def test_the_shared_mode_gram_is_taken_and_falls_back_at_zero_and_wide_tensors() -> None:
    from benchmark.norms import RouteMemo

    reg = regulariser("tucker")
    weights = _penalty_trained_tensor()
    reg(weights)
    for memo in reg._route_memos.values():
        memo.routes = {}
    reg(weights)
    assert [memo.routes for memo in reg._route_memos.values()] == [{"mode_gram": 1}] * 3
    # A zero tensor has no float64 route: the per-flattening SVDs, finite gradients.
    zero = torch.zeros(40, 6, 3, requires_grad=True)
    reg._route_memos.update({key: RouteMemo(float64=True) for key in list(reg._route_memos)})
    (grad,) = torch.autograd.grad(reg(zero), zero)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # J K > I: the mode-0 Gram would be the larger one; the per-flattening routes instead.
    wide = regulariser("tucker")
    tensor = _penalty_trained_tensor().permute(1, 2, 0).contiguous()  # 6 x 3 x 40
    wide(tensor)
    value, expected = wide(tensor).item(), _explicit("tucker", tensor)[0]
    assert value == pytest.approx(expected, rel=1e-5)
