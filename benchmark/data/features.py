"""Backbone features of an image dataset: extracted once, cached with a manifest, verified on read.

A cache is a folder ``<dataset folder>/features/<backbone>_<layer>/`` holding one ``<task>.pt``
per task (``features`` float16 of shape (n, *layer shape), ``labels`` int64) and
``manifest.json``: the dataset, backbone, layer, weights, preprocessing, the image list (and its
SHA-256) and the SHA-256 of every file. Extraction writes chunks into ``<cache>.partial/`` as it
goes, so a run that dies continues where it stopped; the folder takes its final name only when
every file and the manifest are written. A file that fails its checksum is never read: training
reports it, ``mtlbench features`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .images import ImageDatasetSource
from .source import (
    DEFAULT_BACKBONE,
    DatasetSource,
    DataUnavailableError,
    MultiTaskDataset,
    TaskData,
    sha256_of,
)

MANIFEST = "manifest.json"
STORED_DTYPE = torch.float16  # halves DomainNet's pool5 cache; 3 significant digits suffice after standardising
PROVENANCE_KEYS = ("backbone", "backbone_note", "layer", "weights", "preprocessing", "image_list_sha256", "files")  # into run records
CHUNK_IMAGES = 512  # images per partial file: what a run that dies can lose at most, per task

ImageList = dict[str, list[tuple[str, int]]]  # task -> (path relative to the dataset folder, label)


def cache_dir(source: DatasetSource, data_dir: Path, backbone: str, layer: str) -> Path:
    return source.root(data_dir) / "features" / f"{backbone}_{layer}"


def features_command(dataset: str, backbone: str, layer: str) -> str:
    """The command that extracts these features, as the README runs it (from the checkout, after ``make install``)."""
    return f".venv/bin/mtlbench features {dataset} --backbone {backbone} --layer {layer}"


def image_list_sha256(images: ImageList) -> str:
    return hashlib.sha256(json.dumps(images, sort_keys=True).encode()).hexdigest()


def cache_problems(directory: Path) -> list[str]:
    """What is wrong with a cache folder: a missing manifest or file, or a failed checksum."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} not found"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as error:
        return [f"{manifest_path} is unreadable ({error})"]
    problems = []
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} not found")
        elif (actual := sha256_of(path)) != expected:
            problems.append(f"{path} failed its SHA-256 check (expected {expected}, got {actual})")
    return problems


def read_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / MANIFEST).read_text())


def load_cached_features(source: DatasetSource, data_dir: Path, backbone: str, layer: str) -> MultiTaskDataset:
    """The cached features as a feature dataset; a missing or corrupt cache raises, naming the fix."""
    source.verify(data_dir, features=layer, backbone=backbone)
    directory = cache_dir(source, data_dir, backbone, layer)
    rebuild = f"`{features_command(source.name, backbone, layer)}`"
    manifest = read_manifest(directory)
    if manifest["tasks"] != source.task_names:
        raise DataUnavailableError(f"{directory}: tasks {manifest['tasks']} are not {source.name}'s "
                                   f"{source.task_names}; run {rebuild}")
    tasks = []
    for name in manifest["tasks"]:
        stored = torch.load(directory / f"{name}.pt", weights_only=True)
        tasks.append(TaskData(name, stored["features"], stored["labels"], len(source.classes)))
    provenance = {key: manifest.get(key) for key in PROVENANCE_KEYS}
    return MultiTaskDataset(source.name, tuple(tasks), kind="features", network="features", provenance=provenance)


def write_cache(directory: Path, manifest: dict[str, Any], tasks: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write a complete cache under a temporary name, then give it ``directory``'s name."""
    staging = directory.with_name(directory.name + ".writing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = {}
    for name, (features, labels) in tasks.items():
        path = staging / f"{name}.pt"
        torch.save({"features": features.to(STORED_DTYPE).contiguous(), "labels": labels.to(torch.int64)}, path)
        files[path.name] = sha256_of(path)
    shapes = {name: list(features.shape) for name, (features, _) in tasks.items()}
    manifest = {**manifest, "tasks": list(tasks), "shapes": shapes, "dtype": str(STORED_DTYPE).removeprefix("torch."),
                "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


# ---- extraction ----------------------------------------------------------------------------------


class _Images(Dataset):
    def __init__(self, root: Path, paths: list[str], image_size: int) -> None:
        from torchvision import transforms

        self.root, self.paths = root, paths
        # torchvision's ImageNet evaluation preprocessing, scaled to the crop (256 -> 224 by default).
        self.transform = transforms.Compose([
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except OSError as error:
            raise DataUnavailableError(f"cannot read image {path} ({error}); replace or remove it") from error


@dataclass(frozen=True)
class Extraction:
    """One feature extraction: what it reads, with what, and how."""

    source: ImageDatasetSource
    data_dir: Path
    backbone: str = DEFAULT_BACKBONE
    layer: str = "fc7"
    weights: str = "imagenet"
    image_size: int = 224
    batch_size: int = 32
    workers: int = min(4, os.cpu_count() or 1)
    device: str = "cpu"

    @property
    def directory(self) -> Path:
        return cache_dir(self.source, self.data_dir, self.backbone, self.layer)

    def identity(self, weights: str, images: ImageList) -> dict[str, Any]:
        """Everything the features depend on (``weights`` described): another identity is not reused."""
        return {
            "dataset": self.source.name, "backbone": self.backbone, "layer": self.layer, "weights": weights,
            "preprocessing": f"resize {round(self.image_size * 256 / 224)}, center crop {self.image_size}, ImageNet mean/std",
            "image_list_sha256": image_list_sha256(images),
        }

    def run(self, progress: bool = True, log: Callable[[str], None] = print) -> Path:
        """Reuse a valid cache of the same identity; otherwise extract (continuing a partial run)."""
        from .backbones import backbone

        spec = backbone(self.backbone).layer(self.layer)  # wrong arguments fail before any work
        weights = backbone(self.backbone).describe(self.weights)
        images = self.source.image_list(self.data_dir)
        identity = self.identity(weights, images)
        if (self.directory / MANIFEST).is_file():
            problems = cache_problems(self.directory)
            cached = {k: read_manifest(self.directory).get(k) for k in identity} if not problems else None
            if not problems and cached == identity:
                log(f"{self.directory}: cache is complete and verified; reused")
                return self.directory
            reason = "; ".join(problems) if problems else "it was made from other images, weights or settings"
            log(f"{self.directory}: rebuilding, because {reason}")
        partial = self.directory.with_name(self.directory.name + ".partial")
        if partial.is_dir() and _read_json(partial / "identity.json") != identity:
            shutil.rmtree(partial)  # chunks of another extraction are of no use
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "identity.json").write_text(json.dumps(identity, indent=1) + "\n")
        model = backbone(self.backbone).load(self.weights).to(self.device)
        total = sum(len(v) for v in images.values())
        with tqdm(total=total, unit="img", desc=f"{self.source.name} {self.backbone} {self.layer}",
                  disable=not progress, dynamic_ncols=True) as bar:
            for task, entries in images.items():
                for k in range(math.ceil(len(entries) / CHUNK_IMAGES)):
                    chunk_path = partial / f"{task}-{k:05d}.pt"
                    chunk = entries[k * CHUNK_IMAGES : (k + 1) * CHUNK_IMAGES]
                    if chunk_path.is_file():  # extracted by an earlier run that stopped
                        bar.update(len(chunk))
                    else:
                        _save_atomic(self._extract(model, spec.forward, [p for p, _ in chunk], bar), chunk_path)
        tasks = {}
        for task, entries in images.items():
            features = torch.cat([torch.load(c, weights_only=True) for c in sorted(partial.glob(f"{task}-*.pt"))])
            tasks[task] = (features, torch.tensor([label for _, label in entries], dtype=torch.int64))
        manifest = {**identity, "backbone_note": backbone(self.backbone).note, "images": images,
                    "classes": list(self.source.classes),
                    "torch": torch.__version__, "layer_shape": list(spec.shape)}
        write_cache(self.directory, manifest, tasks)
        shutil.rmtree(partial)
        return self.directory

    @torch.no_grad()
    def _extract(self, model: torch.nn.Module, forward: Any, paths: list[str], bar: tqdm) -> torch.Tensor:
        loader = DataLoader(_Images(self.source.root(self.data_dir), paths, self.image_size),
                            batch_size=self.batch_size, num_workers=self.workers)
        outputs = []
        for batch in loader:
            outputs.append(forward(model, batch.to(self.device)).to("cpu", STORED_DTYPE))
            bar.update(len(batch))
        return torch.cat(outputs)


def _save_atomic(tensor: torch.Tensor, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(tensor, temporary)
    temporary.rename(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
