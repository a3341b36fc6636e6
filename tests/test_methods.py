"""Every registered method: a contract run on synthetic data, plus the method-specific guarantees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.data import MultiTaskDataModule, dataset_source
from benchmark.methods import DivergedError, method_class, method_names, resolve_config
from benchmark.train import train

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"n_tasks": 3, "n_features": 6, "n_classes": 3, "samples_per_task": 30}
RECORD_KEYS = {
    "dataset", "method", "config", "seed", "selected_epoch", "selection", "tasks", "val_acc_mean",
    "test_err_mean", "wall_time_s", "cpu_time_s", "torch_threads", "machine", "git_rev", "versions",
}


def tiny_config(method: str, **overrides) -> TrainConfig:
    values = {"method": method, "hidden": 8, "max_epochs": 2, "lam": 0.1, "dataset_params": TINY, **overrides}
    return TrainConfig(**values)


def built_module(config: TrainConfig):
    cls = method_class(config.method)
    data = MultiTaskDataModule(
        dataset_source("synthetic").load(Path("."), **config.dataset_params),
        seed=config.seed,
        outer_batches=cls.outer_batches,
        holdout_ratio=cls.holdout_ratio(config.method_params),
    )
    return cls(data.network_spec, config, data.dataset.task_names), data


def test_registry_equals_the_readme_methods_table() -> None:
    methods_section = README.read_text().split("## Methods")[1].split("\n## ")[0]
    table = re.findall(r"^\| `(\w+)` \|", methods_section, flags=re.MULTILINE)
    assert sorted(table) == method_names()
    assert len(method_names()) == 14


def test_method_parameters_are_checked_against_their_declaration_before_any_compute() -> None:
    """A parameter a method does not take, of the wrong type or out of range fails when the config
    is resolved (train, plans and modules resolve it before the data loads), naming every valid one."""
    with pytest.raises(ValueError, match=r"laf_tf takes parameter\(s\) eps \(float > 0, default 0.1\); rank .*; "
                       r"prefit_epochs .*; not \['k'\]"):
        resolve_config(tiny_config("laf_tf", method_params={"k": 2}))
    with pytest.raises(ValueError, match="laf_i takes parameter.*axis.*not.*'d'"):
        resolve_config(tiny_config("laf_i", method_params={"d": 2}))
    with pytest.raises(ValueError, match="tr parameter d must be int, got 2.5"):
        resolve_config(tiny_config("tr", method_params={"d": 2.5}))
    with pytest.raises(ValueError, match="tucker parameter per_flattening must be bool, got 1"):
        resolve_config(tiny_config("tucker", method_params={"per_flattening": 1}))
    with pytest.raises(ValueError, match="gttn_meta parameter bound must be > 1, got 0.5"):
        resolve_config(tiny_config("gttn_meta", method_params={"bound": 0.5}))
    with pytest.raises(ValueError, match=r"stl takes parameter\(s\) none; not \['axis'\]"):
        resolve_config(tiny_config("stl", method_params={"axis": 1}))


def test_layers_other_runs_each_family_under_the_other_papers_layering() -> None:
    assert resolve_config(tiny_config("tucker", layers="paper")).layers == "all"
    assert resolve_config(tiny_config("tucker", layers="other")).layers == "head"
    assert resolve_config(tiny_config("gttn_a", layers="other")).layers == "all"
    assert resolve_config(tiny_config("gttn_meta", layers="other")).layers == "all"
    # STL with a shared hidden layer would be hard sharing: refused, naming the methods that have one.
    with pytest.raises(ValueError, match=r"stl has no other layering.*methods that have one: gttn_a, .*, tucker$"):
        resolve_config(tiny_config("stl", layers="other"))


def test_a_method_runs_with_its_declared_defaults_and_given_values() -> None:
    module, _ = built_module(tiny_config("gttn_meta", method_params={"outer_every": 3}))
    assert module.settings == {"holdout": 0.3, "outer_lr": 0.04, "outer_every": 3, "bound": 10.0}
    assert module.outer_every == 3
    tr, _ = built_module(tiny_config("tr", method_params={"d": 1, "per_flattening": True}))
    assert [reg.d for reg in tr.regularisers] == [1] * len(tr.stacked_layers())
    assert tr.per_flattening is True


def test_unknown_method_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown method 'tuckr'.*gttn_meta.*tucker"):
        method_class("tuckr")


@pytest.mark.parametrize("method", method_names())
def test_contract_every_method_trains_and_writes_a_valid_record(method: str, tmp_path: Path) -> None:
    result = train(tiny_config(method), Path("."), tmp_path, progress=False)
    record = json.loads(result.path.read_text())
    assert RECORD_KEYS <= set(record)
    assert 0 < record["cpu_time_s"]  # what the run cost, kept apart from its wall time (other work lengthens that)
    assert record["method"] == method and record["selection"] == "best_val_acc_mean, ties to the later epoch"
    assert set(record["tasks"]) == {"task0", "task1", "task2"}
    for task in record["tasks"].values():
        assert 0 <= task["test_acc"] <= 1 and task["test_err"] == pytest.approx(1 - task["test_acc"])
    assert record["test_err_mean"] == pytest.approx(np.mean([t["test_err"] for t in record["tasks"].values()]))
    assert (tmp_path / "synthetic" / method / record["split_file"]).is_file()
    # Every run says how much it trained: the epochs it ran, in steps of one batch per task.
    assert record["steps"] == 2 * record["steps_per_epoch"] > 0


@pytest.mark.parametrize("method", [m for m in method_names() if m != "laf_tf"])
def test_penalty_is_finite_and_pulls_on_every_regularised_weight(method: str) -> None:
    module, data = built_module(tiny_config(method))
    loss, _, penalty = module.objective(next(iter(data.train_dataloader())))
    assert torch.isfinite(loss) and penalty > 0
    grads = torch.autograd.grad(penalty, [layer.weight for layer in module.stacked_layers()])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_dmtl_shares_the_hidden_layer_and_stl_does_not() -> None:
    dmtl, _ = built_module(tiny_config("dmtl"))
    stl, _ = built_module(tiny_config("stl"))
    assert not dmtl.network.hidden.stacked and dmtl.network.hidden.weight.shape == (6, 8)
    assert stl.network.hidden.weight.shape == (6, 8, 3)
    (shared_grad,) = torch.autograd.grad(dmtl.penalty(), [dmtl.network.hidden.weight])
    assert shared_grad.abs().sum() > 0  # the shared layer is weight-decayed too


def test_layers_head_puts_a_frobenius_penalty_on_the_shared_hidden_layer() -> None:
    """As the GTTN paper's code does: lambda ||W_h||_F^2 on the shared layer, the tensor norm on the heads."""
    module, _ = built_module(tiny_config("tucker", layers="head"))
    assert [tuple(layer.weight.shape) for layer in module.stacked_layers()] == [(8, 3, 3)]
    shared = module.network.hidden.weight
    assert not module.network.hidden.stacked
    assert module.penalty().item() == pytest.approx(module.coupling().item() + shared.pow(2).sum().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(module.penalty(), [shared])
    assert torch.allclose(grad, 2 * shared)


@pytest.mark.parametrize("method", method_names())
def test_each_method_runs_under_its_papers_layering_by_default(method: str) -> None:
    """SPEC.md section 3: the GTTN family shares the hidden layer; the TNRDMTL family stacks every layer."""
    gttn_family = method.startswith("gttn_")
    assert resolve_config(TrainConfig(method=method)).layers == ("head" if gttn_family else "all")
    module, _ = built_module(tiny_config(method))
    expected_stacked = 1 if gttn_family or method == "dmtl" else 2
    assert len(module.stacked_layers()) == expected_stacked
    # Either layering can be asked for (an ablation).
    assert TrainConfig(method=method, layers="all").layers == "all"
    assert TrainConfig(method=method, layers="head").layers == "head"


def test_gttn_var_logits_learn_at_their_own_rate_towards_the_least_norm_flattening() -> None:
    """beta has its own Adam group (beta_lr, default 0.05); at the network's 1e-3 alpha barely moves."""
    def learn(steps: int, **params) -> tuple[torch.Tensor, torch.Tensor]:
        module, _ = built_module(tiny_config("gttn_var", hidden=8, method_params=params))
        (head,) = module.stacked_layers()
        with torch.no_grad():  # 8 x 3 x 3 heads, the same up to scale in every task: one flattening of rank 1
            head.weight.copy_(torch.randn(8, 3, 1) * torch.tensor([1.0, 0.9, 1.1]))
        regulariser = module.regularisers[0]
        norms = torch.stack([torch.linalg.matrix_norm(f.apply(head.weight.detach()), "nuc")
                             for f in regulariser.flattenings(tuple(head.weight.shape))])
        optimiser = module.configure_optimizers()
        assert sorted(group["lr"] for group in optimiser.param_groups) == sorted([module.config.lr, params.get("beta_lr", 0.05)])
        for _ in range(steps):
            optimiser.zero_grad()
            module.penalty().backward()
            head.weight.grad = None  # W fixed: only the flattening weights move
            optimiser.step()
        return regulariser.alpha().detach(), norms

    learned, norms = learn(100)
    assert norms.shape == (3,) and norms.min() < 0.8 * norms.sort().values[1]  # one clearly smallest
    assert learned.argmax() == norms.argmin() and learned.max() > 0.9
    static, _ = learn(100, beta_lr=1e-3)
    assert static.max() < 0.45  # the old behaviour at the network's rate: near uniform (1/3)


def test_laf_tf_factorises_the_stl_fit_at_the_requested_error() -> None:
    config = tiny_config("laf_tf", method_params={"eps": 0.5, "prefit_epochs": 2})
    result = train(config, Path("."), None, progress=False)
    ranks = [v for k, v in result.record.method_state.items() if k.startswith("rank/")]
    assert len(ranks) == 2 and all(1 <= r <= 3 for r in ranks)
    fixed = train(tiny_config("laf_tf", method_params={"rank": 1}), Path("."), None, progress=False)
    assert all(v == 1 for k, v in fixed.record.method_state.items() if k.startswith("rank/"))


def test_laf_tf_weights_have_task_rank_at_most_k() -> None:
    module, data = built_module(tiny_config("laf_tf", method_params={"rank": 2, "prefit_epochs": 1}))

    class _Trainer:
        datamodule = data

    module._trainer = _Trainer()  # setup() reads the datamodule from the trainer
    module.setup("fit")
    for layer in module.stacked_layers():
        task_matrix = layer.weight.reshape(-1, layer.weight.shape[-1])
        assert torch.linalg.matrix_rank(task_matrix.detach()) <= 2


def test_lambda_weighs_nothing_only_in_laf_tf_under_its_papers_layering() -> None:
    """LAF-TF factorises its stacked layers and has no penalty on them: with nothing shared
    (layers=all) any lambda trains the same network, which a sweep must not search (its 20
    trials once re-trained 4 hidden sizes at inert lambdas)."""
    inert = {(m, layers) for m in method_names() for layers in ("all", "head") if not method_class(m).weighs_lambda(layers)}
    assert inert == {("laf_tf", "all")}
    module, data = built_module(tiny_config("laf_tf", layers="all"))
    batch = next(iter(data.train_dataloader()))
    loss, cross_entropy, penalty = module.objective(batch)
    assert penalty == 0 and loss == cross_entropy
    head, _ = built_module(tiny_config("laf_tf", layers="head"))
    (grad,) = torch.autograd.grad(head.penalty(), [head.network.hidden.weight])
    assert head.penalty() > 0 and grad.abs().sum() > 0  # the shared layer is still weight-decayed


def test_trace_norm_methods_recover_shared_structure_on_synthetic_data() -> None:
    """Few samples per task, tasks sharing one prototype: LAF and Tucker beat STL's best lambda."""
    def error(method: str, lam: float) -> float:
        errs = [
            train(TrainConfig(method=method, lam=lam, hidden=32, lr=0.01, max_epochs=60, seed=seed), Path("."), None,
                  progress=False).record.test_err_mean
            for seed in (0, 1)
        ]
        return float(np.mean(errs))

    stl = min(error("stl", lam) for lam in (0.01, 0.1))
    assert error("laf", 0.3) < stl - 0.05
    assert error("tucker", 0.3) < stl - 0.03


def test_diverging_training_raises_diverged_error() -> None:
    module, data = built_module(tiny_config("tucker", lam=float("inf")))
    with pytest.raises(DivergedError, match="tucker: training loss is"):
        module.check_finite(module.objective(next(iter(data.train_dataloader())))[0])


def test_lazy_regularisation_applies_the_penalty_every_kth_step_weighted_k() -> None:
    config = TrainConfig(method="tucker", lam=0.5, hidden=8, penalty_every=3)
    dataset = dataset_source("synthetic").load(Path("."), n_tasks=3, samples_per_task=20)
    data = MultiTaskDataModule(dataset, train_ratio=0.5, val_ratio=0.2, seed=0)
    module = method_class("tucker")(data.network_spec, config, dataset.task_names)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    penalty = module.penalty().detach()
    losses = [module.objective(batch) for _ in range(6)]
    for step, (loss, cross_entropy, _) in enumerate(losses):
        expected = cross_entropy + (3 * 0.5 * penalty if step % 3 == 0 else 0)
        torch.testing.assert_close(loss.detach(), expected.detach())


@pytest.mark.parametrize(("method", "per_layer_count"), [("laf", lambda p: 1), ("tucker", lambda p: p),
                                                         ("tt", lambda p: p - 1), ("gttn_a", lambda p: 2 ** (p - 1) - 1)])
def test_per_flattening_lambda_weights_every_flattening_once(method: str, per_layer_count) -> None:
    """TNRDMTL's gamma per flattening: each layer's averaged norm times its number of flattenings."""
    from benchmark.nets import NetworkSpec

    spec = NetworkSpec((2, 2, 3), (4, 4, 4), "features")  # a pool5-like input: layers of order 5 and 3
    modules = [method_class(method)(spec, TrainConfig(method=method, hidden=6, layers="all", method_params=params), ["a", "b", "c"])
               for params in ({}, {"per_flattening": True})]
    modules[1].load_state_dict(modules[0].state_dict())
    layers = modules[0].stacked_layers()
    assert [layer.weight.ndim for layer in layers] == [5, 3]
    expected = sum(per_layer_count(layer.weight.ndim) * reg(layer.weight)
                   for reg, layer in zip(modules[0].regularisers, layers))
    torch.testing.assert_close(modules[1].penalty(), expected)
    assert modules[1].penalty() > modules[0].penalty() or method == "laf"
