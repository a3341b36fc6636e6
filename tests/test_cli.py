"""The ``mtlbench`` commands as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main


def test_train_writes_a_record_and_prints_a_summary(tmp_path: Path, capsys) -> None:
    code = main([
        "train", "--dataset", "synthetic", "--method", "tr", "--param", "d=2", "--max-epochs", "2",
        "--hidden", "8", "--data-param", "n_tasks=3", "--out", str(tmp_path), "--no-progress",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "synthetic / tr" in out and "mean" in out
    (record_file,) = (tmp_path / "synthetic" / "tr").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["config"]["method_params"] == {"d": 2} and len(record["tasks"]) == 3


def test_unknown_method_and_dataset_name_the_valid_ones(capsys) -> None:
    assert main(["train", "--method", "nope", "--no-progress"]) == 2
    assert "unknown method 'nope'; valid: dmtl, gttn_a" in capsys.readouterr().err
    assert main(["train", "--dataset", "nope", "--no-progress"]) == 2
    assert "unknown dataset 'nope'; valid: domainnet, imageclef, office31, office_caltech, office_home, omniglot, synthetic" in capsys.readouterr().err


def test_missing_data_says_where_it_looked(tmp_path: Path, capsys) -> None:
    assert main(["train", "--dataset", "omniglot", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "omniglot/images_background.npz not found" in err and "bitsandscraps/omniglot" in err


def test_diverging_run_exits_with_a_reason_and_writes_nothing(tmp_path: Path, capsys) -> None:
    code = main(["train", "--method", "laf", "--lam", "1e30", "--lr", "1e30", "--max-epochs", "2", "--hidden", "4",
                 "--data-param", "n_tasks=2", "--out", str(tmp_path), "--no-progress"])
    assert code == 3
    assert "diverged, no record written: laf: training loss is" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BENCHMARK_DATA_DIR", str(tmp_path))
    assert main(["train", "--dataset", "office_caltech", "--no-progress"]) == 2
    assert str(tmp_path / "office_caltech10" / "surf") in capsys.readouterr().err


def test_list_shows_methods_and_which_datasets_are_present(tmp_path: Path, capsys) -> None:
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gttn_meta" in out and "office_caltech   missing" in out and "synthetic        present" in out
    assert "efficientnet_lite0 layers pool, map: a stand-in" in out and "your own data: --dataset PATH" in out


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmark", "list"], capture_output=True, text=True)
    assert done.returncode == 0 and "methods:" in done.stdout


def test_real_surf_features_train_with_gttn_var(shared_data_dir: Path, tmp_path: Path, capsys) -> None:
    code = main([
        "train", "--dataset", "office_caltech", "--method", "gttn_var", "--max-epochs", "2", "--hidden", "32",
        "--data-dir", str(shared_data_dir), "--out", str(tmp_path), "--no-progress",
    ])
    assert code == 0
    (record_file,) = (tmp_path / "office_caltech" / "gttn_var").glob("*.json")
    record = json.loads(record_file.read_text())
    assert list(record["tasks"]) == ["amazon", "caltech10", "dslr", "webcam"]
    assert record["test_err_mean"] < 0.9  # better than chance (10 classes)


def test_omniglot_cnn_trains_on_real_alphabets_with_a_fixed_budget(shared_data_dir: Path) -> None:
    from benchmark.config import TrainConfig
    from benchmark.train import train

    config = TrainConfig(dataset="omniglot", method="tucker", hidden=16, train_ratio=0.1, max_epochs=1,
                         dataset_params={"alphabets": 2, "image_size": 28})
    record = train(config, shared_data_dir, None, progress=False).record
    assert record.selection == "fixed_budget_last_epoch" and record.val_acc_mean is None
    assert list(record.tasks) == ["Arcadian", "Armenian"]


def test_a_task_too_small_for_validation_is_trained_and_tested_but_not_selected_on(shared_data_dir: Path) -> None:
    """Office-Caltech at 10%: dslr keeps 1-2 images per class, none left for validation."""
    from benchmark.config import TrainConfig
    from benchmark.train import train

    config = TrainConfig(dataset="office_caltech", method="stl", hidden=16, train_ratio=0.1, max_epochs=2)
    record = train(config, shared_data_dir, None, progress=False).record
    assert record.selection == "best_val_acc_mean, ties to the later epoch"
    assert record.val_tasks == ["amazon", "caltech10", "webcam"]
    assert record.tasks["dslr"]["val_acc"] is None and record.tasks["dslr"]["test_acc"] is not None
    val = [record.tasks[task]["val_acc"] for task in record.val_tasks]
    assert abs(record.val_acc_mean - sum(val) / 3) < 1e-9


def test_git_rev_is_dirty_only_when_tracked_code_differs(tmp_path: Path) -> None:
    """On a fresh clone: new records and rebuilt tables under results/ leave the revision clean."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    # The clone has the last commit; the code under test is this checkout's, committed there.
    shutil.copy(repo / "benchmark" / "records.py", clone / "benchmark" / "records.py")
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qam", "probe",
                    "--allow-empty"], cwd=clone, check=True)
    # -S: no site packages, so the editable install cannot point the import back at this checkout
    # (records.py needs only the standard library).
    probe = [sys.executable, "-S", "-c", "import sys; sys.path.insert(0, '.'); from benchmark.records import git_revision; print(git_revision())"]

    def revision() -> str:
        return subprocess.run(probe, cwd=clone, capture_output=True, text=True, check=True).stdout.strip()

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True).stdout.strip()
    assert revision() == head
    (clone / "results" / "runs" / "new.json").write_text("{}")  # a new record
    (clone / "results" / "leaderboard" / "summary.md").write_text("rebuilt\n")  # a rebuilt table
    assert revision() == head
    with open(clone / "benchmark" / "config.py", "a") as source:
        source.write("\n# a local change\n")
    assert revision() == f"{head}-dirty"
    # A process keeps the revision it started with: a commit made while it runs is not its code.
    during = [sys.executable, "-S", "-c", "import subprocess, sys; sys.path.insert(0, '.'); "
              "from benchmark.records import git_revision; before = git_revision(); "
              "subprocess.run(['git', '-c', 'user.name=test', '-c', 'user.email=test@example.org', 'commit', '-qam', 'meanwhile'], check=True); "
              "print(before, git_revision())"]
    before, after = subprocess.run(during, cwd=clone, capture_output=True, text=True, check=True).stdout.split()
    assert before == after == f"{head}-dirty"
    assert revision() not in (head, f"{head}-dirty")  # a new process names the new commit


@pytest.mark.parametrize(("arguments", "message"), [
    (["sweep", "--trials", "-1"], "argument --trials: must be >= 0, got -1"),
    (["sweep", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
    (["train", "--max-epochs", "0"], "argument --max-epochs: must be >= 1, got 0"),
    (["train", "--hidden", "ten"], "argument --hidden: expected an integer, got 'ten'"),
    (["sweep", "--final-seeds", "1,x"], "argument --final-seeds: expected comma-separated int values, got 'x'"),
    (["sweep", "--train-ratio", "0.1,1.5"], "argument --train-ratio: each value must be in (0, 1), got 1.5"),
])
def test_out_of_range_options_are_refused_naming_the_option(arguments: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
