"""``mtlbench sweep``: plans, resuming, killed sweeps, failing trials, several workers, W&B offline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchmark.cli import main
from benchmark.methods import DivergedError
from benchmark.nets import NetworkSpec
from benchmark.records import read_records
from benchmark.sweep.command import prepare, progress_bar, resolve_job, summary_rows, total_progress, worker_environment
from benchmark.sweep.plan import SearchDimension, SweepJob, SweepPlan, edges, paired_variant, sweeps_dir
from benchmark.sweep.studies import MethodStudies, claim, open_storage, plan_studies, recover_interrupted, study_progress
from benchmark.sweep.worker import Interrupted, Worker

REPO = Path(__file__).resolve().parents[1]
TINY_PLAN = {
    "methods": "stl,tucker",
    "trials": 2,
    "search_seeds": [0],
    "final_seeds": [1],
    "search": {"lam": {"low": 1e-3, "high": 1.0, "log": True}, "hidden": [4, 8]},
    "protocol": {"max_epochs": 2, "dataset_params": {"n_tasks": 3, "samples_per_task": 30}},
    "pruner": {"name": "none"},
}


def write_plan(directory: Path, **changes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "default.yaml").write_text(yaml.safe_dump({**TINY_PLAN, **changes}))
    return directory


def sweep_args(tmp_path: Path, plan_dir: Path, *extra: str) -> list[str]:
    return [
        "sweep", "--sweeps-dir", str(plan_dir), "--storage", f"sqlite:///{tmp_path}/optuna.db",
        "--out", str(tmp_path / "runs"), *extra,
    ]


def load_plan(plan_dir: Path, methods: str | None = None) -> SweepPlan:
    return SweepPlan.load("synthetic", plan_dir, methods=methods)


def job_of(plan: SweepPlan, storage_url: str, out: Path) -> SweepJob:
    return SweepJob(plan, storage_url, Path("datasets"), out)


def studies_of(plan: SweepPlan, storage_url: str) -> list[MethodStudies]:
    return plan_studies(plan, open_storage(storage_url))


def records(out: Path, job: str) -> list[dict]:
    found = [json.loads(p.read_text()) for p in out.glob("*/*/*.json")]
    return [r for r in found if r["job"] == job]


# ---- plans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("plan_file", sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")))
def test_every_shipped_plan_loads(plan_file: str) -> None:
    dataset = "synthetic" if plan_file == "default" else plan_file
    plan = SweepPlan.load(dataset, REPO / "sweeps")
    assert plan.methods and plan.final_seeds
    assert plan.trials >= 1 or plan.fixed  # omniglot is a fixed plan: the paper's setting, no search
    assert not set(plan.search_seeds) & set(plan.final_seeds)
    assert plan.fixed or plan.n_startup_trials < plan.trials  # TPE guides at least the last trials


def test_a_plan_of_all_methods_runs_the_baselines_first() -> None:
    """STL and DMTL are what every row is paired with: a board cut short must have them."""
    plan = SweepPlan.load("office_caltech", REPO / "sweeps")
    assert set(plan.running_methods[:2]) == {"stl", "dmtl"}
    assert list(plan.running_methods[2:]) == sorted(plan.running_methods[2:])


@pytest.mark.parametrize("variant_file", sorted((REPO / "sweeps").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_plan_variant_loads_over_its_dataset_plan(variant_file: Path) -> None:
    base = SweepPlan.load(variant_file.parent.name, REPO / "sweeps")
    variant = SweepPlan.load(variant_file.parent.name, REPO / "sweeps", variant=variant_file.stem)
    assert variant.methods and variant.final_seeds
    assert any(variant.study_name(m, r) != base.study_name(m, r) for m in variant.methods for r in variant.train_ratios)


def test_a_plan_variant_changes_only_what_it_states(tmp_path: Path) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    (plan_dir / "synthetic").mkdir()
    (plan_dir / "synthetic" / "stronger.yaml").write_text(yaml.safe_dump(
        {"methods": ["tucker"], "method_params": {"tucker": {"per_flattening": True}}}))
    base = load_plan(plan_dir)
    variant = SweepPlan.load("synthetic", plan_dir, variant="stronger")
    assert variant.methods == ("tucker",) and variant.protocol == base.protocol and variant.search == base.search
    assert variant.config("tucker", 0.5, seed=1).method_params == {"per_flattening": True}
    assert variant.study_name("tucker", 0.5) != base.study_name("tucker", 0.5)  # its own study, never mixed
    with pytest.raises(ValueError, match="no plan 'strong' for synthetic.*variants of synthetic: stronger"):
        SweepPlan.load("synthetic", plan_dir, variant="strong")
    # paired_with names another variant the leaderboard pairs this one with; it changes no study.
    (plan_dir / "synthetic" / "longer.yaml").write_text(yaml.safe_dump({"methods": ["tucker"], "paired_with": "stronger"}))
    longer = SweepPlan.load("synthetic", plan_dir, variant="longer")
    assert longer.study_name("tucker", 0.5) == base.study_name("tucker", 0.5)
    assert paired_variant("synthetic", "longer", plan_dir) == "stronger" and paired_variant("synthetic", "stronger", plan_dir) is None
    (plan_dir / "synthetic" / "typo.yaml").write_text(yaml.safe_dump({"paired_with": "strongr"}))
    with pytest.raises(ValueError, match="paired_with 'strongr' is not another plan of synthetic; variants of synthetic: "
                                         "longer, stronger, typo"):
        SweepPlan.load("synthetic", plan_dir, variant="typo")
    with pytest.raises(ValueError, match="paired_with belongs to a plan variant"):
        load_plan(write_plan(tmp_path / "main_plan", paired_with="stronger"))


def test_a_plan_variant_writes_its_records_apart(tmp_path: Path, monkeypatch, capsys) -> None:
    """The leaderboard keeps one configuration per method: a variant's records get their own table."""
    plan_dir = write_plan(tmp_path / "plans", methods="stl", trials=1)
    (plan_dir / "synthetic").mkdir()
    (plan_dir / "synthetic" / "wider.yaml").write_text(yaml.safe_dump({"search": {"hidden": [12]}}))
    monkeypatch.chdir(tmp_path)
    args = ["sweep", "--sweeps-dir", str(plan_dir), "--storage", f"sqlite:///{tmp_path}/optuna.db", "--plan", "wider"]
    assert main(args) == 0
    finals = records(tmp_path / "results" / "variants" / "synthetic_wider", "final")
    assert [r["config"]["hidden"] for r in finals] == [12]
    assert not (tmp_path / "results" / "runs").exists()
    # Spawned workers (WORKERS=2) read the resolved job: the same variant, writing to the same place.
    job = resolve_job("synthetic", Path("datasets"), sweeps_dir=plan_dir, variant="wider")
    again = SweepJob.read(job.write(tmp_path / "job.json"))
    assert again == job and again.out_dir == Path("results/variants/synthetic_wider")
    # A variant's first sweep has no run times of its own: it projects from the main board's.
    (plan_dir / "synthetic" / "narrower.yaml").write_text(yaml.safe_dump({"search": {"hidden": [2]}}))
    assert main(args[:-2]) == 0 and (tmp_path / "results" / "runs").is_dir()  # the main board
    capsys.readouterr()
    assert main([*args[:-2], "--plan", "narrower"]) == 0
    assert "(studies: 1 from the method's runs in other studies)" in capsys.readouterr().out


def test_the_resolved_plan_travels_to_workers_whole(tmp_path: Path) -> None:
    """Workers once rebuilt the plan from flags and dropped --features: they ran other studies.
    Now the job file holds the plan as resolved, and reading it gives the same studies."""
    protocol = {"dataset_params": {"features": "pool5", "backbone": "resnet50"}, "train_ratio": [0.1, 0.5]}
    plan = SweepPlan.load("office_caltech", REPO / "sweeps", methods="stl,tucker,tr,prod", protocol=protocol)
    plan = plan.with_coincidences(NetworkSpec((7, 7, 512), (10, 10, 10, 10)))
    job = SweepJob(plan, "sqlite:///x.db", tmp_path / "data", tmp_path / "runs")
    again = SweepJob.read(job.write(tmp_path / "job.json"))
    assert again == job
    assert [again.plan.study_name(m, r) for m in plan.running_methods for r in plan.train_ratios] == [
        plan.study_name(m, r) for m in plan.running_methods for r in plan.train_ratios]
    assert again.plan.search_space("prod") == plan.search_space("prod") and again.plan.equal_to == plan.equal_to


def _office31_fc7(data_dir: Path, per_class: int = 4) -> None:
    """A generated Office-31 image folder and its fc7 features (random VGG-19 weights, 32 px)."""
    from PIL import Image

    from benchmark.data import dataset_source
    from benchmark.data.features import Extraction

    rng = np.random.default_rng(0)
    source = dataset_source("office31")
    for domain in ("amazon", "dslr", "webcam"):
        for name in source.classes:
            folder = data_dir / "office31" / domain / "images" / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                Image.fromarray(rng.integers(0, 255, size=(36, 36, 3), dtype=np.uint8)).save(folder / f"f{k}.jpg")
    Extraction(source, data_dir, "vgg19", "fc7", "random", 32, 64, 0).run(progress=False, log=lambda line: None)


@pytest.mark.slow
def test_spawned_workers_of_a_features_sweep_run_the_parents_studies(tmp_path: Path) -> None:
    """`sweep --dataset office31 --features fc7 --workers 2`: every trial and record in the storage
    belongs to a study the parent prepared, and the trials ran in the spawned workers. Whether both
    workers took some of these 3 short trials depends on when each started (under load one can take
    all three), so that is checked where the trials are many (:func:`_check_two_workers`)."""
    data_dir = tmp_path / "data"
    _office31_fc7(data_dir)
    plan_dir = write_plan(tmp_path / "plans", methods="stl", trials=3, final_seeds=[1],
                          protocol={"max_epochs": 2, "train_ratio": 0.6, "val_ratio": 0.4})
    args = [*sweep_args(tmp_path, plan_dir, "--dataset", "office31", "--features", "fc7", "--workers", "2"),
            "--data-dir", str(data_dir)]
    process = _mtlbench(args, cwd=REPO)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    parent = resolve_job("office31", data_dir, tmp_path / "runs", f"sqlite:///{tmp_path}/optuna.db", plan_dir,
                         features="fc7")
    (studies,) = plan_studies(parent.plan, open_storage(parent.storage_url))
    names = set(optuna.get_all_study_names(open_storage(parent.storage_url)))
    assert names == {studies.search_name, studies.final_study(studies.best_trial(), create=False).study_name}
    trials = studies.search_study().get_trials(states=(TrialState.COMPLETE,))
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(trials) == 3 and 1 <= len(pids) <= 2 and process.pid not in pids
    found = read_records(tmp_path / "runs", ("sweep", "final")).runs
    assert len(found) == 4 and {r.features for r in found} == {"fc7"}
    assert {r.study.split("/final/")[0] for r in found} == {studies.search_name}


def test_default_plan_follows_the_spec_search_space() -> None:
    plan = SweepPlan.load("office_caltech", REPO / "sweeps")
    (lam,) = [d for d in plan.search if d.name == "lam"]
    (hidden,) = [d for d in plan.search if d.name == "hidden"]
    assert (lam.low, lam.high, lam.log) == (1e-4, 10.0, True)
    assert hidden.choices == (128, 256, 512, 1024)
    assert sweeps_dir().joinpath("default.yaml").exists()


def test_bad_plans_say_what_is_valid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key.*valid: methods"):
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "default.yaml").write_text("trails: 3\n")
        load_plan(tmp_path / "a")
    with pytest.raises(ValueError, match="unknown method.*valid: all, dmtl"):
        load_plan(write_plan(tmp_path / "b"), methods="stl,nope")
    with pytest.raises(ValueError, match="protocol cannot fix.*hidden"):
        load_plan(write_plan(tmp_path / "c", protocol={"hidden": 8}))
    with pytest.raises(ValueError, match="val_ratio must be > 0"):
        load_plan(write_plan(tmp_path / "d", protocol={"val_ratio": 0}))
    with pytest.raises(ValueError, match="differ from the search seed"):
        load_plan(write_plan(tmp_path / "e", final_seeds=[0, 1]))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        SweepPlan.load("nope", write_plan(tmp_path / "f"))
    with pytest.raises(ValueError, match=r"method_protocol.stl cannot set \['lam'\]"):
        load_plan(write_plan(tmp_path / "g", method_protocol={"stl": {"lam": 0.0}}))  # lam is searched
    with pytest.raises(ValueError, match="method_protocol: unknown method.*valid: dmtl"):
        load_plan(write_plan(tmp_path / "h", method_protocol={"stl_": {"max_epochs": 1}}))
    with pytest.raises(ValueError, match="unknown config key.*epochs"):
        load_plan(write_plan(tmp_path / "i", method_protocol={"stl": {"epochs": 1}}))


def test_study_name_changes_with_the_protocol_not_with_the_budget(tmp_path: Path) -> None:
    base = load_plan(write_plan(tmp_path / "a"))
    more_trials = load_plan(write_plan(tmp_path / "b", trials=7, final_seeds=[3, 4]))
    longer = load_plan(write_plan(tmp_path / "c", protocol={**TINY_PLAN["protocol"], "max_epochs": 3}))
    assert base.study_name("stl", 0.5) == more_trials.study_name("stl", 0.5)
    assert base.study_name("stl", 0.5) != longer.study_name("stl", 0.5)
    assert base.study_name("stl", 0.5).startswith("synthetic/stl/r0.5/")


def test_unknown_dataset_and_missing_data_fail_before_any_trial(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    assert main(sweep_args(tmp_path, plan_dir, "--dataset", "nope")) == 2
    assert "valid: domainnet, imageclef, office31, office_caltech" in capsys.readouterr().err
    assert main(sweep_args(tmp_path, plan_dir, "--dataset", "omniglot", "--data-dir", str(tmp_path))) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()


# ---- running sweeps in this process --------------------------------------------------------


def test_sweep_runs_search_and_finals_and_continues_when_run_again(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    table = capsys.readouterr().out
    assert "stl" in table and "tucker" in table and "search ok/pruned/failed" in table
    assert "time left: 6 runs; no recorded run of these methods to project their time from" in table
    plan = load_plan(plan_dir)
    url = f"sqlite:///{tmp_path}/optuna.db"
    first = {s.method: s.search_study().get_trials() for s in studies_of(plan, url)}
    assert all(len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials) for trials in first.values())
    assert len(records(tmp_path / "runs", "sweep")) == 4 and len(records(tmp_path / "runs", "final")) == 2

    # A resumed sweep's bar starts from the runs already settled, so its rate and time left are its own.
    bar = progress_bar(plan.dataset, studies_of(plan, url))
    assert bar.initial == bar.n == bar.total == 6 and bar.format_dict["rate"] is None
    assert "?run/s" in bar.format_meter(**{**bar.format_dict, "elapsed": 60.0})
    bar.close()

    # Run again: nothing is left to do, nothing is re-run.
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    assert len(records(tmp_path / "runs", "sweep")) == 4 and len(records(tmp_path / "runs", "final")) == 2
    assert "time left: none, every run is settled" in capsys.readouterr().out

    # --status says where each study stands and what is left, and runs nothing.
    assert main(sweep_args(tmp_path, plan_dir, "--trials", "3", "--final-seeds", "1,2", "--status")) == 0
    status = capsys.readouterr().out
    assert "time left: 4 runs" in status
    assert re.search(r"\nstl +0\.5 .* 1/2 +2/0/0 of 3", status) and re.search(r"\ntucker +0\.5 .* 1/2 +2/0/0 of 3", status)
    assert len(records(tmp_path / "runs", "sweep")) == 4 and len(records(tmp_path / "runs", "final")) == 2

    # Ask for one more trial and one more final seed: the same studies continue, and the time
    # they need is projected from the runs recorded so far (1 trial + 1 final run per method).
    assert main(sweep_args(tmp_path, plan_dir, "--trials", "3", "--final-seeds", "1,2")) == 0
    assert re.search(r"time left: 4 runs, about [0-9.]+ CPU-hours \(about [0-9.]+ h with 1 worker\(s\)\), projected "
                     r"from the records' run times \(studies: 2 from their own runs\)\n", capsys.readouterr().out)
    for studies in studies_of(load_plan(plan_dir), url):
        trials = studies.search_study().get_trials()
        assert [t.number for t in trials] == [0, 1, 2]
        assert [(t.params, t.value) for t in trials[:2]] == [(t.params, t.value) for t in first[studies.method]]
        finals = studies.final_study(studies.best_trial()).get_trials(states=(TrialState.COMPLETE,))
        assert sorted(t.user_attrs["seed"] for t in finals) in ([1, 2], [2])  # [2]: a new best, new finals
    sweep_records = records(tmp_path / "runs", "sweep")
    assert len(sweep_records) == 6
    assert len({(r["study"], r["trial"]) for r in sweep_records}) == 6  # each trial once
    final = records(tmp_path / "runs", "final")[0]
    assert final["config"]["seed"] in (1, 2) and final["selection"] == "best_val_acc_mean, ties to the later epoch"


def test_a_run_time_is_measured_at_its_ratio_or_scaled_from_the_largest_one_run() -> None:
    """An epoch passes over the largest task, so a run's steps grow with the train ratio."""
    from benchmark.sweep.cost import TimeLeft, mean_run_seconds

    runs = [(0.5, 100.0), (0.5, 200.0), (0.3, 10.0)]
    assert mean_run_seconds(runs, 0.5) == (150.0, True)
    assert mean_run_seconds(runs, 0.3) == (10.0, True)
    assert mean_run_seconds(runs, 0.1) == pytest.approx((30.0, False))  # 150 s x 0.1 / 0.5
    assert mean_run_seconds([], 0.1) is None
    # The announced line says what each study's time came from.
    assert TimeLeft(runs=30, cpu_hours=3.0, own=1, other=2, guessed=3).describe(2) == (
        "time left: 30 runs, about 3.0 CPU-hours (about 1.5 h with 2 worker(s)), projected from the records' run times "
        "(studies: 1 from their own runs, 2 from the method's runs in other studies, 3 at the others' mean)")


def test_a_run_time_follows_the_hidden_sizes_the_study_will_use() -> None:
    """A plan that widens the hidden range is projected at the new sizes, on the power law the
    recorded sizes follow, not at the old sizes' mean."""
    from benchmark.sweep.cost import expected_run_seconds

    runs = [(0.5, 128, 100.0), (0.5, 256, 400.0), (0.5, 256, 400.0), (0.3, 128, 50.0)]
    assert expected_run_seconds(runs, 0.5, None) == (300.0, True)  # no sizes given: the runs as they are
    assert expected_run_seconds(runs, 0.5, [128, 256]) == (300.0, True)  # sizes all run: as often as they were
    # 128 -> 256 took 4x: seconds ~ hidden^2, so 512 and 1024 units cost 1600 and 6400 s, each size as often.
    assert expected_run_seconds(runs, 0.5, [512, 1024]) == pytest.approx((4000.0, True))
    assert expected_run_seconds(runs, 0.5, [64, 128, 256, 512]) == pytest.approx(((25 + 100 + 400 + 1600) / 4, True))
    assert expected_run_seconds(runs, 0.3, [128]) == pytest.approx((50.0, True))
    assert expected_run_seconds(runs, 0.1, [128]) == pytest.approx((60.0, False))  # 300 s x 0.1 / 0.5
    assert expected_run_seconds(runs, 0.1, [512]) == pytest.approx((320.0, False))  # 1600 s x 0.1 / 0.5
    # The exponent is kept in [0, 3]; with one size measured there is nothing to scale by.
    steep = [(0.5, 128, 1.0), (0.5, 256, 100.0)]
    assert expected_run_seconds(steep, 0.5, [512])[0] == pytest.approx(100.0 * 8)
    assert expected_run_seconds([(0.5, 128, 100.0)], 0.5, [1024]) == (100.0, True)
    assert expected_run_seconds([], 0.5, [128]) is None


def _search_trials(plan: SweepPlan, url: str) -> dict[str, list[tuple]]:
    return {s.method: [(t.number, t.state, t.params, t.value) for t in s.search_study().get_trials()]
            for s in studies_of(plan, url)}


def test_a_lost_storage_is_rebuilt_from_the_records(tmp_path: Path, capsys) -> None:
    """A fresh checkout or a deleted database: the records rebuild the studies, nothing is re-run
    but what left no record, and the finals keep their names (the best trial keeps its number)."""
    plan_dir = write_plan(tmp_path / "plans", trials=3, final_seeds=[1, 2, 3])
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    plan, url, runs = load_plan(plan_dir), f"sqlite:///{tmp_path}/optuna.db", tmp_path / "runs"
    before = _search_trials(plan, url)
    best = {s.method: s.best_trial().number for s in studies_of(plan, url)}
    reported = {s.method: (s.best_trial().number, s.best_trial().intermediate_values) for s in studies_of(plan, url)}
    # Lose the storage, a final run cut off mid-way (seed 2 of stl) and a search trial of tucker.
    (tmp_path / "optuna.db").unlink()
    cut_off = next(r for r in records(runs, "final") if (r["method"], r["seed"]) == ("stl", 2))
    lost_trial = next(n for n, *_ in before["tucker"] if n != best["tucker"])
    lost = next(r for r in records(runs, "sweep") if r["method"] == "tucker" and r["trial"] == lost_trial)
    for record in (cut_off, lost):
        (runs / "synthetic" / record["method"] / f"{record['run_id']}.json").unlink()
    capsys.readouterr()

    assert main(sweep_args(tmp_path, plan_dir)) == 0
    out = capsys.readouterr().out
    assert "restored synthetic/stl/" in out and "(seeds [2] queued again)" in out
    assert "1 settled without a record" in out  # tucker's lost trial: its search had finished
    after = _search_trials(plan, url)
    assert after["stl"] == before["stl"]
    assert [t for t in after["tucker"] if t[0] != lost_trial] == [t for t in before["tucker"] if t[0] != lost_trial]
    (restored_lost,) = [t for t in studies_of(plan, url)[1].search_study().get_trials() if t.number == lost_trial]
    assert restored_lost.state == TrialState.FAIL and "left none" in restored_lost.user_attrs["fail_reason"]
    assert {s.method: s.best_trial().number for s in studies_of(plan, url)} == best
    for studies in studies_of(plan, url):  # the reported epochs, as the pruner will read them
        kept = studies.search_study().get_trials()[reported[studies.method][0]]
        assert kept.intermediate_values == pytest.approx(reported[studies.method][1], abs=1e-6)
    # Only the cut-off final ran again; every method has each final seed once.
    assert len(records(runs, "sweep")) == 5
    finals = sorted((r["method"], r["seed"]) for r in records(runs, "final"))
    assert finals == [("stl", 1), ("stl", 2), ("stl", 3), ("tucker", 1), ("tucker", 2), ("tucker", 3)]
    assert "restored" not in capsys.readouterr().out
    assert main(sweep_args(tmp_path, plan_dir)) == 0 and "restored" not in capsys.readouterr().out  # once


@pytest.mark.parametrize("settled", [False, True])
def test_a_restored_search_without_finals_reruns_what_left_no_record_unless_told(tmp_path: Path, settled: bool) -> None:
    plan_dir = write_plan(tmp_path / "plans", trials=3, methods="stl")
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    runs = tmp_path / "runs"
    searched = sorted(records(runs, "sweep"), key=lambda r: r["trial"])
    # The storage is lost before any final started, and trial 1 left no record (pruned, say).
    (tmp_path / "optuna.db").unlink()
    for record in [*records(runs, "final"), searched[1]]:
        (runs / "synthetic" / "stl" / f"{record['run_id']}.json").unlink()

    assert main(sweep_args(tmp_path, plan_dir, *(["--searches-settled"] if settled else []))) == 0
    (studies,) = studies_of(load_plan(plan_dir), f"sqlite:///{tmp_path}/optuna.db")
    trials = studies.search_study().get_trials()
    assert [(t.params, t.value) for t in trials if t.number in (0, 2)] == [
        ({"lam": r["config"]["lam"], "hidden": r["config"]["hidden"]}, 1 - r["val_acc_mean"]) for r in (searched[0], searched[2])]
    assert ("skipped" in trials[1].user_attrs) != settled  # numbering kept; counted only when settled
    assert len(records(runs, "sweep")) == (2 if settled else 3)  # the lost position ran again, or not
    assert study_progress(studies.search_study(), 3).done and len(records(runs, "final")) == 1


def test_a_fixed_plan_runs_the_protocol_once_per_seed_without_validation(tmp_path: Path, capsys) -> None:
    """search: null, trials: 0 (a paper's fixed setting): finals only, even with no validation part."""
    plan_dir = write_plan(tmp_path / "plans", search=None, trials=0, final_seeds=[1, 2],
                          protocol={**TINY_PLAN["protocol"], "val_ratio": 0.0, "lam": 0.05, "hidden": 6},
                          method_params={"tucker": {"per_flattening": True}},
                          method_protocol={"stl": {"lam": 0.0}})  # a paper's baseline without penalty
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    table = capsys.readouterr().out
    assert "0.05" in table and "      6" in table  # the protocol's lambda and hidden, not a search's
    finals = records(tmp_path / "runs", "final")
    assert sorted((r["method"], r["seed"]) for r in finals) == [("stl", 1), ("stl", 2), ("tucker", 1), ("tucker", 2)]
    assert all(r["selection"] == "fixed_budget_last_epoch" for r in finals)
    assert sorted((r["method"], r["config"]["lam"]) for r in finals) == [("stl", 0.0)] * 2 + [("tucker", 0.05)] * 2
    assert [r["config"]["method_params"] for r in finals if r["method"] == "tucker"] == [{"per_flattening": True}] * 2
    assert records(tmp_path / "runs", "sweep") == []
    (tmp_path / "optuna.db").unlink()  # run again with the storage lost: the records rebuild it
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    assert "finals fixed: seeds [1, 2]" in capsys.readouterr().out
    assert len(records(tmp_path / "runs", "final")) == 4  # nothing re-run
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "board"), "--no-plots"]) == 0
    assert "tucker" in (tmp_path / "board" / "synthetic.csv").read_text()
    with pytest.raises(ValueError, match="trials: 0 goes with search: null"):
        SweepPlan.load("synthetic", write_plan(tmp_path / "bad", trials=0))


def test_a_failing_trial_is_recorded_with_its_reason_and_the_others_finish(tmp_path: Path, monkeypatch) -> None:
    plan = load_plan(write_plan(tmp_path / "plans", trials=3, methods="tucker"))
    url = f"sqlite:///{tmp_path}/optuna.db"
    original = Worker._train
    failures = {1: ValueError("boom in trial 1"), 2: DivergedError("loss is nan at epoch 0")}

    def flaky_train(self, config, trial, job, callbacks, studies, **fields):
        if job == "sweep" and trial.number in failures:
            raise failures[trial.number]
        return original(self, config, trial, job, callbacks, studies, **fields)

    monkeypatch.setattr(Worker, "_train", flaky_train)
    lines: list[str] = []
    Worker(job_of(plan, url, tmp_path / "runs"), report=lines.append).run()
    (studies,) = studies_of(plan, url)
    trials = studies.search_study().get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[1].user_attrs["fail_reason"] == "ValueError: boom in trial 1"
    assert trials[2].user_attrs["fail_reason"].startswith("DivergedError: loss is nan")
    assert any("FAILED, ValueError: boom" in line for line in lines)
    assert study_progress(studies.search_study(), 3).done
    # The finals still run, with the one configuration that completed.
    finals = studies.final_study(studies.best_trial()).get_trials(states=(TrialState.COMPLETE,))
    assert len(finals) == 1 and studies.best_trial().number == 0
    # Each failed trial left a record of what it ran and why it failed; the leaderboard skips them.
    failed = sorted(read_records(tmp_path / "runs", ("sweep",), states=("failed",)).runs, key=lambda r: r.trial)
    assert [(r.trial, r.reason[:10]) for r in failed] == [(1, "ValueError"), (2, "DivergedEr")]
    assert not read_records(tmp_path / "runs", ("sweep", "final")).broken
    # So a storage rebuilt from the records has the same trials, failures included.
    (tmp_path / "optuna.db").unlink()
    (restored,) = prepare(job_of(plan, url, tmp_path / "runs"), report=lambda line: None)
    assert [(t.state, t.params, t.user_attrs.get("fail_reason")) for t in restored.search_study().get_trials()] == [
        (t.state, t.params, t.user_attrs.get("fail_reason")) for t in trials]


def test_lightnings_own_sigterm_stop_ends_a_worker_as_interrupted(tmp_path: Path, monkeypatch) -> None:
    """Lightning defers SIGTERM to its loops' stop points too and raises SIGTERMException there (a
    SystemExit: left alone, the sweep would exit 0 without a word); the worker takes it as the same
    stop, its trial queued again and Interrupted raised (exit 130)."""
    import benchmark.train
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    plan = load_plan(write_plan(tmp_path / "plans", trials=3, methods="stl"))
    url = f"sqlite:///{tmp_path}/optuna.db"
    original, calls = benchmark.train.train, []

    def stopped_in_the_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SIGTERMException
        return original(*args, **kwargs)

    monkeypatch.setattr(benchmark.train, "train", stopped_in_the_second_run)
    with pytest.raises(Interrupted, match="SIGTERM"):
        Worker(job_of(plan, url, tmp_path / "runs"), report=lambda line: None).run()
    trials = studies_of(plan, url)[0].search_study().get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].user_attrs["retry_of"] == 1


def test_a_worker_says_what_starts_once_its_trial_is_running(tmp_path: Path) -> None:
    """The single-process sweep redraws its bar when a run starts (``now=...``, ``running=1``),
    not only when it ends: an Omniglot run takes half an hour."""
    plan = load_plan(write_plan(tmp_path / "plans", methods="stl"))
    url = f"sqlite:///{tmp_path}/optuna.db"
    studies = studies_of(plan, url)
    started: list[tuple[str, int]] = []
    Worker(job_of(plan, url, tmp_path / "runs"), report=lambda line: None,
           on_start=lambda what: started.append((what, total_progress(studies)[2]))).run()
    assert started == [("stl r0.5 trial", 1)] * plan.trials + [(f"stl r0.5 final seed {s}", 1) for s in plan.final_seeds]


def test_pruned_trials_are_pruned_not_failed(tmp_path: Path) -> None:
    plan = load_plan(write_plan(
        tmp_path / "plans", trials=4, methods="stl",
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        protocol={**TINY_PLAN["protocol"], "max_epochs": 6, "dataset_params": {"n_tasks": 3, "samples_per_task": 120}},
        search={"lam": {"low": 1e-3, "high": 1.0, "log": True}, "lr": {"low": 1e-6, "high": 1e-1, "log": True}},
    ))
    url = f"sqlite:///{tmp_path}/optuna.db"
    (studies,) = studies_of(plan, url)
    for lr in (3e-2, 1e-2, 1e-6, 1e-6):  # two that learn, then two that learn nothing: not left to the sampler
        studies.search_study().enqueue_trial({"lam": 0.01, "lr": lr})
    Worker(job_of(plan, url, tmp_path / "runs"), report=lambda line: None).run()
    trials = studies.search_study().get_trials()
    assert [t.state for t in trials][2:] == [TrialState.PRUNED] * 2  # lr 1e-6 learns nothing
    assert all(t.intermediate_values for t in trials)  # every trial reported its epochs
    assert study_progress(studies.search_study(), 4).settled == 4
    pruned = read_records(tmp_path / "runs", ("sweep",), states=("pruned",)).runs
    assert sorted(r.trial for r in pruned) == [t.number for t in trials if t.state == TrialState.PRUNED]
    assert all(r.machine and r.machine["cpu_capability"] and r.torch_threads >= 1 for r in pruned)  # where they ran
    # A storage rebuilt from the records: the same states, parameters and reported errors.
    (tmp_path / "optuna.db").unlink()
    (restored,) = prepare(job_of(plan, url, tmp_path / "runs"), report=lambda line: None)
    again = restored.search_study().get_trials()
    assert [(t.state, t.params) for t in again] == [(t.state, t.params) for t in trials]
    for before, after in zip(trials, again):
        assert after.intermediate_values == pytest.approx(before.intermediate_values, abs=1e-6)


def test_offline_wandb_run_holds_config_and_metrics(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    # Long enough that the selected epoch is rarely the last one.
    plan_dir = write_plan(tmp_path / "plans", trials=1, methods="gttn_var",
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 8})
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    run_dirs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2  # one search trial, one final run
    wandb_cli = Path(sys.executable).with_name("wandb")
    summaries = [
        json.loads(subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(d)],
                                  capture_output=True, text=True, check=True).stdout)
        for d in run_dirs
    ]
    by_job = {s["config"]["seed"]: s for s in summaries}
    search, final = by_job[0], by_job[1]
    assert search["config"]["method"] == "gttn_var" and "lam" in search["config"]
    assert search["state"] == "finished" and search["summary"]["status"] == "finished"
    # Names say what ran; tags filter by ratio, job, layering and protocol.
    assert (search["name"], final["name"]) == ("synthetic/gttn_var/r0.5/sweep/s0/t0", "synthetic/gttn_var/r0.5/final/s1")
    assert {"synthetic", "gttn_var", "ratio:0.5", "job:final", "layers:head", "protocol:2"} <= set(final["tags"])
    for summary in (search, final):
        assert 0 <= summary["summary"]["val/acc_mean"] <= 1
        assert "train/penalty" in summary["summary"] and "val/task0/acc" in summary["summary"]
        assert any(key.startswith("alpha/layer0/") for key in summary["summary"])  # GTTN weights
    record = records(tmp_path / "runs", "final")[0]
    assert final["summary"]["test/err_mean"] == pytest.approx(record["test_err_mean"])
    # Every validation figure of the summary is the selected epoch's, not the last epoch's.
    for summary in (search, final):
        values = summary["summary"]
        assert values["val/err_mean"] == pytest.approx(1 - values["val/acc_mean"])
        assert values["val/acc"] == pytest.approx(values["val/acc_mean"])
        assert values["val/task1/err"] == pytest.approx(1 - values["val/task1/acc"])
    assert final["summary"]["val/acc_mean"] == pytest.approx(record["val_acc_history"][record["selected_epoch"]], abs=1e-6)


def test_an_interrupted_wandb_run_is_tagged_not_failed(tmp_path: Path, monkeypatch) -> None:
    from benchmark.sweep.worker import Interrupted
    from benchmark.tracking import Tracking, wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for error in (Interrupted("SIGTERM"), ValueError("boom")):
        with pytest.raises(type(error)), wandb_run(Tracking(name=type(error).__name__), {}, ["t"]):
            raise error
    wandb_cli = Path(sys.executable).with_name("wandb")
    runs = {}
    for directory in (tmp_path / "wandb").glob("offline-run-*"):
        inspected = json.loads(subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(directory)],
                                              capture_output=True, text=True, check=True).stdout)
        runs[inspected["name"]] = inspected
    interrupted, failed = runs["Interrupted"], runs["ValueError"]
    assert interrupted["exit_code"] == 0 and "interrupted" in interrupted["tags"]
    assert interrupted["summary"]["status"] == "interrupted: queued again"
    assert failed["exit_code"] == 1 and failed["summary"]["status"] == "ValueError"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_stops_a_worker_at_its_next_stop_point_not_where_it_lands(stop: signal.Signals, monkeypatch) -> None:
    """A worker's signal is raised at its stop points, never inside the code it lands in (a
    library holding a lock that the trial's re-queue needs next); the same stop arriving twice at
    once is still deferred, a second one later raises at once."""
    from benchmark.sweep.worker import interrupts_deferred, stop_point

    before = signal.getsignal(stop)
    with interrupts_deferred():
        stop_point()  # nothing asked yet
        os.kill(os.getpid(), stop)
        time.sleep(0.05)  # the handler has run here, and raised nothing
        with pytest.raises(Interrupted, match=stop.name):
            stop_point()
        os.kill(os.getpid(), signal.SIGTERM)  # the same stop again at once (the parent forwarding it): noted
        time.sleep(0.05)
        monkeypatch.setattr("benchmark.sweep.worker.REPEAT_STOP_S", 0.0)
        with pytest.raises(Interrupted, match=stop.name):
            os.kill(os.getpid(), stop)  # asked again later (a second Ctrl-C): at once
            time.sleep(0.05)
    assert signal.getsignal(stop) is before
    stop_point()  # the request ends with the worker: a later one starts clean


def test_storage_and_config_errors_name_what_is_wrong(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    assert main([*sweep_args(tmp_path, plan_dir)[:3], "--storage", "foo://x", "--out", str(tmp_path / "runs")]) == 2
    assert "unknown scheme 'foo'; give sqlite:///PATH" in capsys.readouterr().err
    sqlite_file = tmp_path / "optuna.db"
    optuna.create_study(storage=f"sqlite:///{sqlite_file}", study_name="x")
    assert main([*sweep_args(tmp_path, plan_dir)[:3], "--storage", str(sqlite_file), "--out", str(tmp_path / "runs")]) == 2
    assert f"give it as sqlite:///{sqlite_file}" in capsys.readouterr().err
    assert main(["train", "--lam", "-1", "--out", str(tmp_path / "runs")]) == 2
    assert "lam must be >= 0, got -1.0" in capsys.readouterr().err


# ---- real processes: killed sweeps, several workers, PostgreSQL -----------------------------


def _mtlbench(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    # PYTHONFAULTHANDLER: a process that hangs is sent SIGABRT and prints where each thread was.
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _sweep_stopped_mid_trial(tmp_path: Path, stop: signal.Signals) -> tuple[SweepPlan, str, subprocess.Popen]:
    """A one-worker sweep of STL, sent ``stop`` while it trains its second trial; the plan, the
    storage URL and the exited process. A sweep that does not exit within 120 s fails the test."""
    # Long enough trials (a few seconds) that the signal lands inside one.
    plan_dir = write_plan(tmp_path / "plans", trials=3, methods="stl",
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 150})
    plan = load_plan(plan_dir)
    url = f"sqlite:///{tmp_path}/optuna.db"
    process = _mtlbench(sweep_args(tmp_path, plan_dir), cwd=REPO)

    def one_done_one_running() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before it could be stopped:\n{process.stdout.read()}")
        try:
            study = optuna.load_study(study_name=plan.study_name("stl", 0.5), storage=url)
        except Exception:  # the storage or the study is still being created
            return False
        trials = study.get_trials(deepcopy=False)
        # Running with every parameter drawn: training, not still inside TPE's sampling.
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.params) == len(plan.search)]
        return sum(t.state == TrialState.COMPLETE for t in trials) >= 1 and bool(running)

    _wait_for(one_done_one_running, 300, "a finished trial and a running one")
    time.sleep(1.0)  # inside Lightning's fit, whose own SIGTERM handler is installed then
    process.send_signal(stop)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # the faulthandler's tracebacks say where it hangs
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
        raise AssertionError(f"the sweep did not exit within 120 s of {stop.name}:\n{output}") from None
    return plan, url, process


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_sweep_stopped_mid_trial_queues_its_trial_again_and_exits(tmp_path: Path, stop: signal.Signals) -> None:
    # The signal lands inside Lightning's fit, where Lightning's SIGTERM handler runs before ours:
    # the worker must still exit, with the trial re-queued and nothing left RUNNING.
    plan, url, process = _sweep_stopped_mid_trial(tmp_path, stop)
    output = process.stdout.read()
    assert process.returncode == 130, output
    assert "run the same command to continue" in output
    trials = studies_of(plan, url)[0].search_study().get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    (stopped,) = [t for t in trials if t.state == TrialState.FAIL]
    (queued,) = [t for t in trials if t.state == TrialState.WAITING]
    assert queued.user_attrs["retry_of"] == stopped.number
    assert queued.system_attrs["fixed_params"] == stopped.params  # the same point, run again


@pytest.mark.slow
def test_sweep_killed_mid_trial_continues_without_losing_or_repeating_trials(tmp_path: Path) -> None:
    # SIGKILL: no handler runs, so the running trial is left RUNNING for the next start to re-queue.
    plan, url, process = _sweep_stopped_mid_trial(tmp_path, signal.SIGKILL)
    plan_dir = tmp_path / "plans"
    before = {t.number: (t.state, t.params, t.value) for t in studies_of(plan, url)[0].search_study().get_trials()}
    completed_before = {n: v for n, v in before.items() if v[0] == TrialState.COMPLETE}
    killed = [n for n, v in before.items() if v[0] == TrialState.RUNNING]
    assert len(killed) == 1

    rerun = _mtlbench(sweep_args(tmp_path, plan_dir), cwd=REPO)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    (studies,) = studies_of(plan, url)
    trials = {t.number: t for t in studies.search_study().get_trials()}
    for number, (state, params, value) in completed_before.items():  # nothing finished is lost
        assert (trials[number].state, trials[number].params, trials[number].value) == (state, params, value)
    assert trials[killed[0]].state == TrialState.FAIL  # the killed one, failed and run again
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed[0]]
    assert retry.state == TrialState.COMPLETE and retry.params == before[killed[0]][1]
    progress = study_progress(studies.search_study(), 3)
    assert progress.done and progress.complete == 3
    sweep_records = records(tmp_path / "runs", "sweep")
    assert sorted(r["trial"] for r in sweep_records) == sorted(  # one record per completed trial
        t.number for t in trials.values() if t.state == TrialState.COMPLETE)
    assert len(records(tmp_path / "runs", "final")) == 1


def _check_two_workers(tmp_path: Path, plan: SweepPlan, url: str) -> None:
    workers: set[int] = set()
    for studies in studies_of(plan, url):
        trials = studies.search_study().get_trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == plan.trials, [(t.number, t.state, t.user_attrs) for t in trials]
        skipped = [t for t in trials if "skipped" in t.user_attrs]
        assert len(trials) == plan.trials + len(skipped)
        assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == plan.trials  # no duplicates
        workers |= {t.user_attrs["worker"]["pid"] for t in complete}
        finals = studies.final_study(studies.best_trial()).get_trials(states=(TrialState.COMPLETE,))
        assert sorted(t.user_attrs["seed"] for t in finals) == list(plan.final_seeds)
    # Both took trials (which study each one's first trial lands in depends on when it started).
    assert len(workers) == 2
    sweep_records = records(tmp_path / "runs", "sweep")
    assert len(sweep_records) == len({(r["study"], r["trial"]) for r in sweep_records}) == plan.trials * len(plan.methods)
    finals = records(tmp_path / "runs", "final")
    assert sorted((r["method"], r["seed"]) for r in finals) == sorted(
        (m, s) for m in plan.methods for s in plan.final_seeds)


@pytest.mark.slow
def test_workers_split_the_cores_and_see_one_gpu_each() -> None:
    cores = len(os.sched_getaffinity(0))
    first = worker_environment(0, 2, [], {"PATH": "/bin"})
    assert first["OMP_NUM_THREADS"] == str(max(1, cores // 2)) and "CUDA_VISIBLE_DEVICES" not in first
    assert worker_environment(1, 2, [], {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's wins
    assert [worker_environment(i, 3, ["0", "1"], {})["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    assert worker_environment(0, 4 * cores, [], {})["OMP_NUM_THREADS"] == "1"


@pytest.mark.slow
def test_two_workers_share_one_storage_without_duplicates(tmp_path: Path) -> None:
    plan_dir = write_plan(tmp_path / "plans", trials=4, final_seeds=[1, 2],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 20})
    process = _mtlbench(sweep_args(tmp_path, plan_dir, "--workers", "2"), cwd=REPO)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "worker logs:" in output
    _check_two_workers(tmp_path, load_plan(plan_dir), f"sqlite:///{tmp_path}/optuna.db")


@pytest.mark.slow
def test_two_workers_against_a_real_postgresql_server(tmp_path: Path, postgres_url: str) -> None:
    plan_dir = write_plan(tmp_path / "plans", trials=3, final_seeds=[1, 2],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 20})
    args = ["sweep", "--sweeps-dir", str(plan_dir), "--storage", postgres_url, "--out", str(tmp_path / "runs"),
            "--workers", "2"]
    process = _mtlbench(args, cwd=REPO)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    _check_two_workers(tmp_path, load_plan(plan_dir), postgres_url)
    assert optuna.get_all_study_names(postgres_url)  # the studies live in the server


def test_a_journal_file_storage_runs_and_continues(tmp_path: Path) -> None:
    plan_dir = write_plan(tmp_path / "plans", methods="laf")
    journal = tmp_path / "shared" / "sweep.journal"
    args = ["sweep", "--sweeps-dir", str(plan_dir), "--storage", str(journal), "--out", str(tmp_path / "runs")]
    assert main(args) == 0 and journal.exists()
    assert main([*args, "--trials", "3"]) == 0
    (studies,) = studies_of(load_plan(plan_dir), str(journal))
    assert [t.number for t in studies.search_study().get_trials(states=(TrialState.COMPLETE,))] == [0, 1, 2]
    assert len(records(tmp_path / "runs", "final")) in (1, 2)  # 2: the third trial was a new best


# ---- the search: guided, a sampler per study, ranges per method, several splits --------------


def test_tpe_random_startup_is_fewer_than_the_trials(tmp_path: Path) -> None:
    """8 trials at Optuna's default 10 startup trials never left the random phase."""
    assert load_plan(write_plan(tmp_path / "a", trials=20, sampler={"n_startup_trials": 6})).n_startup_trials == 6
    assert load_plan(write_plan(tmp_path / "b", trials=4, sampler={"n_startup_trials": 6})).n_startup_trials == 3
    assert SweepPlan.load("office_caltech", REPO / "sweeps").n_startup_trials < SweepPlan.load("office_caltech", REPO / "sweeps").trials
    with pytest.raises(ValueError, match="sampler: unknown key.*valid: n_startup_trials"):
        load_plan(write_plan(tmp_path / "c", sampler={"startup": 3}))


def test_each_methods_search_draws_its_own_points(tmp_path: Path) -> None:
    """The sampler seed came from worker and trial number alone: every method's search tried the
    same points (8 distinct points over 14 methods at Office-Caltech ratio 0.1)."""
    plan_dir = write_plan(tmp_path / "plans", methods="stl,laf,tucker", trials=2, final_seeds=[1],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 1})
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    points = {}
    for record in records(tmp_path / "runs", "sweep"):
        points.setdefault(record["method"], set()).add((round(record["config"]["lam"], 12), record["config"]["hidden"]))
    assert len(points) == 3
    assert len(set.union(*points.values())) == 6  # no point shared by two methods


def test_a_method_searches_its_own_range_and_a_choice_at_an_edge_is_flagged(tmp_path: Path) -> None:
    plan = SweepPlan.load("office_caltech", REPO / "sweeps")
    (prod_lam,) = [d for d in plan.search_space("prod") if d.name == "lam"]
    (tucker_lam,) = [d for d in plan.search_space("tucker") if d.name == "lam"]
    assert prod_lam.low < 1e-4 == tucker_lam.low and plan.study_name("prod", 0.1) != plan.study_name("tucker", 0.1)
    lam = SearchDimension.parse("lam", {"low": 1e-4, "high": 10.0, "log": True})
    hidden = SearchDimension.parse("hidden", [128, 256, 512, 1024])
    assert [lam.edge(v) for v in (1.2e-4, 0.03, 8.5)] == ["low", None, "high"]
    assert [hidden.edge(v) for v in (128, 256, 1024)] == ["low", None, "high"]
    # A method's range replaces the plan's for that field only.
    plan_dir = write_plan(tmp_path / "plans", methods="stl", trials=1, search={"lam": {"low": 1e-3, "high": 1.0, "log": True},
                                                                                  "hidden": [4, 6, 8]},
                          method_search={"stl": {"hidden": [4, 5, 6]}})
    space = {d.name: d for d in load_plan(plan_dir).search_space("stl")}
    assert space["hidden"].choices == (4, 5, 6) and (space["lam"].low, space["lam"].high) == (1e-3, 1.0)
    assert edges(tuple(space.values()), {"lam": 0.99, "hidden": 5}) == ["lam high"]
    with pytest.raises(ValueError, match="method_search: unknown method"):
        load_plan(write_plan(tmp_path / "bad", method_search={"nope": {}}))


def test_a_lambda_that_weighs_nothing_is_not_searched_and_a_small_grid_runs_once_each(tmp_path: Path, capsys) -> None:
    """LAF-TF under its paper's layering has no penalised layer: its 20 trials drew inert lambdas
    and re-trained 4 hidden sizes. Now it searches hidden alone, each size once, and says lam 0."""
    plan_dir = write_plan(tmp_path / "plans", methods="laf_tf", trials=5, final_seeds=[1],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 1}, method_params={"laf_tf": {"prefit_epochs": 1}})
    plan = load_plan(plan_dir)
    assert [d.name for d in plan.search_space("laf_tf")] == ["hidden"] and plan.search_budget("laf_tf") == 2
    assert plan.exhaustive("laf_tf") and plan.config("laf_tf", 0.5, seed=0, hidden=4).lam == 0.0
    assert {d.name for d in plan.search_space("stl")} == {"lam", "hidden"} and plan.search_budget("stl") == 5
    assert not plan.exhaustive("stl")
    head = load_plan(write_plan(tmp_path / "head", methods="laf_tf", trials=5, protocol={**TINY_PLAN["protocol"], "layers": "head"}))
    assert {d.name for d in head.search_space("laf_tf")} == {"lam", "hidden"}  # the shared layer is penalised
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    out = capsys.readouterr().out
    assert "lambda weighs nothing in laf_tf" in out and "laf_tf (2 points)" in out
    searched = records(tmp_path / "runs", "sweep")
    assert sorted(r["config"]["hidden"] for r in searched) == [4, 8]
    assert all(r["config"]["lam"] == 0.0 and set(r["search_space"]) == {"hidden"} for r in searched)
    (final,) = records(tmp_path / "runs", "final")
    assert final["config"]["lam"] == 0.0
    (studies,) = studies_of(plan, f"sqlite:///{tmp_path}/optuna.db")
    assert studies.search_progress().done and studies.search_progress().complete == 2
    (row,) = summary_rows([studies])
    assert row["lam"] is None and row["hidden"] in (4, 8) and row["trials"] == "2/0/0 of 2"  # the table shows "-"


def test_a_grid_search_keeps_each_point_once_when_a_trial_is_queued_again(tmp_path: Path) -> None:
    """Optuna's GridSampler failed the bookkeeping of a re-queued trial (KeyError 'grid_id')."""
    plan = load_plan(write_plan(tmp_path / "plans", methods="laf_tf", trials=5, search={"hidden": [4, 6, 8]}))
    studies = MethodStudies(plan, "laf_tf", 0.5, open_storage(f"sqlite:///{tmp_path}/optuna.db"))
    ran = []

    def objective(trial: optuna.Trial) -> float:
        claim(trial, studies.budget)
        ran.append(trial.suggest_categorical("hidden", [4, 6, 8]))
        if len(ran) == 2:
            raise Interrupted("SIGTERM")  # stopped mid-trial
        return 0.1

    studies.search_study().optimize(objective, n_trials=1)
    with pytest.raises(Interrupted):
        studies.search_study().optimize(objective, n_trials=1)
    assert recover_interrupted(studies.search_study(), only_pid=os.getpid()) == [1]
    for _ in range(2):
        studies.search_study().optimize(objective, n_trials=1)
    assert sorted(ran) == [4, 6, 6, 8] and ran[1] == ran[2]  # the retry re-ran its point; no point twice else
    assert studies.search_progress().done and studies.search_progress().complete == 3


def test_the_search_objective_is_the_mean_over_the_search_splits_and_survives_a_lost_storage(tmp_path: Path) -> None:
    plan_dir = write_plan(tmp_path / "plans", methods="stl", trials=2, search_seeds=[0, 7], final_seeds=[1])
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    plan, url = load_plan(plan_dir), f"sqlite:///{tmp_path}/optuna.db"
    by_trial: dict[int, list[dict]] = {}
    for record in records(tmp_path / "runs", "sweep"):
        by_trial.setdefault(record["trial"], []).append(record)
    assert sorted(by_trial) == [0, 1]
    (studies,) = studies_of(plan, url)
    values = {t.number: t.value for t in studies.search_study().get_trials()}
    for number, runs in by_trial.items():
        assert sorted((r["search_split"], r["seed"]) for r in runs) == [(0, 0), (1, 7)]
        assert values[number] == pytest.approx(sum(1 - r["val_acc_mean"] for r in runs) / 2)
    # Lose the storage: the trials come back with the same mean value, and nothing runs again.
    (tmp_path / "optuna.db").unlink()
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    (studies,) = studies_of(plan, url)
    assert {t.number: t.value for t in studies.search_study().get_trials()} == pytest.approx(values)
    assert len(records(tmp_path / "runs", "sweep")) == 4 and len(records(tmp_path / "runs", "final")) == 1
    with pytest.raises(ValueError, match="differ from the search seeds"):
        load_plan(write_plan(tmp_path / "overlap", search_seeds=[0, 1], final_seeds=[1]))
    # More splits only where the validation part is small: per train ratio.
    ratios = {**TINY_PLAN["protocol"], "train_ratio": [0.1, 0.5]}
    by_ratio = load_plan(write_plan(tmp_path / "r", protocol=ratios, search_seeds_by_ratio={0.1: [0, 6, 7]}))
    assert by_ratio.search_seeds_at(0.1) == (0, 6, 7) and by_ratio.search_seeds_at(0.5) == (0,)
    # A plan narrowed to other ratios (RATIOS=0.5) keeps working: the entry for 0.1 just does not apply.
    narrowed = SweepPlan.load("synthetic", write_plan(tmp_path / "r2", protocol=ratios, search_seeds_by_ratio={0.1: [0, 6]}),
                              protocol={"train_ratio": [0.5]})
    assert narrowed.search_seeds_at(0.5) == (0,)
    with pytest.raises(ValueError, match="start with the plan's first search seed"):
        load_plan(write_plan(tmp_path / "r3", protocol=ratios, search_seeds_by_ratio={0.1: [6, 7]}))


# ---- methods that coincide ---------------------------------------------------------------------


def test_methods_with_the_same_penalty_on_every_tensor_are_decided_from_the_flattenings(tmp_path: Path) -> None:
    mlp = NetworkSpec((6,), (3, 3, 3), "features")  # 3-way stacked tensors
    pool5_like = NetworkSpec((2, 2, 3), (3, 3, 3), "features")  # a 5-way hidden tensor
    methods = "stl,dmtl,laf,laf_i,tucker,tt,tr,prod,gttn_a,gttn_min,gttn_max,gttn_var"
    paper = load_plan(write_plan(tmp_path / "a"), methods=methods)
    # Under each paper's layering GTTN-a is on the heads only, Tucker on every layer: not equal.
    assert paper.with_coincidences(mlp).equal_to == {"tr": "tucker"}
    every_layer = load_plan(write_plan(tmp_path / "b", protocol={**TINY_PLAN["protocol"], "layers": "all"}), methods=methods)
    assert every_layer.with_coincidences(mlp).equal_to == {"tr": "tucker", "gttn_a": "tucker"}
    # A 5-way tensor: TR's circular unfoldings, Tucker's modes and GTTN's 15 bipartitions differ.
    assert every_layer.with_coincidences(pool5_like).equal_to == {}
    # Each family under the other's layering (the ablation): GTTN-a on every layer, Tucker on the heads only.
    coupled = methods.removeprefix("stl,dmtl,")
    other = load_plan(write_plan(tmp_path / "o", protocol={**TINY_PLAN["protocol"], "layers": "other"}), methods=coupled)
    assert other.with_coincidences(mlp).equal_to == {"tr": "tucker"}
    # A method parameter that makes LAF-i the task-axis flattening makes it LAF.
    axis = load_plan(write_plan(tmp_path / "c", method_params={"laf_i": {"axis": -1}}), methods="laf,laf_i")
    assert axis.with_coincidences(mlp).equal_to == {"laf_i": "laf"}


def test_a_worker_finishes_a_method_then_a_train_ratio_before_the_next(tmp_path: Path) -> None:
    """A sweep cut off after its first ratio has left that ratio's whole table; one cut off within
    a ratio has the rows of the methods it finished (their finals run as soon as their search ends)."""
    plan_dir = write_plan(tmp_path / "plans", methods="stl,dmtl", protocol={**TINY_PLAN["protocol"], "train_ratio": [0.3, 0.5]})
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    written = sorted((tmp_path / "runs").glob("*/*/*.json"), key=lambda p: p.stat().st_mtime_ns)
    order = [(r["config"]["train_ratio"], r["method"], r["job"]) for r in (json.loads(p.read_text()) for p in written)]
    one_ratio = lambda ratio: [(ratio, method, job) for method in ("stl", "dmtl") for job in ("sweep", "sweep", "final")]
    assert order == one_ratio(0.3) + one_ratio(0.5)


def test_a_sweep_runs_one_of_two_equal_methods_and_lists_the_other(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans", methods="tucker,tr", trials=1)
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    out = capsys.readouterr().out
    assert "tr = tucker" in out and "= tucker (the same penalty" in out
    runs = records(tmp_path / "runs", "sweep") + records(tmp_path / "runs", "final")
    assert {r["method"] for r in runs} == {"tucker"}
    assert all(r["equal_methods"] == ["tr"] for r in runs)
    board = tmp_path / "board"
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(board), "--no-plots"]) == 0
    assert "= tucker" in (board / "synthetic.csv").read_text()


@pytest.mark.parametrize(("params", "message"), [
    ({"tr": {"k": 2}}, "method_params.tr: tr takes parameter.*d \\(int.*not \\['k'\\]"),
    ({"gttn_meta": {"bogus": 1}}, "method_params.gttn_meta: gttn_meta takes parameter.*outer_lr.*not \\['bogus'\\]"),
    ({"stl": {"axis": 1}}, "method_params.stl: stl takes parameter\\(s\\) none; not \\['axis'\\]"),
    ({"gttn_var": {"beta_lr": 0.1, "typo": 1}}, "method_params.gttn_var: gttn_var takes .*not \\['typo'\\]"),
    ({"nope": {}}, "method_params: unknown method"),
])
def test_a_method_parameter_it_does_not_take_fails_when_the_plan_loads(tmp_path: Path, params: dict, message: str) -> None:
    """Before, `tr: {k: 2}` loaded cleanly and every trial then failed."""
    with pytest.raises(ValueError, match=message):
        SweepPlan.load("synthetic", write_plan(tmp_path, methods="all", method_params=params))


# ---- I/O failures are failures ---------------------------------------------------------------


def test_records_that_cannot_be_written_stop_the_sweep_before_any_training(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["sweep", "--sweeps-dir", str(plan_dir), "--storage", f"sqlite:///{tmp_path}/optuna.db", "--out", str(blocker / "runs")]
    assert main(args) == 2
    assert f"cannot write records under {blocker / 'runs'}" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()  # nothing prepared, no trial spent
    assert main(["train", "--out", str(blocker / "runs"), "--max-epochs", "1"]) == 2
    assert "cannot write records under" in capsys.readouterr().err


def test_a_record_lost_mid_sweep_fails_the_command_and_the_trial_runs_again(tmp_path: Path, monkeypatch, capsys) -> None:
    """The trial trained, its record could not be written: not a settled budget slot, a non-zero exit."""
    import benchmark.records
    from benchmark.records import RecordWriteError

    plan_dir = write_plan(tmp_path / "plans", methods="stl", trials=2, final_seeds=[1])
    original = benchmark.records.write_json_atomic
    calls = {"n": 0}

    def disk_full_once(path, payload):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RecordWriteError(f"cannot write the record {path}: [Errno 28] No space left on device")
        return original(path, payload)

    monkeypatch.setattr(benchmark.records, "write_json_atomic", disk_full_once)
    assert main(sweep_args(tmp_path, plan_dir)) == 1
    assert "No space left on device" in capsys.readouterr().out
    monkeypatch.setattr(benchmark.records, "write_json_atomic", original)
    assert main(sweep_args(tmp_path, plan_dir)) == 0
    (studies,) = studies_of(load_plan(plan_dir), f"sqlite:///{tmp_path}/optuna.db")
    trials = studies.search_study().get_trials()
    assert study_progress(studies.search_study(), 2).complete == 2  # both positions ran to a record
    assert any("retry_of" in t.user_attrs and t.state == TrialState.COMPLETE for t in trials)
    assert len(records(tmp_path / "runs", "sweep")) == 2 and len(records(tmp_path / "runs", "final")) == 1


# ---- scheduler jobs through submitit (--launcher local | slurm) ----------------------------------


def test_a_slurm_sweep_refuses_sqlite_and_unknown_launcher_settings(tmp_path: Path, capsys) -> None:
    plan_dir = write_plan(tmp_path / "plans")
    assert main(sweep_args(tmp_path, plan_dir, "--launcher", "slurm")) == 2
    err = capsys.readouterr().err
    assert "cannot share the SQLite storage" in err and "postgresql://" in err and "journal file on a shared" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
    write_plan(plan_dir, launcher={"partitions": "gpu"})
    assert main(sweep_args(tmp_path, plan_dir, "--launcher", "local")) == 2
    assert "launcher: unknown key(s) ['partitions']; valid: partition, time_min" in capsys.readouterr().err


def test_the_slurm_submission_is_one_array_with_the_plans_resources(tmp_path: Path) -> None:
    """The sbatch script submitit writes, checked without a cluster (submitit's own mock of sbatch)."""
    pytest.importorskip("submitit")
    from submitit.slurm.test_slurm import mocked_slurm

    from benchmark.sweep.launcher import JobResources, submit_workers

    resources = JobResources.from_values({"partition": "gpu", "time_min": 90, "gpus_per_job": 1, "cpus_per_job": 8,
                                          "mem_gb": 32, "account": "mtl-lab", "setup": ["module load cuda"]})
    job_file = tmp_path / "job.json"
    job_file.write_text("{}")
    with mocked_slurm():
        jobs = submit_workers(job_file, "slurm", 4, resources, tmp_path / "jobs")
    assert [j.job_id for j in jobs] == ["12_0", "12_1", "12_2", "12_3"]
    (script,) = (tmp_path / "jobs").rglob("*submission.sh")
    lines = script.read_text().splitlines()
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --account=mtl-lab",
                     "#SBATCH --array=0-3%4", "#SBATCH --job-name=mtlbench-sweep", "module load cuda"):
        assert expected in lines, (expected, lines)
    assert any(line.startswith("#SBATCH --signal=USR2@") for line in lines)  # the pre-emption warning


def _local_sweep(tmp_path: Path, storage: str, plan_dir: Path, *extra: str) -> subprocess.Popen:
    args = ["sweep", "--sweeps-dir", str(plan_dir), "--storage", storage, "--out", str(tmp_path / "runs"),
            "--launcher", "local", "--workers", "2", *extra]
    return _mtlbench(args, cwd=REPO)


@pytest.mark.slow
def test_two_local_jobs_run_a_sweep_against_a_journal_file(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    plan_dir = write_plan(tmp_path / "plans", trials=4, final_seeds=[1, 2],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 20})
    journal = str(tmp_path / "shared" / "optuna.journal")
    process = _local_sweep(tmp_path, journal, plan_dir)
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output
    assert "submitted 2 local job(s)" in output
    _check_two_workers(tmp_path, load_plan(plan_dir), journal)


@pytest.mark.slow
def test_two_local_jobs_against_a_real_postgresql_server(tmp_path: Path, postgres_url: str) -> None:
    pytest.importorskip("submitit")
    plan_dir = write_plan(tmp_path / "plans", trials=3, final_seeds=[1, 2],
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 20})
    process = _local_sweep(tmp_path, postgres_url, plan_dir)
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output
    _check_two_workers(tmp_path, load_plan(plan_dir), postgres_url)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGUSR2], ids=["killed", "preempted"])
def test_a_local_job_stopped_mid_trial_has_its_trial_run_again(tmp_path: Path, stop: signal.Signals) -> None:
    """SIGKILL: the job dies, the other worker re-queues its trial. SIGUSR2 (a time-out or
    pre-emption warning): the worker re-queues its trial and submitit re-submits the job."""
    pytest.importorskip("submitit")
    plan_dir = write_plan(tmp_path / "plans", trials=4, methods="stl",
                          protocol={**TINY_PLAN["protocol"], "max_epochs": 150})
    plan = load_plan(plan_dir)
    journal = str(tmp_path / "optuna.journal")
    process = _local_sweep(tmp_path, journal, plan_dir)
    stopped: list[int] = []

    def stop_a_running_trial() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before a job could be stopped:\n{process.stdout.read()}")
        try:
            study = optuna.load_study(study_name=plan.study_name("stl", 0.5), storage=open_storage(journal))
        except Exception:  # the storage or the study is still being created
            return False
        running = [t for t in study.get_trials(deepcopy=False)
                   if t.state == TrialState.RUNNING and len(t.params) == len(plan.search) and "worker" in t.user_attrs]
        if not running:
            return False
        stopped.append(running[0].number)
        os.kill(running[0].user_attrs["worker"]["pid"], stop)
        return True

    _wait_for(stop_a_running_trial, 300, "a running trial")
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output
    (studies,) = studies_of(plan, journal)
    trials = {t.number: t for t in studies.search_study().get_trials()}
    assert trials[stopped[0]].state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == stopped[0]]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[stopped[0]].params
    assert study_progress(studies.search_study(), 4).complete == 4
    sweep_records = records(tmp_path / "runs", "sweep")
    assert sorted(r["trial"] for r in sweep_records if r["state"] == "complete") == sorted(
        t.number for t in trials.values() if t.state == TrialState.COMPLETE)
    if stop == signal.SIGUSR2:  # submitit checkpointed the job and submitted it again
        logs = [p.read_text() for p in (tmp_path / "logs").rglob("*_log.*")]
        assert any("Requeued job" in text for text in logs)
