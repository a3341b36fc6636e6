"""The run record: one JSON file per run, the only thing tables and restored sweeps are built from.

Every module that writes, reads or interprets a record does it here: ``train`` (a finished run),
the sweep (a pruned or failed trial, the objective value of a trial), its restore (a lost storage
rebuilt from records) and the leaderboard (tables and plots). So are the keys the metrics are
logged under, which the records and the plots share.

A record is a :class:`RunRecord`; on disk it is a JSON object with the same field names, written
atomically (a crash never leaves half a record). Fields that are None are left out. Reading
checks every field's type and names the file and the field that is wrong; records written by
earlier versions of the suite are migrated on read (:func:`migrate`), never rewritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import types
import typing
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# What the methods mean, as a number every record carries; the leaderboard never mixes versions.
# 1: every method on every shareable layer (`layers: all`), GTTN meta's outer loss on a carve-out
#    of train, GTTN variable's logits at the network's learning rate, search seeds shared by methods.
# 2: each method under its paper's layering (the GTTN family shares the hidden layer, Frobenius
#    penalty, and puts the tensor norm on the heads), GTTN meta's outer loss on the validation
#    part with an Adam virtual step and bounded unnormalised weights, GTTN variable's logits at
#    their own learning rate, a guided search with a sampler seed per study; epoch selection's
#    ties go to the later epoch.
PROTOCOL_VERSION = 2

# How a run ended. A sweep's pruned or failed trial leaves a record too (no results, a reason),
# so that a storage rebuilt from the records knows its position was settled.
COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"
STATES = (COMPLETE, PRUNED, FAILED)
# Which job wrote it: ``mtlbench train``, a sweep's search trial, or a final run of the best.
TRAIN, SEARCH, FINAL = "train", "sweep", "final"
JOBS = (TRAIN, SEARCH, FINAL)

PACKAGES = ("torch", "lightning", "numpy", "optuna", "wandb", "mtl-trace-norm-benchmark")

# The input of records written before they named it: the dataset's default input at the time.
LEGACY_DEFAULT_FEATURES = {"office_caltech": "surf", "office31": "fc7", "office_home": "fc7",
                           "imageclef": "fc7", "domainnet": "fc7"}
LEGACY_DEFAULT_BACKBONE = "vgg19"


# ---- the keys metrics are logged under (W&B, the method's logged state) ------------------------


def metric_key(stage: str, name: str, task: str | None = None) -> str:
    """``val/acc_mean`` (over tasks) or ``val/<task>/acc``: a metric of one evaluation pass."""
    return f"{stage}/{name}" if task is None else f"{stage}/{task}/{name}"


def flattening_weight_key(layer: int, subset: Sequence[int]) -> str:
    """``alpha/layer<i>/<modes>``: a learned GTTN weight of the flattening with ``subset`` on its rows."""
    return f"alpha/layer{layer}/{'-'.join(map(str, subset))}"


def parse_flattening_weight_key(key: str) -> tuple[str, tuple[int, ...]] | None:
    """``("layer0", (0, 2))`` from ``alpha/layer0/0-2``; None for any other key."""
    kind, _, rest = key.partition("/")
    layer, _, modes = rest.partition("/")
    if kind != "alpha" or not modes:
        return None
    return layer, tuple(int(mode) for mode in modes.split("-"))


# ---- the record --------------------------------------------------------------------------------


class BrokenRecord(ValueError):
    """A record that cannot be used: the message names its path and the field."""


class RecordWriteError(OSError):
    """A run's record (or its split file) could not be written: the run is not settled, it is lost."""


@dataclass(frozen=True)
class RunRecord:
    """One run: what ran (config, code, versions), how it ended and, when complete, its results."""

    run_id: str
    job: str  # one of JOBS
    dataset: str
    method: str
    config: dict[str, Any]  # TrainConfig.to_dict()
    seed: int
    state: str = COMPLETE
    protocol_version: int = PROTOCOL_VERSION
    features: str = ""  # the input ("surf", "fc7", "resnet50_pool5"); "" for a dataset with one
    git_rev: str = "unknown"
    versions: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    # The process's CPU time over the run, all its threads: what the run cost. Unlike the wall
    # time it is not lengthened by other work sharing the CPU (None in records before it was kept).
    cpu_time_s: float | None = None
    # Torch's intra-op threads: another count may sum in another order, so a rerun that differs in
    # the last digits can be told apart from one on other code (None in records before it was kept).
    torch_threads: int | None = None
    # The machine that ran it (``machine_description``): another CPU's kernels may round otherwise,
    # so a rerun that differs in the last digits on other hardware is told apart from one on other
    # code (None in records before it was kept).
    machine: dict[str, Any] | None = None
    # ---- results (complete runs) ----
    paper_layering: bool = True  # the layering of the method's paper; else an ablation
    selection: str | None = None  # best_val_acc_mean[, ties to the later epoch], or fixed_budget_last_epoch
    selected_epoch: int | None = None
    tasks: dict[str, dict[str, float | None]] | None = None  # task -> val_acc, test_acc, test_err
    val_acc_mean: float | None = None  # None: no validation part
    test_acc_mean: float | None = None
    test_err_mean: float | None = None
    val_acc_history: list[float] | None = None
    steps: int | None = None  # optimiser steps taken (one batch per task each)
    steps_per_epoch: int | None = None  # as the config's epoch defines an epoch
    val_tasks: list[str] | None = None  # the tasks whose mean selected the epoch
    method_state: dict[str, float] | None = None  # the method's logged state at the end
    method_state_history: list[dict[str, float]] | None = None  # ... at the end of every epoch
    sharing: dict[str, dict[str, float]] | None = None  # per stacked layer: initial, selected, strength
    outer_part: str | None = None  # where a bilevel method's outer batches came from
    inputs: dict[str, Any] | None = None  # provenance of extracted features
    split_file: str | None = None  # the split's indices, beside the record
    split_sha256: str | None = None  # of the given split file (config.split_file) the run trained on
    wandb_run_id: str | None = None
    # ---- the sweep that ran it ----
    study: str | None = None
    trial: int | None = None
    storage: str | None = None  # the Optuna storage, password left out
    search_space: dict[str, dict[str, Any]] | None = None  # the ranges searched (edges are flagged)
    search_split: int | None = None  # which of a search trial's splits
    equal_methods: list[str] = field(default_factory=list)  # methods not run: the same penalty as this
    # ---- unfinished trials ----
    reason: str | None = None
    reported_errors: dict[str, float] | None = None  # epoch -> the best validation error so far
    path: Path | None = field(default=None, compare=False)  # where it was read from (not written)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise BrokenRecord(f"state {self.state!r}; valid: {', '.join(STATES)}")
        if self.job not in JOBS:
            raise BrokenRecord(f"job {self.job!r}; valid: {', '.join(JOBS)}")
        required = _COMPLETE_FIELDS if self.state == COMPLETE else ("reason",)
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise BrokenRecord(f"a {self.state} record without {', '.join(missing)}")
        if self.state == COMPLETE and not all(isinstance(t.get("test_err"), (int, float)) for t in self.tasks.values()):
            raise BrokenRecord("field tasks: a task without a numeric test_err")

    # ---- what the sweep and the tables read ----

    @property
    def run_seconds(self) -> float:
        """What the run cost in CPU seconds: its CPU time where recorded, else its wall time (one
        thread per worker, so the same on a CPU nothing else used)."""
        return self.cpu_time_s if self.cpu_time_s else self.wall_time_s

    @property
    def train_ratio(self) -> float:
        return float(self.config["train_ratio"])

    @property
    def val_err(self) -> float | None:
        """1 - mean validation accuracy of the selected epoch; None without a validation part."""
        return None if self.val_acc_mean is None else 1 - self.val_acc_mean

    def final_objective(self) -> float:
        """A final run's Optuna value: its validation error, or its test error where it has no
        validation part (a fixed budget). Nothing selects on it."""
        return self.test_err_mean if self.val_acc_mean is None else 1 - self.val_acc_mean

    def best_so_far_errors(self) -> dict[int, float]:
        """The validation error a search trial reported each epoch (the pruner reads these): the
        best one up to that epoch."""
        reported, best = {}, float("inf")
        for epoch, accuracy in enumerate(self.val_acc_history or []):
            best = min(best, 1 - accuracy)
            reported[epoch] = best
        return reported

    def identity(self) -> str:
        """What makes two records the same run: gathered twice from two machines, or re-run. A
        sweep's trials are told apart by study, trial and split as well: two trials may run the
        same configuration (an enqueued or re-proposed point), and both hold a position."""
        return json.dumps({**self.config, "job": self.job, "state": self.state, "protocol_version": self.protocol_version,
                           "study": self.study, "trial": self.trial, "search_split": self.search_split}, sort_keys=True)

    # ---- on disk ----

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "path"}
        return {name: value for name, value in values.items() if value is not None}

    def write(self, path: Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: Path | None = None) -> RunRecord:
        """The record of ``values`` (migrated, then type-checked); :class:`BrokenRecord` names the field."""
        where = f"record {path}: " if path else "record: "
        if not isinstance(values, Mapping):
            raise BrokenRecord(f"{where}not a JSON object")
        values = migrate(values)
        names = {f.name for f in dataclasses.fields(cls)} - {"path"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BrokenRecord(f"{where}unknown field(s) {unknown}")
        missing = [name for name in ("run_id", "job", "dataset", "method", "config", "seed") if name not in values]
        if missing:
            raise BrokenRecord(f"{where}missing {', '.join(missing)}")
        hints = _field_types()
        for name, value in values.items():
            if value is not None and not _matches(value, hints[name]):
                raise BrokenRecord(f"{where}field {name}: expected {_describe(hints[name])}, got {type(value).__name__}")
        try:
            return cls(**values, path=path)
        except BrokenRecord as error:
            raise BrokenRecord(f"{where}{error}") from None


_COMPLETE_FIELDS = ("tasks", "test_err_mean")  # what a table needs of a complete run


def migrate(values: Mapping[str, Any]) -> dict[str, Any]:
    """A record of any earlier version in today's fields; unchanged when it is today's.

    Version 1 records carry no ``protocol_version`` (1), no ``state`` (complete: earlier suites
    left no record of an unfinished run) and no ``features`` (the dataset's input, from its
    ``dataset_params`` or the default of the time).
    """
    values = dict(values)
    values.setdefault("protocol_version", 1)
    values.setdefault("state", COMPLETE)
    if "features" not in values and isinstance(values.get("config"), Mapping):
        values["features"] = features_label(values.get("dataset", ""), values["config"].get("dataset_params") or {},
                                            LEGACY_DEFAULT_FEATURES.get(values.get("dataset", ""), ""),
                                            LEGACY_DEFAULT_BACKBONE)
    return values


def features_label(dataset: str, dataset_params: Mapping[str, Any], default_features: str, default_backbone: str) -> str:
    """The input a run used, as tables are named: ``surf``, ``fc7``, or ``resnet50_pool5`` where the
    backbone is not the default; the dataset's default input where its params name none."""
    features = dataset_params.get("features")
    if not features:
        return default_features
    backbone = dataset_params.get("backbone") or default_backbone
    return str(features) if backbone == default_backbone else f"{backbone}_{features}"


@cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(RunRecord)


def _matches(value: Any, hint: Any) -> bool:
    """``value`` is of type ``hint`` (one level into dicts and lists; int counts as float)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value is None if argument is type(None) else _matches(value, argument) for argument in arguments)
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, (str, Path))
    if origin is dict:
        return isinstance(value, dict) and all(_matches(v, arguments[1]) for v in value.values())
    if origin is list:
        return isinstance(value, list) and all(_matches(v, arguments[0]) for v in value)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


# ---- provenance ------------------------------------------------------------------------------------


@cache
def git_revision() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files outside ``results/`` differ from it;
    ``unknown`` outside git. The suite's own output (new records, rebuilt tables) is not a change
    to the code that produced a run: counting it marked 462 of 475 committed records dirty.

    Asked once a process (``mtlbench`` asks at its start): the code the process imported. A sweep
    worker runs for hours; asked at each record, it wrote the commit made meanwhile, not its own."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
                               cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """The hardware a run's arithmetic ran on: the CPU's model, the vector instructions torch's CPU
    kernels dispatch to (``AVX2``, ``AVX512``, ...), the logical CPUs, and the GPU's name when the
    run used one (``device`` "cuda"). Two machines with another instruction set, or another BLAS
    blocking, round a sum otherwise, so a run on the same code and inputs can drift from its record
    over many epochs there."""
    import torch

    described: dict[str, Any] = {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                 "logical_cpus": os.cpu_count()}
    if device == "cuda" and torch.cuda.is_available():
        described["gpu"] = torch.cuda.get_device_name()
    return described


def machine_label(described: Mapping[str, Any] | None) -> str | None:
    """``CPU model, AVX2[, GPU]``: a record's ``machine`` in a sentence (None: a record older than
    the field)."""
    if not described:
        return None
    return ", ".join(str(described[key]) for key in ("cpu", "cpu_capability", "gpu") if described.get(key))


@cache
def _cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (Linux), else what the platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def new_run_id(seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-s{seed}-{uuid.uuid4().hex[:8]}"


# ---- files -----------------------------------------------------------------------------------------


def record_path(out_dir: Path, dataset: str, method: str, run_id: str) -> Path:
    return Path(out_dir) / dataset / method / f"{run_id}.json"


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write to a temporary name beside ``path``, then rename: a crash never leaves half a record."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        raise RecordWriteError(f"cannot write the record {path}: {error}") from error
    return path


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` and write a file in it, before any training: a run that cannot leave
    its record would be trained for nothing (and, in a sweep, count as a finished trial)."""
    probe = Path(directory) / f".write-check-{os.getpid()}"
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RecordWriteError(f"cannot write records under {directory}: {error}") from error


@dataclass
class Records:
    """Records read from a folder tree, and what could not be used, with the reason."""

    runs: list[RunRecord] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (skipped, kept)

    def problems(self) -> list[str]:
        lines = [f"skipped broken record: {reason}" for _, reason in self.broken]
        lines += [f"skipped duplicate record {path} (same config and seed as {kept})" for path, kept in self.duplicates]
        return lines


def read_record(path: Path) -> RunRecord:
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise BrokenRecord(f"record {path}: {error}") from None
    return RunRecord.from_dict(values, path)


def read_records(root: Path, jobs: Iterable[str] = (FINAL,), states: Iterable[str] = (COMPLETE,)) -> Records:
    """Every ``*.json`` record under ``root`` whose job is in ``jobs`` and whose state is in
    ``states``; broken records and the same run found twice are listed, not used."""
    wanted_jobs, wanted_states = set(jobs), set(states)
    result = Records()
    kept: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = read_record(path)
        except BrokenRecord as error:
            result.broken.append((path, str(error)))
            continue
        if record.job not in wanted_jobs or record.state not in wanted_states:
            continue
        if record.identity() in kept:
            result.duplicates.append((path, kept[record.identity()]))
            continue
        kept[record.identity()] = path
        result.runs.append(record)
    return result


EDGE_SHARE = 0.05  # a float chosen within this share of its (log) range from an end is on the edge


def edge_of(dimension: Mapping[str, Any], value: Any) -> str | None:
    """"low" or "high" when ``value`` sits at that end of a searched range (``{low, high, log}`` or
    ``{choices}``, as records store it): the search may have wanted to go further. Choices have an
    edge only when they are three or more ordered numbers."""
    if "choices" in dimension:
        choices = dimension["choices"]
        if len(choices) < 3 or not all(isinstance(c, (int, float)) for c in choices):
            return None
        return "low" if value == min(choices) else "high" if value == max(choices) else None
    scale = math.log if dimension.get("log") else float
    share = (scale(value) - scale(dimension["low"])) / (scale(dimension["high"]) - scale(dimension["low"]))
    return "low" if share <= EDGE_SHARE else "high" if share >= 1 - EDGE_SHARE else None


def search_edges(search_space: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]) -> list[str]:
    """``["lam low", ...]``: the values of ``values`` at an edge of the range they were searched in."""
    return [f"{name} {side}" for name, dimension in search_space.items()
            if name in values and (side := edge_of(dimension, values[name]))]


def search_objective(split_errors: Sequence[float]) -> float:
    """A search trial's objective: the mean over its search splits of the selected epoch's
    validation error (1 - mean validation accuracy over tasks)."""
    return sum(split_errors) / len(split_errors)
