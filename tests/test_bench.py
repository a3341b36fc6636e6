"""`mtlbench bench` on tiny shapes: its columns, its accuracy figures and its summary verdicts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.bench import bench_batching, bench_norms, selection_summary, summary_markdown
from benchmark.cli import main


def test_norm_rows_compare_ours_with_the_naive_path_and_a_float64_reference() -> None:
    table = bench_norms(1, {"tiny": (6, 5, 3), "five-way": (2, 3, 2, 4, 3)}, progress=lambda line: None)
    assert len(table) == 2 * 10  # every regulariser on every shape
    assert set(table[table["shape"] == "five-way"]["flattenings"]) >= {15}  # GTTN on a 5-way tensor
    assert (table[["ours_s", "naive_s", "gram_floor_s", "eigh_s"]] > 0).all().all()
    assert (table["value_rel_err"] < 1e-5).all() and (table["grad_rel_err"] < 1e-5).all()


def test_stacked_network_computes_what_the_per_task_loop_computes() -> None:
    table = bench_batching(1, n_tasks=3, per_task=(2,), progress=lambda line: None)
    assert table["output_rel_diff"].iloc[0] < 1e-5
    assert table["speedup"].iloc[0] > 0


def test_summary_says_met_or_missed() -> None:
    batching = pd.DataFrame([{"tasks": 50, "images_per_task": 2, "stacked_s": 1.0, "loop_s": 6.0, "speedup": 6.0},
                             {"tasks": 50, "images_per_task": 20, "stacked_s": 1.0, "loop_s": 1.2, "speedup": 1.2}])
    text = summary_markdown({"batching": batching}, "test")
    assert "x6.0 (target >= 5: met)" in text and "x1.2 (target >= 5: MISSED)" in text


def test_unknown_section_names_the_valid_ones(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--sections", "nope", "--out", str(tmp_path)]) == 2
    assert "valid: norms, batching, training, lazy, trained, cost, loop, profile, selection" in capsys.readouterr().err


def test_selection_summary_compares_each_rule_with_the_grids_best_on_the_same_splits() -> None:
    rows = []
    # Two configurations; on search split 0 the worse one looks better, over three splits the better one does.
    for (lam, hidden), val, test in (((0.1, 8), {0: 0.30, 6: 0.40, 7: 0.40}, 0.40), ((1.0, 8), {0: 0.35, 6: 0.30, 7: 0.30}, 0.35)):
        rows += [{"method": "stl", "train_ratio": 0.1, "lam": lam, "hidden": hidden, "seed": seed, "split": "search",
                  "val_err": v, "test_err": 0.5} for seed, v in val.items()]
        rows += [{"method": "stl", "train_ratio": 0.1, "lam": lam, "hidden": hidden, "seed": seed, "split": "final",
                  "val_err": 0.3, "test_err": test + 0.01 * seed} for seed in (1, 2, 3)]
    text = "\n".join(selection_summary(pd.DataFrame(rows)))
    assert "Grid best by mean test error over 3 final splits: lambda 1, hidden 8" in text
    assert "| validation error of one search split (seed 0) | 0.1, 8 | 1 | 42.00 | +5.00 (+5.00, +5.00) |" in text
    assert "| mean validation error over 3 search splits | 1, 8 | 1 | 37.00 | +0.00 (+0.00, +0.00) |" in text


def test_the_plain_loop_does_the_work_the_lightning_loop_does(shared_data_dir: Path) -> None:
    """Both loops train the same module from the same seed on the same batches: the same weights after."""
    import torch

    from benchmark.bench_loop import _setup, lightning_loop, plain_loop

    plain_module, data = _setup(shared_data_dir, "laf", "head", hidden=8)
    assert plain_loop(plain_module, data, warmup=2, steps=3) > 0
    lightning_module, data = _setup(shared_data_dir, "laf", "head", hidden=8)
    assert lightning_loop(lightning_module, data, warmup=2, steps=3) > 0
    for (name, a), (_, b) in zip(plain_module.state_dict().items(), lightning_module.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_the_loop_summary_says_met_or_missed() -> None:
    from benchmark.bench_loop import loop_summary

    loop = pd.DataFrame([{"method": "stl", "layers": "head", "steps": 60, "plain_step_ms": 3.0, "lightning_step_ms": 3.3,
                          "ratio": 1.1},
                         {"method": "laf", "layers": "head", "steps": 60, "plain_step_ms": 3.0, "lightning_step_ms": 4.5,
                          "ratio": 1.5}])
    text = "\n".join(loop_summary(loop, None))
    assert "stl, layers head: plain 3.00 ms, Lightning 3.30 ms per step, x1.10 (met)" in text
    assert "x1.50 (MISSED)" in text


def test_time_to_leaderboard_is_projected_from_each_methods_mean_run_time(tmp_path: Path) -> None:
    import yaml

    from benchmark.bench import projected_hours
    from benchmark.sweep.plan import SweepPlan

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "default.yaml").write_text(yaml.safe_dump({
        "methods": "stl,tucker,gttn_a", "trials": 4, "search_seeds": [0], "final_seeds": [1, 2],
        "search_seeds_by_ratio": {0.1: [0, 6, 7]}, "search": {"lam": {"low": 1e-3, "high": 1.0, "log": True}},
        "protocol": {"train_ratio": [0.1, 0.5]}}))
    plan = SweepPlan.load("synthetic", plans)

    def run(method: str, ratio: float, seconds: float) -> dict:
        return {"method": method, "train_ratio": ratio, "job": "sweep", "run_s": seconds, "equal_methods": ()}

    runs = pd.DataFrame([run("stl", 0.5, 8.0), run("stl", 0.5, 12.0), run("tucker", 0.5, 30.0), run("tucker", 0.1, 2.0)])
    # gttn_a has no run yet: it counts at the mean of stl's 10 s and tucker's 30 s.
    assert projected_hours(runs, plan, 0.5, "sweep") == (12.0, 4 * (10 + 30 + 20) / 3600, "2/3 methods measured here")
    assert projected_hours(runs, plan, 0.5, "final")[:2] == (6.0, 2 * 60 / 3600)
    # At 0.1 (three search splits) tucker has its own 2 s; stl's 10 s at 0.5 scales to 2 s; gttn_a at their mean.
    assert projected_hours(runs, plan, 0.1, "sweep") == (36.0, 12 * (2 + 2 + 2) / 3600,
                                                        "1/3 methods measured here, 1 scaled from another ratio")
    runs["equal_methods"] = [(), (), ("gttn_a",), ()]  # gttn_a equals tucker here: never run, never planned
    assert projected_hours(runs, plan, 0.5, "sweep") == (8.0, 4 * 40 / 3600, "2/2 methods measured here")
    # A method searching a grid smaller than the budget plans one trial per point: LAF-TF's 2 sizes.
    (plans / "default.yaml").write_text(yaml.safe_dump({
        "methods": "stl,laf_tf", "trials": 4, "search_seeds": [0], "final_seeds": [1, 2],
        "search": {"lam": {"low": 1e-3, "high": 1.0, "log": True}, "hidden": [4, 8]}}))
    grid_plan = SweepPlan.load("synthetic", plans)
    assert projected_hours(runs, grid_plan, 0.5, "sweep")[0] == 4 + 2


def test_cost_lists_every_ratio_of_the_plan_run_yet_or_not(tmp_path: Path) -> None:
    """A board half run: the ratios without a record yet are still in the cost table, projected."""
    import yaml

    from benchmark.bench import bench_cost, board_totals
    from test_leaderboard import make_record, write

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "default.yaml").write_text(yaml.safe_dump({
        "methods": "stl,tucker", "trials": 2, "search_seeds": [0], "final_seeds": [1, 2, 3],
        "search": {"lam": {"low": 1e-3, "high": 1.0, "log": True}}, "protocol": {"train_ratio": [0.1, 0.3]}}))
    runs = tmp_path / "runs"
    # stl's records predate cpu_time_s (their wall time is their cost); tucker's ran beside other
    # work, ten times longer on the clock than on the CPU: their CPU time is what counts.
    for method, times in (("stl", {"wall_time_s": 36.0}), ("tucker", {"wall_time_s": 720.0, "cpu_time_s": 72.0})):
        for trial in range(2):
            write(runs, "w", make_record(method, 0, {"a": 0.3}, ratio=0.1, job="sweep", lam=0.01 * (trial + 1)) | times)
    table = bench_cost(runs, plans, progress=lambda line: None).set_index(["train_ratio", "job"])
    assert table.loc[(0.1, "sweep"), "runs"] == 4
    assert table.loc[(0.1, "sweep"), "cpu_hours"] == pytest.approx(2 * (36 + 72) / 3600)
    assert table.loc[(0.1, "final"), "projected_cpu_hours"] == pytest.approx(3 * (36 + 72) / 3600)
    assert table.loc[(0.3, "sweep"), "runs"] == 0
    assert table.loc[(0.3, "sweep"), "projected_cpu_hours"] == pytest.approx(2 * 3 * (36 + 72) / 3600)
    assert table.loc[(0.3, "final"), "projection_basis"] == "0/2 methods measured here, 2 scaled from another ratio"
    # run: 2 x 108 s; projected: 0.1 sweep 216 s + final 324 s, 0.3 sweep 648 s + final 972 s
    assert board_totals(table.reset_index()) == ["- synthetic (default input): 0.1 CPU-hours run, 0.6 projected for the whole board"]
