"""One training run: data, method, epoch selection on validation, test once, one JSON record.

The same function serves ``mtlbench train``, every sweep trial and every final run; each is one
W&B run (:mod:`benchmark.tracking`) logging what the module logs (train loss, penalty, per-task
validation metrics, learned flattening weights), with the selected epoch's metrics as summary.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .config import TrainConfig
from .data import MultiTaskDataModule, MultiTaskDataset, dataset_name, dataset_source, read_split_file
from .methods import MultiTaskModule, method_class, resolve_config
from .norms import mode_flattening, trace_norm
from .records import (
    COMPLETE,
    PROTOCOL_VERSION,
    RecordWriteError,
    RunRecord,
    git_revision,
    machine_description,
    metric_key,
    new_run_id,
    package_versions,
    record_path,
)
from .tracking import Tracking, run_name, run_tags, wandb_run

VAL_ACC_MEAN = metric_key("val", "acc_mean")
SELECTION_RULE = "best_val_acc_mean, ties to the later epoch"  # the record states it


class BestEpoch(L.Callback):
    """Keeps the weights of the epoch with the best mean validation accuracy over tasks (of equal
    ones, the later).

    Only validation metrics are read: the test split is evaluated once, after training, on the
    selected weights (the public GTTN code reported the best *test* error over epochs, bug 7).
    """

    def __init__(self) -> None:
        self.best_accuracy = -1.0
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, module: MultiTaskModule) -> None:
        # on_validation_end: after the module computed its epoch metrics (callbacks run first).
        if trainer.sanity_checking:
            return
        metrics = module.epoch_metrics["val"]
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        # >=: of epochs with equal validation accuracy (a tiny validation part ties often, and a
        # first-best rule then picked epoch 0-2), the later one, trained longer.
        if metrics[VAL_ACC_MEAN] >= self.best_accuracy:
            self.best_accuracy = metrics[VAL_ACC_MEAN]
            self.best_epoch = trainer.current_epoch
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})

    def restore(self, module: MultiTaskModule) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


def task_trace_norms(module: MultiTaskModule) -> dict[str, float]:
    """||W_(T)||_* of each stacked layer (``layer<i>`` as in the GTTN weight keys).

    The trace norm of the task-axis flattening: the smaller, the more the tasks' weights lie in
    a shared low-dimensional span.
    """
    with torch.no_grad():
        return {
            f"layer{index}": float(trace_norm(mode_flattening(layer.weight.ndim, -1).apply(layer.weight)))
            for index, layer in enumerate(module.stacked_layers())
        }


class MethodStateHistory(L.Callback):
    """The method's logged state (learned flattening weights, ranks) at the end of every epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: MultiTaskModule) -> None:
        state = module.logged_state()
        if state:
            self.history.append({key: round(value, 6) for key, value in state.items()})


class InitialNorms(L.Callback):
    """Task-flattening trace norms at the start of training, after any method-specific setup."""

    def __init__(self) -> None:
        self.norms: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, module: MultiTaskModule) -> None:
        self.norms = task_trace_norms(module)


def sharing_strength(initial: dict[str, float], selected: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per stacked layer: 1 - ||W_(T)||_* selected / ||W_(T)||_* initial (TNRDMTL's sharing by layer).

    0: the task weights are as unrelated as at initialisation; towards 1: they collapse onto a
    shared span. Negative when training spread them further apart.
    """
    return {
        layer: {"initial": initial[layer], "selected": selected[layer],
                "strength": 1 - selected[layer] / initial[layer] if initial[layer] > 0 else 0.0}
        for layer in initial
    }


@dataclass
class RunResult:
    record: RunRecord
    path: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def quiet_lightning() -> None:
    # Our data loaders are in-process iterables by design (one batch per task per step).
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*__len__.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # lightning 2.6 internal
    # Epoch metrics are what we log; step logging on small datasets is not worth a warning.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)


def train(
    config: TrainConfig,
    data_dir: Path,
    out_dir: Path | None = Path("results/runs"),
    progress: bool = True,
    accelerator: str = "auto",
    callbacks: list[L.Callback] | None = None,
    tracking: Tracking = Tracking(),
    record_fields: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``config.method`` on ``config.dataset``; write the record under ``out_dir`` (None: don't).

    ``record_fields`` are further :class:`RunRecord` fields (a sweep adds its study and trial number).
    """
    quiet_lightning()
    config = resolve_config(config)  # the record holds the layering that ran; bad parameters fail before the data loads
    module_class = method_class(config.method)
    source = dataset_source(config.dataset)
    dataset = source.load(Path(data_dir), **config.dataset_params)
    features = source.features_label(config.dataset_params)
    tracking = dataclasses.replace(tracking, name=tracking.name or run_name(config, tracking.job_type, dataset.name))
    tags = run_tags(config, tracking.job_type, dataset.name, features, PROTOCOL_VERSION)
    with wandb_run(tracking, config.to_dict(), tags=tags) as run:
        fitted = _fit_and_test(config, module_class, dataset, out_dir, progress, accelerator, callbacks, run)
        record = RunRecord(**fitted.fields, **(record_fields or {}), features=features, wandb_run_id=run.id,
                           job=tracking.job_type)
        result = RunResult(record, fitted.path, fitted.history)
        run.summary.update(_summary(result.record, result.history))
    if result.path is not None:
        result.record.write(result.path)
    return result


def _summary(record: RunRecord, history: list[dict[str, float]]) -> dict[str, Any]:
    """The selected epoch's metrics, under the same keys the epochs were logged with.

    Every validation key the epochs logged is overwritten with its value at the selected epoch:
    W&B's summary otherwise keeps each key's last logged value, so ``val/err_mean`` came from the
    last epoch beside ``val/acc_mean`` from the selected one. Training curves (``train/``) keep
    their last value.
    """
    summary: dict[str, Any] = {"selection": record.selection, "selected_epoch": record.selected_epoch,
                               "run_id": record.run_id}
    selected = next((h for h in history if h["epoch"] == record.selected_epoch), None)
    if selected is not None:
        summary.update({key: value for key, value in selected.items() if key.startswith("val/")})
        summary[metric_key("val", "acc")] = selected[VAL_ACC_MEAN]  # the progress-bar key, the same mean
    summary[VAL_ACC_MEAN] = record.val_acc_mean
    summary[metric_key("test", "acc_mean")] = record.test_acc_mean
    summary[metric_key("test", "err_mean")] = record.test_err_mean
    for task, metrics in record.tasks.items():
        summary[metric_key("val", "acc", task)] = metrics["val_acc"]
        summary[metric_key("test", "acc", task)] = metrics["test_acc"]
        summary[metric_key("test", "err", task)] = metrics["test_err"]
    return summary


class StepCount(L.Callback):
    """Optimiser steps taken: training batches, one batch per task each."""

    def __init__(self) -> None:
        self.count = 0

    def on_train_batch_end(self, *args: Any) -> None:
        self.count += 1


def data_module(dataset: MultiTaskDataset, config: TrainConfig,
                module_class: type[MultiTaskModule]) -> MultiTaskDataModule:
    """The split, batches and epoch of ``config`` over ``dataset``, with the further part of the
    data a method trains on where it has one (``outer_batches``); ``config.split_file``, where set,
    is read once here and its SHA-256 kept on the module (``given_split_sha256``)."""
    split, sha256 = (None, None) if config.split_file is None else read_split_file(
        Path(config.split_file), {t.name: len(t.labels) for t in dataset.tasks})
    return MultiTaskDataModule(
        dataset,
        train_ratio=config.train_ratio,
        val_ratio=config.val_ratio,
        seed=config.seed,
        samples_per_class=config.samples_per_class,
        class_balanced=config.class_balanced,
        outer_batches=module_class.outer_batches,
        holdout_ratio=module_class.holdout_ratio(config.method_params),
        epoch=config.epoch,
        given_split=split,
        given_split_sha256=sha256,
        std_floor=config.std_floor,
    )


def budget_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """Whole epochs the run trains: ``max_epochs``, or enough for ``max_steps`` (rounded up)."""
    return config.max_epochs if config.max_steps is None else math.ceil(config.max_steps / steps_per_epoch)


@dataclass
class _Fitted:
    """What training and testing produced: the record's fields, where it goes, the epochs' metrics."""

    fields: dict[str, Any]
    path: Path | None
    history: list[dict[str, float]]


def _fit_and_test(
    config: TrainConfig,
    module_class: type[MultiTaskModule],
    dataset: MultiTaskDataset,
    out_dir: Path | None,
    progress: bool,
    accelerator: str,
    callbacks: list[L.Callback] | None,
    run: Any,
) -> _Fitted:
    from lightning.pytorch.loggers import WandbLogger

    started, started_cpu = time.perf_counter(), time.process_time()
    L.seed_everything(config.seed, verbose=False)
    data = data_module(dataset, config, module_class)
    epochs = budget_epochs(config, data.steps_per_epoch)
    module = module_class(data.network_spec, config, dataset.task_names)
    selector, initial, states, steps = BestEpoch(), InitialNorms(), MethodStateHistory(), StepCount()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=WandbLogger(experiment=run),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if data.has_validation else 0,
        callbacks=[selector, initial, states, steps, *(callbacks or [])],
    )
    trainer.fit(module, datamodule=data)
    if data.has_validation:
        selector.restore(module)
        selection, selected_epoch = SELECTION_RULE, selector.best_epoch
    else:
        selection, selected_epoch = "fixed_budget_last_epoch", epochs - 1
    trainer.test(module, datamodule=data, verbose=False)
    fields = _results(config, module, selector, selection, selected_epoch, time.perf_counter() - started,
                      time.process_time() - started_cpu)
    fields.update(
        split_sha256=data.given_split_sha256,
        steps=steps.count,
        steps_per_epoch=data.steps_per_epoch,
        val_tasks=data.validation_tasks,
        outer_part=data.outer_part or None,
        method_state_history=states.history or None,
        inputs=dict(dataset.provenance) or None,
        sharing=sharing_strength(initial.norms, task_trace_norms(module)),
    )
    path = None
    if out_dir is not None:
        path = record_path(out_dir, fields["dataset"], config.method, fields["run_id"])
        split_path = path.with_suffix(".split.pt")
        try:
            split_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(data.split_indices(), split_path)
        except OSError as error:
            raise RecordWriteError(f"cannot write the run's split {split_path}: {error}") from error
        fields["split_file"] = split_path.name
    return _Fitted(fields, path, selector.history)


def _results(
    config: TrainConfig,
    module: MultiTaskModule,
    selector: BestEpoch,
    selection: str,
    selected_epoch: int,
    wall_time: float,
    cpu_time: float,
) -> dict[str, Any]:
    """The record's fields of a run that trained and tested (the caller adds where it ran)."""
    test = module.epoch_metrics["test"]
    val = selector.history[selected_epoch] if selector.history else {}
    tasks = {
        task: {
            "val_acc": val.get(metric_key("val", "acc", task)),
            "test_acc": test[metric_key("test", "acc", task)],
            "test_err": test[metric_key("test", "err", task)],
        }
        for task in module.task_names
    }
    return {
        "run_id": new_run_id(config.seed),
        "dataset": dataset_name(config.dataset),
        "method": config.method,
        "config": config.to_dict(),
        "seed": config.seed,
        "state": COMPLETE,
        "protocol_version": PROTOCOL_VERSION,
        # The layering the method's paper uses, or the other one (an ablation): tables never mix them.
        "paper_layering": config.layers == type(module).paper.layers,
        "selection": selection,
        "selected_epoch": selected_epoch,
        "tasks": tasks,
        "val_acc_mean": val.get(VAL_ACC_MEAN),
        "test_acc_mean": test[metric_key("test", "acc_mean")],
        "test_err_mean": test[metric_key("test", "err_mean")],
        "val_acc_history": [round(h[VAL_ACC_MEAN], 6) for h in selector.history],
        "method_state": module.logged_state(),
        "wall_time_s": round(wall_time, 3),
        "cpu_time_s": round(cpu_time, 3),
        "torch_threads": torch.get_num_threads(),
        "machine": machine_description(module.device.type),
        "git_rev": git_revision(),
        "versions": package_versions(),
    }
