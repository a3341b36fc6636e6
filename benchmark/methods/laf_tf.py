"""LAF-TF: the stacked weights are factorised, not penalised (Yang & Hospedales, ICLR 2017, DMTRL-LAF).

Each stacked layer's weight W (D1 x ... x D(p-1) x T) is parameterised as reshape(L S) with
L (prod D x K) shared by all tasks and S (K x T) per task, so the task-axis flattening has rank
at most K. As in the paper, L and S come from a truncated SVD of the weights of a short STL fit:
K is the smallest rank whose relative Frobenius error is at most ``eps`` (default 0.1), unless a
fixed ``rank`` is given. The stacked layers get no penalty; lambda weighs only the Frobenius
penalty of a shared layer (``layers=head``), so under the paper's layering (``all``: nothing
shared) a sweep does not search lambda.
"""

from __future__ import annotations


import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import TrainConfig
from ..nets import NetworkSpec
from .base import MultiTaskModule, register, task_losses
from .parameters import Parameter, at_least, positive


def truncation_rank(singular_values: torch.Tensor, eps: float) -> int:
    """Smallest K with ||W - W_K||_F <= eps ||W||_F, from the singular values of W."""
    energy = singular_values.pow(2)
    tail = energy.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{i >= k} s_i^2 = ||W - W_k||_F^2
    within = (tail <= eps**2 * energy.sum()).nonzero()
    return int(within[0]) if len(within) else len(singular_values)


class SharedTaskFactors(nn.Module):
    """Parametrization W = reshape(L S, shape); its right inverse is the truncated SVD."""

    def __init__(self, shape: tuple[int, ...], eps: float, rank: int | None) -> None:
        super().__init__()
        self.shape, self.eps, self.fixed_rank = shape, eps, rank
        self.rank = 0

    def forward(self, shared: torch.Tensor, per_task: torch.Tensor) -> torch.Tensor:
        return (shared @ per_task).reshape(self.shape)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # With the task axis last, reshape(W, [prod D, T]) is the transposed task-axis flattening.
        left, values, right_h = torch.linalg.svd(weight.reshape(-1, weight.shape[-1]), full_matrices=False)
        self.rank = max(1, self.fixed_rank or truncation_rank(values, self.eps))
        k = self.rank
        return (left[:, :k] * values[:k]).contiguous(), right_h[:k].contiguous()


@register("laf_tf")
class LastAxisFactorisation(MultiTaskModule):
    penalises_stacked_layers = False
    declared_parameters = (
        Parameter("eps", float, 0.1, "relative Frobenius error allowed when truncating to rank K", positive, "> 0"),
        Parameter("rank", int, None, "a fixed rank instead of the eps rule", at_least(1), ">= 1"),
        Parameter("prefit_epochs", int, 5, "epochs of unregularised single-task fit before factorising",
                  at_least(0), ">= 0"),
    )

    def __init__(self, spec: NetworkSpec, config: TrainConfig, task_names: list[str]) -> None:
        super().__init__(spec, config, task_names)
        self.eps = self.settings["eps"]
        self.fixed_rank = self.settings["rank"]
        self.prefit_epochs = self.settings["prefit_epochs"]
        self.factors: list[SharedTaskFactors] = []

    def setup(self, stage: str) -> None:
        # Before the optimisers are built (Lightning calls setup first), so they see L and S.
        if stage != "fit" or self.factors:
            return
        self._fit_single_task()
        for layer in self.stacked_layers():
            factors = SharedTaskFactors(tuple(layer.weight.shape), self.eps, self.fixed_rank)
            parametrize.register_parametrization(layer, "weight", factors, unsafe=True)
            self.factors.append(factors)

    def _fit_single_task(self) -> None:
        """A short, unregularised fit of the independent task networks: the paper's STL start."""
        optimiser = torch.optim.Adam(self.network.parameters(), lr=self.config.lr)
        loader = self.trainer.datamodule.train_dataloader()
        for _ in range(self.prefit_epochs):
            for batch in loader:
                optimiser.zero_grad()
                task_losses(self.network(batch["x"]), batch["y"]).sum().backward()
                optimiser.step()

    def logged_state(self) -> dict[str, float]:
        return {f"rank/layer{i}": float(f.rank) for i, f in enumerate(self.factors)}
