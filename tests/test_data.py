"""Splits, batches, standardisation, dataset errors, and the real data where it is present."""

from __future__ import annotations

import math

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DataUnavailableError, MultiTaskDataModule, dataset_source, stratified_split
from benchmark.data.module import EVAL_BATCH_VALUES
from benchmark.data.source import MultiTaskDataset, TaskData


def test_stratified_split_keeps_each_class_ratio_and_is_disjoint() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 40])
    split = stratified_split(labels, 0.5, 0.2, np.random.default_rng(0))
    parts = [split["train"], split["val"], split["test"]]
    assert sorted(np.concatenate(parts).tolist()) == list(range(70))
    for label, n in zip(range(3), (10, 20, 40)):
        counts = [int((labels[p] == label).sum()) for p in parts]
        assert counts[0] + counts[1] == n // 2
        assert counts[1] == round(0.2 * n // 2)
    again = stratified_split(labels, 0.5, 0.2, np.random.default_rng(0))
    assert all(np.array_equal(split[k], again[k]) for k in split)


def test_two_drawings_per_class_leave_no_validation_part() -> None:
    labels = np.repeat(np.arange(5), 20)  # Omniglot at 10%: 2 drawings per character to train on
    split = stratified_split(labels, 0.1, 0.2, np.random.default_rng(0))
    assert len(split["val"]) == 0 and len(split["train"]) == 10


def test_batches_are_one_equal_block_per_task_and_standardised_on_train() -> None:
    data = MultiTaskDataModule(dataset_source("synthetic").load(Path(".")), seed=3)
    batch = next(iter(data.train_dataloader()))
    assert batch["x"].shape == (10, data.batch_size, 20) and batch["y"].shape == (10, data.batch_size)
    # Standardised with train statistics only: the pooled training part has mean 0 and std 1.
    width = max(len(s["train"]) for s in data.splits)
    padded = [np.resize(s["train"], width) for s in data.splits]  # repeats keep each task's mean
    standardised = data.gather(padded)["x"]
    pooled = np.concatenate([standardised[t, : len(s["train"])].numpy() for t, s in enumerate(data.splits)])
    np.testing.assert_allclose(pooled.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(pooled.std(0, ddof=1), 1, atol=1e-4)
    first_task_test = ((data.dataset.tasks[0].inputs[data.splits[0]["test"]] - data._mean) / data._std).numpy()
    assert np.abs(first_task_test.mean(0)).max() > 1e-3  # test data was not used for the statistics


def test_an_epoch_is_the_largest_task_once_or_the_gttn_codes_share_of_all_samples() -> None:
    """The GTTN code's epoch is all training samples / (batch per task x tasks): 16 steps on SURF
    where this suite's is 29, so "100 epochs" meant a different amount of training in each."""
    dataset = dataset_source("synthetic").load(Path("."), n_tasks=3, samples_per_task=90, n_classes=3)
    largest = MultiTaskDataModule(dataset, train_ratio=0.5, val_ratio=0.2, samples_per_class=2)
    sizes = [len(s["train"]) for s in largest.splits]
    assert largest.steps_per_epoch == math.ceil(max(sizes) / 6) == len(list(largest.train_dataloader()))
    gttn = MultiTaskDataModule(dataset, train_ratio=0.5, val_ratio=0.2, samples_per_class=2, epoch="all_samples")
    assert gttn.steps_per_epoch == sum(sizes) // (6 * 3) == len(list(gttn.train_dataloader()))


def test_a_budget_in_steps_runs_whole_epochs_and_is_recorded(tmp_path: Path) -> None:
    from benchmark.config import TrainConfig
    from benchmark.train import train

    config = TrainConfig(method="stl", hidden=4, max_steps=10, dataset_params={"n_tasks": 2, "samples_per_task": 40})
    record = train(config, Path("."), None, progress=False).record
    epochs = math.ceil(10 / record.steps_per_epoch)
    assert record.steps == epochs * record.steps_per_epoch >= 10 and len(record.val_acc_history) == epochs
    with pytest.raises(ValueError, match="epoch must be one of largest_task, all_samples"):
        TrainConfig(epoch="pass")


def test_a_std_floor_keeps_test_inputs_of_sparse_features_bounded() -> None:
    """DeCAF6-like features: one almost always zero on train. Divided by its tiny std, a test input
    reached |z| = 76,840; with the floor it stays bounded, and a constant feature is only centred."""
    import torch

    from benchmark.data.source import MultiTaskDataset, TaskData

    generator = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(2):
        inputs = torch.rand(40, 3, generator=generator)
        inputs[:, 1] = 0.0
        inputs[0, 1] = 1e-4  # all but one training sample zero ...
        inputs[-1, 1] = 5.0  # ... and a test sample far out
        inputs[:, 2] = 7.0  # constant everywhere
        tasks.append(TaskData(f"task{t}", inputs, torch.arange(40) % 2, 2))
    dataset = MultiTaskDataset("sparse", tuple(tasks), kind="features", network="features")
    given = [{"train": np.arange(0, 30), "val": np.arange(30, 30), "test": np.arange(30, 40)}] * 2

    def largest_test_z(floor: float) -> float:
        data = MultiTaskDataModule(dataset, given_split=given, std_floor=floor)
        return float(data.gather([s["test"] for s in data.splits])["x"].abs().max())

    assert largest_test_z(0.0) > 1e4
    assert largest_test_z(0.1) < 60
    data = MultiTaskDataModule(dataset, given_split=given, std_floor=0.1)
    assert float(data._std[2]) == 1.0 and float(data.gather([s["test"] for s in data.splits])["x"][..., 2].abs().max()) == 0


def test_class_balanced_batches_draw_every_class_equally() -> None:
    data = MultiTaskDataModule(dataset_source("synthetic").load(Path("."), n_classes=4), samples_per_class=3)
    batch = next(iter(data.train_dataloader()))
    for labels in batch["y"]:
        assert np.bincount(labels.numpy(), minlength=4).tolist() == [3, 3, 3, 3]


def test_evaluation_covers_every_sample_once_with_padding_marked() -> None:
    data = MultiTaskDataModule(dataset_source("synthetic").load(Path(".")), seed=0, eval_chunk=7)
    seen = np.zeros(10, dtype=int)
    for batch in data.test_dataloader():
        seen += (batch["y"] >= 0).sum(1).numpy()
    assert seen.tolist() == [len(s["test"]) for s in data.splits]


def test_evaluation_batches_of_large_images_stay_within_the_memory_budget() -> None:
    images = [TaskData(f"t{t}", torch.zeros(60, 1, 105, 105, dtype=torch.uint8), torch.arange(60) % 3, 3)
              for t in range(50)]  # Omniglot-sized: 50 tasks of 105 x 105 images
    data = MultiTaskDataModule(MultiTaskDataset("images", tuple(images), "images", "omniglot_cnn"), 0.1, 0.0)
    batches = list(data.test_dataloader())
    assert max(b["x"].numel() for b in batches) <= EVAL_BATCH_VALUES
    assert sum(int((b["y"] >= 0).sum()) for b in batches) == sum(len(s["test"]) for s in data.splits)


def test_outer_batches_come_from_the_validation_part_and_train_keeps_all_its_data() -> None:
    """GTTN meta's outer loss reads D_val: no carve-out of train (it starved the method at ratio 0.1)."""
    # Like dslr at ratio 0.1: the small task's 2 training samples per class leave it no validation part.
    sizes = {"large": 30, "small": 6}
    dataset = MultiTaskDataset("two", tuple(
        TaskData(name, torch.randn(3 * n, 4), torch.arange(3 * n) % 3, 3) for name, n in sizes.items()
    ), "features", "features")
    plain = MultiTaskDataModule(dataset, seed=1, train_ratio=0.3)
    meta = MultiTaskDataModule(dataset, seed=1, train_ratio=0.3, outer_batches=True, holdout_ratio=0.3)
    assert meta.outer_part == "val" and [len(s["val"]) > 0 for s in meta.splits] == [True, False]
    for p, m in zip(plain.splits, meta.splits):
        assert "holdout" not in m
        assert all(np.array_equal(m[part], p[part]) for part in ("train", "val", "test"))
    batch = next(iter(meta.train_dataloader()))
    assert batch["outer_x"].shape == batch["x"].shape
    for task, split in enumerate(meta.splits):
        labels = meta.labels_np[task]
        drawn = batch["outer_y"][task].numpy()
        if len(split["val"]):
            assert set(drawn) <= set(labels[split["val"]])
        else:  # a task without validation samples is padding in the outer batch, which losses skip
            assert (drawn == -1).all()


def test_without_a_validation_part_the_outer_batches_come_from_a_carve_out_of_train() -> None:
    dataset = dataset_source("synthetic").load(Path("."))
    plain = MultiTaskDataModule(dataset, seed=1, val_ratio=0.0)
    meta = MultiTaskDataModule(dataset, seed=1, val_ratio=0.0, outer_batches=True, holdout_ratio=0.3)
    assert meta.outer_part == "holdout"
    for p, m in zip(plain.splits, meta.splits):
        assert set(m["holdout"]) | set(m["train"]) == set(p["train"])
        assert not set(m["holdout"]) & set(m["train"])
        assert np.array_equal(m["test"], p["test"])
    batch = next(iter(meta.train_dataloader()))
    assert batch["outer_x"].shape == batch["x"].shape
    with pytest.raises(ValueError, match="split has none"):
        MultiTaskDataModule(dataset, seed=1, val_ratio=0.0, outer_batches=True, holdout_ratio=0.0)


def test_unknown_dataset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'office'.*office_caltech.*omniglot.*synthetic"):
        dataset_source("office")


def test_missing_file_says_where_it_was_looked_for_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"(?s)office_caltech10/surf/amazon_SURF_L10.mat not found.*jindongwang"):
        dataset_source("office_caltech").load(tmp_path)


def test_corrupt_file_names_the_failed_checksum(tmp_path: Path, shared_data_dir: Path) -> None:
    shutil.copytree(shared_data_dir / "office_caltech10" / "surf", tmp_path / "office_caltech10" / "surf")
    target = tmp_path / "office_caltech10" / "surf" / "dslr_SURF_L10.mat"
    target.chmod(0o644)
    blob = bytearray(target.read_bytes())
    blob[-1] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(DataUnavailableError, match=r"dslr_SURF_L10.mat failed its SHA-256 check \(expected 44d673c6"):
        dataset_source("office_caltech").load(tmp_path)


def test_office_caltech_surf_has_four_domains_of_ten_classes(shared_data_dir: Path) -> None:
    dataset = dataset_source("office_caltech").load(shared_data_dir)
    assert dataset.task_names == ["amazon", "caltech10", "dslr", "webcam"]
    assert [len(t.labels) for t in dataset.tasks] == [958, 1123, 157, 295]
    assert all(sorted(set(t.labels.tolist())) == list(range(10)) for t in dataset.tasks)
    assert dataset.input_shape == (800,)


def test_omniglot_alphabets_are_tasks_of_their_characters(shared_data_dir: Path) -> None:
    dataset = dataset_source("omniglot").load(shared_data_dir)
    assert len(dataset.tasks) == 50
    assert sum(t.n_classes for t in dataset.tasks) == 1623
    arcadian = dataset.tasks[0]
    assert arcadian.name == "Arcadian" and arcadian.n_classes == 26
    assert arcadian.inputs.shape == (26 * 20, 1, 105, 105)
    ink = arcadian.inputs.float().mean()
    assert 0.01 < ink < 0.3  # ink is the minority of pixels: the background was inverted
