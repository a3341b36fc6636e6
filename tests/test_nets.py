"""Task-stacked layers equal a loop of per-task layers; the networks have the paper's shapes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.bench import per_task_loop
from benchmark.nets import (
    NetworkSpec,
    SharedConv2d,
    SharedLinear,
    StackedConv2d,
    StackedLinear,
    build_network,
)


def test_stacked_linear_equals_a_loop_over_tasks_with_multi_mode_inputs() -> None:
    layer = StackedLinear((3, 2, 4), 5, n_tasks=3)
    x = torch.randn(3, 7, 3, 2, 4)
    out = layer(x)
    for t in range(3):
        expected = x[t].reshape(7, -1) @ layer.weight[..., t].reshape(-1, 5) + layer.bias[:, t]
        torch.testing.assert_close(out[t], expected)


def test_stacked_conv_equals_a_loop_over_tasks() -> None:
    layer = StackedConv2d(2, 4, 3, n_tasks=3)
    x = torch.randn(3, 5, 2, 9, 9)
    out = layer(x)
    for t in range(3):
        kernel = layer.weight[..., t].permute(3, 2, 0, 1)  # (k, k, in, out) -> (out, in, k, k)
        torch.testing.assert_close(out[t], F.conv2d(x[t], kernel, layer.bias[:, t]))


def test_shared_layers_apply_one_weight_to_every_task() -> None:
    x = torch.randn(3, 4, 2, 8, 8)
    conv = SharedConv2d(2, 3, 3, n_tasks=3)
    out = conv(x)
    torch.testing.assert_close(out[1], F.conv2d(x[1], conv.weight.permute(3, 2, 0, 1), conv.bias))
    linear = SharedLinear((6,), 2, n_tasks=3)
    z = torch.randn(3, 4, 6)
    torch.testing.assert_close(linear(z)[2], z[2] @ linear.weight + linear.bias)


def test_omniglot_cnn_has_the_paper_shapes_and_masks_missing_classes() -> None:
    spec = NetworkSpec((1, 105, 105), (5, 3), "omniglot_cnn")
    network = build_network(spec, hidden=64, share_hidden=False)
    shapes = [tuple(layer.weight.shape) for layer in network.shareable_layers()]
    assert shapes == [(5, 5, 1, 8, 2), (3, 3, 8, 12, 2), (3, 3, 12, 16, 2), (1936, 64, 2)]
    logits = network(torch.randn(2, 4, 1, 105, 105))
    assert logits.shape == (2, 4, 5)
    assert torch.softmax(logits[1], -1)[:, 3:].max() == 0  # task 1 has 3 classes


def test_omniglot_cnn_equals_the_papers_per_task_conv_tanh_pool_order() -> None:
    """The network pools before tanh (cheaper); outputs and weight gradients must equal the paper's
    per-task conv -> tanh -> pool -> ... -> tanh(FC 64) -> FC, run task by task."""
    torch.manual_seed(0)
    network = build_network(NetworkSpec((1, 105, 105), (5, 3), "omniglot_cnn"), hidden=64, share_hidden=False)
    x = torch.randn(2, 3, 1, 105, 105)
    network(x).sum().backward()
    fast = [p.grad.clone() for p in network.parameters()]
    network.zero_grad()
    reference = network.mask_logits(per_task_loop(network, x))  # the bench's task-by-task baseline
    torch.testing.assert_close(network(x), reference)
    reference.sum().backward()
    for got, want in zip(fast, (p.grad for p in network.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_pool5_features_keep_their_spatial_modes() -> None:
    network = build_network(NetworkSpec((7, 7, 8), (4, 4, 4)), hidden=6, share_hidden=False)
    assert network.hidden.weight.shape == (7, 7, 8, 6, 3)
    assert network(torch.randn(3, 2, 7, 7, 8)).shape == (3, 2, 4)
