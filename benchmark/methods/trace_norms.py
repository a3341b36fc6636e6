"""Every tensor trace-norm method: the coupling term is a regulariser of benchmark.norms on each
stacked layer (LAF, LAF-i, Tucker, TT, TR, Prod, GTTN-a, GTTN variable, GTTN min, GTTN max).

Each registered method names its regulariser and the paper whose protocol it follows; the
regulariser's parameters (``axis`` for LAF-i, ``d`` for TR) are passed on to it. Layers without a
task axis (the shared hidden layer of ``layers=head``, the GTTN paper's default) get lambda *
||W||_F^2 (:meth:`MultiTaskModule.penalty`), as the GTTN paper's public code puts on its shared
hidden layer.

The regularisers average over their N flattenings (weights summing to 1), so a method's penalty
is on the scale of its trace norms. That does not make one lambda mean the same across methods:
the flattenings of one tensor differ widely in norm and gradient (SPEC.md section 1), so lambda is
searched per method. ``per_flattening=true`` multiplies each layer's term by its N instead: lambda
is then a weight per flattening, lambda * sum_j ||W_j||_*, which is how Yang & Hospedales (ICLR
2017) set "gamma = 0.01 for every flattening" (their Omniglot protocol). The data loss is the sum
over tasks of each task's mean cross-entropy (:meth:`MultiTaskModule.objective`), so a lambda here
is T times weaker than the same number under a loss averaged over T tasks; the paper does not
state its normalisation (its demo code averages the norms over layers and flattenings).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..nets import NetworkSpec
from ..norms import regulariser
from .base import GTTN, TNRDMTL, MultiTaskModule, Paper, flattening_weight_state, register
from .parameters import Parameter, at_least, positive

PER_FLATTENING = Parameter("per_flattening", bool, False,
                           "lambda weighs each flattening (lambda x sum_j) instead of their mean (TNRDMTL's gamma)")


class TraceNormMethod(MultiTaskModule):
    regulariser_name: str
    declared_parameters = (PER_FLATTENING,)
    regulariser_parameters: tuple[str, ...] = ()  # the parameters passed on to the regulariser

    def __init__(self, spec: NetworkSpec, config: TrainConfig, task_names: list[str]) -> None:
        super().__init__(spec, config, task_names)
        self.require_stacked_layers()
        self.per_flattening = self.settings["per_flattening"]
        passed = {name: self.settings[name] for name in self.regulariser_parameters}
        self.regularisers = nn.ModuleList(
            regulariser(self.regulariser_name, ndim=layer.weight.ndim, **passed) for layer in self.stacked_layers()
        )

    def coupling(self) -> torch.Tensor:
        return sum((self.layer_scale(reg, layer.weight) * reg(layer.weight)
                    for reg, layer in zip(self.regularisers, self.stacked_layers())), torch.zeros((), device=self.device))

    def layer_scale(self, reg: nn.Module, weight: torch.Tensor) -> int:
        """N, the layer's number of flattenings, with ``per_flattening``; else 1."""
        return len(reg.flattenings(tuple(weight.shape))) if self.per_flattening else 1

    def penalty_signature(self) -> Hashable | None:
        """Per shareable layer: shared (Frobenius), or stacked with its {bipartition: weight}
        (``per_flattening`` included); None where a regulariser is no fixed sum (Prod, GTTN min,
        max, variable)."""
        layers: list[Any] = []
        regularisers = iter(self.regularisers)
        for layer in self.network.shareable_layers():
            shape = tuple(layer.weight.shape)
            if not layer.stacked:
                layers.append(("shared", shape))
                continue
            reg = next(regularisers)
            combination = reg.fixed_combination(shape)
            if combination is None:
                return None
            scale = self.layer_scale(reg, layer.weight)
            layers.append(("stacked", shape, frozenset((part, round(scale * w, 12)) for part, w in combination.items())))
        return tuple(layers)

    def logged_state(self) -> dict[str, float]:
        learned = [(layer, reg.flattening_weights()) for reg, layer in zip(self.regularisers, self.stacked_layers())]
        learned = [(layer, w) for layer, w in learned if w is not None]
        return flattening_weight_state([layer for layer, _ in learned], [w for _, w in learned])


class LearnedWeightsMethod(TraceNormMethod):
    """GTTN variable: the flattening logits beta train with the weights, at their own learning rate.

    At the network's lr (1e-3) beta moves by 0.15-0.7 over a whole run and alpha stays near
    uniform, so the method would equal GTTN-a; ``beta_lr`` (default 0.05, searchable as a method
    parameter) lets alpha move to the flattenings of least norm, as the GTTN slides describe.
    """

    declared_parameters = (*TraceNormMethod.declared_parameters,
                  Parameter("beta_lr", float, 0.05, "Adam learning rate of the flattening logits", positive, "> 0"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        beta_lr = self.settings["beta_lr"]
        return torch.optim.Adam([
            {"params": list(self.network.parameters()), "lr": self.config.lr},
            {"params": list(self.regularisers.parameters()), "lr": beta_lr},
        ])


def _trace_norm_method(method: str, doc: str, paper: Paper,
                       base: type[TraceNormMethod] = TraceNormMethod,
                       own: tuple[Parameter, ...] = ()) -> type[TraceNormMethod]:
    """Register ``method``; ``own``: the parameters of its regulariser, declared with the method."""
    attributes = {"regulariser_name": method, "__doc__": doc, "paper": paper,
                  "declared_parameters": (*base.declared_parameters, *own), "regulariser_parameters": tuple(p.name for p in own)}
    return register(method)(type(f"TraceNorm_{method}", (base,), attributes))


_REGULARISER_PARAMETERS = {
    "laf_i": (Parameter("axis", int, 0, "the mode whose flattening is regularised (-1: the task axis)"),),
    "tr": (Parameter("d", int, 2, "modes per ring segment", at_least(1), ">= 1"),),
}

for _name, (_doc, _paper) in {
    "laf": ("LAF: ||W_(p)||_* of the task-axis flattening (Yang & Hospedales 2017).", TNRDMTL),
    "laf_i": ("LAF-i: ||W_(i)||_* of one mode, parameter axis (Zhang et al. 2021).", TNRDMTL),
    "tucker": ("Tucker: (1/p) sum_i ||W_(i)||_* (Yang & Hospedales 2017).", TNRDMTL),
    "tt": ("TT: (1/(p-1)) sum_i ||W_[i]||_* (Yang & Hospedales 2017).", TNRDMTL),
    "tr": ("TR: (1/p) sum_k ||W_<k,d>||_*, parameter d (Zhang et al. 2021).", TNRDMTL),
    "prod": ("Prod: prod_i ||W_(i)||_* (provisional source, see SPEC.md).", TNRDMTL),
    "gttn_a": ("GTTN-a: equal weights over the 2^(p-1)-1 flattenings (Zhang et al. 2021).", GTTN),
    "gttn_min": ("GTTN min: the smallest flattening trace norm (Zhang et al. 2021).", GTTN),
    "gttn_max": ("GTTN max: the largest flattening trace norm (Zhang et al. 2021).", GTTN),
}.items():
    _trace_norm_method(_name, _doc, _paper, own=_REGULARISER_PARAMETERS.get(_name, ()))

_trace_norm_method(
    "gttn_var", "GTTN variable: softmax-weighted flattenings, weights learned with W at their own "
    "learning rate beta_lr (Zhang et al. 2021).", GTTN, base=LearnedWeightsMethod,
)
