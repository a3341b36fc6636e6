"""``mtlbench sweep``: resolves the job, prepares the studies, runs the workers, shows progress,
prints the result.

With one worker and no GPU list the trials run in this process; otherwise each worker is its own
process, started with the path of the resolved job (:class:`~benchmark.sweep.plan.SweepJob`, a
JSON file beside the worker logs in ``results/logs/``), and this process watches the storage and
draws the progress bar. Either way, Ctrl-C or SIGTERM re-queues the running trials (each worker
stops after the batch it is on) and the same command continues later.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from tqdm.auto import tqdm

from ..data import dataset_source, read_split_file
from ..records import FINAL, SEARCH, STATES, RunRecord, ensure_writable, read_records
from ..tracking import wandb_mode
from .cost import time_left
from .plan import SweepJob, SweepPlan, edges
from .restore import restore_studies
from .studies import (
    DEFAULT_STORAGE,
    MethodStudies,
    check_storage_url,
    open_storage,
    plan_studies,
    recover_interrupted,
    storage_label,
)
from .launcher import JobResources, check_launcher, job_logs, submit_workers, watch_jobs
from .worker import Interrupted, RecordNotWritten, interrupts_raised, run_worker


# Where records go by default, relative to where the command runs: the main board's, and each plan variant's folder.
MAIN_RECORDS, VARIANT_RECORDS = Path("results/runs"), Path("results/variants")


def resolve_job(dataset: str, data_dir: Path, out: Path | None = None, storage: str | None = None,
                sweeps_dir: Path | None = None, variant: str | None = None, methods: str | None = None,
                trials: int | None = None, final_seeds: Sequence[int] | None = None,
                train_ratios: Sequence[float] | None = None, features: str | None = None,
                backbone: str | None = None, split_file: Path | None = None) -> SweepJob:
    """The plan with the user's overrides, checked before anything runs: the records folder is
    writable, the data present and intact, and the methods that coincide on this dataset's network
    found. Raises ValueError, OSError or DataUnavailableError with what to fix."""
    # A variant's records stay apart: the leaderboard keeps one configuration per method and table.
    out = out or (VARIANT_RECORDS / f"{dataset}_{variant}" if variant else MAIN_RECORDS)
    protocol: dict[str, Any] = {"train_ratio": [float(r) for r in train_ratios]} if train_ratios else {}
    if features:
        protocol["dataset_params"] = {"features": features, **({"backbone": backbone} if backbone else {})}
    if split_file:
        protocol["split_file"] = str(split_file)
    plan = SweepPlan.load(dataset, sweeps_dir, methods=methods, trials=trials,
                          final_seeds=tuple(final_seeds) if final_seeds else None, protocol=protocol or None,
                          variant=variant)
    ensure_writable(out)
    check_storage_url(storage or DEFAULT_STORAGE)
    inputs = plan.protocol.get("dataset_params", {})
    source = dataset_source(plan.dataset)
    source.verify(data_dir, inputs.get("features"), inputs.get("backbone"))
    dataset = source.load(Path(data_dir), **inputs)
    if plan.protocol.get("split_file"):  # a given split that does not fit fails now, not in every trial
        read_split_file(Path(plan.protocol["split_file"]), {t.name: len(t.labels) for t in dataset.tasks})
    # Which methods coincide depends on the tensors' orders, so on the dataset's network.
    plan = plan.with_coincidences(dataset.network_spec)
    return SweepJob(plan, storage or DEFAULT_STORAGE, Path(data_dir), Path(out))


def prepare(job: SweepJob, searches_settled: bool = False, report: Callable[[str], None] = print) -> list[MethodStudies]:
    """Create every search study once, before workers start (two processes creating a fresh
    SQLite file at once can crash one), and re-queue this host's trials whose process died.

    A study the storage lacks is first rebuilt from the records under the job's records folder
    that name it (a fresh checkout, a deleted database): see :mod:`benchmark.sweep.restore`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = plan_studies(job.plan, open_storage(job.storage_url))
    for line in restore_studies(studies, job.out_dir, searches_settled):
        report(line)
    for method_studies in studies:
        recover_interrupted(method_studies.search_study())
    return studies


def job_file(job: SweepJob, log_dir: Path) -> Path:
    """Where the spawned workers read the job: named by its content, so two sweeps of one dataset
    (other features, another storage) running at once never read each other's."""
    digest = hashlib.sha256(json.dumps(job.plan.to_dict(), sort_keys=True).encode()
                            + job.storage_url.encode() + str(job.out_dir).encode()).hexdigest()[:8]
    return log_dir / f"job-{digest}.json"


def worker_environment(index: int, workers: int, gpus: Sequence[str], base: Mapping[str, str]) -> dict[str, str]:
    """Worker i sees only GPU gpus[i], and the workers split the CPU cores between them.

    Each torch process otherwise starts one thread per core, so N workers on a CPU box would run
    N x cores threads and slow each other down. An OMP_NUM_THREADS the user set is kept.
    """
    env = dict(base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    return env


def spawn_workers(job: SweepJob, workers: int, gpus: Sequence[str], log_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start ``workers`` processes that run ``job`` (see :func:`worker_environment`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = job.write(job_file(job, log_dir))
    processes = []
    for index in range(workers):
        env = worker_environment(index, workers, gpus, os.environ)
        log_path = log_dir / f"worker-{index}.log"
        with open(log_path, "a") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmark", "sweep", "--job", str(path), "--worker-index", str(index)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        processes.append((process, log_path))
    return processes


def total_progress(studies: Sequence[MethodStudies]) -> tuple[int, int, int]:
    """(settled positions, all positions, running trials) over every study of the plan."""
    settled = total = running = 0
    for method_studies in studies:
        search, final = method_studies.progress()
        n_seeds = len(method_studies.plan.final_seeds)
        settled += min(search.settled, search.budget) + (min(final.settled, n_seeds) if final else 0)
        total += search.budget + n_seeds
        running += search.running + (final.running if final else 0)
    return settled, total, running


def _refresh(bar: tqdm, studies: Sequence[MethodStudies], now: str | None = None) -> None:
    """Redraw ``bar`` from the storage; ``now``: the run this process has just started."""
    settled, total, running = total_progress(studies)
    bar.total = total
    bar.n = settled
    bar.set_postfix({"running": running, **({"now": now} if now else {})}, refresh=False)
    bar.refresh()


def progress_bar(dataset: str, studies: Sequence[MethodStudies]) -> tqdm:
    """A bar over every search trial and final run of the sweep, counting from what is already settled.

    Runs settled by an earlier command are the bar's starting point, not progress of this one, so
    that a resumed sweep's rate and time left are those of the runs it does itself.
    """
    settled, total, running = total_progress(studies)  # read first: no placeholder bar is drawn
    bar = tqdm(total=total, initial=settled, desc=f"sweep {dataset}", unit="run", dynamic_ncols=True)
    bar.set_postfix(running=running)
    return bar


def summary_rows(studies: Sequence[MethodStudies]) -> list[dict[str, Any]]:
    """Per method and ratio: the best search trial, the searched values at an edge of their range,
    and the mean test error of its final runs; a method equal to another gets a row saying so."""
    from optuna.trial import TrialState

    rows = []
    for method_studies in studies:
        search = method_studies.search_progress()
        best = method_studies.best_trial()
        row: dict[str, Any] = {
            "method": method_studies.method, "train_ratio": method_studies.train_ratio,
            "trials": f"{search.complete}/{search.pruned}/{search.failed} of {search.budget}"
                      + (f", {search.running} running" if search.running else ""),
            "lam": None, "hidden": None, "val_err": None, "final_test_err": None,
            "finals": f"0/{len(method_studies.plan.final_seeds)}", "edge": "",
        }
        if best is not None:
            protocol = method_studies.plan.config(method_studies.method, method_studies.train_ratio, seed=0)
            shown = ("lam", "hidden") if method_studies.plan.weighs_lambda(method_studies.method) else ("hidden",)
            row.update({k: best.params.get(k, getattr(protocol, k)) for k in shown},  # lam "-": it weighs nothing
                       val_err=None if method_studies.plan.fixed else best.value,
                       edge=", ".join(edges(method_studies.search_space, best.params)))
            final_study = method_studies.final_study(best, create=False)
            finals = final_study.get_trials(deepcopy=False) if final_study else []
            errors = [t.user_attrs["test_err_mean"] for t in finals
                      if t.state == TrialState.COMPLETE and "test_err_mean" in t.user_attrs]
            running = sum(t.state == TrialState.RUNNING for t in finals)
            row.update(finals=f"{len(errors)}/{len(method_studies.plan.final_seeds)}" + (f"+{running}" if running else ""),
                       final_test_err=sum(errors) / len(errors) if errors else None)
        rows.append(row)
        for method, same in method_studies.plan.equal_to.items():
            if same == method_studies.method:
                rows.append({"method": method, "train_ratio": method_studies.train_ratio, "equal_to": same})
    return rows


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    def number(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'method':<12}{'ratio':>6}{'lambda':>11}{'hidden':>8}{'val err':>9}{'test err':>10}{'finals':>8}"
             "   search ok/pruned/failed      at the edge of its range"]
    for row in rows:
        if "equal_to" in row:  # the same penalty on every tensor: run once, never counted twice
            lines.append(f"{row['method']:<12}{row['train_ratio']:>6g}   = {row['equal_to']} (the same penalty on every "
                         "stacked tensor of this dataset)")
            continue
        lines.append(
            f"{row['method']:<12}{row['train_ratio']:>6g}{number(row['lam'], '.3g'):>11}"
            f"{number(row['hidden'], 'd'):>8}{number(row['val_err'], '.4f'):>9}"
            f"{number(row['final_test_err'], '.4f'):>10}{row['finals']:>8}   {row['trials']:<25}{row['edge']}"
        )
    return "\n".join(lines)


# Reading every study takes ~0.5 s of CPU on a sweep of 14 methods: every 2 s that was a fifth of
# a core taken from the workers. A run takes 10 s or more, so the counts are read every 15 s and
# only the clock is redrawn in between.
STORAGE_POLL_S = 15.0
CLOCK_TICK_S = 2.0


def _watch(processes: list[tuple[subprocess.Popen, Path]], bar: tqdm, studies: Sequence[MethodStudies]) -> int:
    """Draw progress until every worker exits; on an interrupt, stop the workers and wait for them."""
    try:
        last_poll = -STORAGE_POLL_S
        while any(process.poll() is None for process, _ in processes):
            if time.monotonic() - last_poll >= STORAGE_POLL_S:
                _refresh(bar, studies)
                last_poll = time.monotonic()
            else:
                bar.refresh()
            time.sleep(CLOCK_TICK_S)
    except (Interrupted, KeyboardInterrupt):
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # each worker re-queues its running trial
        for process, _ in processes:
            process.wait(timeout=120)
        raise
    failed = [(process.returncode, log) for process, log in processes if process.returncode != 0]
    for code, log in failed:
        tail = "\n    ".join(log.read_text().splitlines()[-15:])
        bar.write(f"worker exited with code {code}; log {log}:\n    {tail}")
    return 1 if failed else 0


def run_sweep(job: SweepJob, workers: int = 1, gpus: Sequence[str] = (), searches_settled: bool = False,
              launcher: str = "process", resources: JobResources | None = None, status_only: bool = False) -> int:
    """Run ``job`` to the end with ``workers`` processes (in this one when 1 and no GPUs), or
    ``workers`` scheduler jobs (``launcher`` local or slurm: :mod:`.launcher`); 0 when every worker
    finished, 1 when one failed or a record could not be written, 130 when interrupted.

    ``status_only``: say where every study stands and the time left, and run nothing (a board
    that takes several sessions, or other machines' workers, is checked without starting one)."""
    plan = job.plan
    try:
        check_launcher(launcher, job.storage_url)
        resources = resources or JobResources.from_values(plan.launcher)
    except ValueError as error:
        print(f"mtlbench sweep: {error}", file=sys.stderr)
        return 2
    try:
        open_storage(job.storage_url)
    except Exception as error:  # a server down, a missing database driver, a file it cannot read
        print(f"mtlbench sweep: cannot open the Optuna storage {storage_label(job.storage_url)}: "
              f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    try:
        studies = prepare(job, searches_settled)
    except Exception as error:  # a record it cannot restore, a storage that fails mid-way
        print(f"mtlbench sweep: cannot prepare the studies in {storage_label(job.storage_url)} (rebuilding them "
              f"from the records in {job.out_dir} where it lacks them): {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(_announcement(job, workers, gpus))
    print("  " + time_left(studies, _run_times(job)).describe(workers))
    if status_only:
        print("\n" + format_summary(summary_rows(studies)))
        return 0
    code = 0
    with interrupts_raised(), progress_bar(plan.dataset_name, studies) as bar:
        try:
            if launcher != "process":
                code = _run_jobs(job, launcher, workers, resources, bar, studies)
            elif workers == 1 and not gpus:
                # The bar is redrawn once Optuna has stored the trial's end, not when its line is
                # written (the trial is still running then, and the bar was one behind).
                run_worker(job, 0, bar.write, after_trial=lambda: _refresh(bar, studies),
                           on_start=lambda what: _refresh(bar, studies, now=what))
            else:
                log_dir = job.out_dir.parent / "logs" / f"sweep-{plan.dataset_name}"
                bar.write(f"worker logs: {log_dir}/worker-<i>.log")
                code = _watch(spawn_workers(job, workers, gpus, log_dir), bar, studies)
        except (Interrupted, KeyboardInterrupt):
            bar.write("interrupted: running trials were queued again; run the same command to continue")
            return 130
        except ValueError as error:  # no scheduler reachable, submitit missing
            bar.write(f"mtlbench sweep: {error}")
            return 2
        except RecordNotWritten as error:
            bar.write(f"mtlbench sweep: {error}\nthe trial was queued again; fix the records folder and run the "
                      "same command to continue")
            return 1
        _refresh(bar, studies)
    print("\n" + format_summary(summary_rows(studies)))
    print(f"\nfinal records: {job.out_dir}/{plan.dataset_name}/<method>/ (job: final); `make leaderboard` tabulates them")
    return code


def _run_times(job: SweepJob) -> list[RunRecord]:
    """The records whose run times project this sweep's: its own folder's and, for a plan variant
    in its default folder, the main board's (the same methods run there, on the same machines)."""
    variant = job.out_dir.parent == VARIANT_RECORDS
    folders = dict.fromkeys(f / job.plan.dataset_name for f in (job.out_dir, *([MAIN_RECORDS] if variant else [])))
    return [run for folder in folders if folder.is_dir()
            for run in read_records(folder, jobs=(SEARCH, FINAL), states=STATES).runs]


def _run_jobs(job: SweepJob, launcher: str, workers: int, resources: JobResources, bar: tqdm,
              studies: Sequence[MethodStudies]) -> int:
    """Submit the workers as scheduler jobs and watch them. Interrupted, local jobs are stopped
    (each re-queues its trial); Slurm jobs keep running on the cluster. A job that died while
    the others finished every trial (its own re-queued) is reported, and the sweep succeeds."""
    log_dir = job.out_dir.parent / "logs" / f"sweep-{job.plan.dataset_name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = job.write(job_file(job, log_dir))
    jobs = submit_workers(path, launcher, workers, resources, log_dir / "jobs")
    bar.write(f"submitted {len(jobs)} {launcher} job(s); id: output log\n  " + "\n  ".join(job_logs(jobs)))
    try:
        code = watch_jobs(jobs, lambda: _refresh(bar, studies), bar.write)
        settled, total, _ = total_progress(studies)
        if code and settled == total:
            bar.write("every trial and final run is settled: the other jobs took over the failed job's work")
            return 0
        return code
    except (Interrupted, KeyboardInterrupt):
        if launcher == "local":
            for submitted in jobs:
                submitted.cancel(check=False)
        else:
            ids = " ".join(sorted({str(j.job_id).split("_")[0] for j in jobs}))
            bar.write(f"stopped watching; the jobs keep running on the cluster (`scancel {ids}` stops them, and "
                      "their trials are queued again)")
        raise


def _announcement(job: SweepJob, workers: int, gpus: Sequence[str]) -> str:
    """What is about to run, where it is stored, and how it searches."""
    plan = job.plan
    searching = "" if plan.fixed else (
        f"\n  search: TPE, the first {plan.n_startup_trials} of {plan.trials} trials random, then guided; "
        "objective: mean validation error over the search splits (seeds "
        + "; ".join(f"r{r:g}: {', '.join(map(str, plan.search_seeds_at(r)))}" for r in plan.train_ratios) + ")"
    )
    grids = [f"{m} ({plan.search_budget(m)} points)" for m in plan.running_methods if plan.exhaustive(m)]
    if grids and not plan.fixed:
        searching += f"\n  every point once, no TPE, where the space is a grid within the budget: {', '.join(grids)}"
    unweighted = [m for m in plan.running_methods if not plan.weighs_lambda(m)]
    if unweighted and not plan.fixed:
        searching += f"\n  lambda weighs nothing in {', '.join(unweighted)} (no penalised layer): not searched, recorded as 0"
    equal = "".join(f"\n  {method} = {same}: the same penalty on every stacked tensor of {plan.dataset_name}; "
                    f"{same} runs once for both" for method, same in plan.equal_to.items())
    return (
        f"sweep {plan.dataset_name}: {len(plan.running_methods)} method(s) x {len(plan.train_ratios)} ratio(s), "
        f"{plan.trials} trials + {len(plan.final_seeds)} final seeds each, {workers} worker(s)"
        f"{' on GPUs ' + ','.join(gpus) if gpus else ''}\n"
        f"  storage {storage_label(job.storage_url)} | W&B {wandb_mode()} | data {job.data_dir} | records {job.out_dir}"
        f"{searching}{equal}"
    )
