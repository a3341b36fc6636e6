"""GTTN meta: the public code's bugs 5 (outer labels), 6 (Adam state) and 7 (selection on test), the
validation part as outer data, the Adam virtual step and weights that can scale the penalty."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.data import MultiTaskDataModule, dataset_source
from benchmark.methods import method_class
from benchmark.methods.base import task_losses
from benchmark.methods.gttn_meta import adam_update, bounded_weights
from benchmark.train import train

TINY = {"n_tasks": 3, "n_features": 6, "n_classes": 3, "samples_per_task": 40}


def meta_config(**params) -> TrainConfig:
    return TrainConfig(method="gttn_meta", hidden=8, max_epochs=3, lam=0.5, dataset_params=TINY, method_params=params)


def meta_module(layers: str = "paper"):
    config = TrainConfig(method="gttn_meta", hidden=8, lam=0.5, layers=layers, dataset_params=TINY)
    data = MultiTaskDataModule(dataset_source("synthetic").load(Path("."), **TINY), outer_batches=True, holdout_ratio=0.3)
    return method_class("gttn_meta")(data.network_spec, config, data.dataset.task_names), data


def test_hypergradient_reads_the_outer_labels() -> None:
    module, data = meta_module()
    inner = torch.optim.Adam(module.network.parameters(), lr=module.config.lr)
    batch = next(iter(data.train_dataloader()))
    base = module.hypergradient(batch, inner)
    assert all(torch.isfinite(h).all() and h.abs().sum() > 0 for h in base)
    shuffled = dict(batch, outer_y=batch["outer_y"].roll(1, dims=1))
    changed = module.hypergradient(shuffled, inner)
    assert any(not torch.allclose(a, b) for a, b in zip(base, changed))


def _adam_with_state(module, batch, steps: int = 3) -> torch.optim.Adam:
    inner = torch.optim.Adam(module.network.parameters(), lr=module.config.lr)
    for _ in range(steps):
        inner.zero_grad()
        module.objective(batch)[0].backward()
        inner.step()
    return inner


@pytest.mark.parametrize("layers", ["all", "head"])
def test_the_virtual_step_is_the_real_adam_step_and_the_hypergradient_its_derivative(layers: str) -> None:
    """Finite differences of 'one real Adam step from the current state, then the outer loss'."""
    module, data = meta_module(layers)
    module.double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in next(iter(data.train_dataloader())).items()}
    inner = _adam_with_state(module, batch)
    hyper = module.hypergradient(batch, inner)[-1]

    def unrolled(beta: torch.Tensor) -> float:
        clone = copy.deepcopy(module)
        with torch.no_grad():
            clone.logits[-1].copy_(beta)
        real = torch.optim.Adam(clone.network.parameters(), lr=module.config.lr)
        real.load_state_dict(copy.deepcopy(inner.state_dict()))
        real.zero_grad()
        clone.objective(batch)[0].backward()
        real.step()
        with torch.no_grad():
            return task_losses(clone.network(batch["outer_x"]), batch["outer_y"]).sum().item()

    beta = module.logits[-1].detach().clone() + 0.3  # away from beta = 0
    with torch.no_grad():
        module.logits[-1].copy_(beta)
    hyper = module.hypergradient(batch, inner)[-1]
    step = 1e-5
    for i in range(len(beta)):
        e = torch.zeros_like(beta)
        e[i] = step
        numeric = (unrolled(beta + e) - unrolled(beta - e)) / (2 * step)
        assert hyper[i].item() == pytest.approx(numeric, rel=1e-3, abs=1e-9)


def test_adam_update_equals_torch_adams_step() -> None:
    weight = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    adam = torch.optim.Adam([weight], lr=0.01)
    for k in range(3):
        gradient = torch.randn(5, dtype=torch.float64)
        (group,) = adam.param_groups
        expected = adam_update(gradient, adam.state.get(weight, {}), group["lr"], group["betas"], group["eps"])
        before = weight.detach().clone()
        weight.grad = gradient
        adam.step()
        assert torch.allclose(weight.detach() - before, expected, rtol=1e-9, atol=1e-14)


def test_flattening_weights_start_at_gttn_a_scale_the_penalty_and_stay_bounded() -> None:
    beta = torch.tensor([0.0, 50.0, -50.0])
    alpha = bounded_weights(beta, 10.0)
    assert alpha[0].item() == pytest.approx(1 / 3)
    assert alpha[1].item() == pytest.approx(10 / 3) and alpha[2].item() == pytest.approx(1 / 30)
    # Not a softmax: all up raises the whole penalty, all down lowers it, never to zero.
    assert bounded_weights(torch.full((3,), 2.0), 10.0).sum() > 5
    assert bounded_weights(torch.full((3,), -50.0), 10.0).sum().item() == pytest.approx(0.1, rel=1e-5)


class _OptimiserProbe(L.Callback):
    def on_train_end(self, trainer: L.Trainer, module) -> None:
        inner, outer = trainer.optimizers
        self.inner_steps = [int(s["step"]) for s in inner.state.values()]
        self.outer_steps = [int(s["step"]) for s in outer.state.values()]
        self.taken = module.inner_steps


def test_outer_step_moves_alpha_and_both_adams_keep_their_state() -> None:
    probe = _OptimiserProbe()
    result = train(meta_config(outer_every=2), Path("."), None, progress=False, callbacks=[probe])
    alpha = [v for k, v in result.record.method_state.items() if k.startswith("alpha/")]
    # The GTTN paper's layering: the tensor norm on the 3-way head tensor only, 3 flattenings.
    assert len(alpha) == 3 and any(abs(a - 1 / 3) > 1e-4 for a in alpha)
    assert result.record.outer_part == "val" and result.record.config["layers"] == "head"
    # The weights' trajectory, one entry per epoch.
    assert len(result.record.method_state_history) == 3
    # One Adam each, built once: the step count is the number of steps taken, not 1.
    assert probe.taken > 2 and set(probe.inner_steps) == {probe.taken}
    assert set(probe.outer_steps) == {int(np.ceil(probe.taken / 2))}


def test_selection_reads_validation_only_and_test_runs_once_after_training(monkeypatch: pytest.MonkeyPatch) -> None:
    stages: list[str] = []
    original = MultiTaskDataModule.test_dataloader

    def spy(self):
        stages.append(self.trainer.state.fn.value)
        return original(self)

    monkeypatch.setattr(MultiTaskDataModule, "test_dataloader", spy)
    result = train(meta_config(), Path("."), None, progress=False)
    assert stages == ["test"]
    history = result.record.val_acc_history
    # The best validation epoch; of equal ones, the later (history is rounded, so compare loosely).
    assert history[result.record.selected_epoch] == pytest.approx(max(history), abs=1e-6)
    assert all(value < max(history) - 1e-6 for value in history[result.record.selected_epoch + 1:])


@pytest.mark.slow
def test_meta_learned_weights_do_not_validate_worse_than_equal_weights_at_the_same_lambda() -> None:
    """On tasks sharing a rank-1 structure (the synthetic data), the weights GTTN meta learns on the
    validation part give a lower mean validation error than GTTN-a's fixed 1/N at the same lambda."""
    def validation_error(method: str, seed: int) -> float:
        config = TrainConfig(method=method, lam=0.1, hidden=16, lr=0.01, max_epochs=30, seed=seed)
        return 1 - train(config, Path("."), None, progress=False).record.val_acc_mean

    meta = np.mean([validation_error("gttn_meta", seed) for seed in (0, 1)])
    equal = np.mean([validation_error("gttn_a", seed) for seed in (0, 1)])
    assert meta <= equal
