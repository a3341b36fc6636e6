"""``MultiTaskDataModule``: splits, standardisation and one batch per task per step."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import lightning as L
import numpy as np
import torch

from ..nets import NetworkSpec
from .source import MultiTaskDataset
from .splits import stratified_split

Batch = dict[str, torch.Tensor]


class _TaskSampler:
    """Draws a fixed-size batch of training indices from one task, optionally class-balanced."""

    def __init__(self, indices: np.ndarray, labels: np.ndarray, class_balanced: bool) -> None:
        order = np.argsort(labels[indices], kind="stable")
        self.indices = indices[order]
        classes, self.class_start, self.class_count = np.unique(
            labels[self.indices], return_index=True, return_counts=True
        )
        self.n_classes = len(classes)
        self.class_balanced = class_balanced

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        if not self.class_balanced:
            return rng.choice(self.indices, size, replace=size > len(self.indices))
        # Classes in a shuffled round robin, then one random sample of each chosen class.
        chosen = np.resize(rng.permutation(self.n_classes), size)
        offsets = (rng.random(size) * self.class_count[chosen]).astype(np.int64)
        return self.indices[self.class_start[chosen] + offsets]


class _TrainStream:
    """One epoch = enough steps for the largest task to be seen once; each step one batch per task.

    With an ``outer_part`` each batch also carries ``outer_x`` / ``outer_y``, a batch of the same
    size per task from that part (GTTN meta's outer objective); a task with no sample in it has
    label -1 there (padding, which the losses skip).
    """

    def __init__(self, module: MultiTaskDataModule, part: str, outer_part: str | None) -> None:
        self.module = module
        labels = module.labels_np
        balanced = module.class_balanced
        self.samplers = [_TaskSampler(s[part], labels[t], balanced) for t, s in enumerate(module.splits)]
        self.outer = (
            [_TaskSampler(s[outer_part], labels[t], balanced) if len(s[outer_part]) else None
             for t, s in enumerate(module.splits)]
            if outer_part
            else None
        )
        self.steps = module.steps_per_epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        module, rng = self.module, self.module.rng
        size = module.batch_size
        for _ in range(self.steps):
            batch = module.gather([s.draw(size, rng) for s in self.samplers])
            if self.outer is not None:
                drawn = [np.zeros(size, np.int64) if s is None else s.draw(size, rng) for s in self.outer]
                outer = module.gather(drawn)
                for t, sampler in enumerate(self.outer):
                    if sampler is None:
                        outer["y"][t] = -1
                batch.update({"outer_x": outer["x"], "outer_y": outer["y"]})
            yield batch


EVAL_BATCH_VALUES = 2**24  # input values in one evaluation batch (64 MB of float32)


class _EvalChunks:
    """Every sample of a split once, in chunks of (T, chunk); padding has label -1."""

    def __init__(self, module: MultiTaskDataModule, part: str, chunk: int) -> None:
        self.module, self.part, self.chunk = module, part, chunk
        self.n_chunks = math.ceil(max(len(s[part]) for s in module.splits) / chunk)

    def __len__(self) -> int:
        return self.n_chunks

    def __iter__(self) -> Iterator[Batch]:
        for k in range(self.n_chunks):
            pieces = [s[self.part][k * self.chunk : (k + 1) * self.chunk] for s in self.module.splits]
            width = max(len(p) for p in pieces)
            padded = [np.concatenate([p, np.zeros(width - len(p), np.int64)]) for p in pieces]
            batch = self.module.gather(padded)
            for t, piece in enumerate(pieces):
                batch["y"][t, len(piece) :] = -1
            yield batch


class MultiTaskDataModule(L.LightningDataModule):
    """Stratified per-task splits from a seed; train batches of equal size per task.

    ``outer_batches`` adds a batch of a further part to each training batch, as ``outer_x`` /
    ``outer_y`` (GTTN meta's outer objective): the validation part where the split has one (the
    GTTN paper's D_val), else a stratified ``holdout_ratio`` of train carved out for it, which the
    weights then never train on (``outer_part`` says which). Features are standardised with the
    mean and std of the training part alone. ``given_split`` (from :func:`read_split_file`)
    replaces the split the ratios and the seed would draw.
    """

    def __init__(
        self,
        dataset: MultiTaskDataset,
        train_ratio: float = 0.5,
        val_ratio: float = 0.2,
        seed: int = 0,
        samples_per_class: int = 2,
        class_balanced: bool = True,
        outer_batches: bool = False,
        holdout_ratio: float = 0.0,
        eval_chunk: int | None = None,
        epoch: str = "largest_task",
        given_split: list[dict[str, np.ndarray]] | None = None,
        std_floor: float = 0.0,
        given_split_sha256: str | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.epoch = epoch
        self.std_floor = std_floor
        self.given_split_sha256 = given_split_sha256  # of the file the given split was read from
        self.class_balanced = class_balanced
        # Samples per task in one evaluation batch: by default as many as keep the batch's inputs
        # under EVAL_BATCH_VALUES values. A fixed 512 made Omniglot's test batch 25,600 images, whose
        # first convolution alone needs 8 GB; the result does not depend on the chunking.
        per_sample = math.prod(dataset.input_shape) * len(dataset.tasks)
        self.eval_chunk = eval_chunk or max(1, EVAL_BATCH_VALUES // per_sample)
        self.rng = np.random.default_rng([seed, 1])
        split_rng = np.random.default_rng([seed, 0])
        # Its own stream, so a method's held-out part leaves every method the same val and test split.
        holdout_rng = np.random.default_rng([seed, 2])
        self.labels_np = [t.labels.numpy() for t in dataset.tasks]
        self.splits = []
        for task, labels in enumerate(self.labels_np):
            # A given split (a published one, or one a run saved) replaces the ratios' draw.
            split = given_split[task] if given_split else stratified_split(labels, train_ratio, val_ratio, split_rng)
            if len(split["test"]) == 0:
                name = dataset.task_names[task]
                where = f" ({dataset.provenance['folder']}/{name}.*)" if "folder" in dataset.provenance else ""
                raise ValueError(f"task {name}{where} has no test sample at train_ratio={train_ratio} "
                                 f"({len(labels)} samples); lower the train ratio")
            self.splits.append(split)
        self.outer_part: str | None = None
        if outer_batches:
            self.outer_part = "val" if self.has_validation else "holdout"
        if self.outer_part == "holdout":
            if holdout_ratio <= 0:
                raise ValueError("this method trains on batches of a validation part, and the split has none: "
                                 "raise val_ratio, or give the method a holdout ratio of train")
            self._carve_holdout(holdout_ratio, holdout_rng)
        self.batch_size = samples_per_class * max(t.n_classes for t in dataset.tasks)
        self._mean, self._std = self._train_statistics() if dataset.kind == "features" else (None, None)

    def _carve_holdout(self, holdout_ratio: float, rng: np.random.Generator) -> None:
        """Move a stratified ``holdout_ratio`` of each task's training part into ``holdout``."""
        for name, labels, split in zip(self.dataset.task_names, self.labels_np, self.splits):
            inner = stratified_split(labels[split["train"]], 1 - holdout_ratio, 0.0, rng)
            split["holdout"] = split["train"][inner["test"]]
            split["train"] = split["train"][inner["train"]]
            if len(split["holdout"]) == 0:
                raise ValueError(
                    f"a held-out part of {holdout_ratio} of the training split leaves no sample of task "
                    f"{name} held out; raise the holdout ratio or the train ratio"
                )

    def _train_statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        train = torch.cat([t.inputs[s["train"]].float() for t, s in zip(self.dataset.tasks, self.splits)])
        std = train.std(0)
        std[std == 0] = 1.0  # a feature constant on train (an unused SURF word) is only centred
        return train.mean(0), std.clamp_min(self.std_floor)

    @property
    def steps_per_epoch(self) -> int:
        """Training steps (one batch per task each) in one epoch, as ``epoch`` defines it
        (:data:`benchmark.config.EPOCHS`)."""
        sizes = [len(s["train"]) for s in self.splits]
        if self.epoch == "all_samples":  # the GTTN code: all samples / (batch x tasks), integer division
            return max(1, sum(sizes) // (self.batch_size * len(sizes)))
        if self.epoch == "largest_task":
            return math.ceil(max(sizes) / self.batch_size)
        raise ValueError(f"unknown epoch definition {self.epoch!r}")

    @property
    def has_validation(self) -> bool:
        """True when some task has a validation part; selection then averages over those tasks."""
        return bool(self.validation_tasks)

    @property
    def validation_tasks(self) -> list[str]:
        return [name for name, s in zip(self.dataset.task_names, self.splits) if len(s["val"]) > 0]

    @property
    def network_spec(self) -> NetworkSpec:
        return self.dataset.network_spec

    def gather(self, indices: list[np.ndarray]) -> Batch:
        """Stack one index array per task (all the same length) into a (T, B, ...) batch."""
        x = torch.stack([t.inputs[torch.from_numpy(i)] for t, i in zip(self.dataset.tasks, indices)]).float()
        if self._mean is not None:
            x = (x - self._mean) / self._std
        y = torch.stack([t.labels[torch.from_numpy(i)] for t, i in zip(self.dataset.tasks, indices)])
        return {"x": x, "y": y}

    def split_indices(self) -> dict[str, dict[str, list[int]]]:
        """The split as plain lists per task, to be written beside the run's result."""
        names = self.dataset.task_names
        return {name: {part: idx.tolist() for part, idx in s.items()} for name, s in zip(names, self.splits)}

    # Plain iterables, not DataLoaders (Lightning takes any iterable): the batches are assembled
    # by indexing tensors already in memory, so a DataLoader's fetcher and collation add only cost.
    def train_dataloader(self) -> Iterable[Batch]:
        return _TrainStream(self, "train", self.outer_part)

    def val_dataloader(self) -> Iterable[Batch]:
        return _EvalChunks(self, "val", self.eval_chunk)

    def test_dataloader(self) -> Iterable[Batch]:
        return _EvalChunks(self, "test", self.eval_chunk)
