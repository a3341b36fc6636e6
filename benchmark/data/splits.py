"""Stratified per-task splits (SPEC.md section 4)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def stratified_split(
    labels: np.ndarray, train_ratio: float, val_ratio: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Split one task's sample indices per class into train / val / test.

    Each class keeps round(train_ratio * n_c) samples (at least 1) for training, the rest for test.
    Of those, round(val_ratio * n_train_c) go to validation, always leaving at least one to train on:
    at 10% Omniglot (2 drawings per character) that leaves no validation part at all.
    """
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = max(1, _round_half_up(train_ratio * len(members)))
        n_val = min(_round_half_up(val_ratio * n_train), n_train - 1)
        parts["val"].append(members[:n_val])
        parts["train"].append(members[n_val:n_train])
        parts["test"].append(members[n_train:])
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


SPLIT_PARTS = ("train", "val", "test")


class SplitFileError(ValueError):
    """A given split that cannot be used: the message names the file, the task and the problem."""


def read_split_file(path: Path, task_sizes: Mapping[str, int]) -> tuple[list[dict[str, np.ndarray]], str]:
    """The split of every task from a JSON file ``{"<task>": {"train": [...], "val": [...], "test": [...]}}``
    of row indices into each task's samples in file order (``val`` optional), checked, and the
    file's SHA-256. A published split, or one exported from a run (``mtlbench split-export``)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise SplitFileError(f"split {path}: cannot read it ({error})") from None
    try:
        given = json.loads(raw)
    except ValueError as error:
        raise SplitFileError(f"split {path}: not JSON ({error})") from None
    if not isinstance(given, dict):
        raise SplitFileError(f"split {path}: expected an object of tasks, got {type(given).__name__}")
    missing, unknown = sorted(set(task_sizes) - set(given)), sorted(set(given) - set(task_sizes))
    if missing or unknown:
        raise SplitFileError(f"split {path}: tasks missing {missing}, unknown {unknown}; the dataset's tasks are "
                             f"{', '.join(task_sizes)}")
    splits = []
    for task, size in task_sizes.items():
        parts = given[task]
        if not isinstance(parts, dict) or not {"train", "test"} <= set(parts) or set(parts) - set(SPLIT_PARTS):
            raise SplitFileError(f"split {path}, task {task}: give train and test (and optionally val) index lists, "
                                 f"got {sorted(parts) if isinstance(parts, dict) else type(parts).__name__}")
        split = {}
        for part in SPLIT_PARTS:
            values = parts.get(part, [])
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in values):
                raise SplitFileError(f"split {path}, task {task}: {part} holds a non-integer index")
            indices = np.asarray(values, dtype=np.int64)
            if len(indices) and (indices.min() < 0 or indices.max() >= size):
                raise SplitFileError(f"split {path}, task {task}: {part} index out of range 0..{size - 1}")
            split[part] = indices
        used = np.concatenate(list(split.values()))
        if len(np.unique(used)) != len(used):
            raise SplitFileError(f"split {path}, task {task}: an index appears twice (parts must be disjoint)")
        if not len(split["train"]) or not len(split["test"]):
            raise SplitFileError(f"split {path}, task {task}: train and test must not be empty")
        splits.append(split)
    return splits, hashlib.sha256(raw).hexdigest()


def export_split(saved: Mapping[str, Mapping[str, Sequence[int]]], path: Path) -> Path:
    """Write a split a run saved (``<run_id>.split.pt``) as the JSON :func:`read_split_file` reads.
    A method's held-out part of train (GTTN meta without a validation part) goes back into train:
    it is the method's carve-out, not part of the split."""
    exported = {}
    for task, parts in saved.items():
        train = [*parts["train"], *parts.get("holdout", [])]
        exported[task] = {"train": sorted(int(i) for i in train), "val": [int(i) for i in parts.get("val", [])],
                          "test": [int(i) for i in parts["test"]]}
    Path(path).write_text(json.dumps(exported) + "\n")
    return Path(path)
