"""Stratified per-task splits (SPEC.md section 4)."""

from __future__ import annotations

import math

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
