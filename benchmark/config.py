"""Run configuration: one frozen dataclass, strict about unknown keys."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR_VARIABLE = "BENCHMARK_DATA_DIR"

LAYERINGS = ("all", "head", "paper", "other")
# What one epoch is (a budget in epochs means a different amount of training in each code):
# "largest_task" (this suite): enough steps for the largest task's training part to be seen once;
# "all_samples" (the GTTN paper's code): all tasks' training samples / (batch per task x tasks),
# rounded down (at least 1). Each step draws one batch per task either way.
EPOCHS = ("largest_task", "all_samples")


def default_data_dir() -> Path:
    """``$BENCHMARK_DATA_DIR`` if set, else ``datasets/`` in the working directory."""
    return Path(os.environ.get(DATA_DIR_VARIABLE, "datasets"))


# Fields added after sweeps began to name their studies by the config's dict: at their defaults
# they are left out of it, so adding one neither renames a running study nor makes the records
# before it look like another configuration. A new field goes here.
ADDED_FIELDS = ("network_params",)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run (SPEC.md section 4 gives the defaults)."""

    dataset: str = "synthetic"
    method: str = "tucker"
    lam: float = 1e-2  # trade-off lambda of the coupling term
    hidden: int = 128
    lr: float = 1e-3
    seed: int = 0  # seeds the split and the initialisation
    train_ratio: float = 0.5  # per task and class; the rest is test
    val_ratio: float = 0.2  # part of train kept for model selection; 0 = fixed budget, last epoch
    max_epochs: int = 30
    epoch: str = "largest_task"  # one of EPOCHS
    # A budget in optimiser steps instead of epochs: the run takes ceil(max_steps / steps per epoch)
    # whole epochs (validation runs at epoch ends, so a budget is never cut mid-epoch); None: max_epochs.
    max_steps: int | None = None
    samples_per_class: int = 2  # batch per task = samples_per_class x classes of the widest task
    class_balanced: bool = True
    # "all": hidden and heads stacked and regularised; "head": hidden shared (Frobenius), heads
    # stacked; "paper": the method's paper's layering, "other": the other one (an ablation), each
    # resolved to "all" or "head" before a run (benchmark.methods.resolve_config: the record and
    # the study hold the one that ran).
    layers: str = "paper"
    # Lazy regularisation: the coupling term only every k-th step, weighted k (an approximation;
    # 1 = every step, exact). Saves the trace norms' cost on the other steps.
    penalty_every: int = 1
    # Features are z-scored with the training part's mean and std; a std below this floor is
    # raised to it, so a feature almost constant on train (sparse DeCAF, unused SURF words) cannot
    # blow a test input up to |z| in the tens of thousands. 0: no floor. A feature constant on
    # train is only centred, whatever the floor.
    std_floor: float = 0.0
    # A JSON file of each task's train/val/test row indices (a published split) instead of the
    # split train_ratio, val_ratio and the seed draw; the seed then varies only the initialisation.
    split_file: str | None = None
    method_params: Mapping[str, Any] = field(default_factory=dict)
    dataset_params: Mapping[str, Any] = field(default_factory=dict)
    # Choices of the network that no paper fixes, for ablations (benchmark.nets: the Omniglot CNN
    # takes padding and init); {}: the network of SPEC.md section 3.
    network_params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.train_ratio < 1:
            raise ValueError(f"train_ratio must be in (0, 1), got {self.train_ratio}")
        if not 0 <= self.val_ratio < 1:
            raise ValueError(f"val_ratio must be in [0, 1), got {self.val_ratio}")
        if self.epoch not in EPOCHS:
            raise ValueError(f"epoch must be one of {', '.join(EPOCHS)}, got {self.epoch!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or unset, for max_epochs), got {self.max_steps}")
        if self.layers not in LAYERINGS:
            raise ValueError(f"layers must be one of {', '.join(LAYERINGS)}, got {self.layers!r}")
        if self.std_floor < 0:
            raise ValueError(f"std_floor must be >= 0, got {self.std_floor}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("hidden", "max_epochs", "samples_per_class", "penalty_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid: {', '.join(cls.field_names())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every field, except a field of :data:`ADDED_FIELDS` at its default: a config's dict
        (in records, W&B and study names) stays what it was before the field existed."""
        values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(self).items()}
        for name in ADDED_FIELDS:
            if values[name] == _DEFAULTS[name]:
                del values[name]
        return values


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["axis=1", "eps=0.05", "name=x"]`` -> ``{"axis": 1, "eps": 0.05, "name": "x"}`` (YAML scalars)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw)
    return parsed


_DEFAULTS = {name: value for name, value in dataclasses.asdict(TrainConfig()).items()}
