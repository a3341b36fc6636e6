"""Every tensor trace-norm method: the coupling term is a regulariser of benchmark.norms on each
stacked layer (LAF, LAF-i, Tucker, TT, TR, Prod, GTTN-a, GTTN variable, GTTN min, GTTN max).

Each registered method names its regulariser; method parameters (``axis`` for LAF-i, ``d`` for TR)
are passed on to it. Layers without a task axis (the shared hidden layer of ``layers=head``) are
not regularised, as in the public GTTN code.

The regularisers average over their N flattenings, so one lambda means the same for every
method. ``per_flattening=true`` multiplies each layer's term by its N instead: lambda is then a
weight per flattening, lambda * sum_j ||W_j||_*, which is how Yang & Hospedales (ICLR 2017) set
"gamma = 0.01 for every flattening" (their Omniglot protocol, SPEC.md section 1).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..nets import NetworkSpec
from ..norms import regulariser
from .base import MultiTaskModule, flattening_weight_state, register


class TraceNormMethod(MultiTaskModule):
    regulariser_name: str

    def __init__(self, spec: NetworkSpec, config: TrainConfig, task_names: list[str]) -> None:
        super().__init__(spec, config, task_names)
        params = dict(config.method_params)
        self.per_flattening = bool(params.pop("per_flattening", False))
        self.regularisers = nn.ModuleList(
            regulariser(self.regulariser_name, ndim=layer.weight.ndim, **params) for layer in self.stacked_layers()
        )

    def penalty(self) -> torch.Tensor:
        return sum(self.layer_scale(reg, layer.weight) * reg(layer.weight)
                   for reg, layer in zip(self.regularisers, self.stacked_layers()))

    def layer_scale(self, reg: nn.Module, weight: torch.Tensor) -> int:
        """N, the layer's number of flattenings, with ``per_flattening``; else 1."""
        return len(reg.flattenings(tuple(weight.shape))) if self.per_flattening else 1

    def logged_state(self) -> dict[str, float]:
        learned = [(layer, reg.flattening_weights()) for reg, layer in zip(self.regularisers, self.stacked_layers())]
        learned = [(layer, w) for layer, w in learned if w is not None]
        return flattening_weight_state([layer for layer, _ in learned], [w for _, w in learned])


def _trace_norm_method(method: str, doc: str, caveat: str = "") -> type[TraceNormMethod]:
    attributes = {"regulariser_name": method, "__doc__": doc, "caveat": caveat}
    return register(method)(type(f"TraceNorm_{method}", (TraceNormMethod,), attributes))


_CAVEATS = {"prod": "provisional: the GTTN paper's rank-product baseline has no identified source"}

for _name, _doc in {
    "laf": "LAF: ||W_(p)||_* of the task-axis flattening (Yang & Hospedales 2017).",
    "laf_i": "LAF-i: ||W_(i)||_* of one mode, parameter axis (Zhang et al. 2021).",
    "tucker": "Tucker: (1/p) sum_i ||W_(i)||_* (Yang & Hospedales 2017).",
    "tt": "TT: (1/(p-1)) sum_i ||W_[i]||_* (Yang & Hospedales 2017).",
    "tr": "TR: (1/p) sum_k ||W_<k,d>||_*, parameter d (Zhang et al. 2021).",
    "prod": "Prod: prod_i ||W_(i)||_* (provisional source, see SPEC.md).",
    "gttn_a": "GTTN-a: equal weights over the 2^(p-1)-1 flattenings (Zhang et al. 2021).",
    "gttn_var": "GTTN variable: softmax-weighted flattenings, weights learned with W (Zhang et al. 2021).",
    "gttn_min": "GTTN min: the smallest flattening trace norm (Zhang et al. 2021).",
    "gttn_max": "GTTN max: the largest flattening trace norm (Zhang et al. 2021).",
}.items():
    _trace_norm_method(_name, _doc, caveat=_CAVEATS.get(_name, ""))
