"""The leaderboard from a fixture set of records: exact values, broken records, byte-identical reruns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.board.leaderboard import build_leaderboard
from benchmark.records import PROTOCOL_VERSION, read_records


def exactly(value: float):
    """The CSVs store 6 significant digits: equal at that precision."""
    return pytest.approx(value, abs=1e-6)


def make_record(method: str, seed: int, errors: dict[str, float], *, dataset: str = "synthetic", ratio: float = 0.5,
                lam: float = 0.1, hidden: int = 32, val_acc: float = 0.7, job: str = "final",
                protocol_version: int | None = PROTOCOL_VERSION, paper_layering: bool = True, layers: str = "all") -> dict:
    config = {"dataset": dataset, "method": method, "seed": seed, "lam": lam, "hidden": hidden, "layers": layers,
              "train_ratio": ratio, "val_ratio": 0.2, "max_epochs": 10, "dataset_params": {}, "method_params": {}}
    mean = sum(errors.values()) / len(errors)
    versioned = {} if protocol_version is None else {"protocol_version": protocol_version, "paper_layering": paper_layering}
    return {
        **versioned,
        "run_id": f"{method}-{seed}-{lam}-{ratio}-{layers}-{protocol_version}", "job": job, "dataset": dataset, "method": method,
        "config": config, "seed": seed, "val_acc_mean": val_acc, "test_err_mean": mean, "test_acc_mean": 1 - mean,
        "tasks": {task: {"val_acc": val_acc, "test_acc": 1 - err, "test_err": err} for task, err in errors.items()},
        "method_state": {"alpha/layer0/0": 0.2, "alpha/layer0/0-1": 0.8} if method == "gttn_var" else {},
        "sharing": {"layer0": {"initial": 10.0, "selected": 6.0, "strength": 0.4}},
    }


def write(root: Path, worker: str, record: dict) -> None:
    path = root / worker / record["dataset"] / record["method"] / f"{record['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    # Three machines' records gathered in one tree.
    for seed, (a, b) in zip((1, 2, 3), ((0.28, 0.32), (0.30, 0.34), (0.32, 0.36))):
        write(root, "machine-a", make_record("stl", seed, {"a": a, "b": b}))  # means 0.30, 0.32, 0.34
    write(root, "machine-a", make_record("tucker", 1, {"a": 0.18, "b": 0.22}))  # 0.20
    write(root, "machine-b", make_record("tucker", 2, {"a": 0.22, "b": 0.26}))  # 0.24
    write(root, "machine-b", make_record("tucker", 3, {"a": 0.20, "b": 0.24}))  # 0.22
    write(root, "machine-b", make_record("gttn_var", 1, {"a": 0.25, "b": 0.25}))
    write(root, "machine-c", make_record("gttn_var", 2, {"a": 0.20, "b": 0.30}))
    write(root, "machine-c", make_record("gttn_var", 3, {"a": 0.25, "b": 0.25}))
    write(root, "machine-c", make_record("gttn_var", 1, {"a": 0.25, "b": 0.25}) | {"run_id": "copied"})  # same run twice
    # A configuration of tucker with worse validation error: superseded, whatever its test error.
    write(root, "machine-c", make_record("tucker", 1, {"a": 0.01, "b": 0.01}, lam=3.0, val_acc=0.5))
    # Another train ratio, and sweep records (not final) that must not enter the table.
    write(root, "machine-a", make_record("stl", 1, {"a": 0.5, "b": 0.5}, ratio=0.1))
    write(root, "machine-a", make_record("tucker", 1, {"a": 0.4, "b": 0.5}, ratio=0.1))
    write(root, "machine-a", make_record("stl", 0, {"a": 0.9, "b": 0.9}, job="sweep", lam=0.01))
    write(root, "machine-a", make_record("stl", 0, {"a": 0.8, "b": 0.8}, job="sweep", lam=0.1))
    # Omniglot at 10%: the paper's figure goes beside ours.
    write(root, "machine-a", make_record("stl", 1, {"alpha1": 0.6, "alpha2": 0.7}, dataset="omniglot", ratio=0.1))
    (root / "machine-b" / "synthetic" / "stl").mkdir(parents=True, exist_ok=True)
    (root / "machine-b" / "synthetic" / "stl" / "truncated.json").write_text('{"run_id": "x", "job": "fi')
    (root / "machine-b" / "synthetic" / "stl" / "incomplete.json").write_text('{"run_id": "y", "job": "final"}')
    return root


def test_csv_values_are_exact(runs: Path, tmp_path: Path) -> None:
    build_leaderboard(runs, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv")
    half = table[table["train_ratio"] == 0.5].set_index("method")
    assert list(half.index) == ["tucker", "gttn_var", "stl"]  # sorted by rank
    assert half.loc["stl", "test_err_mean"] == exactly(0.32)
    assert half.loc["stl", "test_err_std"] == exactly(0.02)  # sample std of 0.30, 0.32, 0.34
    assert half.loc["tucker", "test_err_mean"] == exactly(0.22)
    assert half.loc["tucker", "test_err_std"] == exactly(0.02)
    assert half.loc["gttn_var", "test_err_mean"] == exactly(0.25)
    assert half.loc["gttn_var", "test_err_std"] == exactly(0.0)
    assert list(half["rank"]) == [1, 2, 3]
    assert half.loc["tucker", "vs_stl_pct"] == exactly(-31.25)
    assert half.loc["gttn_var", "vs_stl_pct"] == exactly(-21.875)
    assert half.loc["stl", "vs_stl_pct"] == 0
    assert half.loc["tucker", "beats_stl"] == "3/3" and pd.isna(half.loc["stl", "beats_stl"])
    assert list(half["n_runs"]) == [3, 3, 3] and half.loc["stl", "seeds"] == "1 2 3"
    assert half.loc["tucker", "lam"] == 0.1  # the lam=3.0 configuration lost on validation
    assert half.loc["gttn_var", "test_err/a"] == exactly(0.7 / 3)
    assert half.loc["gttn_var", "test_err/b"] == exactly(0.8 / 3)
    tenth = table[table["train_ratio"] == 0.1].set_index("method")
    assert list(tenth["rank"]) == [1, 2] and tenth.loc["tucker", "test_err_mean"] == exactly(0.45)
    assert math.isnan(tenth.loc["tucker", "test_err_std"])  # one run: no std
    omniglot = pd.read_csv(tmp_path / "board" / "omniglot.csv").set_index("method")
    assert omniglot.loc["stl", "paper_test_err_mean"] == exactly(1 - 0.3411)
    assert omniglot.loc["stl", "paper_test_err_std"] == exactly(0.006)
    assert omniglot.loc["stl", "vs_paper_pts"] == exactly(100 * (0.65 - (1 - 0.3411)))  # 0.65: mean over tasks
    assert "vs_paper_pts" not in table.columns  # no paper figure for synthetic
    summary = pd.read_csv(tmp_path / "board" / "summary.csv")
    assert list(summary.columns) == ["table", "train_ratio", "gttn_var", "stl", "tucker"]
    assert len(summary) == 3
    markdown = (tmp_path / "board" / "summary.md").read_text()
    # Tucker leads gttn_var by 3 points on 3 shared splits (5, 1 and 3): t(2) = 4.30 makes that a tie.
    assert ("| synthetic | 0.5 | 25.00 (0.00) | 32.00 (2.00) | 22.00 (2.00) | tied (tucker vs gttn_var "
            "-7.97..+1.97 pts) |") in markdown


def test_broken_duplicate_and_superseded_records_are_reported(runs: Path, tmp_path: Path) -> None:
    _, notices = build_leaderboard(runs, tmp_path / "board", plots=False)
    text = "\n".join(notices)
    assert "truncated.json" in text and "incomplete.json: missing dataset, method, config" in text
    assert "skipped duplicate record" in text and "copied.json" in text
    assert "synthetic tucker r0.5: 1 run(s) of another configuration (lam 3" in text
    records = read_records(runs)
    assert len(records.broken) == 2 and len(records.duplicates) == 1


def test_runs_that_differ_only_in_a_lambda_that_weighs_nothing_are_one_configuration(tmp_path: Path) -> None:
    """LAF-TF's lambda weighs nothing under its paper's layering: its old runs at inert lambdas and
    a rerun (lam 0) of the same splits are one configuration, each split counted once (the latest),
    and the table shows "-" for its lambda."""
    root = tmp_path / "runs"
    for seed, lam in ((1, 0.03), (2, 0.03), (3, 0.03), (1, 0.0), (2, 0.0)):
        write(root, "m", make_record("laf_tf", seed, {"a": 0.2 + 0.01 * seed}, lam=lam)
              | {"run_id": f"2026120{1 if lam == 0 else 0}T000000Z-s{seed}",
                 "search_space": {"lam": {"low": 0.03, "high": 1.0, "log": True}} if lam else {}})
    for seed in (1, 2):  # a method whose lambda weighs: another lambda is another configuration
        write(root, "m", make_record("tucker", seed, {"a": 0.3}, lam=0.1))
        write(root, "m", make_record("tucker", seed, {"a": 0.3}, lam=0.2))
    _, notices = build_leaderboard(root, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    assert table.loc["laf_tf", "n_runs"] == 3 and table.loc["laf_tf", "seeds"] == "1 2 3"
    assert math.isnan(table.loc["laf_tf", "lam"]) and table.loc["tucker", "lam"] == exactly(0.1)
    assert pd.isna(table.loc["laf_tf", "at_edge"])  # an inert lambda at the edge of an old search is no edge
    text = "\n".join(notices)
    assert "synthetic laf_tf r0.5: 2 run(s) of a split already run" in text and "laf_tf r0.5: 2 run(s) of another" not in text
    assert "synthetic tucker r0.5: 2 run(s) of another configuration (lam 0.2" in text
    markdown = (tmp_path / "board" / "synthetic.md").read_text()
    (row,) = [line for line in markdown.splitlines() if "| LAF-TF |" in line]
    assert row.split(" | ")[-3] == "-" and 'Lambda "-": nothing' in markdown


def test_rebuilding_gives_byte_identical_csvs_and_plots(runs: Path, tmp_path: Path) -> None:
    # Search trials at repeated lambdas: what a random bootstrap band would have drawn differently each time.
    trials = [(seed, 0.1, 0.5 + 0.07 * seed) for seed in range(6)] + [(seed, 0.01, 0.6 + 0.05 * seed) for seed in range(4)]
    for seed, lam, val_acc in trials:
        write(runs, "machine-a", make_record("tucker", seed, {"a": 0.3}, lam=lam, val_acc=val_acc, job="sweep")
              | {"run_id": f"sweep-{seed}-{lam}-{val_acc}", "trial": 0})
    first, _ = build_leaderboard(runs, tmp_path / "one")
    second, _ = build_leaderboard(runs, tmp_path / "two")
    assert [p.name for p in first] == [p.name for p in second]
    assert any(p.name.endswith("_lambda.png") for p in first)
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_command_draws_the_plots_and_reports_broken_records(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "board"
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "truncated.json" in captured.err and "22.00 (2.00) | tied (tucker vs gttn_var" in captured.out
    for name in ("synthetic_errors", "synthetic_vs_stl", "synthetic_vs_stl_ci", "synthetic_lambda", "synthetic_gttn_weights",
                 "synthetic_sharing", "omniglot_errors", "omniglot_vs_paper"):
        with Image.open(out / f"{name}.png") as image:
            assert image.width > 300 and image.height > 200
    assert not (out / "omniglot_vs_stl.png").exists()  # STL alone: nothing to compare
    assert not (out / "omniglot_vs_stl_ci.png").exists()
    assert not (out / "synthetic_vs_paper.png").exists()  # no published figure to compare with


def test_no_records_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", "--runs", str(tmp_path / "none")]) == 2
    assert "no run records" in capsys.readouterr().err


def test_curves_draws_validation_accuracy_per_dataset_and_skips_runs_without_validation(tmp_path: Path, capsys) -> None:
    root = tmp_path / "calibration"
    for lam, history in ((0.0, [0.2, 0.4, 0.5, 0.5]), (0.1, [0.2, 0.3, 0.5, 0.6])):
        write(root, ".", make_record("laf", 0, {"a": 0.5}, dataset="omniglot", lam=lam, job="train")
              | {"run_id": f"laf-{lam}", "val_acc_history": history, "selected_epoch": 4})
    # A fixed-budget run has no validation part: nothing to draw for its dataset.
    write(root, ".", make_record("stl", 0, {"a": 0.5}, job="train") | {"val_acc_history": [None, None]})
    out = tmp_path / "curves"
    assert main(["curves", "--runs", str(root), "--out", str(out)]) == 0
    with Image.open(out / "omniglot_validation.png") as image:
        assert image.width > 300 and image.height > 200
    assert not (out / "synthetic_validation.png").exists()
    assert main(["curves", "--runs", str(tmp_path / "none"), "--out", str(out)]) == 1
    assert "no records of job(s) train,sweep,final with a validation part" in capsys.readouterr().err


def test_beats_stl_pairs_runs_by_seed(tmp_path: Path) -> None:
    """Wins are counted on the same split: a lower mean is not a win on every seed."""
    root = tmp_path / "runs"
    for seed, stl_err, tucker_err in ((1, 0.30, 0.20), (2, 0.30, 0.35), (3, 0.30, 0.28), (4, 0.30, 0.10)):
        write(root, "m", make_record("stl", seed, {"a": stl_err}))
        if seed != 4:
            write(root, "m", make_record("tucker", seed, {"a": tucker_err}))
    write(root, "m", make_record("gttn_var", 9, {"a": 0.1}))  # no seed in common with STL
    build_leaderboard(root, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv", keep_default_na=False).set_index("method")
    assert table.loc["tucker", "beats_stl"] == "2/3"  # seed 4 has no tucker run: not counted
    assert table.loc["gttn_var", "beats_stl"] == ""
    assert "_errors_by_seed" not in table.columns


def test_paired_intervals_against_stl_and_dmtl_and_a_clear_winner_in_bold(tmp_path: Path) -> None:
    """Differences on the same split, with a 95% t-interval over the splits; the best is bold only
    where its interval against the runner-up excludes 0."""
    root = tmp_path / "runs"
    stl = {1: 0.30, 2: 0.32, 3: 0.34, 4: 0.31, 5: 0.33}
    for seed, error in stl.items():
        write(root, "m", make_record("stl", seed, {"a": error}))
        write(root, "m", make_record("dmtl", seed, {"a": error - 0.05 + 0.01 * (seed % 2)}))  # 4 or 5 points better
        write(root, "m", make_record("tucker", seed, {"a": error - 0.10}))  # 10 points better on every split
    build_leaderboard(root, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv", keep_default_na=False).set_index("method")
    assert float(table.loc["tucker", "vs_stl_pts"]) == exactly(-10.0) and table.loc["tucker", "vs_stl_ci95"] == "-10.00..-10.00"
    assert table.loc["tucker", "beats_stl"] == "5/5" and table.loc["tucker", "beats_dmtl"] == "5/5"
    # dmtl - stl over seeds 1..5: -4, -5, -4, -5, -4 points: mean -4.4, sd 0.548, t(4) = 2.776.
    assert float(table.loc["dmtl", "vs_stl_pts"]) == exactly(-4.4) and table.loc["dmtl", "vs_stl_ci95"] == "-5.08..-3.72"
    assert table.loc["stl", "vs_dmtl_ci95"] == "+3.72..+5.08" and table.loc["dmtl", "vs_dmtl_ci95"] == ""
    assert table.loc["tucker", "lead_ci95"] == "vs dmtl -6.28..-4.92" and table.loc["tucker", "lead_clear"] == "True"
    markdown = (tmp_path / "board" / "summary.md").read_text()
    assert "| 27.60 (1.82) | 32.00 (1.58) | **22.00 (1.58)** | tucker (vs dmtl -6.28..-4.92 pts) |" in markdown
    # The table's own markdown: display names, each difference with its interval, the verdict.
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert "| 1 | Tucker | all | 22.00 (1.58) | -10.00 (-10.00..-10.00) † | 5/5 | -5.60 (-6.28..-4.92) † | 5/5 | 0.1 | 32 |" in board
    assert "| 2 | DMTL | all | 27.60 (1.82) | -4.40 (-5.08..-3.72) † | 5/5 |  |  | 0.1 | 32 |" in board
    assert "Best: **Tucker**, its lead over DMTL clear (-6.28..-4.92 points, 95% interval)." in board


def test_holm_adjusts_a_ratios_comparisons_against_one_baseline_and_the_dagger_marks_what_stands(tmp_path: Path) -> None:
    """Each row's paired t-test p against STL, and Holm's adjustment over the ratio's comparisons:
    a difference whose interval excludes 0 alone may not stand among several."""
    from scipy import stats

    from benchmark.board.tables import holm_adjusted

    # Holm by hand: sorted 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, made non-decreasing.
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == [0.03, 0.06, 0.06, 0.02]
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0] and holm_adjusted([]) == []
    root = tmp_path / "runs"
    stl = {1: 0.30, 2: 0.32, 3: 0.34, 4: 0.31, 5: 0.33}
    changes = {"tucker": (-0.04, -0.05, -0.04, -0.05, -0.04),  # clear on its own and among three
               "tt": (-0.010, -0.030, 0.000, -0.020, -0.015),  # its interval excludes 0; Holm's x2 does not hold it
               "laf": (0.02, -0.03, 0.01, -0.01, 0.0)}  # no difference
    for seed, error in stl.items():
        write(root, "m", make_record("stl", seed, {"a": error}))
        for method, change in changes.items():
            write(root, "m", make_record(method, seed, {"a": error + change[seed - 1]}))
    build_leaderboard(root, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    raw = {m: stats.ttest_rel([stl[s] + c[s - 1] for s in stl], list(stl.values())).pvalue for m, c in changes.items()}
    for method in changes:
        assert float(table.loc[method, "vs_stl_p"]) == pytest.approx(raw[method], abs=1e-6)
    assert raw["tt"] < 0.05 and float(table.loc["tt", "vs_stl_ci95"].split("..")[1]) < 0  # excludes 0 alone
    expected = holm_adjusted([raw[m] for m in changes])
    assert [float(table.loc[m, "vs_stl_holm"]) for m in changes] == [pytest.approx(p, abs=1e-6) for p in expected]
    assert float(table.loc["tt", "vs_stl_holm"]) >= 0.05 > float(table.loc["tucker", "vs_stl_holm"])
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert f"| {table.loc['tucker', 'vs_stl_pts']:+.2f} ({table.loc['tucker', 'vs_stl_ci95']}) † |" in board
    assert f"| {table.loc['tt', 'vs_stl_pts']:+.2f} ({table.loc['tt', 'vs_stl_ci95']}) |" in board
    assert "†: the difference stands after Holm's correction" in board


def test_every_pair_of_methods_is_compared_once_by_split_with_holm_over_the_ratios_pairs(tmp_path: Path) -> None:
    """<table>_pairwise.csv: the comparisons the tables leave out (second against third, say), each
    pair once, the better ranked first, Holm over the ratio's pairs; the figure draws them."""
    from benchmark.board.tables import holm_adjusted, paired_interval, paired_p_value

    root = tmp_path / "runs"
    errors = {"stl": (0.30, 0.32, 0.34), "dmtl": (0.25, 0.28, 0.30), "tucker": (0.20, 0.21, 0.22)}
    for method, values in errors.items():
        for seed, error in enumerate(values, start=1):
            write(root, "m", make_record(method, seed, {"a": error}))
    write(root, "m", make_record("tt", 1, {"a": 0.5}, ratio=0.1))  # alone at its ratio: no pair
    written, _ = build_leaderboard(root, tmp_path / "board")
    assert tmp_path / "board" / "synthetic_pairwise.png" in written
    pairs = pd.read_csv(tmp_path / "board" / "synthetic_pairwise.csv")
    assert list(zip(pairs["method"], pairs["other"])) == [("tucker", "dmtl"), ("tucker", "stl"), ("dmtl", "stl")]
    assert set(pairs["train_ratio"]) == {0.5}
    by_seed = {m: dict(enumerate(v, start=1)) for m, v in errors.items()}
    expected_p = [paired_p_value(by_seed[a], by_seed[b]) for a, b in zip(pairs["method"], pairs["other"])]
    # dmtl - stl: -5, -4, -4 points; tucker - dmtl: -5, -7, -8.
    assert float(pairs.loc[2, "diff_pts"]) == exactly(-4.3333) and pairs.loc[0, "diff_pts"] == exactly(-6.6667)
    assert pairs.loc[2, "ci95"] == "-5.77..-2.90" == "{:+.2f}..{:+.2f}".format(*paired_interval(by_seed["dmtl"], by_seed["stl"])[1:])
    assert list(pairs["holm"]) == [pytest.approx(p, abs=1e-6) for p in holm_adjusted(expected_p)]
    assert list(pairs["wins"]) == ["3/3", "3/3", "3/3"]
    # The working column of errors by seed never reaches a CSV.
    assert "_errors_by_seed" not in pd.read_csv(tmp_path / "board" / "synthetic.csv").columns


def test_protocols_and_layerings_are_never_mixed_in_one_table(tmp_path: Path) -> None:
    """Old-protocol records (no version) and ablation records each get a table of their own."""
    root = tmp_path / "runs"
    write(root, "m", make_record("gttn_a", 1, {"a": 0.2}, layers="head"))
    write(root, "m", make_record("gttn_a", 1, {"a": 0.3}, layers="all", paper_layering=False))
    write(root, "m", make_record("gttn_a", 1, {"a": 0.4}, protocol_version=None))
    write(root, "m", make_record("stl", 1, {"a": 0.5}, protocol_version=None))
    written, _ = build_leaderboard(root, tmp_path / "board", plots=False)
    names = sorted(p.name for p in written if p.suffix == ".csv")
    assert names == ["summary.csv", "synthetic.csv", "synthetic_ablation.csv", "synthetic_protocol1.csv"]
    tables = {name: pd.read_csv(tmp_path / "board" / name).set_index("method") for name in names if name != "summary.csv"}
    assert tables["synthetic.csv"].loc["gttn_a", "test_err_mean"] == exactly(0.2)
    assert tables["synthetic.csv"].loc["gttn_a", "layers"] == "head"
    assert tables["synthetic_ablation.csv"].loc["gttn_a", "layers"] == "all"
    assert tables["synthetic_ablation.csv"].loc["gttn_a", "test_err_mean"] == exactly(0.3)
    assert sorted(tables["synthetic_protocol1.csv"].index) == ["gttn_a", "stl"]


def test_a_variant_is_paired_with_the_main_board_and_an_ablation_gets_its_baselines(tmp_path: Path) -> None:
    """A layering ablation in its own folder: each method against its own paper's layering on the
    same splits, and against the main board's STL and DMTL; a variant of an older board says so."""
    main, variant = tmp_path / "runs", tmp_path / "variant"
    for seed, (stl, dmtl, tucker, ablated) in enumerate(((0.30, 0.25, 0.20, 0.22), (0.32, 0.26, 0.21, 0.24),
                                                        (0.34, 0.30, 0.22, 0.23)), start=1):
        write(main, "m", make_record("stl", seed, {"a": stl}))
        write(main, "m", make_record("dmtl", seed, {"a": dmtl}))
        write(main, "m", make_record("tucker", seed, {"a": tucker}))
        write(variant, "m", make_record("tucker", seed, {"a": ablated}, layers="head", paper_layering=False))
    written, _ = build_leaderboard(variant, tmp_path / "board", main_runs_dir=main)
    assert tmp_path / "board" / "synthetic_ablation_vs_main.png" in written
    table = pd.read_csv(tmp_path / "board" / "synthetic_ablation.csv").set_index("method")
    assert sorted(table.index) == ["dmtl", "stl", "tucker"]
    assert table.loc["stl", "note"] == "the main board's run"
    # tucker on the heads minus tucker on every layer: +2, +3, +1 points; mean 2, sd 1, t(2) = 4.303.
    assert float(table.loc["tucker", "vs_main_pts"]) == exactly(2.0)
    assert table.loc["tucker", "vs_main_ci95"] == "-0.48..+4.48" and table.loc["tucker", "beats_main"] == "0/3"
    assert float(table.loc["tucker", "vs_stl_pts"]) == exactly(-9.0) and table.loc["tucker", "beats_dmtl"] == "3/3"
    # The main board alone has no vs_main columns; a variant of a board of an earlier protocol is paired, and says so.
    assert "vs_main_pts" not in pd.read_csv(build_leaderboard(main, tmp_path / "main", plots=False)[0][0]).columns
    old = tmp_path / "old"
    write(old, "m", make_record("stl", 1, {"a": 0.40}, protocol_version=None))
    write(old, "m", make_record("stl", 2, {"a": 0.41}, protocol_version=None))
    write(tmp_path / "stl_variant", "m", make_record("stl", 1, {"a": 0.42}))
    write(tmp_path / "stl_variant", "m", make_record("stl", 2, {"a": 0.44}))
    _, notices = build_leaderboard(tmp_path / "stl_variant", tmp_path / "board2", plots=False, main_runs_dir=old)
    assert "synthetic: paired with the main board's protocol1 records (it has no table of this protocol)" in notices
    assert float(pd.read_csv(tmp_path / "board2" / "synthetic.csv").loc[0, "vs_main_pts"]) == exactly(2.5)
    # A variant of the same earlier protocol is paired with it silently.
    write(tmp_path / "old_variant", "m", make_record("stl", 1, {"a": 0.43}, protocol_version=None))
    write(tmp_path / "old_variant", "m", make_record("stl", 2, {"a": 0.45}, protocol_version=None))
    _, notices = build_leaderboard(tmp_path / "old_variant", tmp_path / "board3", plots=False, main_runs_dir=old)
    assert notices == []
    assert float(pd.read_csv(tmp_path / "board3" / "synthetic_protocol1.csv").loc[0, "vs_main_pts"]) == exactly(3.5)


def test_a_method_whose_main_run_predates_the_protocol_is_paired_with_that_run_and_says_so(tmp_path: Path) -> None:
    """A variant rerunning a method the main board ran only under an earlier protocol (Omniglot's
    LAF at the code weighting): paired with that run, named in a notice; the others silently."""
    main, variant = tmp_path / "runs", tmp_path / "variant"
    for seed, (stl, tucker, old_laf, laf, new_tucker) in enumerate(
            ((0.30, 0.26, 0.28, 0.27, 0.25), (0.32, 0.29, 0.30, 0.28, 0.27)), start=1):
        write(main, "m", make_record("stl", seed, {"a": stl}))
        write(main, "m", make_record("tucker", seed, {"a": tucker}))
        write(main, "m", make_record("laf", seed, {"a": old_laf}, protocol_version=None))
        write(variant, "m", make_record("laf", seed, {"a": laf}))
        write(variant, "m", make_record("tucker", seed, {"a": new_tucker}))
    _, notices = build_leaderboard(variant, tmp_path / "board", main_runs_dir=main, plots=False)
    assert notices == ["synthetic: laf paired with the main board's protocol1 run (it has none of this protocol)"]
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    assert float(table.loc["laf", "vs_main_pts"]) == exactly(-1.5) and table.loc["laf", "beats_main"] == "2/2"
    assert float(table.loc["tucker", "vs_main_pts"]) == exactly(-1.5)
    assert sorted(table.index) == ["laf", "stl", "tucker"]  # the old-protocol run pairs, it is not a row


def test_a_variant_that_reruns_stl_alone_is_the_main_board_against_its_stl(tmp_path: Path) -> None:
    """A variant that reruns only STL (a wider hidden range, say): every other method comes in with
    its main-board row, noted, and is paired against the variant's STL, not the main board's."""
    main, variant = tmp_path / "runs", tmp_path / "variant"
    for seed, (stl, wider_stl, tucker) in enumerate(((0.30, 0.25, 0.26), (0.32, 0.27, 0.29), (0.34, 0.28, 0.30)), start=1):
        write(main, "m", make_record("stl", seed, {"a": stl}))
        write(main, "m", make_record("tucker", seed, {"a": tucker}))
        write(variant, "m", make_record("stl", seed, {"a": wider_stl}, hidden=2048))
    written, _ = build_leaderboard(variant, tmp_path / "board", main_runs_dir=main, plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    assert sorted(table.index) == ["stl", "tucker"]
    assert table.loc["tucker", "note"] == "the main board's run" and pd.isna(table.loc["stl", "note"])
    # tucker minus the variant's stl: +1, +2, +2 points (against the main board's stl it would be -4).
    assert float(table.loc["tucker", "vs_stl_pts"]) == exactly(1.6667) and table.loc["tucker", "beats_stl"] == "0/3"
    assert table.loc["stl", "rank"] == 1
    # The variant's stl against the main board's: -5, -5, -6 points.
    assert float(table.loc["stl", "vs_main_pts"]) == exactly(-5.3333) and table.loc["stl", "beats_main"] == "3/3"


def test_a_row_with_fewer_final_splits_than_its_ratios_others_is_shown_noted_and_not_ranked(tmp_path: Path) -> None:
    """A plan variant's rerun part-way through its finals (LAF-i at 1 of 3 splits) stands in for
    the main board's full row: its partial mean is shown and paired where it can be, but it is
    neither ranked among the full means nor the leader, and the tables say how far it got."""
    main, variant = tmp_path / "runs", tmp_path / "variant"
    for seed, (stl, dmtl, laf_i) in enumerate(((0.30, 0.25, 0.27), (0.32, 0.26, 0.28), (0.34, 0.30, 0.29)), start=1):
        write(main, "m", make_record("stl", seed, {"a": stl}))
        write(main, "m", make_record("dmtl", seed, {"a": dmtl}))
        write(main, "m", make_record("laf_i", seed, {"a": laf_i}))
    write(variant, "m", make_record("laf_i", 1, {"a": 0.10}, hidden=512))  # the lowest mean, over one split
    build_leaderboard(variant, tmp_path / "board", main_runs_dir=main, plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    assert table.loc["laf_i", "n_runs"] == 1 and table.loc["laf_i", "test_err_mean"] == exactly(0.10)
    assert pd.isna(table.loc["laf_i", "rank"]) and table.loc["laf_i", "note"] == "1 of 3 final splits: not ranked"
    assert table.loc["dmtl", "rank"] == 1 and table.loc["stl", "rank"] == 2
    assert list(table.index) == ["dmtl", "stl", "laf_i"]  # the ranked first
    assert table.loc["laf_i", "beats_stl"] == "1/1"  # paired on the one shared split
    assert table.loc["dmtl", "lead_ci95"].startswith("vs stl ")  # the lead is over a full row
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert "|  | LAF-i | all | 10.00 |" in board and "1 of 3 final splits: not ranked |" in board
    assert "Best: **DMTL**, its lead over STL clear" in board
    summary = (tmp_path / "board" / "summary.md").read_text()
    assert "| 10.00 [1/3 splits] |" in summary and "**10.00" not in summary
    # The same on a main board whose sweep is still running a method's finals; once they are all
    # in, the row is ranked and the note is gone.
    write(tmp_path / "running", "m", make_record("stl", 1, {"a": 0.30}))
    write(tmp_path / "running", "m", make_record("stl", 2, {"a": 0.32}))
    write(tmp_path / "running", "m", make_record("tucker", 1, {"a": 0.20}))
    build_leaderboard(tmp_path / "running", tmp_path / "running_board", plots=False)
    running = pd.read_csv(tmp_path / "running_board" / "synthetic.csv").set_index("method")
    assert pd.isna(running.loc["tucker", "rank"]) and running.loc["stl", "rank"] == 1
    assert running.loc["tucker", "note"] == "1 of 2 final splits: not ranked"
    write(tmp_path / "running", "m", make_record("tucker", 2, {"a": 0.22}))
    build_leaderboard(tmp_path / "running", tmp_path / "running_board", plots=False)
    running = pd.read_csv(tmp_path / "running_board" / "synthetic.csv").set_index("method")
    assert running.loc["tucker", "rank"] == 1 and pd.isna(running.loc["tucker", "note"])


def test_equal_methods_are_listed_once_and_a_choice_at_the_edge_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    space = {"lam": {"low": 1e-4, "high": 10.0, "log": True}, "hidden": {"choices": [128, 256, 512, 1024]}}
    tucker = make_record("tucker", 1, {"a": 0.2}, lam=1.1e-4, hidden=1024) | {"equal_methods": ["tr"], "search_space": space}
    stl = make_record("stl", 1, {"a": 0.3}, lam=0.01, hidden=256) | {"search_space": space}
    write(root, "m", tucker)
    write(root, "m", stl)
    build_leaderboard(root, tmp_path / "board", plots=False)
    table = pd.read_csv(tmp_path / "board" / "synthetic.csv").set_index("method")
    assert table.loc["tucker", "at_edge"] == "lam low, hidden high"
    assert pd.isna(table.loc["stl", "at_edge"])
    # TR computes Tucker's penalty here: listed, with no result and no rank of its own.
    assert table.loc["tr", "note"] == "= tucker"
    assert pd.isna(table.loc["tr", "test_err_mean"]) and pd.isna(table.loc["tr", "rank"])
    assert sorted(table["rank"].dropna().astype(int)) == [1, 2]
    assert "= tucker" in (tmp_path / "board" / "summary.md").read_text()
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert "| 1 | Tucker | all | 20.00 |  | 1/1 |  |  | 0.00011 (low edge) | 1024 (high edge) |  |" in board
    assert "| | TR | | = Tucker |" in board
    # One split: no interval, so neither a clear lead nor a tie.
    assert "Best mean: Tucker; no interval against the runner-up (fewer than two splits in common)." in board


def test_figures_show_the_methods_display_names() -> None:
    """The figures said laf_i and gttn_max where the README says LAF-i and GTTN-max."""
    import matplotlib.pyplot as plt

    from benchmark.board.plots import _errors, _vs_main, display_names
    from benchmark.board.tables import Reference

    names = Reference.read(Path(__file__).resolve().parents[1] / "results" / "reference").names
    table = pd.DataFrame({"method": ["gttn_var", "stl", "laf_i"], "train_ratio": [0.5] * 3, "rank": [1, 2, 3],
                          "test_err_mean": [0.2, 0.3, 0.4]})
    runs = pd.DataFrame({"method": ["gttn_var", "stl", "laf_i"] * 2, "train_ratio": [0.5] * 6, "seed": [1] * 3 + [2] * 3,
                         "test_err": [0.2, 0.3, 0.4, 0.22, 0.31, 0.41]})
    figure = _errors("synthetic", table, runs)
    display_names(figure, names)
    shown = {label.get_text() for axes in figure.axes for label in axes.get_yticklabels()}
    plt.close(figure)
    assert shown == {"GTTN-var", "STL", "LAF-i"}
    # A label that starts with the id: a variant's method and ratio.
    table = table.assign(vs_main_pts=[-1.0, 0.5, 0.0], vs_main_ci95=["-2.00..+0.00", "-1.00..+2.00", "-1.00..+1.00"],
                         beats_main=["3/5", "2/5", "1/5"])
    figure = _vs_main("synthetic_wider", table, runs)
    display_names(figure, names)
    shown = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    plt.close(figure)
    assert shown == ["GTTN-var  r0.5", "STL  r0.5", "LAF-i  r0.5"]


def test_the_interval_plot_colours_a_difference_only_where_its_interval_excludes_0() -> None:
    """Blue: an interval wholly below 0 (fewer errors than STL); red: wholly above; grey: across 0."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from benchmark.board.plots import _vs_stl_intervals

    table = pd.DataFrame({
        "method": ["tucker", "laf", "prod", "stl"], "train_ratio": [0.3] * 4, "rank": [1, 2, 3, 4],
        "vs_stl_pts": [-2.0, -0.5, 1.5, math.nan], "vs_stl_ci95": ["-3.00..-1.00", "-1.50..+0.50", "+0.50..+2.50", ""],
        "beats_stl": ["5/5", "3/5", "0/5", ""]})
    figure = _vs_stl_intervals("synthetic", table, pd.DataFrame())
    axes = figure.axes[0]
    markers = {round(line.get_ydata()[0]): to_hex(line.get_color()) for line in axes.lines if line.get_marker() == "o"}
    assert markers == {0: to_hex("tab:blue"), 1: to_hex("grey"), 2: to_hex("tab:red")}
    assert [t.get_text() for t in axes.get_yticklabels()] == ["tucker", "laf", "prod"]  # STL is the reference, not a row
    assert sorted(t.get_text() for t in axes.texts) == ["0/5", "3/5", "5/5"]
    plt.close(figure)


def test_a_table_whose_runs_read_two_feature_caches_says_so_and_one_cache_says_nothing(tmp_path: Path) -> None:
    """A rebuilt feature cache whose files differ is named in the table, with its count of runs."""
    root = tmp_path / "runs"
    old, rebuilt = {"files": {"a.pt": "1" * 64, "b.pt": "2" * 64}}, {"files": {"a.pt": "1" * 64, "b.pt": "3" * 64}}
    for seed in (1, 2, 3):
        write(root, "m", make_record("stl", seed, {"a": 0.3}) | {"inputs": old})
    write(root, "m", make_record("dmtl", 1, {"a": 0.2}) | {"inputs": rebuilt})
    write(root, "m", make_record("stl", 1, {"a": 0.3}, dataset="other") | {"inputs": old})
    _, notices = build_leaderboard(root, tmp_path / "board", plots=False)
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert "Inputs: these 4 runs read 2 feature caches" in board
    assert [line for line in board.splitlines() if line.startswith("Inputs:")][0].count(" read cache ") == 2
    assert "3 read cache" in board and "1 read cache" in board
    assert any(notice.startswith("synthetic: Inputs:") for notice in notices)
    assert "Inputs:" not in (tmp_path / "board" / "other.md").read_text()


def test_a_table_whose_runs_ran_on_two_machines_says_so_and_one_machine_says_nothing(tmp_path: Path) -> None:
    """Runs from two CPUs are counted per machine, with the records too old to say; one CPU (or
    none named) adds no line."""
    root = tmp_path / "runs"
    here = {"cpu": "CPU A", "cpu_capability": "AVX2", "logical_cpus": 2}
    there = {"cpu": "CPU B", "cpu_capability": "AVX512", "logical_cpus": 64}
    for seed in (1, 2):
        write(root, "m", make_record("stl", seed, {"a": 0.3}) | {"machine": here})
    write(root, "m", make_record("dmtl", 1, {"a": 0.2}) | {"machine": there})
    write(root, "m", make_record("dmtl", 2, {"a": 0.2}))
    write(root, "m", make_record("stl", 1, {"a": 0.3}, dataset="other") | {"machine": here})
    write(root, "m", make_record("dmtl", 1, {"a": 0.3}, dataset="other"))
    _, notices = build_leaderboard(root, tmp_path / "board", plots=False)
    board = (tmp_path / "board" / "synthetic.md").read_text()
    assert ("Machines: these runs ran on 2 machines, whose kernels may round otherwise: 2 on CPU A, AVX2; "
            "1 on CPU B, AVX512; 1 older record(s) do not say") in board
    assert any(notice.startswith("synthetic: Machines:") for notice in notices)
    assert "Machines:" not in (tmp_path / "board" / "other.md").read_text()


def test_make_leaderboard_tabulates_each_variant_and_pairs_it_with_the_variant_its_plan_names(
        tmp_path: Path, monkeypatch, capsys) -> None:
    """`mtlbench leaderboard --variants`: every variant against the main board, and one whose plan
    names paired_with (a longer budget, say) against that variant's runs too, labelled as such."""
    monkeypatch.chdir(tmp_path)
    plans = tmp_path / "sweeps" / "synthetic"
    plans.mkdir(parents=True)
    (plans / "short.yaml").write_text("methods: [tucker]\n")
    (plans / "long.yaml").write_text("methods: [tucker]\npaired_with: short\n")
    main_runs, variants, board = tmp_path / "runs", tmp_path / "variants", tmp_path / "board"
    for seed, (stl, tucker, short, long) in enumerate(((0.30, 0.26, 0.25, 0.22), (0.32, 0.29, 0.27, 0.25)), start=1):
        write(main_runs, "m", make_record("stl", seed, {"a": stl}))
        write(main_runs, "m", make_record("tucker", seed, {"a": tucker}))
        write(variants / "synthetic_short", "m", make_record("tucker", seed, {"a": short}))
        write(variants / "synthetic_long", "m", make_record("tucker", seed, {"a": long}))
    write(variants / "synthetic_unfinished", "m", make_record("tucker", 0, {"a": 0.3}, job="sweep"))
    assert main(["leaderboard", "--runs", str(main_runs), "--variants", str(variants), "--out", str(board), "--no-plots"]) == 0
    against_main = pd.read_csv(board / "synthetic_long" / "synthetic.csv").set_index("method")
    assert float(against_main.loc["tucker", "vs_main_pts"]) == exactly(-4.0)  # -4, -4 against the main board's tucker
    assert set(against_main["paired_with"]) == {"the main board"}
    against_short = pd.read_csv(board / "synthetic_long" / "vs_short" / "synthetic.csv").set_index("method")
    assert float(against_short.loc["tucker", "vs_main_pts"]) == exactly(-2.5)  # -3, -2 against the short variant's
    assert against_short.loc["tucker", "beats_main"] == "2/2" and set(against_short["paired_with"]) == {"the short variant"}
    assert "| vs the short variant's run, points (95% interval) |" in (board / "synthetic_long" / "vs_short" / "synthetic.md").read_text()
    assert "vs the main board's run" in (board / "synthetic_short" / "synthetic.md").read_text()
    assert not (board / "synthetic_short" / "vs_long").exists() and not (board / "synthetic_unfinished").exists()
    assert "synthetic_unfinished: no records of job(s) final yet, no table" in capsys.readouterr().out
    # A fresh board with no variant run yet: `make leaderboard` must not fail on it.
    assert main(["leaderboard", "--runs", str(main_runs), "--variants", str(tmp_path / "none"), "--out", str(board)]) == 0
