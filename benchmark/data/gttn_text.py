"""The GTTN paper's released feature files: plain text, read here and converted into a folder dataset.

Format (the public GTTN code's): line 1 = number of tasks T, line 2 = number of classes C,
line 3 = comma-separated task boundary offsets into the sample rows, then one comma-separated
feature row per sample (tasks one after another), and the last line = comma-separated 0-based
labels. Boundaries are accepted as T + 1 offsets starting at 0, T start offsets (first 0), or T
end offsets (last = number of rows). pool5 rows hold 7 x 7 x 512 values in H, W, C order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from .source import DataUnavailableError, sha256_of


@dataclass(frozen=True)
class GttnFeatures:
    n_classes: int
    task_rows: list[tuple[int, int]]  # [start, stop) rows of each task
    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int64


def _numbers(line: str, dtype: type, path: Path, number: int) -> np.ndarray:
    try:
        return np.array([dtype(v) for v in line.strip().split(",")])
    except ValueError as error:
        raise DataUnavailableError(f"{path}:{number}: not a comma-separated list of numbers ({error})") from None


def read_gttn_text(path: Path) -> GttnFeatures:
    """Parse one file; any inconsistency (counts, offsets, labels) raises with the line it is on."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) < 5:
        raise DataUnavailableError(f"{path}: too short for a GTTN feature file ({len(lines)} non-empty lines)")
    n_tasks, n_classes = int(lines[0]), int(lines[1])
    offsets = _numbers(lines[2], int, path, 3).tolist()
    rows = [_numbers(line, float, path, i + 4) for i, line in enumerate(lines[3:-1])]
    labels = _numbers(lines[-1], int, path, len(lines)).astype(np.int64)
    n = len(rows)
    if len({len(r) for r in rows}) != 1:
        raise DataUnavailableError(f"{path}: feature rows have different lengths {sorted({len(r) for r in rows})}")
    if len(labels) != n:
        raise DataUnavailableError(f"{path}: {n} feature rows but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataUnavailableError(f"{path}: labels must be in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    if len(offsets) == n_tasks + 1 and offsets[0] == 0 and offsets[-1] == n:
        bounds = offsets
    elif len(offsets) == n_tasks and offsets[0] == 0:
        bounds = [*offsets, n]
    elif len(offsets) == n_tasks and offsets[-1] == n:
        bounds = [0, *offsets]
    else:
        raise DataUnavailableError(f"{path}:3: offsets {offsets} do not split {n} rows into {n_tasks} tasks")
    if any(b >= e for b, e in pairwise(bounds)):
        raise DataUnavailableError(f"{path}:3: offsets {offsets} are not increasing")
    return GttnFeatures(n_classes, list(pairwise(bounds)), np.stack(rows).astype(np.float32), labels)


def write_gttn_text(path: Path, tasks: list[tuple[np.ndarray, np.ndarray]], n_classes: int) -> None:
    """Write per-task (features (n, d), labels (n,)) in the GTTN format (T + 1 offsets from 0)."""
    sizes = [len(labels) for _, labels in tasks]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    lines = [str(len(tasks)), str(n_classes), ",".join(map(str, offsets.tolist()))]
    lines += [",".join(repr(float(v)) for v in row) for features, _ in tasks for row in features.reshape(len(features), -1)]
    lines.append(",".join(str(int(v)) for _, labels in tasks for v in labels))
    Path(path).write_text("\n".join(lines) + "\n")


def gttn_text_to_folder(path: Path, folder: Path, task_names: list[str] | None = None, features: str = "",
                        shape: tuple[int, ...] | None = None, classes: list[str] | None = None) -> Path:
    """Convert a GTTN text file into a folder dataset (:mod:`benchmark.data.folder`): one
    ``<task>.npz`` per task, named ``task_names`` (default task0, task1, ...), rows reshaped to
    ``shape`` (e.g. 7 x 7 x 512 for pool5), the input labelled ``features``. Any number of tasks and
    classes; the folder must be new, so no other dataset or cache is overwritten."""
    from .folder import write_folder

    parsed = read_gttn_text(path)
    names = task_names or [f"task{t}" for t in range(len(parsed.task_rows))]
    if len(names) != len(parsed.task_rows):
        raise DataUnavailableError(f"{path}: {len(parsed.task_rows)} tasks, but {len(names)} names given ({', '.join(names)})")
    if len(set(names)) != len(names):
        raise DataUnavailableError(f"task names {', '.join(names)} repeat; give each task its own name")
    width = parsed.features.shape[1]
    row_shape = tuple(shape or (width,))
    if int(np.prod(row_shape)) != width:
        raise DataUnavailableError(f"{path}: rows of {width} values do not reshape to {' x '.join(map(str, row_shape))}")
    if classes is not None and len(classes) != parsed.n_classes:
        raise DataUnavailableError(f"{path}: {parsed.n_classes} classes, but {len(classes)} class names given")
    tasks = {name: (parsed.features[start:stop].reshape(-1, *row_shape), parsed.labels[start:stop])
             for name, (start, stop) in zip(names, parsed.task_rows)}
    metadata = {"features": features, "origin": f"GTTN text file {Path(path).name} (SHA-256 {sha256_of(Path(path))})"}
    if classes is not None:
        metadata["classes"] = list(classes)
    write_folder(Path(folder), tasks, metadata)
    return Path(folder)
