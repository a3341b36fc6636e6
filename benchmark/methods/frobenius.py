"""Baselines with a Frobenius (weight-decay) coupling: STL and hard-sharing DMTL (SPEC.md section 2)."""

from __future__ import annotations

import torch

from .base import MultiTaskModule, register


class FrobeniusMethod(MultiTaskModule):
    """lambda x sum over the shareable layers of ||W||_F^2 (stacked here, shared in the base class)."""

    other_layering = False
    reference = True

    def coupling(self) -> torch.Tensor:
        return sum((layer.weight.pow(2).sum() for layer in self.stacked_layers()), torch.zeros((), device=self.device))


@register("stl")
class SingleTask(FrobeniusMethod):
    """STL: T independent networks; the Frobenius penalty couples nothing across tasks."""


@register("dmtl")
class HardSharing(FrobeniusMethod):
    """DMTL: the hidden layers are one shared layer (no task axis), a head per task."""

    shares_hidden = True
