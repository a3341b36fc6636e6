"""GTTN meta: the public code's bugs 5 (held-out labels), 6 (Adam state) and 7 (selection on test)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from benchmark.config import TrainConfig
from benchmark.data import MultiTaskDataModule, dataset_source
from benchmark.methods import method_class
from benchmark.methods.base import task_losses
from benchmark.train import train

TINY = {"n_tasks": 3, "n_features": 6, "n_classes": 3, "samples_per_task": 40}


def meta_config(**params) -> TrainConfig:
    return TrainConfig(method="gttn_meta", hidden=8, max_epochs=3, lam=0.5, dataset_params=TINY, method_params=params)


def meta_module():
    config = meta_config()
    data = MultiTaskDataModule(dataset_source("synthetic").load(Path("."), **TINY), holdout_ratio=0.3)
    return method_class("gttn_meta")(data.network_spec, config, data.dataset.task_names), data


def test_hypergradient_reads_the_held_out_labels() -> None:
    module, data = meta_module()
    batch = next(iter(data.train_dataloader()))
    base = module.hypergradient(batch)
    assert all(torch.isfinite(h).all() and h.abs().sum() > 0 for h in base)
    shuffled = dict(batch, holdout_y=batch["holdout_y"].roll(1, dims=1))
    changed = module.hypergradient(shuffled)
    assert any(not torch.allclose(a, b) for a, b in zip(base, changed))


def test_hypergradient_matches_finite_differences_of_the_unrolled_objective() -> None:
    module, data = meta_module()
    module.double()
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in next(iter(data.train_dataloader())).items()}
    hyper = module.hypergradient(batch)[0]

    def unrolled(beta0: torch.Tensor) -> float:
        with torch.no_grad():
            module.logits[0].copy_(beta0)
        module.network.zero_grad()
        loss, _, _ = module.objective(batch)
        grads = torch.autograd.grad(loss, list(module.network.parameters()))
        originals = [p.detach().clone() for p in module.network.parameters()]
        with torch.no_grad():
            for p, g in zip(module.network.parameters(), grads):
                p -= module.config.lr * g
            value = task_losses(module.network(batch["holdout_x"]), batch["holdout_y"]).sum().item()
            for p, o in zip(module.network.parameters(), originals):
                p.copy_(o)
        return value

    beta = module.logits[0].detach().clone()
    step = 1e-4
    for i in range(len(beta)):
        e = torch.zeros_like(beta)
        e[i] = step
        numeric = (unrolled(beta + e) - unrolled(beta - e)) / (2 * step)
        assert hyper[i].item() == pytest.approx(numeric, rel=1e-3, abs=1e-9)


class _OptimiserProbe(L.Callback):
    def on_train_end(self, trainer: L.Trainer, module) -> None:
        inner, outer = trainer.optimizers
        self.inner_steps = [int(s["step"]) for s in inner.state.values()]
        self.outer_steps = [int(s["step"]) for s in outer.state.values()]
        self.taken = module.inner_steps


def test_outer_step_moves_alpha_and_both_adams_keep_their_state() -> None:
    probe = _OptimiserProbe()
    result = train(meta_config(outer_every=2), Path("."), None, progress=False, callbacks=[probe])
    alpha = [v for k, v in result.record["method_state"].items() if k.startswith("alpha/")]
    assert len(alpha) == 6 and any(abs(a - 1 / 3) > 1e-4 for a in alpha)
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
    history = result.record["val_acc_history"]
    assert result.record["selected_epoch"] == int(np.argmax(history))
