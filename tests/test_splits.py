"""Given splits: a published split (or one a run saved) read from JSON, checked, recorded, reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.data import SplitFileError, read_split_file
from benchmark.records import read_record, read_records

TINY = ["--dataset", "synthetic", "--method", "tucker", "--hidden", "6", "--max-epochs", "3", "--no-progress",
        "--data-param", "n_tasks=3", "--data-param", "samples_per_task=40"]


def test_a_split_exported_from_a_run_trains_to_the_same_record(tmp_path: Path, capsys) -> None:
    assert main(["train", *TINY, "--out", str(tmp_path / "runs")]) == 0
    (first_path,) = (tmp_path / "runs").rglob("*.json")
    assert main(["split-export", str(first_path), "--out", str(tmp_path / "split.json")]) == 0
    split = json.loads((tmp_path / "split.json").read_text())
    assert sorted(split) == ["task0", "task1", "task2"] and set(split["task0"]) == {"train", "val", "test"}
    assert main(["train", *TINY, "--split", str(tmp_path / "split.json"), "--out", str(tmp_path / "again")]) == 0
    first = read_record(first_path)
    (again,) = read_records(tmp_path / "again", jobs=("train",)).runs
    assert again.split_sha256 is not None and first.split_sha256 is None
    assert again.config["split_file"] == str(tmp_path / "split.json")
    # The same split, seed and initialisation: the same run, epoch by epoch.
    assert again.val_acc_history == first.val_acc_history and again.tasks == first.tasks


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not JSON"),
    ({"task0": {"train": [0], "test": [1]}}, r"tasks missing \['task1'\], unknown \[\]"),
    ({"task0": {"train": [0], "test": [40]}, "task1": {"train": [0], "test": [1]}}, "task0: test index out of range 0..39"),
    ({"task0": {"train": [0, 1], "test": [1]}, "task1": {"train": [0], "test": [1]}}, "task0: an index appears twice"),
    ({"task0": {"train": [0.5], "test": [1]}, "task1": {"train": [0], "test": [1]}}, "task0: train holds a non-integer"),
    ({"task0": {"train": [], "test": [1]}, "task1": {"train": [0], "test": [1]}}, "task0: train and test must not be empty"),
    ({"task0": {"train": [0], "tst": [1]}, "task1": {"train": [0], "test": [1]}}, "task0: give train and test"),
])
def test_a_split_that_does_not_fit_names_the_file_task_and_problem(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SplitFileError, match=f"split {path}.*{message}"):
        read_split_file(path, {"task0": 40, "task1": 40})


def test_a_bad_split_fails_train_and_sweep_before_any_trial(tmp_path: Path, capsys) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"task0": {"train": [0], "test": [1]}}))
    assert main(["train", *TINY, "--split", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert "tasks missing" in capsys.readouterr().err
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "default.yaml").write_text("methods: stl\ntrials: 1\nfinal_seeds: [1]\nsearch: {lam: {low: 0.01, high: 1.0, log: true}}\n"
                                        "protocol: {max_epochs: 1, dataset_params: {n_tasks: 3, samples_per_task: 40}}\n")
    args = ["sweep", "--sweeps-dir", str(plans), "--storage", f"sqlite:///{tmp_path}/o.db", "--out", str(tmp_path / "s"),
            "--split", str(path)]
    assert main(args) == 2
    assert "tasks missing" in capsys.readouterr().err and not (tmp_path / "s" / "synthetic").exists()
    assert main(["split-export", str(tmp_path / "nothing.json")]) == 2
