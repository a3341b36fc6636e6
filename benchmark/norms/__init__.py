"""Tensor trace norms of stacked multi-task weights: pure torch, no Lightning (SPEC.md sections 1-2)."""

from .flattenings import (
    Flattening,
    gttn_flattenings,
    gttn_subsets,
    mode_flattening,
    mode_flattenings,
    subset_flattening,
    tr_flattenings,
    tt_flattenings,
)
from .regularisers import Regulariser, flattening_norms, gttn_weighted_norm, regulariser, regulariser_names
from .trace_norm import RouteMemo, naive_svd_trace_norm, trace_norm, trace_norm_and_direction

__all__ = [
    "Flattening",
    "Regulariser",
    "RouteMemo",
    "flattening_norms",
    "gttn_flattenings",
    "gttn_subsets",
    "gttn_weighted_norm",
    "mode_flattening",
    "mode_flattenings",
    "naive_svd_trace_norm",
    "regulariser",
    "regulariser_names",
    "subset_flattening",
    "tr_flattenings",
    "trace_norm",
    "trace_norm_and_direction",
    "tt_flattenings",
]
