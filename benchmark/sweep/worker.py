"""A sweep worker: runs trials of the plan's studies until none is left to start; one per process.

Each trial trains through :func:`benchmark.train.train`, which writes its record; a pruned or
failed trial writes a record too (:mod:`benchmark.records`), so that a storage rebuilt from the
records knows its position was settled. SIGINT or SIGTERM re-queue the running trial, at the
worker's next stop point (:func:`interrupts_deferred`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import optuna
import torch
from optuna.trial import FrozenTrial

from ..config import TrainConfig
from ..data import dataset_name, dataset_source
from ..records import (
    FAILED,
    FINAL,
    PRUNED,
    SEARCH,
    RecordWriteError,
    RunRecord,
    git_revision,
    machine_description,
    metric_key,
    new_run_id,
    package_versions,
    record_path,
    search_objective,
)
from ..tracking import Tracking, run_name
from .plan import SweepJob
from .studies import (
    MethodStudies,
    claim,
    open_storage,
    plan_studies,
    recover_all,
    recover_interrupted,
    storage_label,
    study_progress,
)

if TYPE_CHECKING:
    from ..train import RunResult


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a worker: its running trial is re-queued, then it exits.

    A BaseException, so that neither Lightning nor Optuna records it as an ordinary failure.
    """


def raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class _StopRequest:
    signal_name: str | None = None
    at: float = 0.0  # time.monotonic() of the first signal


_stop_request = _StopRequest()
# A second signal this long after the first is a user's second Ctrl-C; sooner, it is the same stop
# arriving twice (Ctrl-C reaches every process of the terminal's group, then the sweep's parent
# forwards SIGTERM to its workers within milliseconds).
REPEAT_STOP_S = 1.0


def request_stop(signum: int, frame: Any) -> None:
    """The worker's handler: note the signal; :func:`stop_point` raises it where that is safe. A
    second one, REPEAT_STOP_S or more later, raises at once: a worker stuck where no stop point
    comes (extracting features, say) still stops on a second Ctrl-C."""
    name = signal.Signals(signum).name
    if _stop_request.signal_name is None:
        _stop_request.signal_name, _stop_request.at = name, time.monotonic()
    elif time.monotonic() - _stop_request.at >= REPEAT_STOP_S:
        raise Interrupted(name)


def stop_point() -> None:
    """Raise :class:`Interrupted` if a signal has asked this worker to stop."""
    if _stop_request.signal_name is not None:
        raise Interrupted(_stop_request.signal_name)


class StopPoints(L.Callback):
    """A stop point after every training, validation and test batch: a stopped trial ends within a
    batch, from code that holds no library's lock."""

    def on_train_batch_end(self, *args: Any) -> None:
        stop_point()

    def on_validation_batch_end(self, *args: Any) -> None:
        stop_point()

    def on_test_batch_end(self, *args: Any) -> None:
        stop_point()


class RecordNotWritten(BaseException):
    """A trial trained but could not write its record: it is queued again, not counted as settled,
    and the worker stops (every later trial would lose its record too). A BaseException, like
    :class:`Interrupted`, so that Optuna does not close the trial as failed."""


class ValidationPruning(L.Callback):
    """Reports the best validation error so far each epoch; stops the trial if Optuna prunes it."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.best_error = float("inf")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.best_error = min(self.best_error, 1 - module.epoch_metrics["val"][metric_key("val", "acc_mean")])
        self.trial.report(self.best_error, trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: best val error {self.best_error:.4f}")


# ---- running trials --------------------------------------------------------------------------


@dataclass
class Worker:
    """Runs trials of a plan until none is left to start; one per process."""

    job: SweepJob
    index: int = 0
    report: Callable[[str], None] = print
    after_trial: Callable[[], None] = lambda: None  # e.g. redraw a progress bar once the storage has the result
    # Called with what starts ("stl r0.1 final seed 2") once its trial is running in the storage:
    # a bar that waits for the end of a 30-minute run would say nothing runs all that time.
    on_start: Callable[[str], None] = lambda what: None

    def __post_init__(self) -> None:
        self.plan, self.storage_url, self.out_dir = self.job.plan, self.job.storage_url, self.job.out_dir
        self.studies = plan_studies(self.plan, open_storage(self.storage_url))
        self.features = dataset_source(self.plan.dataset).features_label(self.plan.protocol.get("dataset_params", {}))

    def run(self) -> None:
        """One train ratio after the other, and within it one method after the other: its search,
        then at once its finals. A sweep cut off after a ratio has left that ratio's whole table,
        and one cut off within a ratio the rows of the methods it finished (a board takes many
        CPU-hours over several sessions; its rows come as they are done, not all at the end).

        A study other workers are still busy with is left for later: the worker goes on to the
        next method or ratio and comes back; it waits only when every remaining study is blocked,
        and exits when all are done.
        """
        pending: list[MethodStudies] = []
        for train_ratio in self.plan.train_ratios:
            at_ratio = [s for s in self.studies if s.train_ratio == train_ratio]
            for studies in at_ratio:
                while self._step(studies) == "ran":
                    pass
            pending += self._settle(at_ratio, wait=False)
        self._settle(pending, wait=True)

    def _settle(self, pending: list[MethodStudies], wait: bool) -> list[MethodStudies]:
        """Run these studies' remaining trials (searches re-queued, then finals) until all are done
        or, unless ``wait``, every one left is blocked by trials other workers run; return those."""
        last_notice = 0.0
        while pending:
            states = {id(s): self._step(s) for s in pending}
            pending = [s for s in pending if states[id(s)] != "done"]
            if pending and "ran" not in states.values():
                if not wait:
                    return pending
                if time.monotonic() - last_notice > 60:
                    names = ", ".join(s.method for s in pending)
                    self.report(f"[w{self.index}] waiting for trials other workers are running ({names})")
                    last_notice = time.monotonic()
                time.sleep(2)
        return []

    # Each step runs at most one trial and returns "ran", "blocked" (others are busy) or "done".
    def _step_search(self, studies: MethodStudies) -> str:
        study = self._sampler_study(studies)
        recover_all(study)
        progress = study_progress(study, studies.budget)
        if progress.can_start:
            self._run_one(study, lambda trial: self._search_objective(studies, trial))
            return "ran"
        return "done" if progress.done else "blocked"

    def _step(self, studies: MethodStudies) -> str:
        stop_point()
        search_state = self._step_search(studies)  # a re-queued search trial comes first
        if search_state != "done":
            return search_state
        best = studies.best_trial()
        if best is None:
            return "done"  # every search trial failed: reported in the table, nothing to re-run
        study = studies.final_study(best)
        recover_all(study)
        progress = study_progress(study, len(self.plan.final_seeds))
        if progress.can_start:
            self._run_one(study, lambda trial: self._final_objective(studies, best, trial))
            return "ran"
        return "done" if progress.done else "blocked"

    def _sampler_study(self, studies: MethodStudies) -> optuna.Study:
        # A sampler seed that differs per study, per worker and per resumed run: the searches of
        # different methods must not try the same points (a seed from the worker and trial number
        # alone gave all 14 methods the same 8 points), workers started together must not propose
        # the same first parameters, nor a resumed run repeat its first ones.
        existing = len(studies.search_study().get_trials(deepcopy=False))
        study_seed = int(hashlib.sha256(studies.search_name.encode()).hexdigest()[:8], 16)
        return studies.search_study(sampler_seed=(study_seed + self.index * 1009 + existing) % 2**32)

    def _run_one(self, study: optuna.Study, objective: Callable[[optuna.Trial], float]) -> None:
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except (Interrupted, SystemExit, KeyboardInterrupt, RecordNotWritten) as stop:
            requeued = recover_interrupted(study, only_pid=os.getpid())
            why = "its record could not be written" if isinstance(stop, RecordNotWritten) else "interrupted"
            self.report(f"{why}: trial(s) {requeued} of {study.study_name} queued again")
            raise
        self.after_trial()

    def _search_objective(self, studies: MethodStudies, trial: optuna.Trial) -> float:
        """The mean validation error of the trial's configuration over the plan's search splits.

        At a small train ratio one split's validation part is a few dozen samples (53 at ratio 0.1
        on Office-Caltech, none for dslr), too few to tell configurations apart; more splits
        average that noise down. The pruner watches the first split only.
        """
        claim(trial, studies.budget)
        searched = {d.name: d.suggest(trial) for d in studies.search_space}
        errors = []
        seeds = self.plan.search_seeds_at(studies.train_ratio)
        for index, seed in enumerate(seeds):
            config = self.plan.config(studies.method, studies.train_ratio, seed=seed, **searched)
            callbacks = [ValidationPruning(trial)] if index == 0 else []
            what = "trial" if len(seeds) == 1 else f"trial, split {index + 1}/{len(seeds)}"
            with self._reported(trial, studies, what, searched, config, SEARCH):
                result = self._train(config, trial, SEARCH, callbacks, studies, search_split=index)
                if result.record.val_err is None:
                    raise ValueError(f"no task has a validation part at train_ratio={studies.train_ratio} and "
                                     f"val_ratio={config.val_ratio}, so a search has nothing to select on; raise either")
            errors.append(result.record.val_err)
        trial.set_user_attr("split_errors", errors)
        return search_objective(errors)

    def _final_objective(self, studies: MethodStudies, best: FrozenTrial, trial: optuna.Trial) -> float:
        position = claim(trial, len(self.plan.final_seeds))
        seed = trial.user_attrs["seed"] if position is None else self.plan.final_seeds[position]
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("best_trial", best.number)
        config = self.plan.config(studies.method, studies.train_ratio, seed=seed, **best.params)
        with self._reported(trial, studies, f"final seed {seed}", best.params, config, FINAL):
            result = self._train(config, trial, FINAL, [], studies)
        trial.set_user_attr("test_err_mean", result.record.test_err_mean)
        return result.record.final_objective()

    def _train(self, config: TrainConfig, trial: optuna.Trial, job: str, callbacks: list[L.Callback],
               studies: MethodStudies, **fields: Any) -> RunResult:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from ..train import train  # imports Lightning's trainer stack only where trials run

        study_name = trial.study.study_name
        try:
            result = train(
                config, self.job.data_dir, self.out_dir, progress=False, callbacks=[StopPoints(), *callbacks],
                # One group per method and ratio holding its search and its finals (the job type tells
                # them apart), named after the search study; a name that says what ran, unique in a project.
                tracking=Tracking(job_type=job, group=studies.search_name,
                                  name=f"{run_name(config, job, self.plan.dataset_name)}/t{trial.number}" if job == SEARCH else None),
                record_fields={"study": study_name, "trial": trial.number, "storage": storage_label(self.storage_url),
                               # the ranges searched, so a table can flag a choice at their edge
                               "search_space": {d.name: d.describe() for d in studies.search_space},
                               "equal_methods": [m for m, same in self.plan.equal_to.items() if same == studies.method],
                               **fields},
            )
        except SIGTERMException:
            # Lightning defers SIGTERM to its loops' own stop points too and raises this there when
            # one comes before ours: a SystemExit, which would end the sweep with exit code 0.
            raise Interrupted("SIGTERM") from None
        trial.set_user_attr("record", str(result.path))
        return result

    @contextmanager
    def _reported(self, trial: optuna.Trial, studies: MethodStudies, what: str, params: dict[str, Any],
                  config: TrainConfig, job: str) -> Iterator[None]:
        """Report how the trial ended; a pruned or failed one also leaves a record, so that a
        storage rebuilt from the records knows its position was settled."""
        started, started_cpu = time.perf_counter(), time.process_time()
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        running = f"{studies.method} r{studies.train_ratio:g} {what}"
        label = f"[w{self.index}] {running} (#{trial.number}, {shown})"
        self.on_start(running)
        try:
            yield
        except RecordWriteError as error:
            raise RecordNotWritten(str(error)) from error
        except optuna.TrialPruned as pruned:
            self.report(f"{label}: pruned ({pruned})")
            self._record_unfinished(trial, config, job, PRUNED, str(pruned), time.perf_counter() - started,
                                    time.process_time() - started_cpu)
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr("fail_reason", reason[:2000])
            self.report(f"{label}: FAILED, {reason}")
            self._record_unfinished(trial, config, job, FAILED, reason[:2000], time.perf_counter() - started,
                                    time.process_time() - started_cpu)
            raise
        self.report(f"{label}: done in {time.perf_counter() - started:.1f} s")

    def _record_unfinished(self, trial: optuna.Trial, config: TrainConfig, job: str, state: str, reason: str,
                           wall_time: float, cpu_time: float) -> None:
        """The record of a trial that ended without a result: what it ran and why it stopped."""
        (frozen,) = [t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number]
        record = RunRecord(
            run_id=new_run_id(config.seed), job=job, state=state, reason=reason, dataset=dataset_name(config.dataset),
            method=config.method, config=config.to_dict(), seed=config.seed, features=self.features,
            study=trial.study.study_name, trial=trial.number, storage=storage_label(self.storage_url),
            reported_errors={str(epoch): value for epoch, value in sorted(frozen.intermediate_values.items())},
            wall_time_s=round(wall_time, 3), cpu_time_s=round(cpu_time, 3), git_rev=git_revision(),
            versions=package_versions(), torch_threads=torch.get_num_threads(),
            # where the trial ran: train()'s accelerator "auto" takes the GPU when there is one
            machine=machine_description("cuda" if torch.cuda.is_available() else "cpu"),
        )
        path = record.write(record_path(self.out_dir, record.dataset, config.method, record.run_id))
        trial.set_user_attr("record", str(path))


# ---- entry points -----------------------------------------------------------------------


@contextmanager
def _handled_by(handler: Callable[[int, Any], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the body at once (a sweep's parent,
    which only waits on its workers); the old handlers come back after."""
    with _handled_by(raise_interrupted):
        yield


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM ask the body to stop at its next :func:`stop_point`: before each trial
    and after every batch of a run (:class:`StopPoints`). Raised from the handler itself, the
    exception could land inside a library that holds a lock (SQLAlchemy's connection pool while
    Optuna stores an epoch's report, tqdm's write lock), and the re-queue of the trial that follows
    would wait on that lock for ever. A one-worker sweep sent SIGTERM mid-trial once hung in a CI
    run between the signal and the re-queue, where such a wait would be (its stack was not caught;
    the test now prints it)."""
    _stop_request.signal_name = None
    try:
        with _handled_by(request_stop):
            yield
    finally:
        _stop_request.signal_name = None


def run_worker(job: SweepJob, index: int, report: Callable[[str], None] = print,
               after_trial: Callable[[], None] = lambda: None, on_start: Callable[[str], None] = lambda what: None) -> None:
    """Run ``job``'s trials in this process until none is left; SIGINT and SIGTERM re-queue the running one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with interrupts_deferred():
        Worker(job, index, report, after_trial, on_start).run()


def run_spawned_worker(path: Path, index: int) -> int:
    """The body of a spawned worker process (:func:`benchmark.sweep.command.spawn_workers`) or
    scheduler job (:mod:`benchmark.sweep.launcher`): run the job in ``path``; 130 when interrupted."""
    try:
        run_worker(SweepJob.read(path), index)
    except Interrupted:
        return 130
    except RecordNotWritten as error:
        print(f"mtlbench sweep: {error}; the trial is queued again", file=sys.stderr)
        return 1
    return 0
