"""Dataset sources: where a multi-task dataset lives, how to verify it, how to read it.

A source turns files under the data directory into a :class:`MultiTaskDataset` (one entry per
task). Files are checked against their SHA-256 before they are read; a missing or corrupt file
raises an error that names the path, the failed checksum and how to get the data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..nets import NetworkSpec
from ..records import features_label


class DataUnavailableError(RuntimeError):
    """A dataset file is missing or does not match its checksum."""


@dataclass(frozen=True)
class TaskData:
    name: str
    inputs: torch.Tensor  # (n, *input_shape); any dtype, made float per batch
    labels: torch.Tensor  # (n,) int64 in 0..n_classes-1
    n_classes: int


@dataclass(frozen=True)
class MultiTaskDataset:
    name: str
    tasks: tuple[TaskData, ...]
    kind: str  # "features": standardised, MLP; "images": raw pixels for a CNN
    network: str  # network kind for nets.build_network
    # Where derived inputs came from (a feature cache's backbone, weights, image list), for the record.
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.tasks[0].inputs.shape[1:])

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(self.input_shape, tuple(t.n_classes for t in self.tasks), self.network)


DEFAULT_BACKBONE = "vgg19"  # the GTTN paper's (benchmark.data.backbones has them all)


class DatasetSource:
    """One dataset: its files (relative to ``data_dir / folder``) with checksums, and a reader.

    A dataset comes as one or more inputs, named by ``features``: inputs its files hold
    (``native_features``, read by :meth:`read`; "" for a dataset with a single input), or the
    backbone features extracted from its images (``fc7``, ``pool5``: :mod:`benchmark.data.features`).
    """

    name: str
    folder: str
    files: dict[str, str] = {}  # relative path -> sha256
    downloads: tuple = ()  # Download entries (benchmark.data.download): what `mtlbench data` fetches
    how_to_get: str = ""
    native_features: tuple[str, ...] = ("",)
    default_features: str = ""  # the input used unless dataset_params name another (leaderboard file names)

    def root(self, data_dir: Path) -> Path:
        return Path(data_dir) / self.folder

    def is_native(self, features: str | None) -> bool:
        return (features or self.default_features) in self.native_features

    def present(self, data_dir: Path, features: str | None = None, backbone: str | None = None) -> bool:
        if self.is_native(features):
            return all((self.root(data_dir) / f).is_file() for f in self.files)
        from .features import MANIFEST, cache_dir

        return (cache_dir(self, data_dir, *_feature_key(self, features, backbone)) / MANIFEST).is_file()

    def verify(self, data_dir: Path, features: str | None = None, backbone: str | None = None) -> None:
        """Raise :class:`DataUnavailableError` unless the named input is present and intact."""
        if not self.is_native(features):
            from .backbones import BACKBONES
            from .features import cache_dir, cache_problems, features_command

            key = _feature_key(self, features, backbone)
            if key[0] not in BACKBONES:
                raise DataUnavailableError(f"unknown backbone {key[0]!r}; valid: {', '.join(BACKBONES)}")
            layers = BACKBONES[key[0]].layers
            owners = [name for name, b in BACKBONES.items() if key[1] in b.layers]
            if key[1] not in layers and owners:
                raise DataUnavailableError(f"{key[1]} is a layer of {' and '.join(owners)}, not of {key[0]}: "
                                           f"add --backbone {owners[0]} (BACKBONE={owners[0]} in make)")
            if key[1] not in layers:  # not an input this suite can make: someone else's features
                own = f"its own: {', '.join(n for n in self.native_features if n)}; " if any(self.native_features) else ""
                made = "; ".join(f"{name}: {', '.join(b.layers)}" for name, b in BACKBONES.items())
                raise DataUnavailableError(
                    f"{self.name} has no input {key[1]!r} ({own}extracted from its images by a backbone, "
                    f"{made}). For features made elsewhere, put them in a folder dataset (`mtlbench import` "
                    "for GTTN text files; README, 'Your own data')")
            problems = cache_problems(cache_dir(self, data_dir, *key))
            if problems:
                extract = f"`{features_command(self.name, *key)} --data-dir {data_dir}`"
                first = "" if self.images_present(data_dir) else (
                    f"The images they are made from are not under {self.root(data_dir)} either: first "
                    f"{self.how_to_get[0].lower()}{self.how_to_get[1:]}{self.download_hint()}\nThen run")
                raise DataUnavailableError(
                    f"{self.name}: no usable {key[0]} {key[1]} features: " + "; ".join(problems)
                    + f".\n{first or 'Run'} {extract} to extract (or rebuild) them."
                )
            return
        for relative, expected in self.files.items():
            path = self.root(data_dir) / relative
            if not path.is_file():
                raise DataUnavailableError(
                    f"{self.name}: {path} not found (data directory {Path(data_dir).resolve()}, set by "
                    f"--data-dir or $BENCHMARK_DATA_DIR).\n{self.how_to_get}"
                )
            actual = sha256_of(path)
            if actual != expected:
                raise DataUnavailableError(
                    f"{self.name}: {path} failed its SHA-256 check (expected {expected}, got {actual}); "
                    f"the file is corrupt or a different version. Replace it.\n{self.how_to_get}"
                )

    def load(self, data_dir: Path, features: str | None = None, backbone: str | None = None,
             **params: Any) -> MultiTaskDataset:
        if not self.is_native(features):
            from .features import load_cached_features

            if params:
                raise ValueError(f"{self.name} {features} features take no dataset parameters, got {sorted(params)}")
            return load_cached_features(self, Path(data_dir), *_feature_key(self, features, backbone))
        self.verify(data_dir)
        return self.read(self.root(data_dir), **params)

    def images_present(self, data_dir: Path) -> bool:
        """Whether the images extracted features are made from are in place (image datasets only)."""
        return False

    def download_hint(self) -> str:
        """Where the suite can fetch the dataset itself: how to ask it (empty where it cannot)."""
        return f" (`.venv/bin/mtlbench data {self.name}` downloads it where the network allows.)" if self.downloads else ""

    def features_label(self, dataset_params: Mapping[str, Any]) -> str:
        """The input that ``dataset_params`` select, as records and tables name it (``surf``, ``fc7``,
        ``resnet50_pool5``)."""
        return features_label(self.name, dataset_params, self.default_features, DEFAULT_BACKBONE)

    def read(self, root: Path, **params: Any) -> MultiTaskDataset:
        raise NotImplementedError(f"{self.name} has no native input; name extracted features (fc7, pool5)")


def _feature_key(source: DatasetSource, features: str | None, backbone: str | None) -> tuple[str, str]:
    return backbone or DEFAULT_BACKBONE, features or source.default_features


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SOURCES: dict[str, DatasetSource] = {}


def register_source(cls: type[DatasetSource]) -> type[DatasetSource]:
    if cls.name in _SOURCES:
        raise ValueError(f"dataset {cls.name!r} is registered twice")
    _SOURCES[cls.name] = cls()
    return cls


def dataset_names() -> list[str]:
    return sorted(_SOURCES)


_FOLDERS: dict[Path, DatasetSource] = {}


def dataset_source(name: str) -> DatasetSource:
    """A registered dataset by name, or a folder of per-task arrays by its path
    (:mod:`benchmark.data.folder`)."""
    if name in _SOURCES:
        return _SOURCES[name]
    from .folder import FolderSource, looks_like_folder

    if not looks_like_folder(name):
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(dataset_names())}, or the path of a "
                         "folder holding one <task>.npz/.mat/.csv per task") from None
    folder = Path(name)
    if not folder.is_dir():
        raise DataUnavailableError(f"dataset folder {folder} not found; give a folder holding one "
                                   "<task>.npz/.mat/.csv per task (README, 'Your own data')")
    if folder.resolve().name in _SOURCES:
        raise ValueError(f"dataset folder {folder} is named like the registered dataset {folder.resolve().name!r}, "
                         "and records are filed by name; rename the folder")
    if folder.resolve() not in _FOLDERS:  # one source per folder: it keeps the validated contents
        _FOLDERS[folder.resolve()] = FolderSource(folder)
    return _FOLDERS[folder.resolve()]


def dataset_name(reference: str) -> str:
    """The name records, studies and tables file a dataset under: a registered dataset's own name,
    a folder dataset's folder name (wherever the folder lies)."""
    return dataset_source(reference).name

