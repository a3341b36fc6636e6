"""Task-stacked and shared layers. A stacked weight keeps the task axis last (SPEC.md section 1).

Every layer maps a (T, B, ...) batch (one B-sample batch per task) to (T, B, ...) in one batched
op: einsum for linear layers, a grouped convolution for conv layers; never a loop over tasks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TaskLayer(nn.Module):
    """A layer applied to every task. ``stacked``: one weight per task (task axis last) or one shared weight."""

    stacked: bool
    weight: torch.Tensor

    def _init(self, fan_in: int) -> None:
        # PyTorch's default Linear/Conv initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for each task.
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)


def tf_normal_(layer: TaskLayer, std: float = 0.1) -> None:
    """TensorFlow-era initialisation (``tf.truncated_normal(stddev=0.1)``): weights N(0, std) with
    draws beyond two std redrawn, biases 0; the TNRDMTL paper does not state its initialisation."""
    with torch.no_grad():
        nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std)
        layer.bias.zero_()


class StackedLinear(TaskLayer):
    """y_t = x_t W_t + b_t with W of shape (*in_shape, out_features, T).

    ``in_shape`` may have several modes (pool5 features keep 7 x 7 x 512), which then become
    modes of the stacked tensor the regulariser sees.
    """

    stacked = True

    def __init__(self, in_shape: tuple[int, ...], out_features: int, n_tasks: int) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.weight = nn.Parameter(torch.empty(*self.in_shape, out_features, n_tasks))
        self.bias = nn.Parameter(torch.empty(out_features, n_tasks))
        self._init(math.prod(self.in_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tasks, batch = x.shape[:2]
        out_features = self.weight.shape[-2]
        flat_weight = self.weight.reshape(-1, out_features, n_tasks)
        return torch.einsum("tbd,dot->tbo", x.reshape(n_tasks, batch, -1), flat_weight) + self.bias.T[:, None, :]


class SharedLinear(TaskLayer):
    """One weight (*in_shape, out_features) for all tasks (hard sharing)."""

    stacked = False

    def __init__(self, in_shape: tuple[int, ...], out_features: int, n_tasks: int) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.weight = nn.Parameter(torch.empty(*self.in_shape, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self._init(math.prod(self.in_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tasks, batch = x.shape[:2]
        flat = x.reshape(n_tasks * batch, -1) @ self.weight.reshape(-1, self.weight.shape[-1]) + self.bias
        return flat.reshape(n_tasks, batch, -1)


class StackedConv2d(TaskLayer):
    """Per-task convolution, 'valid' (``padding`` 0) or zero-padded ('same' for an odd kernel:
    ``padding`` k // 2); weight (k, k, in, out, T) as in the TensorFlow code of the paper.

    All tasks run as one grouped convolution: task t's images sit in channel group t.
    """

    stacked = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_tasks: int, padding: int = 0) -> None:
        super().__init__()
        k = kernel_size
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(k, k, in_channels, out_channels, n_tasks))
        self.bias = nn.Parameter(torch.empty(out_channels, n_tasks))
        self._init(in_channels * k * k)

    def forward_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T*C_in, H, W) -> (B, T*C_out, H', W'): the layout a stack of conv layers keeps."""
        k, _, c_in, c_out, n_tasks = self.weight.shape
        kernels = self.weight.permute(4, 3, 2, 0, 1).reshape(n_tasks * c_out, c_in, k, k)
        return F.conv2d(x, kernels, self.bias.T.reshape(-1), padding=self.padding, groups=n_tasks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_grouped(self.forward_grouped(to_grouped(x)), x.shape[0])


class SharedConv2d(TaskLayer):
    """One convolution (k, k, in, out) for all tasks (hard sharing); ``padding`` as in StackedConv2d."""

    stacked = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_tasks: int, padding: int = 0) -> None:
        super().__init__()
        k = kernel_size
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(k, k, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self._init(in_channels * k * k)

    def forward_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T*C_in, H, W) -> (B, T*C_out, H', W'), the layout of :meth:`StackedConv2d.forward_grouped`."""
        batch, channels, height, width = x.shape
        c_in = self.weight.shape[2]
        out = F.conv2d(x.reshape(-1, c_in, height, width), self.weight.permute(3, 2, 0, 1), self.bias,
                       padding=self.padding)
        return out.reshape(batch, -1, *out.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_tasks, batch = x.shape[:2]
        out = F.conv2d(x.flatten(0, 1), self.weight.permute(3, 2, 0, 1), self.bias, padding=self.padding)
        return out.reshape(n_tasks, batch, *out.shape[1:])


def to_grouped(x: torch.Tensor) -> torch.Tensor:
    """(T, B, C, H, W) -> (B, T*C, H, W): task t's channels form group t of a grouped convolution.

    Conv stacks convert once and stay in this layout: converting at every layer copies the whole
    activation twice per layer and made the stacked network slower than a loop over tasks.
    """
    n_tasks, batch, channels, height, width = x.shape
    return x.transpose(0, 1).reshape(batch, n_tasks * channels, height, width)


def from_grouped(x: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """(B, T*C, H, W) -> (T, B, C, H, W), the inverse of :func:`to_grouped`."""
    batch, channels, height, width = x.shape
    return x.reshape(batch, n_tasks, channels // n_tasks, height, width).transpose(0, 1)
