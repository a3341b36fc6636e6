"""The LightningModule family shared by every method, and the method registry.

A method is one subclass of :class:`MultiTaskModule`, registered by name with :func:`register`.
It says which paper defines it (``paper``: the default layering comes from there), how the
coupling term of its task-stacked layers is computed (``coupling``) and, where it must, how the
network is shared (``shares_hidden``), whether it trains on batches of a further part of the data
(``outer_batches``, ``holdout_ratio``) or how it trains (``training_step``). The core never asks
for a method's name.

Loss of every method (SPEC.md section 2): sum_t CE_t + lambda x (sum over the stacked layers of
the coupling term + sum over the shared layers of ||W||_F^2), CE_t the mean cross-entropy of task
t's batch. A shared layer (no task axis: the hidden layer under ``layers=head``) has nothing for a
tensor norm to couple; it gets the Frobenius penalty the GTTN paper's code puts on it, at the same
lambda.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..nets import MultiTaskNetwork, NetworkSpec, TaskLayer, build_network
from ..norms import gttn_subsets
from ..records import flattening_weight_key, metric_key
from .parameters import Parameter, resolve

_METHODS: dict[str, type[MultiTaskModule]] = {}


@dataclass(frozen=True)
class Paper:
    """The paper whose protocol a method follows: its citation and default layering.

    ``layers``: "all" stacks and regularises every shareable layer; "head" shares the hidden
    layer(s) across tasks (Frobenius penalty) and puts the coupling term on the stacked heads.
    """

    citation: str
    layers: str


TNRDMTL = Paper("Yang & Hospedales, Trace Norm Regularised Deep Multi-Task Learning, ICLR 2017 workshop", "all")
GTTN = Paper("Zhang, Zhang & Wang, Multi-Task Learning via Generalized Tensor Trace Norm, KDD 2021", "head")


OTHER_LAYERING = {"all": "head", "head": "all"}  # each family's ablation: the other paper's layering


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


@contextmanager
def divergence_reported(method: str) -> Iterator[None]:
    """An SVD that fails on non-finite weights means the run diverged: say so, as a DivergedError."""
    try:
        yield
    except torch.linalg.LinAlgError as error:
        raise DivergedError(f"{method}: training loss is not finite (the weights are no longer finite: {error})") from error


def register(name: str) -> Callable[[type[MultiTaskModule]], type[MultiTaskModule]]:
    def add(cls: type[MultiTaskModule]) -> type[MultiTaskModule]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return add


def method_names() -> list[str]:
    return sorted(_METHODS)


def registration_order(name: str) -> int:
    """Where ``name`` was registered among the methods: of methods that coincide, the first one
    registered runs (the older definition: Tucker before TR and GTTN-a)."""
    return list(_METHODS).index(name)


def method_class(name: str) -> type[MultiTaskModule]:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(method_names())}") from None


def resolve_config(config: TrainConfig) -> TrainConfig:
    """``config`` as its method runs it: ``layers="paper"`` replaced by the layering of the method's
    paper and ``layers="other"`` by the other one (the ablation of each family), its method
    parameters checked against the method's declaration (a parameter it does not take, of the
    wrong type or out of range fails here, before any compute, naming the valid ones)."""
    method = method_class(config.method)
    method.resolve_parameters(config.method_params)
    if config.layers == "other" and not method.other_layering:
        raise ValueError(f"{config.method} has no other layering (layers=other is the ablation of a coupled method; "
                         f"both papers run {config.method} alike); methods that have one: "
                         f"{', '.join(m for m in method_names() if method_class(m).other_layering)}")
    resolved = {"paper": method.paper.layers, "other": OTHER_LAYERING[method.paper.layers]}
    return dataclasses.replace(config, layers=resolved[config.layers]) if config.layers in resolved else config


def task_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per task of a (T, B, C) batch; label -1 marks padding."""
    per_sample = F.cross_entropy(logits.flatten(0, 1), labels.flatten().clamp_min(0), reduction="none")
    valid = (labels >= 0).to(per_sample.dtype).flatten()
    per_task = (per_sample * valid).reshape(labels.shape).sum(1)
    return per_task / valid.reshape(labels.shape).sum(1).clamp_min(1)


def flattening_weight_state(layers: list[TaskLayer], weights: list[torch.Tensor]) -> dict[str, float]:
    """:func:`~benchmark.records.flattening_weight_key` -> weight, for the learned GTTN flattening
    weights of each layer."""
    state = {}
    for index, (layer, alpha) in enumerate(zip(layers, weights)):
        for subset, value in zip(gttn_subsets(tuple(layer.weight.shape)), alpha.tolist()):
            state[flattening_weight_key(index, subset)] = value
    return state


class MultiTaskModule(L.LightningModule):
    """T task networks of one architecture trained jointly under one coupling term."""

    name: str
    paper: Paper = TNRDMTL  # whose protocol the method runs under by default (STL and DMTL: both papers')
    # Its paper's layering has an alternative (``layers=other``); not for STL and DMTL, which both
    # papers run alike and which a shared hidden layer would turn into another model.
    other_layering: bool = True
    shares_hidden: bool = False  # hard sharing of the hidden layers (DMTL)
    # Its stacked layers carry the coupling term. False: they are constrained another way (LAF-TF
    # factorises them) and lambda weighs only the shared layers' Frobenius penalty, if any.
    penalises_stacked_layers: bool = True
    # A baseline every table pairs the others with (vs STL, vs DMTL): a sweep of all methods runs
    # it first, so a board cut short still has the rows its comparisons need.
    reference: bool = False
    # Trains on batches of a further part of the data besides its training batches: the
    # validation part where the split has one, else ``holdout_ratio`` of train (GTTN meta).
    outer_batches: bool = False
    declared_parameters: tuple[Parameter, ...] = ()  # what ``method_params`` may set, with defaults

    def __init__(self, spec: NetworkSpec, config: TrainConfig, task_names: list[str]) -> None:
        super().__init__()
        self.config = config = resolve_config(config)
        self.settings = self.resolve_parameters(config.method_params)  # every parameter, defaults filled
        self.task_names = list(task_names)
        self.network: MultiTaskNetwork = build_network(
            spec, config.hidden, share_hidden=self.shares_hidden or config.layers == "head", params=config.network_params
        )
        self._counts: dict[str, torch.Tensor] = {}
        self._objective_calls = 0
        self._last_penalty = torch.zeros(())
        self._train_sums: torch.Tensor | None = None  # loss, cross-entropy, penalty summed over the epoch's steps
        self._train_steps = 0
        self._step_loss_shown = False
        self.epoch_metrics: dict[str, dict[str, float]] = {}  # stage -> metrics of the last pass

    @classmethod
    def resolve_parameters(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's parameters from ``given`` (checked against :attr:`declared_parameters`), defaults filled."""
        return resolve(cls.name, cls.declared_parameters, given)

    @classmethod
    def holdout_ratio(cls, params: Mapping[str, Any]) -> float:
        """Part of the training split the method's outer batches come from where the split has no
        validation part (``outer_batches`` methods only; 0: none)."""
        return 0.0

    # ---- the coupling term -----------------------------------------------------------------

    def stacked_layers(self) -> list[TaskLayer]:
        """Shareable layers that carry a task axis: what a tensor trace norm regularises."""
        return [layer for layer in self.network.shareable_layers() if layer.stacked]

    def shared_layers(self) -> list[TaskLayer]:
        """Shareable layers with one weight for every task (the hidden layer of ``layers=head``)."""
        return [layer for layer in self.network.shareable_layers() if not layer.stacked]

    def coupling(self) -> torch.Tensor:
        """The coupling term, summed over the stacked layers."""
        raise NotImplementedError

    def require_stacked_layers(self) -> None:
        """A tensor norm needs a stacked layer to act on: say so instead of training without one."""
        if not self.stacked_layers():
            raise ValueError(
                f"{self.name} with layers={self.config.layers}: this network has no task-stacked shareable "
                f"layer left for the tensor norm (the output layers of {type(self.network).__name__} are not "
                "shareable); use layers=all"
            )

    @classmethod
    def weighs_lambda(cls, layers: str) -> bool:
        """Whether lambda weighs anything in the loss under the resolved ``layers``: the coupling
        term of the stacked layers, or the Frobenius penalty of a shared layer (DMTL's, or any
        method's hidden layer under ``layers=head``). False: every lambda trains the same network,
        so a sweep does not search it (LAF-TF under its paper's layering)."""
        return cls.penalises_stacked_layers or cls.shares_hidden or layers == "head"

    def penalty(self) -> torch.Tensor:
        """coupling + sum of ||W||_F^2 over the shared layers (lambda is applied by the caller)."""
        shared = sum((layer.weight.pow(2).sum() for layer in self.shared_layers()), torch.zeros((), device=self.device))
        return self.coupling() + shared if self.penalises_stacked_layers else shared

    def logged_state(self) -> dict[str, float]:
        """Method-specific values to log each epoch (e.g. learned flattening weights)."""
        return {}

    def penalty_signature(self) -> Hashable | None:
        """What decides the training objective beyond the data, as a comparable value, where the
        method's coupling is a fixed weighted sum of flattening trace norms: two methods with equal
        signatures train the same network on the same loss (Tucker, TR with d = 2 and GTTN-a on a
        3-way tensor), so a sweep runs one of them. None: not comparable (the default)."""
        return None

    # ---- training ----------------------------------------------------------------------------

    def objective(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, summed task cross-entropy, penalty) of one training batch.

        With ``penalty_every = k > 1`` the penalty enters only every k-th call, weighted k, so its
        expected contribution per step is unchanged (lazy regularisation, an approximation); the
        returned penalty is then the one last computed, for logging.
        """
        cross_entropy = task_losses(self.network(batch["x"]), batch["y"]).sum()
        every = self.config.penalty_every
        self._objective_calls += 1
        if (self._objective_calls - 1) % every:
            return cross_entropy, cross_entropy, self._last_penalty
        with divergence_reported(self.name):
            penalty = self.penalty()
        self._last_penalty = penalty.detach()
        return cross_entropy + every * self.config.lam * penalty, cross_entropy, penalty

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise DivergedError(
                f"{self.name}: training loss is {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} (lambda={self.config.lam}, lr={self.config.lr})"
            )

    def log_training(self, loss: torch.Tensor, cross_entropy: torch.Tensor, penalty: torch.Tensor) -> None:
        """Add the step's loss terms to the epoch's sums, on the device; :meth:`on_train_epoch_end`
        logs their means. Lightning's ``self.log`` machinery costs every step about as much as a
        small model's layer does (``make bench``, sections loop and profile); the per-step loss goes
        to the progress bar only where there is one."""
        terms = torch.stack([loss.detach(), cross_entropy.detach(), penalty.detach().to(loss)])
        self._train_sums = terms if self._train_sums is None else self._train_sums + terms
        self._train_steps += 1
        if self._step_loss_shown:
            self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=len(self.task_names))

    def on_train_start(self) -> None:
        self._step_loss_shown = self.trainer.progress_bar_callback is not None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, cross_entropy, penalty = self.objective(batch)
        self.check_finite(loss)
        self.log_training(loss, cross_entropy, penalty)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_sums is not None:
            means = self._train_sums / self._train_steps
            self.log_dict(dict(zip(("train/loss", "train/ce", "train/penalty"), means)), on_epoch=True)
            self._train_sums, self._train_steps = None, 0
        if self.logged_state():
            self.log_dict(self.logged_state(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr)

    # ---- evaluation: per-task accuracy over a whole split ------------------------------------

    def _count(self, batch: dict[str, torch.Tensor]) -> None:
        predictions = self.network(batch["x"]).argmax(-1)
        valid = batch["y"] >= 0
        correct = ((predictions == batch["y"]) & valid).sum(1)
        total = valid.sum(1)
        if "correct" not in self._counts:
            self._counts = {"correct": torch.zeros_like(correct), "total": torch.zeros_like(total)}
        self._counts["correct"] += correct
        self._counts["total"] += total

    def _finish(self, stage: str) -> None:
        counted = self._counts["total"] > 0
        accuracy = (self._counts["correct"] / self._counts["total"].clamp_min(1))[counted].tolist()
        tasks = [task for task, present in zip(self.task_names, counted.tolist()) if present]
        self._counts = {}
        # A task with no sample in this split (the validation part of a tiny task at a low train
        # ratio) has no accuracy here; the mean is over the tasks that have one.
        metrics = {metric_key(stage, "acc", task): acc for task, acc in zip(tasks, accuracy)}
        metrics.update({metric_key(stage, "err", task): 1 - acc for task, acc in zip(tasks, accuracy)})
        metrics[metric_key(stage, "acc_mean")] = sum(accuracy) / len(accuracy)
        metrics[metric_key(stage, "err_mean")] = 1 - metrics[metric_key(stage, "acc_mean")]
        self.epoch_metrics[stage] = metrics
        self.log_dict(metrics)
        self.log(metric_key(stage, "acc"), metrics[metric_key(stage, "acc_mean")], prog_bar=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._count(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._count(batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")
