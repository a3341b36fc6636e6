"""GTTN with meta-learned flattening weights (Zhang, Zhang & Wang, KDD 2021), done correctly.

alpha = softmax(beta) per stacked layer. Every ``outer_every`` steps (default 5), beta takes one
outer Adam step (lr ``outer_lr``, default 0.04) on the one-step unrolled hypergradient

    d/d beta  L_holdout( theta - eta * grad_theta [ L_train(theta) + lambda sum_l sum_s alpha_ls ||W_l{s}||_* ] )

computed with torch.func (eta = the inner learning rate). The held-out batch comes from a part
of the *training* split (``holdout``, default 0.3), with its own labels -- never the validation or
test split, and never the training labels (the public code's bug 5). The inner and outer Adam
optimisers are built once and keep their state across steps (the public code re-created Adam
every step, bug 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad

from ..config import TrainConfig
from ..nets import NetworkSpec
from ..norms import gttn_subsets, gttn_weighted_norm
from .base import MultiTaskModule, check_parameters, divergence_reported, flattening_weight_state, register, task_losses

PARAMETERS = ("holdout", "outer_lr", "outer_every")


@register("gttn_meta")
class GeneralizedTraceNormMeta(MultiTaskModule):
    def __init__(self, spec: NetworkSpec, config: TrainConfig, task_names: list[str]) -> None:
        super().__init__(spec, config, task_names)
        params = config.method_params
        check_parameters(self.name, params, PARAMETERS)
        self.outer_lr = float(params.get("outer_lr", 0.04))
        self.outer_every = int(params.get("outer_every", 5))
        self.automatic_optimization = False
        # Lightning's global_step also counts the outer optimiser's steps, so count inner steps here.
        self.inner_steps = 0
        self.logits = nn.ParameterList(
            nn.Parameter(torch.zeros(len(gttn_subsets(tuple(layer.weight.shape)))))
            for layer in self.stacked_layers()
        )
        names = {id(p): n for n, p in self.network.named_parameters()}
        self._stacked_names = [names[id(layer.weight)] for layer in self.stacked_layers()]

    @classmethod
    def holdout_ratio(cls, params: Mapping[str, Any]) -> float:
        return float(params.get("holdout", 0.3))

    def alphas(self) -> list[torch.Tensor]:
        return [torch.softmax(beta, dim=0) for beta in self.logits]

    def penalty(self) -> torch.Tensor:
        layers = self.stacked_layers()
        return sum(gttn_weighted_norm(layer.weight, alpha) for layer, alpha in zip(layers, self.alphas()))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        inner = torch.optim.Adam(self.network.parameters(), lr=self.config.lr)
        outer = torch.optim.Adam(self.logits.parameters(), lr=self.outer_lr)
        return [inner, outer]

    def hypergradient(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """d L_holdout(theta after one inner SGD step) / d beta, for every layer's logits."""
        theta = {name: p.detach() for name, p in self.network.named_parameters()}
        buffers = dict(self.network.named_buffers())
        lam, eta = self.config.lam, self.config.lr

        def inner_loss(params: dict[str, torch.Tensor], logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
            logits_out = functional_call(self.network, (params, buffers), (batch["x"],))
            coupling = sum(
                gttn_weighted_norm(params[name], torch.softmax(beta, dim=0))
                for name, beta in zip(self._stacked_names, logits)
            )
            return task_losses(logits_out, batch["y"]).sum() + lam * coupling

        def holdout_loss(logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
            step = grad(inner_loss)(theta, logits)
            stepped = {name: theta[name] - eta * step[name] for name in theta}
            logits_out = functional_call(self.network, (stepped, buffers), (batch["holdout_x"],))
            return task_losses(logits_out, batch["holdout_y"]).sum()

        return list(grad(holdout_loss)(tuple(beta.detach() for beta in self.logits)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inner, outer = self.optimizers()
        if self.inner_steps % self.outer_every == 0:
            outer.zero_grad()
            with divergence_reported(self.name):
                hypergradient = self.hypergradient(batch)
            for beta, hyper in zip(self.logits, hypergradient):
                beta.grad = hyper
            outer.step()
        loss, cross_entropy, penalty = self.objective(batch)
        self.check_finite(loss)
        inner.zero_grad()
        self.manual_backward(loss)
        inner.step()
        self.inner_steps += 1
        self.log_training(loss, cross_entropy, penalty)
        return loss.detach()

    def logged_state(self) -> dict[str, float]:
        return flattening_weight_state(self.stacked_layers(), [alpha.detach() for alpha in self.alphas()])
