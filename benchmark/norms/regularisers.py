"""Tensor trace-norm regularisers of a stacked weight tensor, registered by name.

Each regulariser maps a stacked weight tensor W (D1 x ... x D(p-1) x T, task axis last) to a
scalar. They are :class:`torch.nn.Module` subclasses only so that ``gttn_var`` can own its
learnable logits and all of them fit in a ``ModuleList``; the others hold no state and are pure
functions of W.

Normalisation (SPEC.md section 1, decided): every multi-flattening norm is a *convex combination*
of trace norms, weights summing to 1, so a penalty is on the scale of its trace norms. The public
GTTN code averaged for Tucker/TT but summed for LAF (bug 8); here nothing sums. This does not make
one lambda mean the same across methods (the flattenings of one tensor differ widely in norm and
gradient), so lambda is searched per method.

Papers: Yang & Hospedales, ICLR 2017 workshop (arXiv 1606.04038) for LAF, Tucker, TT;
Zhang, Zhang & Wang, KDD 2021 (arXiv 2002.04799) for TR, GTTN and its weightings.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .flattenings import (
    Flattening,
    gttn_flattenings,
    mode_flattening,
    mode_flattenings,
    tr_flattenings,
    tt_flattenings,
)
from .mode_gram import mode_trace_norms_3way
from .trace_norm import RouteMemo, trace_norm

FlatteningSet = Callable[[tuple[int, ...]], tuple[Flattening, ...]]

_REGISTRY: dict[str, type[Regulariser]] = {}


def register(name: str) -> Callable[[type[Regulariser]], type[Regulariser]]:
    """Class decorator: make a regulariser available as ``regulariser(name, ...)``."""

    def add(cls: type[Regulariser]) -> type[Regulariser]:
        if name in _REGISTRY:
            raise ValueError(f"regulariser {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return add


def regulariser_names() -> list[str]:
    return sorted(_REGISTRY)


def regulariser(name: str, ndim: int | None = None, **params: Any) -> Regulariser:
    """Build the regulariser registered as ``name`` with its parameters, e.g. ``regulariser("tr", d=2)``.

    ``ndim``, the order of the tensors it will see, is passed on only to regularisers that own
    state sized by it (``gttn_var``); the others are pure functions of any tensor.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown regulariser {name!r}; valid: {', '.join(regulariser_names())}") from None
    accepted = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    if "ndim" in accepted:
        params["ndim"] = ndim
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = [p for p in accepted if p != "ndim"]
        raise ValueError(f"{name} takes parameter(s) {valid or 'none'}, not {unknown}")
    return cls(**params)


def flattening_norms(weights: torch.Tensor, flattenings: tuple[Flattening, ...],
                     memos: list[RouteMemo] | None = None) -> torch.Tensor:
    """The trace norms of the given flattenings of ``weights``, as a 1-D tensor; ``memos``: one
    route memo per flattening (:class:`RouteMemo`), where the caller keeps them across steps."""
    memos = memos or [None] * len(flattenings)
    return torch.stack([trace_norm(f.apply(weights), memo) for f, memo in zip(flattenings, memos)])


def _isolated_modes(flattenings: tuple[Flattening, ...]) -> list[int]:
    """For each flattening of a 3-way tensor, the axis it puts alone on one side of its
    bipartition: every flattening of a 3-way tensor is a mode flattening or its transpose."""
    return [next(next(iter(side)) for side in f.bipartition if len(side) == 1) for f in flattenings]


class Regulariser(nn.Module):
    """A scalar penalty of a stacked weight tensor; subclasses give the flattenings and the weights.

    Its value is a pure function of the tensor. The one thing it keeps between calls is a route
    memo per flattening (which numerical route the last call needed), which saves time and never
    changes a result beyond the trace norm's 1e-5 accuracy.
    """

    name: str

    def __init__(self) -> None:
        super().__init__()
        self._route_memos: dict[tuple[tuple[int, ...], Flattening], RouteMemo] = {}

    def norms(self, weights: torch.Tensor) -> torch.Tensor:
        """The trace norm of each of this regulariser's flattenings of ``weights``.

        Where they are the three mode flattenings of a 3-way tensor and the mode-0 one needs the
        float64 route (its memo says so), all three come from its one Gram matrix
        (:mod:`benchmark.norms.mode_gram`).
        """
        shape = tuple(weights.shape)
        flattenings = self.flattenings(shape)
        memos = [self._route_memos.setdefault((shape, f), RouteMemo()) for f in flattenings]
        modes = _isolated_modes(flattenings) if len(shape) == 3 else []
        if sorted(modes) == [0, 1, 2] and memos[modes.index(0)].skip_float32():
            shared = mode_trace_norms_3way(weights)
            if shared is not None:
                norms, well_conditioned = shared
                for memo, mode in zip(memos, modes):
                    memo.taken("mode_gram", well_conditioned=well_conditioned[mode])
                return norms[list(modes)]
        return flattening_norms(weights, flattenings, memos)

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        raise NotImplementedError

    def flattening_weights(self) -> torch.Tensor | None:
        """Learned weights of the flattenings, where the regulariser learns them (for logging)."""
        return None

    def fixed_combination(self, shape: tuple[int, ...]) -> dict[frozenset[frozenset[int]], float] | None:
        """{bipartition: weight} when the penalty is a fixed weighted sum of flattening trace norms
        (two regularisers with the same combination compute the same function); None otherwise."""
        return None

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _AveragedTraceNorm(Regulariser):
    """(1/N) sum_j ||W_j||_* over a fixed family of N flattenings."""

    family: FlatteningSet

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        return type(self).family(tuple(shape))

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        return self.norms(weights).mean()

    def fixed_combination(self, shape: tuple[int, ...]) -> dict[frozenset[frozenset[int]], float] | None:
        flattenings = self.flattenings(tuple(shape))
        combination: dict[frozenset[frozenset[int]], float] = {}
        for flattening in flattenings:
            combination[flattening.bipartition] = combination.get(flattening.bipartition, 0.0) + 1 / len(flattenings)
        return combination


@register("laf")
class LastAxisFlattening(_AveragedTraceNorm):
    """LAF: ||W_(p)||_*, the trace norm of the task-axis flattening (T x prod(D)).

    Yang & Hospedales 2017, "last axis flattening" (DMTRL-LAF as a penalty).
    """

    family = staticmethod(lambda shape: (mode_flattening(len(shape), -1),))


@register("laf_i")
class ModeFlattening(_AveragedTraceNorm):
    """LAF-i: ||W_(i)||_* for one chosen axis (0-based; negative counts from the task axis)."""

    def __init__(self, axis: int = 0) -> None:
        super().__init__()
        self.axis = axis

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        return (mode_flattening(len(shape), self.axis),)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


@register("tucker")
class TuckerTraceNorm(_AveragedTraceNorm):
    """Tucker: (1/p) sum_i ||W_(i)||_* over the p mode unfoldings (Yang & Hospedales 2017)."""

    family = staticmethod(lambda shape: mode_flattenings(len(shape)))


@register("tt")
class TensorTrainTraceNorm(_AveragedTraceNorm):
    """TT: (1/(p-1)) sum_i ||W_[i]||_*, W_[i] = reshape(W, [D1..Di, D(i+1)..Dp]) (Yang & Hospedales 2017)."""

    family = staticmethod(lambda shape: tt_flattenings(len(shape)))


@register("tr")
class TensorRingTraceNorm(_AveragedTraceNorm):
    """TR: (1/p) sum_k ||W_<k,d>||_* over the p circular unfoldings of span d (Zhang et al. 2021).

    For p = 3 and d = 2 every circular unfolding is a transposed mode unfolding, so TR equals
    Tucker there; they differ from p = 4 on.
    """

    def __init__(self, d: int = 2) -> None:
        super().__init__()
        self.d = d

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        return tr_flattenings(len(shape), self.d)

    def extra_repr(self) -> str:
        return f"d={self.d}"


@register("prod")
class ProductTraceNorm(_AveragedTraceNorm):
    """Prod: prod_i ||W_(i)||_*, computed as exp(sum_i log ||W_(i)||_*).

    PROVISIONAL: the GTTN paper's "rank-product regularisation" baseline has no identified source.
    Not a convex combination: it is homogeneous of degree p, not 1, so its gradient at W = 0 is 0.
    Norms are clamped at the smallest normal float before the log so a zero flattening gives a
    zero value and a zero (finite) gradient instead of exp(-inf) * inf = NaN.
    """

    family = staticmethod(lambda shape: mode_flattenings(len(shape)))

    def fixed_combination(self, shape: tuple[int, ...]) -> None:
        return None  # a product, not a sum

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        norms = self.norms(weights)
        tiny = torch.finfo(norms.dtype).tiny
        return norms.clamp_min(tiny).log().sum().exp()


@register("gttn_a")
class GeneralizedTraceNormEqual(_AveragedTraceNorm):
    """GTTN-a: (1/N) sum_s ||W_{s}||_*, N = 2^(p-1) - 1 bipartitions, equal weights (Zhang et al. 2021).

    The public code's pool5 "equal weights" model used softmax weights (bug 2) and repeated the
    5 mode flattenings three times instead of the 15 bipartitions (bug 3); here the weights are
    the constant 1/N and the flattenings come from :func:`gttn_flattenings`.
    """

    family = staticmethod(gttn_flattenings)


def gttn_weighted_norm(weights: torch.Tensor, alpha: torch.Tensor, memos: list[RouteMemo] | None = None) -> torch.Tensor:
    """sum_s alpha_s ||W_{s}||_* over the GTTN flattenings, for given flattening weights ``alpha``.

    The functional core of ``gttn_var`` and the hook for ``gttn_meta``, whose alpha comes from an
    outer (bilevel) optimiser. The norms are stacked with ``torch.stack``, never rebuilt as a new
    tensor from Python floats (the public code's ``torch.FloatTensor(list)``, bug 1, cut the graph).
    """
    flattenings = gttn_flattenings(tuple(weights.shape))
    if alpha.shape != (len(flattenings),):
        raise ValueError(
            f"alpha must have {len(flattenings)} entries for a {weights.ndim}-way tensor, got {tuple(alpha.shape)}"
        )
    return (alpha * flattening_norms(weights, flattenings, memos)).sum()


@register("gttn_var")
class GeneralizedTraceNormLearned(Regulariser):
    """GTTN variable: sum_s alpha_s ||W_{s}||_*, alpha = softmax(beta), beta learned with W.

    ``ndim`` (the order p of the stacked tensor) sizes the logits beta, one per flattening; they
    start at 0 (equal weights). Trained jointly on the same loss, alpha drifts towards the
    flattening of least norm (Zhang et al. 2021, "GTTN with variable weights").
    """

    def __init__(self, ndim: int | None = None) -> None:
        super().__init__()
        if ndim is None:
            raise ValueError("gttn_var needs ndim=p, the order of the stacked weight tensor, to size its logits")
        self.ndim = ndim
        self.logits = nn.Parameter(torch.zeros(len(gttn_flattenings((1,) * ndim))))

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        return gttn_flattenings(tuple(shape))

    def flattening_weights(self) -> torch.Tensor:
        return self.alpha().detach()

    def alpha(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The current flattening weights softmax(beta), in :func:`gttn_subsets` order."""
        # The softmax runs in the weights' precision: float32 logits would make exact 1/N weights inexact.
        return torch.softmax(self.logits.to(dtype or self.logits.dtype), dim=0)

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        if weights.ndim != self.ndim:
            raise ValueError(f"this gttn_var was built for {self.ndim}-way tensors, got shape {tuple(weights.shape)}")
        return (self.alpha(weights.dtype) * self.norms(weights)).sum()

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}"


class _ExtremeTraceNorm(Regulariser):
    """The trace norm of the active (extreme) GTTN flattening; the subgradient flows through it alone."""

    pick: Callable[[torch.Tensor], torch.Tensor]

    def flattenings(self, shape: tuple[int, ...]) -> tuple[Flattening, ...]:
        return gttn_flattenings(tuple(shape))

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        norms = self.norms(weights)
        return norms[type(self).pick(norms.detach())]


@register("gttn_min")
class GeneralizedTraceNormMin(_ExtremeTraceNorm):
    """GTTN min: min_s ||W_{s}||_* (Zhang et al. 2021); non-convex, the tightest rank surrogate."""

    pick = staticmethod(torch.argmin)


@register("gttn_max")
class GeneralizedTraceNormMax(_ExtremeTraceNorm):
    """GTTN max: max_s ||W_{s}||_* (Zhang et al. 2021); convex, the loosest of the weightings."""

    pick = staticmethod(torch.argmax)
