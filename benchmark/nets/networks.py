"""The networks of SPEC.md section 3, built from task-stacked or shared layers.

Each network maps a (T, B, *input_shape) batch to (T, B, C) logits, where C is the largest class
count; a task with fewer classes has its extra logits masked out, which is the same as a head of
its own size (masked logits get zero probability and zero gradient).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    SharedConv2d,
    SharedLinear,
    StackedConv2d,
    StackedLinear,
    TaskLayer,
    from_grouped,
    tf_normal_,
    to_grouped,
)


@dataclass(frozen=True)
class NetworkSpec:
    """What a network needs to know about the data: input shape, class count per task, kind."""

    input_shape: tuple[int, ...]
    class_counts: tuple[int, ...]
    kind: str = "features"  # "features" (MLP, any input shape) or "omniglot_cnn"

    @property
    def n_tasks(self) -> int:
        return len(self.class_counts)


class MultiTaskNetwork(nn.Module):
    """Base: holds the class mask; subclasses list their shareable (regularisable) layers and the
    ``network_params`` they take (name -> the valid values, the first the default)."""

    network_parameters: dict[str, tuple[str, ...]] = {}

    def __init__(self, class_counts: Sequence[int]) -> None:
        super().__init__()
        mask = torch.zeros(len(class_counts), max(class_counts), dtype=torch.bool)
        for task, count in enumerate(class_counts):
            mask[task, :count] = True
        self.register_buffer("class_mask", mask)

    def shareable_layers(self) -> list[TaskLayer]:
        """The layers a coupling term acts on (stacked ones carry the task axis last)."""
        raise NotImplementedError

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.class_mask[:, None, :], torch.finfo(logits.dtype).min)


class FeatureMLP(MultiTaskNetwork):
    """input -> hidden (H units, ReLU) -> head (C classes), per task (SPEC.md section 3).

    ``share_hidden`` makes the hidden layer one shared layer: DMTL, or ``layers=head``.
    With a multi-mode input (pool5: 7 x 7 x 512) the hidden weight is 7 x 7 x 512 x H x T.
    """

    def __init__(self, spec: NetworkSpec, hidden: int, share_hidden: bool) -> None:
        super().__init__(spec.class_counts)
        hidden_layer = SharedLinear if share_hidden else StackedLinear
        self.hidden = hidden_layer(spec.input_shape, hidden, spec.n_tasks)
        self.head = StackedLinear((hidden,), max(spec.class_counts), spec.n_tasks)

    def shareable_layers(self) -> list[TaskLayer]:
        return [self.hidden, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_logits(self.head(torch.relu(self.hidden(x))))


class OmniglotCNN(MultiTaskNetwork):
    """The Omniglot network of Yang & Hospedales (ICLR 2017), on 105 x 105 images, tanh units.

    conv 8@5x5 -> pool 2 -> conv 12@3x3 -> pool 2 -> conv 16@3x3 -> pool 2 -> FC 64 -> FC (classes).
    'valid' convolutions leave 16 x 11 x 11 = 1936 features for FC 64. conv1-3 and FC 64 are the
    shareable layers; the output layers differ in size per alphabet and are never shared.
    ``hidden`` is the FC width (64 in the paper). Ablations of what the paper leaves open:
    ``padding`` 'same' (TensorFlow's default: 16 x 13 x 13 = 2704 features for FC 64) and
    ``init`` 'tf_normal' (:func:`~benchmark.nets.layers.tf_normal_`) instead of PyTorch's.
    """

    network_parameters = {"padding": ("valid", "same"), "init": ("torch", "tf_normal")}

    def __init__(self, spec: NetworkSpec, hidden: int, share_hidden: bool, padding: str = "valid",
                 init: str = "torch") -> None:
        super().__init__(spec.class_counts)
        conv = SharedConv2d if share_hidden else StackedConv2d
        linear = SharedLinear if share_hidden else StackedLinear
        t = spec.n_tasks
        same = padding == "same"
        self.conv1, self.conv2, self.conv3 = (conv(c_in, c_out, k, t, padding=k // 2 if same else 0)
                                              for c_in, c_out, k in ((1, 8, 5), (8, 12, 3), (12, 16, 3)))
        side = spec.input_shape[-1]
        for k in (5, 3, 3):
            side = (side if same else side - k + 1) // 2
        self.fc = linear((16 * side * side,), hidden, t)
        self.out = StackedLinear((hidden,), max(spec.class_counts), t)
        if init == "tf_normal":
            for layer in (*self.shareable_layers(), self.out):
                tf_normal_(layer)

    def shareable_layers(self) -> list[TaskLayer]:
        return [self.conv1, self.conv2, self.conv3, self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = to_grouped(x).contiguous(memory_format=torch.channels_last)  # one layout change in, one out
        for conv in (self.conv1, self.conv2, self.conv3):
            # tanh is increasing, so tanh(maxpool(z)) = maxpool(tanh(z)) with the same gradient; pooling
            # first runs tanh and its backward on a quarter of the values (they were 37% of a step).
            grouped = torch.tanh(F.max_pool2d(conv.forward_grouped(grouped), 2))
        x = from_grouped(grouped, x.shape[0])
        return self.mask_logits(self.out(torch.tanh(self.fc(x.flatten(2)))))


NETWORKS: dict[str, type[MultiTaskNetwork]] = {"features": FeatureMLP, "omniglot_cnn": OmniglotCNN}


def build_network(spec: NetworkSpec, hidden: int, share_hidden: bool,
                  params: Mapping[str, Any] | None = None) -> MultiTaskNetwork:
    """The network of ``spec.kind``; ``params`` (``network_params``) are checked against the ones it takes."""
    try:
        network = NETWORKS[spec.kind]
    except KeyError:
        raise ValueError(f"unknown network kind {spec.kind!r}; valid: {', '.join(NETWORKS)}") from None
    params = dict(params or {})
    takes = "; ".join(f"{name} ({' | '.join(values)})" for name, values in network.network_parameters.items()) or "none"
    for name, value in params.items():
        if name not in network.network_parameters:
            raise ValueError(f"the {spec.kind} network takes network_params {takes}; not {name!r}")
        if value not in network.network_parameters[name]:
            raise ValueError(f"network_params {name} must be one of {', '.join(network.network_parameters[name])}, "
                             f"got {value!r}")
    return network(spec, hidden, share_hidden, **params)
