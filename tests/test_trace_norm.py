"""The matrix trace norm: value against numpy's SVD, and a valid, finite subgradient everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.norms import RouteMemo, trace_norm


def assert_is_subgradient(matrix: torch.Tensor, grad: torch.Tensor, tolerance: float = 1e-9) -> None:
    """G is in the subdifferential of ||.||_* at X iff ||G||_2 <= 1 and <G, X> = ||X||_*."""
    assert torch.isfinite(grad).all()
    assert torch.linalg.matrix_norm(grad, ord=2) <= 1 + tolerance
    nuclear = torch.linalg.svdvals(matrix).sum()
    torch.testing.assert_close((grad * matrix).sum(), nuclear, atol=tolerance, rtol=tolerance)


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


def reference(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and U V^T from numpy's float64 SVD."""
    u, s, vh = np.linalg.svd(matrix.double().numpy(), full_matrices=False)
    return torch.tensor(s.sum()), torch.from_numpy(u @ vh)


def value_and_gradient(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = matrix.clone().requires_grad_(True)
    value = trace_norm(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def with_singular_values(rows: int, singular: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(rows, len(singular), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(len(singular), len(singular), generator=generator, dtype=torch.float64))
    return ((u * singular) @ v.T).to(dtype)


@pytest.mark.parametrize(
    ("singular", "tolerance"),
    [
        (torch.linspace(1.0, 3.0, 24, dtype=torch.float64), 1e-5),  # cond(G) 9: the float32 Gram route
        (torch.logspace(0, -3, 24, dtype=torch.float64), 1e-5),  # cond(G) 1e6: the float64 Gram route
        (torch.cat([torch.ones(3), torch.zeros(21)]).double(), 1e-6),  # rank 3: the SVD route
    ],
    ids=["well-conditioned", "ill-conditioned", "rank-deficient"],
)
@pytest.mark.parametrize("orientation", ["tall", "wide"])
def test_float32_value_and_gradient_match_a_float64_svd(singular: torch.Tensor, tolerance: float, orientation: str) -> None:
    matrix = with_singular_values(60, singular, torch.float32)
    matrix = matrix if orientation == "tall" else matrix.T
    value, grad = value_and_gradient(matrix)
    expected_value, expected_grad = reference(matrix)
    assert value.dtype == grad.dtype == torch.float32
    assert abs(value.double() - expected_value) / expected_value < tolerance
    if singular.min() > 0:  # full rank: U V^T is unique
        assert (grad.double() - expected_grad).norm() / expected_grad.norm() < tolerance
    else:  # rank-deficient: any U V^T over the thin SVD is a subgradient
        assert_is_subgradient(matrix.double(), grad.double(), tolerance)


def test_well_conditioned_float32_takes_the_gram_route_not_the_svd(monkeypatch) -> None:
    def no_svd(*args, **kwargs):
        raise AssertionError("the SVD route was taken")

    monkeypatch.setattr(torch.linalg, "svd", no_svd)
    monkeypatch.setattr(torch.linalg, "svdvals", no_svd)
    matrix = with_singular_values(300, torch.linspace(1.0, 2.0, 40, dtype=torch.float64), torch.float32)
    value, grad = value_and_gradient(matrix)
    assert torch.isfinite(grad).all() and value > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_and_rank_one_float_matrices_get_finite_non_zero_subgradients(dtype: torch.dtype) -> None:
    for matrix in (torch.zeros(30, 7, dtype=dtype), torch.outer(torch.arange(1.0, 31.0), torch.ones(7)).to(dtype)):
        _, grad = value_and_gradient(matrix)
        assert grad.dtype == dtype and grad.abs().sum() > 0
        assert_is_subgradient(matrix.double(), grad.double(), 1e-5 if dtype == torch.float32 else 1e-9)


def test_value_without_gradient_needs_no_direction() -> None:
    matrix = torch.randn(50, 8)
    with torch.no_grad():
        value = trace_norm(matrix)
    assert value.item() == pytest.approx(reference(matrix)[0].item(), rel=1e-5)


def test_naive_svd_path_agrees() -> None:
    from benchmark.norms import naive_svd_trace_norm

    matrix = torch.randn(40, 12, dtype=torch.float64)
    fast_value, fast_grad = value_and_gradient(matrix)
    with naive_svd_trace_norm():
        naive_value, naive_grad = value_and_gradient(matrix)
    torch.testing.assert_close(fast_value, naive_value)
    torch.testing.assert_close(fast_grad, naive_grad)


# ---- the route memo: where training spends its time, cond(G) is far above the float32 limit ----


def _with_singular_values(values: list[float], rows: int = 60, seed: int = 0) -> torch.Tensor:
    """A float32 matrix with the given singular values (as a penalty leaves them: most near zero)."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(values), dtype=torch.float64, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(len(values), len(values), dtype=torch.float64, generator=generator))
    return ((u * torch.tensor(values, dtype=torch.float64)) @ v.T).float()


def _value_and_grad(matrix: torch.Tensor, memo: RouteMemo | None) -> tuple[float, torch.Tensor]:
    leaf = matrix.clone().requires_grad_(True)
    value = trace_norm(leaf, memo)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.item(), grad


def _reference(matrix: torch.Tensor) -> tuple[float, torch.Tensor]:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return s.sum().item(), (u @ vh).float()


def test_memo_goes_straight_to_float64_and_stays_exact_at_cond_1e8() -> None:
    memo = RouteMemo(routes={})
    ill = [1.0, 0.5] + [1e-4] * 6  # cond(G) = 1e8
    for step in range(6):
        matrix = _with_singular_values(ill, seed=step)
        value, grad = _value_and_grad(matrix, memo)
        expected_value, expected_grad = _reference(matrix)
        assert value == pytest.approx(expected_value, rel=1e-5)
        assert torch.linalg.matrix_norm(grad - expected_grad) <= 1e-5 * torch.linalg.matrix_norm(expected_grad)
    # One float32 attempt, rejected; every later call went straight to float64.
    assert memo.routes == {"float64": 6}
    assert memo.float64 and memo.calls_in_float64 == 5


def test_memo_reprobes_float32_when_well_conditioned_again_and_every_n_calls() -> None:
    from benchmark.norms.trace_norm import REPROBE_EVERY

    memo = RouteMemo(routes={})
    ill, well = [1.0] + [1e-4] * 5, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    trace_norm(_with_singular_values(ill), memo)
    assert memo.float64
    trace_norm(_with_singular_values(well), memo)  # float64 route, cond(G) < 50: probe float32 next time
    assert not memo.float64
    trace_norm(_with_singular_values(well), memo)
    assert memo.routes == {"float64": 2, "float32": 1}
    # In float64 mode for good: after REPROBE_EVERY skipped attempts, one more float32 attempt.
    trace_norm(_with_singular_values(ill), memo)
    for _ in range(REPROBE_EVERY):
        assert memo.skip_float32()
    assert not memo.skip_float32()


@pytest.mark.parametrize("kind", ["rank-deficient", "zero", "mixed"])
def test_memo_never_changes_a_result_beyond_the_exactness_target(kind: str) -> None:
    """The same sequence of matrices with one memo throughout and with none: the same values and
    gradients to 1e-5, finite at rank-deficient and zero matrices."""
    sequences = {
        "rank-deficient": [_with_singular_values([1.0, 0.3, 0.0, 0.0], seed=s) for s in range(4)],
        "zero": [torch.zeros(30, 4), _with_singular_values([1.0, 1e-5, 1e-5, 1e-5]), torch.zeros(30, 4)],
        "mixed": [_with_singular_values(v, seed=s) for s, v in enumerate(
            [[1.0, 0.9, 0.8, 0.7], [1.0, 1e-4, 1e-4, 1e-4], [1.0, 0.05, 0.05, 0.05], [1.0, 0.9, 0.8, 0.7], [1.0, 1e-3, 1e-3, 0.0]])],
    }
    memo = RouteMemo()
    for matrix in sequences[kind]:
        remembered, fresh = _value_and_grad(matrix, memo), _value_and_grad(matrix, None)
        assert torch.isfinite(remembered[1]).all()
        assert remembered[0] == pytest.approx(fresh[0], rel=1e-5, abs=1e-7)
        assert torch.allclose(remembered[1], fresh[1], rtol=1e-5, atol=1e-5)


def test_each_flattening_of_each_layer_keeps_its_own_memo() -> None:
    from benchmark.norms import regulariser

    tucker = regulariser("tucker")
    weights = torch.randn(6, 5, 3)
    tucker(weights)
    tucker(torch.randn(4, 5, 3))
    assert len(tucker._route_memos) == 6  # 3 flattenings x 2 shapes


# ---- the matrix-product route for GPUs, checked on the CPU ----------------------------------------


@pytest.mark.parametrize("values", [[1.0, 0.9, 0.5, 0.2], [1.0, 0.5] + [1e-4] * 4, [1.0] + [1e-4] * 3])
def test_matmul_route_is_exact_to_1e5_against_a_float64_svd(values: list[float]) -> None:
    from benchmark.norms.trace_norm import trace_norm_route

    matrix = _with_singular_values(values)
    memo = RouteMemo(routes={})
    with trace_norm_route("matmul"):
        value, grad = _value_and_grad(matrix, memo)
    expected_value, expected_grad = _reference(matrix)
    assert memo.routes == {"matmul": 1}
    assert value == pytest.approx(expected_value, rel=1e-5)
    assert torch.linalg.matrix_norm(grad - expected_grad) <= 1e-5 * torch.linalg.matrix_norm(expected_grad)
    # The same answer as the eigen-decomposition route, to the same target.
    eigh_value, eigh_grad = _value_and_grad(matrix, None)
    assert value == pytest.approx(eigh_value, rel=1e-5) and torch.allclose(grad, eigh_grad, atol=1e-5)


@pytest.mark.parametrize("matrix", [torch.zeros(20, 4), _with_singular_values([1.0, 0.5, 0.0, 0.0]),
                                    _with_singular_values([3.0] + [1e-6] * 3)])
def test_matmul_route_gives_way_where_it_stalls(matrix: torch.Tensor) -> None:
    """Zero, rank-deficient, or singular values below ~3e-5 of the largest (cond(G) > 1e9): the SVD instead."""
    from benchmark.norms.trace_norm import trace_norm_route

    memo = RouteMemo(routes={})
    with trace_norm_route("matmul"):
        value, grad = _value_and_grad(matrix, memo)
    assert "matmul" not in memo.routes and torch.isfinite(grad).all()
    assert value == pytest.approx(_reference(matrix)[0], rel=1e-5, abs=1e-7)


def test_auto_takes_the_matmul_route_on_cuda_tensors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The selection on its own, since no GPU runs this suite: a CUDA tensor takes the matrix
    products under ``auto``, a CPU tensor the eigen-decomposition; a forced route wins either way."""
    from types import SimpleNamespace

    from benchmark.norms.trace_norm import _matmul_route, trace_norm_route

    on_gpu, on_cpu = SimpleNamespace(is_cuda=True), torch.randn(4, 3)
    monkeypatch.delenv("BENCHMARK_TRACE_NORM_ROUTE", raising=False)
    assert _matmul_route(on_gpu) and not _matmul_route(on_cpu)
    with trace_norm_route("eigh"):
        assert not _matmul_route(on_gpu)
    monkeypatch.setenv("BENCHMARK_TRACE_NORM_ROUTE", "matmul")
    assert _matmul_route(on_cpu)


def test_an_unknown_route_names_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCHMARK_TRACE_NORM_ROUTE", "fast")
    with pytest.raises(ValueError, match="valid: auto, matmul, eigh"):
        trace_norm(torch.randn(4, 3))
