"""A dataset the user brings: a folder holding one array file per task.

``mtlbench train --dataset PATH`` (and ``make sweep DATASET=PATH``) reads a folder with one
``<task>.npz``, ``<task>.mat`` or ``<task>.csv`` per task:

- ``.npz`` / ``.mat``: ``X`` (n x d features, or n x h x w x c to keep the modes of a spatial map)
  and ``y`` (n integer labels); the released MATLAB feature files' ``fts`` / ``labels`` also work.
- ``.csv``: a header row, a ``label`` column and one column per feature.

Labels are 0..C-1 (or 1..C, as MATLAB files number classes: shifted, and the record says so),
the same C classes in every task. The dataset's name is the folder's name, the task names are
the file names (in sorted order). An optional ``dataset.json`` names the input (``features``, as
tables label it, e.g. ``gnet1024``) and the classes (``classes``). Every file is validated on
load; each problem is one line naming the file and the fix. The SHA-256 of every file goes into
the run record.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .source import DatasetSource, DataUnavailableError, MultiTaskDataset, TaskData, sha256_of

FORMATS = (".npz", ".mat", ".csv")
METADATA = "dataset.json"
# (features, labels) key pairs an array file may use: ours, and the released MATLAB features'.
ARRAY_KEYS = (("X", "y"), ("fts", "labels"))
LABEL_COLUMN = "label"
MIN_TASK_SAMPLES = 2  # one to train on, one to test on


class FolderDatasetError(DataUnavailableError):
    """A folder dataset's file is unreadable or fails validation; the message names file and fix."""


def looks_like_folder(reference: str) -> bool:
    """A dataset reference that names a folder rather than a registered dataset."""
    return os.sep in reference or "/" in reference or reference.startswith(".") or Path(reference).is_dir()


def task_files(folder: Path) -> list[Path]:
    """The folder's task files, sorted by name (that order is the task order)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A task file's raw (features, labels); unreadable files and missing keys raise."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pandas as pd

            table = pd.read_csv(path)
            if LABEL_COLUMN not in table.columns:
                raise FolderDatasetError(f"{path}: no {LABEL_COLUMN!r} column (columns: "
                                         f"{', '.join(map(str, table.columns[:5]))}...); name the label column {LABEL_COLUMN!r}")
            features = table.drop(columns=LABEL_COLUMN)
            text = [c for c in features.columns if not np.issubdtype(features[c].dtype, np.number)]
            if text:
                raise FolderDatasetError(f"{path}: column(s) {', '.join(map(str, text[:3]))} are not numbers; "
                                         "a feature column holds numbers only")
            return features.to_numpy(), table[LABEL_COLUMN].to_numpy()
        if suffix == ".npz":
            if not zipfile.is_zipfile(path):
                raise FolderDatasetError(f"{path}: not a .npz (zip) file; replace it (np.savez(path, X=..., y=...))")
            with np.load(path, allow_pickle=False) as arrays:
                stored = {key: arrays[key] for key in arrays.files}
        else:
            import scipy.io

            stored = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    except FolderDatasetError:
        raise
    except NotImplementedError:  # scipy cannot read MATLAB v7.3 (HDF5) files
        raise FolderDatasetError(f"{path}: a MATLAB v7.3 file; re-save it with save(..., '-v7') or convert it to .npz") from None
    except Exception as error:  # numpy, scipy and pandas raise many kinds for a damaged file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FolderDatasetError(f"{path}: cannot be read as {suffix} ({type(error).__name__}: {first_line}); "
                                 "replace the file") from None
    for features_key, labels_key in ARRAY_KEYS:
        if features_key in stored and labels_key in stored:
            return stored[features_key], stored[labels_key]
    pairs = " or ".join(f"{f}/{y}" for f, y in ARRAY_KEYS)
    raise FolderDatasetError(f"{path}: holds {', '.join(sorted(stored)) or 'nothing'}, not {pairs}; "
                             f"save the features as X and the labels as y")


def _checked_task(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One task's (features float32, integer labels), each problem a one-line error."""
    features, labels = _read_arrays(path)
    features = np.asarray(features)
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:  # MATLAB stores a vector as n x 1 or 1 x n
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise FolderDatasetError(f"{path}: labels have shape {labels.shape}; give one integer label per row")
    if features.ndim < 2:
        raise FolderDatasetError(f"{path}: features have shape {features.shape}; give one row per sample (n x d)")
    if len(features) != len(labels):
        raise FolderDatasetError(f"{path}: {len(features)} feature rows but {len(labels)} labels; give one label per row")
    if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
        raise FolderDatasetError(f"{path}: features of type {features.dtype}; give real numbers")
    features = features.astype(np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(features.reshape(len(features), -1)).all(axis=1))
    if len(bad_rows):
        raise FolderDatasetError(f"{path}: {len(bad_rows)} row(s) hold NaN or inf (first: row {bad_rows[0]}); "
                                 "remove or impute them")
    if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise FolderDatasetError(f"{path}: labels must be whole numbers (found {labels[:3].tolist()}...); "
                                 "give class indices 0..C-1")
    if len(labels) < MIN_TASK_SAMPLES:
        raise FolderDatasetError(f"{path}: {len(labels)} sample(s), too few to split into train and test; "
                                 f"a task needs at least {MIN_TASK_SAMPLES}")
    return features, labels.astype(np.int64)


@dataclass(frozen=True)
class FolderContents:
    """A validated folder: per task (name, features, 0-based labels), and what was found."""

    tasks: list[tuple[str, np.ndarray, np.ndarray]]
    n_classes: int
    label_base: int  # 0, or 1 where every label was 1..C (shifted to 0..C-1)
    files: dict[str, str]  # file name -> SHA-256
    metadata: dict[str, Any]


def read_folder(folder: Path) -> FolderContents:
    """Read and validate every task file of ``folder`` (see the module docstring)."""
    if not folder.is_dir():
        raise FolderDatasetError(f"{folder}: not a folder; give a folder holding one <task>.npz, .mat or .csv per task")
    paths = task_files(folder)
    if not paths:
        raise FolderDatasetError(f"{folder}: no .npz, .mat or .csv files; put one <task>.npz (X, y) per task there")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise FolderDatasetError(f"{folder}: task(s) {', '.join(twice)} come in more than one file; keep one per task")
    metadata = _read_metadata(folder)
    tasks = [(p.stem, *_checked_task(p)) for p in paths]
    shapes = {path.name: features.shape[1:] for path, (_, features, _) in zip(paths, tasks)}
    if len(set(shapes.values())) > 1:
        first = paths[0].name
        other = next(name for name, shape in shapes.items() if shape != shapes[first])
        raise FolderDatasetError(f"{folder / other}: features of shape {shapes[other]} per sample, but {first} has "
                                 f"{shapes[first]}; every task needs the same features")
    label_base = 1 if min(int(labels.min()) for _, _, labels in tasks) == 1 else 0
    tasks = [(name, features, labels - label_base) for name, features, labels in tasks]
    n_classes = max(int(labels.max()) for _, _, labels in tasks) + 1
    for path, (_, _, labels) in zip(paths, tasks):
        if labels.min() < 0:
            raise FolderDatasetError(f"{path}: label {labels.min() + label_base} is negative; give class indices 0..C-1")
        missing = sorted(set(range(n_classes)) - set(labels.tolist()))
        if missing:
            shown = ", ".join(str(m + label_base) for m in missing[:5])
            raise FolderDatasetError(f"{path}: no sample of class(es) {shown} of {label_base}..{n_classes - 1 + label_base}; "
                                     "every task needs the same classes (drop the class everywhere, or renumber)")
    classes = metadata.get("classes")
    if classes is not None and len(classes) != n_classes:
        raise FolderDatasetError(f"{folder / METADATA}: names {len(classes)} classes, the labels {n_classes}; "
                                 "list one name per class")
    files = {path.name: sha256_of(path) for path in paths}
    return FolderContents(tasks, n_classes, label_base, files, metadata)


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise FolderDatasetError(f"{path}: not valid JSON ({error}); fix or remove it") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("features", ""), str):
        raise FolderDatasetError(f'{path}: must be an object like {{"features": "gnet1024", "classes": [...]}}')
    return metadata


def write_folder(folder: Path, tasks: Mapping[str, tuple[np.ndarray, np.ndarray]], metadata: Mapping[str, Any]) -> None:
    """Write a new folder dataset (one ``<task>.npz`` per task and ``dataset.json``); an existing,
    non-empty folder is never written into, so no other dataset is overwritten."""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty; choose a new folder (its name is the dataset's name)")
    staging = folder.with_name(folder.name + ".writing")
    staging.mkdir(parents=True, exist_ok=True)
    for name, (features, labels) in tasks.items():
        np.savez(staging / f"{name}.npz", X=np.asarray(features, np.float32), y=np.asarray(labels, np.int64))
    (staging / METADATA).write_text(json.dumps(dict(metadata), indent=1) + "\n")
    if folder.exists():
        folder.rmdir()
    staging.rename(folder)


class FolderSource(DatasetSource):
    """A folder of per-task array files, read as one multi-task feature dataset."""

    how_to_get = ("Give a folder holding one <task>.npz (X: n x d features, y: labels 0..C-1), <task>.mat "
                  "(X/y or fts/labels) or <task>.csv (a 'label' column) per task; README, 'Your own data'.")

    def __init__(self, folder: Path) -> None:
        self.folder_path = Path(folder)
        self.name = self.folder_path.resolve().name
        self.folder = str(self.folder_path)
        metadata = _read_metadata(self.folder_path) if self.folder_path.is_dir() else {}
        self.default_features = metadata.get("features", "")
        self.native_features = (self.default_features,)
        self._contents: tuple[Any, FolderContents] | None = None

    def root(self, data_dir: Path) -> Path:
        return self.folder_path  # wherever the user keeps it, not under the data directory

    def contents(self) -> FolderContents:
        """The validated contents, read once per change of the files."""
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in task_files(self.folder_path)) \
            if self.folder_path.is_dir() else None
        if self._contents is None or self._contents[0] != stamp:
            self._contents = (stamp, read_folder(self.folder_path))
        return self._contents[1]

    def present(self, data_dir: Path, features: str | None = None, backbone: str | None = None) -> bool:
        return self.folder_path.is_dir() and bool(task_files(self.folder_path))

    def verify(self, data_dir: Path, features: str | None = None, backbone: str | None = None) -> None:
        if features and features != self.default_features or backbone:
            raise FolderDatasetError(f"{self.folder_path}: a folder dataset has one input "
                                     f"({self.default_features or 'its arrays'}); drop --features/--backbone")
        self.contents()

    def load(self, data_dir: Path, features: str | None = None, backbone: str | None = None,
             **params: Any) -> MultiTaskDataset:
        self.verify(data_dir, features, backbone)
        if params:
            raise FolderDatasetError(f"{self.folder_path}: a folder dataset takes no dataset parameters, got {sorted(params)}")
        contents = self.contents()
        tasks = tuple(TaskData(name, torch.from_numpy(features), torch.from_numpy(labels), contents.n_classes)
                      for name, features, labels in contents.tasks)
        provenance = {"folder": str(self.folder_path), "files": contents.files, "label_base": contents.label_base,
                      **{k: v for k, v in contents.metadata.items() if k in ("features", "origin")}}
        return MultiTaskDataset(self.name, tasks, kind="features", network="features", provenance=provenance)

    @property
    def task_names(self) -> list[str]:
        return [p.stem for p in task_files(self.folder_path)]

    @property
    def classes(self) -> tuple[str, ...]:
        contents = self.contents()
        return tuple(contents.metadata.get("classes") or (str(c) for c in range(contents.n_classes)))

    def download_hint(self) -> str:
        return ""
