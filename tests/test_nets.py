"""Task-stacked layers equal a loop of per-task layers; the networks have the paper's shapes."""

from __future__ import annotations

import pytest
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


# ---- network choices for ablations (network_params) --------------------------------------------


OMNIGLOT_SPEC = NetworkSpec((1, 105, 105), (5, 7, 3), "omniglot_cnn")


def test_same_padding_is_each_tasks_own_same_convolution() -> None:
    network = build_network(OMNIGLOT_SPEC, 16, share_hidden=False, params={"padding": "same"})
    assert network.fc.weight.shape[0] == 16 * 13 * 13  # 105 -> 52 -> 26 -> 13: TensorFlow's 'same' CNN
    x = torch.randn(3, 2, 1, 105, 105)
    grouped = network.conv1.forward(x)
    for task in range(3):
        weight = network.conv1.weight[..., task].permute(3, 2, 0, 1)
        expected = F.conv2d(x[task], weight, network.conv1.bias[:, task], padding="same")
        torch.testing.assert_close(grouped[task], expected, rtol=1e-5, atol=1e-5)
    assert network(x).shape == (3, 2, 7)
    shared = build_network(OMNIGLOT_SPEC, 16, share_hidden=True, params={"padding": "same"})
    assert shared(x).shape == (3, 2, 7) and shared.conv3.padding == 1


def test_tf_normal_init_draws_truncated_normal_weights_and_zero_biases() -> None:
    network = build_network(OMNIGLOT_SPEC, 64, share_hidden=False, params={"init": "tf_normal"})
    weights = torch.cat([layer.weight.detach().flatten() for layer in (*network.shareable_layers(), network.out)])
    assert weights.abs().max() <= 0.2 and abs(weights.std().item() - 0.088) < 0.005  # std of N(0, 0.1) cut at 2 std
    assert all(not layer.bias.any() for layer in (*network.shareable_layers(), network.out))
    default = build_network(OMNIGLOT_SPEC, 64, share_hidden=False)
    assert default.fc.bias.abs().sum() > 0  # PyTorch's default: U(-1/sqrt(fan_in), ...) biases


def test_network_params_a_network_does_not_take_name_the_ones_it_does() -> None:
    with pytest.raises(ValueError, match=r"the omniglot_cnn network takes network_params padding \(valid \| same\); "
                                         r"init \(torch \| tf_normal\); not 'stride'"):
        build_network(OMNIGLOT_SPEC, 8, False, {"stride": 2})
    with pytest.raises(ValueError, match="network_params padding must be one of valid, same, got 'full'"):
        build_network(OMNIGLOT_SPEC, 8, False, {"padding": "full"})
    with pytest.raises(ValueError, match="the features network takes network_params none; not 'padding'"):
        build_network(NetworkSpec((20,), (4, 4)), 8, False, {"padding": "same"})


def test_a_config_field_added_later_leaves_older_configs_and_study_names_as_they_were() -> None:
    """network_params came after protocol-2 sweeps started: at its default it is not in the
    config's dict, so the committed records' study names still match the plan's."""
    from benchmark.config import TrainConfig
    from benchmark.sweep.plan import SweepPlan

    assert "network_params" not in TrainConfig().to_dict()
    ablation = TrainConfig(network_params={"padding": "same"})
    assert ablation.to_dict()["network_params"] == {"padding": "same"}
    assert TrainConfig.from_dict(ablation.to_dict()) == ablation
    # The name under which the first protocol-2 Office-Caltech SURF records were written.
    assert SweepPlan.load("office_caltech").study_name("dmtl", 0.1) == "office_caltech/dmtl/r0.1/573ea7f9"
