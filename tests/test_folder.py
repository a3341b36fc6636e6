"""Folder datasets: the user's own per-task arrays (.npz, .mat, .csv), validated on load, trained
and swept like a registered dataset, and the GTTN text import that writes one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import yaml

from benchmark.cli import main
from benchmark.config import TrainConfig
from benchmark.data import DataUnavailableError, dataset_name, dataset_source
from benchmark.data.folder import FolderDatasetError, read_folder, write_folder
from benchmark.data.gttn_text import gttn_text_to_folder, write_gttn_text
from benchmark.records import read_records
from benchmark.sweep.plan import SweepPlan
from benchmark.train import train

RNG = np.random.default_rng(0)


def task_arrays(n: int = 24, shape: tuple[int, ...] = (6,), n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % n_classes
    return RNG.normal(size=(n, *shape)).astype(np.float32) + labels.reshape(-1, *[1] * len(shape)), labels


def npz_folder(root: Path, name: str = "mine", tasks: tuple[str, ...] = ("a", "b", "c"), **kwargs) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for task in tasks:
        features, labels = task_arrays(**kwargs)
        np.savez(folder / f"{task}.npz", X=features, y=labels)
    return folder


def test_a_folder_of_npz_files_is_a_dataset_named_by_the_folder(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path)
    source = dataset_source(str(folder))
    assert source.name == dataset_name(str(folder)) == "mine"
    data = source.load(Path("unused"))
    assert data.task_names == ["a", "b", "c"] and data.input_shape == (6,)
    assert [t.n_classes for t in data.tasks] == [3, 3, 3]
    assert set(data.provenance["files"]) == {"a.npz", "b.npz", "c.npz"} and data.provenance["label_base"] == 0


def test_a_spatial_array_keeps_its_modes(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path, shape=(2, 2, 3))
    data = dataset_source(str(folder)).load(Path())
    assert data.input_shape == (2, 2, 3)


def test_mat_files_with_the_released_keys_and_matlab_labels_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "surf_like"
    folder.mkdir()
    for task in ("amazon", "dslr"):
        features, labels = task_arrays()
        # The released SURF files: fts n x d, labels n x 1 numbered from 1.
        scipy.io.savemat(folder / f"{task}.mat", {"fts": features.astype(np.float64), "labels": (labels + 1).reshape(-1, 1)})
    data = dataset_source(str(folder)).load(Path())
    assert data.task_names == ["amazon", "dslr"] and data.provenance["label_base"] == 1
    assert sorted(set(data.tasks[0].labels.tolist())) == [0, 1, 2]


def test_csv_files_with_a_label_column_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    for task in ("x", "y"):
        features, labels = task_arrays()
        table = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
        table.insert(2, "label", labels)  # anywhere among the columns
        table.to_csv(folder / f"{task}.csv", index=False)
    data = dataset_source(str(folder)).load(Path())
    np.testing.assert_allclose(data.tasks[1].inputs.numpy()[:, 2], pd.read_csv(folder / "y.csv")["f2"], rtol=1e-6)


def _write(folder: Path, task: str, features: np.ndarray, labels: np.ndarray) -> None:
    np.savez(folder / f"{task}.npz", X=features, y=labels)


def _nan(folder: Path) -> None:
    features, labels = task_arrays()
    features[5, 1] = np.nan
    _write(folder, "b", features, labels)


def _other_classes(folder: Path) -> None:
    features, labels = task_arrays()
    _write(folder, "b", features, np.where(labels == 2, 1, labels))


def _other_shape(folder: Path) -> None:
    _write(folder, "b", *task_arrays(shape=(7,)))


def _short_labels(folder: Path) -> None:
    features, labels = task_arrays()
    _write(folder, "b", features, labels[:-1])


def _fractional_labels(folder: Path) -> None:
    features, labels = task_arrays()
    _write(folder, "b", features, labels + 0.5)


def _negative_labels(folder: Path) -> None:
    features, labels = task_arrays()
    _write(folder, "b", features, labels - 1)


def _too_small(folder: Path) -> None:
    _write(folder, "b", *[a[:1] for a in task_arrays()])


def _wrong_keys(folder: Path) -> None:
    np.savez(folder / "b.npz", features=task_arrays()[0])


def _damaged(folder: Path) -> None:
    (folder / "b.npz").write_bytes(b"not a zip file")


def _csv_without_label(folder: Path) -> None:
    (folder / "b.npz").unlink()
    pd.DataFrame({"f0": [1.0, 2.0], "class": [0, 1]}).to_csv(folder / "b.csv", index=False)


def _classes_miscounted(folder: Path) -> None:
    (folder / "dataset.json").write_text(json.dumps({"classes": ["one", "two"]}))


@pytest.mark.parametrize(("spoil", "file", "message"), [
    (_nan, "b.npz", "1 row(s) hold NaN or inf (first: row 5); remove or impute them"),
    (_other_classes, "b.npz", "no sample of class(es) 2 of 0..2; every task needs the same classes"),
    (_other_shape, "b.npz", "features of shape (7,) per sample, but a.npz has (6,)"),
    (_short_labels, "b.npz", "24 feature rows but 23 labels; give one label per row"),
    (_fractional_labels, "b.npz", "labels must be whole numbers"),
    (_negative_labels, "b.npz", "label -1 is negative; give class indices 0..C-1"),
    (_too_small, "b.npz", "1 sample(s), too few to split into train and test"),
    (_wrong_keys, "b.npz", "holds features, not X/y or fts/labels; save the features as X and the labels as y"),
    (_damaged, "b.npz", "not a .npz (zip) file; replace it"),
    (_csv_without_label, "b.csv", "no 'label' column"),
    (_classes_miscounted, "dataset.json", "names 2 classes, the labels 3"),
])
def test_each_invalid_folder_is_one_line_naming_the_file_and_the_fix(tmp_path: Path, spoil, file: str, message: str) -> None:
    folder = npz_folder(tmp_path)
    spoil(folder)
    with pytest.raises(FolderDatasetError) as raised:
        read_folder(folder)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"{folder / file}: ") and message in text


def test_a_folder_named_like_a_registered_dataset_or_absent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="named like the registered dataset 'synthetic'.*rename the folder"):
        dataset_source(str(npz_folder(tmp_path, name="synthetic")))
    with pytest.raises(DataUnavailableError, match="dataset folder .*nowhere not found"):
        dataset_source(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'; valid: .*synthetic, or the path of a folder"):
        dataset_source("nosuch")


def test_list_checks_the_folders_it_is_given(tmp_path: Path, capsys) -> None:
    good = npz_folder(tmp_path, name="good")
    bad = npz_folder(tmp_path, name="bad")
    _nan(bad)
    assert main(["list", str(good)]) == 0
    assert f"{good}: valid folder dataset good: 3 tasks (a 24, b 24, c 24), 3 classes, inputs 6" in capsys.readouterr().out
    assert main(["list", str(good), str(bad)]) == 1
    assert f"{bad}: INVALID: {bad / 'b.npz'}: 1 row(s) hold NaN" in capsys.readouterr().out
    assert main(["data", str(good)]) == 0 and "valid folder dataset good" in capsys.readouterr().out
    assert main(["data", str(bad)]) == 1 and "INVALID" in capsys.readouterr().out


def test_training_on_a_folder_files_the_record_under_its_name_with_the_files_checksums(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path / "elsewhere")
    config = TrainConfig(dataset=str(folder), method="tucker", hidden=4, max_epochs=2)
    result = train(config, tmp_path / "unused", tmp_path / "runs")
    assert result.path.parent == tmp_path / "runs" / "mine" / "tucker"
    record = read_records(tmp_path / "runs", jobs=("train",)).runs[0]
    assert record.dataset == "mine" and record.config["dataset"] == str(folder)
    assert set(record.tasks) == {"a", "b", "c"} and record.features == ""
    assert record.inputs["files"] == read_folder(folder).files


def test_a_folder_sweeps_on_the_default_plan_under_study_names_that_do_not_depend_on_its_path(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "default.yaml").write_text(yaml.safe_dump({
        "methods": "stl", "trials": 1, "search_seeds": [0], "final_seeds": [1],
        "search": {"lam": {"low": 1e-3, "high": 1.0, "log": True}, "hidden": [4]},
        "protocol": {"max_epochs": 2}, "pruner": {"name": "none"}}))
    (plans / "synthetic.yaml").write_text(yaml.safe_dump({"trials": 5}))  # another dataset's plan: not read
    folder = npz_folder(tmp_path / "here")
    plan = SweepPlan.load(str(folder), plans)
    assert plan.trials == 1
    moved = tmp_path / "there" / "mine"
    shutil.copytree(folder, moved)
    assert plan.study_name("stl", 0.5) == SweepPlan.load(str(moved), plans).study_name("stl", 0.5)
    assert plan.study_name("stl", 0.5).startswith("mine/stl/r0.5/")

    args = ["sweep", "--dataset", str(folder), "--sweeps-dir", str(plans), "--storage",
            f"sqlite:///{tmp_path}/optuna.db", "--out", str(tmp_path / "runs")]
    assert main(args) == 0
    found = read_records(tmp_path / "runs" / "mine", jobs=("sweep", "final"))
    assert sorted(r.job for r in found.runs) == ["final", "sweep"] and not found.broken


def test_gttn_text_becomes_a_folder_under_the_users_feature_name(tmp_path: Path, capsys) -> None:
    tasks = [task_arrays(n, shape=(8,), n_classes=5) for n in (10, 15, 20)]
    text = tmp_path / "gnet.txt"
    write_gttn_text(text, [(f, y) for f, y in tasks], n_classes=5)
    folder = tmp_path / "office_gnet1024"
    assert main(["import", str(text), "--to", str(folder), "--tasks", "amazon,dslr,webcam", "--features", "gnet1024",
                 "--shape", "2,4"]) == 0
    assert "dataset office_gnet1024, 3 tasks (amazon 10, dslr 15, webcam 20) of 5 classes, inputs 2 x 4" in capsys.readouterr().out
    data = dataset_source(str(folder)).load(Path())
    np.testing.assert_allclose(data.tasks[2].inputs.numpy().reshape(20, 8), tasks[2][0], rtol=1e-6)
    assert dataset_source(str(folder)).features_label({}) == "gnet1024"
    assert "GTTN text file gnet.txt" in data.provenance["origin"]

    # Never into an existing folder; wrong counts say what was given.
    assert main(["import", str(text), "--to", str(folder)]) == 2
    assert "exists and is not empty; choose a new folder" in capsys.readouterr().err
    with pytest.raises(DataUnavailableError, match="3 tasks, but 2 names given"):
        gttn_text_to_folder(text, tmp_path / "other", ["a", "b"])
    with pytest.raises(DataUnavailableError, match="rows of 8 values do not reshape to 3 x 3"):
        gttn_text_to_folder(text, tmp_path / "other", shape=(3, 3))


def test_write_folder_refuses_a_folder_that_holds_files(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        write_folder(folder, {"a": task_arrays()}, {})


def test_a_published_split_of_a_folder_dataset_trains_on_exactly_those_rows(tmp_path: Path) -> None:
    folder = npz_folder(tmp_path)
    split = {task: {"train": list(range(0, 12)), "val": list(range(12, 15)), "test": list(range(15, 24))}
             for task in ("a", "b", "c")}
    path = tmp_path / "published.json"
    path.write_text(json.dumps(split))
    args = ["train", "--dataset", str(folder), "--method", "stl", "--hidden", "4", "--max-epochs", "2", "--split", str(path),
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "runs")]) == 0
    (record_path,) = (tmp_path / "runs" / "mine" / "stl").glob("*.json")
    assert main(["split-export", str(record_path), "--out", str(tmp_path / "exported.json")]) == 0
    assert json.loads((tmp_path / "exported.json").read_text()) == split
    assert main([*args[:-3], "--split", str(tmp_path / "exported.json"), "--no-progress", "--out", str(tmp_path / "again")]) == 0
    first, again = (read_records(tmp_path / d, jobs=("train",)).runs[0] for d in ("runs", "again"))
    assert again.tasks == first.tasks and again.val_acc_history == first.val_acc_history


def test_an_input_a_registered_dataset_cannot_make_points_to_folder_datasets(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "office_caltech", "--features", "gnet1024", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "office_caltech has no input 'gnet1024' (its own: surf;" in err and "efficientnet_lite0: pool, map" in err
    assert "folder dataset (`mtlbench import`" in err
    assert main(["train", "--dataset", "office31", "--features", "pool", "--data-dir", str(tmp_path)]) == 2
    assert "pool is a layer of efficientnet_lite0, not of vgg19: add --backbone efficientnet_lite0" in capsys.readouterr().err
