"""Optuna sweeps: search lambda and hidden per method, then re-run the best on new splits.

Every (dataset, method, protocol) has a *search* study, whose objective is the mean validation
error of the selected epoch, and a *final* study, one trial per final seed with the best search
configuration. Both live in one Optuna storage (SQLite under ``results/`` by default; any RDB URL
or a journal file for several machines), so any number of worker processes, on one machine or
many, run the same command against the same storage and share the work.

How the work is shared without a coordinator:

- A *fresh* trial takes the next free position of its study: its position is the number of
  fresh trials numbered below it (Optuna numbers trials atomically). Position k < budget runs
  (in a final study, with final seed k); a trial past the budget, created only when two
  workers ask at the same moment, is closed at once as ``skipped`` and runs nothing.
- A trial whose process died (killed, machine lost) is failed and re-queued with the same
  parameters as a *retry* (``retry_of``): on this host found by its dead process id, on other
  hosts by Optuna's heartbeat (RDB storages). Finished trials are never re-run, and a study is
  done when every position is settled and nothing is running.
- A trial that raises or diverges is recorded as failed with its reason and counts as settled.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import optuna
from optuna.trial import FrozenTrial, TrialState

from .config import TrainConfig
from .sweep_plan import SearchDimension, SweepPlan
from .tracking import (
    RecordWriteError,
    Tracking,
    git_revision,
    new_run_id,
    package_versions,
    record_path,
    write_json_atomic,
)

if TYPE_CHECKING:
    from .train import RunResult

DEFAULT_STORAGE = "sqlite:///results/optuna.db"
HEARTBEAT_INTERVAL_S = 60  # RDB storages: a trial whose process is silent for the grace period
HEARTBEAT_GRACE_S = 180  # ... is failed and re-queued by the next worker that looks
COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"  # a record's ``state`` (absent: complete)


def search_value(split_errors: Sequence[float]) -> float:
    """A search trial's objective: the mean over its search splits of the selected epoch's
    validation error (1 - mean validation accuracy over tasks)."""
    return sum(split_errors) / len(split_errors)


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached a worker: its running trial is re-queued, then it exits.

    A BaseException, so that neither Lightning nor Optuna records it as an ordinary failure.
    """


def raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


class RecordNotWritten(BaseException):
    """A trial trained but could not write its record: it is queued again, not counted as settled,
    and the worker stops (every later trial would lose its record too). A BaseException, like
    :class:`Interrupted`, so that Optuna does not close the trial as failed."""


class SkippedTrial(Exception):
    """A fresh trial created past its study's budget (two workers asked at once): runs nothing."""


# ---- storage ---------------------------------------------------------------------------------


def open_storage(url: str = DEFAULT_STORAGE) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``) or the path of a journal file."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write one file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
            heartbeat_stale_trial_callback=requeue,
        )


def storage_label(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if sep and at and ":" in credentials:
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


# ---- trial bookkeeping -----------------------------------------------------------------------


def _is_fresh(trial: FrozenTrial) -> bool:
    return "retry_of" not in trial.user_attrs


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed-by-interruption trial again, with the same parameters (and final seed)."""
    carried = {k: trial.user_attrs[k] for k in ("seed",) if k in trial.user_attrs}
    study.enqueue_trial(trial.params, user_attrs={**carried, "retry_of": trial.number})


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def recover_interrupted(study: optuna.Study, only_pid: int | None = None) -> list[int]:
    """Fail and re-queue this host's running trials whose process is gone (or is ``only_pid``)."""
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker") or {}
        if owner.get("host") != host:
            continue
        if only_pid is not None and owner.get("pid") != only_pid:
            continue
        if only_pid is None and _process_alive(int(owner.get("pid", -1))):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first and re-queued it
        requeue(study, trial)
        recovered.append(trial.number)
    return recovered


def _recover_all(study: optuna.Study) -> None:
    """Re-queue trials of dead processes: this host's at once, other hosts' by heartbeat."""
    recover_interrupted(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op for storages without a heartbeat


@dataclass(frozen=True)
class StudyProgress:
    """Where one study stands; ``settled`` counts fresh positions that are finished for good."""

    budget: int
    fresh: int  # fresh trials created, settled or running
    settled: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int

    @property
    def can_start(self) -> bool:
        return self.waiting > 0 or self.fresh < self.budget

    @property
    def done(self) -> bool:
        return self.settled >= self.budget and self.running == 0 and self.waiting == 0


def study_progress(study: optuna.Study, budget: int) -> StudyProgress:
    return trials_progress(study.get_trials(deepcopy=False), budget)


def trials_progress(trials: Sequence[FrozenTrial], budget: int) -> StudyProgress:
    """Where a study of ``budget`` fresh positions stands, from its trials."""
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    counted = [t for t in trials if t.number not in retried and "skipped" not in t.user_attrs]
    finished = [t for t in counted if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    return StudyProgress(
        budget=budget,
        fresh=sum(1 for t in trials if _is_fresh(t) and "skipped" not in t.user_attrs and t.state != TrialState.WAITING),
        settled=len(finished),
        complete=sum(1 for t in finished if t.state == TrialState.COMPLETE),
        pruned=sum(1 for t in finished if t.state == TrialState.PRUNED),
        failed=sum(1 for t in finished if t.state == TrialState.FAIL),
        running=sum(1 for t in counted if t.state == TrialState.RUNNING),
        waiting=sum(1 for t in counted if t.state == TrialState.WAITING),
    )


def _claim(trial: optuna.Trial, budget: int) -> int | None:
    """Mark the trial as this process's; return its fresh position (None for a retry)."""
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    if "retry_of" in trial.user_attrs:
        return None
    earlier = [
        t for t in trial.study.get_trials(deepcopy=False)
        if t.number < trial.number and _is_fresh(t) and t.state != TrialState.WAITING and "skipped" not in t.user_attrs
    ]
    if len(earlier) >= budget:
        trial.set_user_attr("skipped", "budget already taken by other workers")
        raise SkippedTrial(f"trial {trial.number}: all {budget} positions are taken")
    return len(earlier)


# ---- the studies of one method ---------------------------------------------------------------


class ValidationPruning(L.Callback):
    """Reports the best validation error so far each epoch; stops the trial if Optuna prunes it."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.best_error = float("inf")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.best_error = min(self.best_error, 1 - module.epoch_metrics["val"]["val/acc_mean"])
        self.trial.report(self.best_error, trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: best val error {self.best_error:.4f}")


def _pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    spec = dict(spec)
    kind = spec.pop("name", "median")
    pruners = {"median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}
    if kind not in pruners:
        raise ValueError(f"pruner.name {kind!r}; valid: {', '.join(pruners)}")
    return pruners[kind](**spec)


def _best_of(complete: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The lowest value; the earliest trial among equals, so every reader picks the same one."""
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


@dataclass
class MethodStudies:
    """The search and final studies of one method at one train ratio."""

    plan: SweepPlan
    method: str
    train_ratio: float
    storage: optuna.storages.BaseStorage

    @property
    def search_name(self) -> str:
        return self.plan.study_name(self.method, self.train_ratio)

    @property
    def search_space(self) -> tuple[SearchDimension, ...]:
        return self.plan.search_space(self.method)

    def search_study(self, sampler_seed: int | None = None) -> optuna.Study:
        return optuna.create_study(
            storage=self.storage,
            study_name=self.search_name,
            direction="minimize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=self.plan.n_startup_trials),
            pruner=_pruner(dict(self.plan.pruner)),
        )

    def best_trial(self) -> FrozenTrial | None:
        """The search's best trial; for a fixed plan, a stand-in with no parameters (the protocol)."""
        if self.plan.fixed:
            # value: Optuna requires one for a complete trial; nothing reads it for a fixed plan.
            return optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, params={}, distributions={})
        return _best_of(self.search_study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def final_study(self, best: FrozenTrial, create: bool = True) -> optuna.Study | None:
        """The final runs of ``best``; None when not created yet and ``create`` is False.

        Named after the best trial: more search trials that find a better one start new finals.
        Only a worker whose search is done creates it, so watching progress creates nothing.
        """
        name = f"{self.search_name}/final/{'fixed' if self.plan.fixed else f't{best.number}'}"
        if create:
            return optuna.create_study(storage=self.storage, study_name=name, direction="minimize", load_if_exists=True)
        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            return None

    def search_progress(self) -> StudyProgress:
        return study_progress(self.search_study(), self.plan.trials)

    def progress(self) -> tuple[StudyProgress, StudyProgress | None]:
        """(search, finals) progress, reading the search study once: a watcher calls this for
        every method every few seconds, and each read of a study is a query of all its trials."""
        trials = self.search_study().get_trials(deepcopy=False)
        search = trials_progress(trials, self.plan.trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = self.best_trial() if self.plan.fixed else _best_of(complete)
        study = None if best is None else self.final_study(best, create=False)
        return search, None if study is None else study_progress(study, len(self.plan.final_seeds))


def plan_studies(plan: SweepPlan, storage: optuna.storages.BaseStorage) -> list[MethodStudies]:
    """The studies of every method at every train ratio of the plan, in the order they run."""
    return [MethodStudies(plan, method, ratio, storage) for ratio in plan.train_ratios for method in plan.running_methods]


# ---- running trials --------------------------------------------------------------------------


@dataclass
class Worker:
    """Runs trials of a plan until none is left to start; one per process."""

    plan: SweepPlan
    storage_url: str
    data_dir: Path
    out_dir: Path
    index: int = 0
    report: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.studies = plan_studies(self.plan, open_storage(self.storage_url))

    def run(self) -> None:
        """Search every method first (so workers spread over them), then the finals.

        A study other workers are still busy with is left for later; the worker waits only when
        every remaining study is blocked, and exits when all are done.
        """
        for studies in self.studies:
            while self._step_search(studies) == "ran":
                pass
        pending = list(self.studies)
        last_notice = 0.0
        while pending:
            states = {id(s): self._step(s) for s in pending}
            pending = [s for s in pending if states[id(s)] != "done"]
            if pending and "ran" not in states.values():
                if time.monotonic() - last_notice > 60:
                    names = ", ".join(s.method for s in pending)
                    self.report(f"[w{self.index}] waiting for trials other workers are running ({names})")
                    last_notice = time.monotonic()
                time.sleep(2)

    # Each step runs at most one trial and returns "ran", "blocked" (others are busy) or "done".
    def _step_search(self, studies: MethodStudies) -> str:
        study = self._sampler_study(studies)
        _recover_all(study)
        progress = study_progress(study, self.plan.trials)
        if progress.can_start:
            self._run_one(study, lambda trial: self._search_objective(studies, trial))
            return "ran"
        return "done" if progress.done else "blocked"

    def _step(self, studies: MethodStudies) -> str:
        search_state = self._step_search(studies)  # a re-queued search trial comes first
        if search_state != "done":
            return search_state
        best = studies.best_trial()
        if best is None:
            return "done"  # every search trial failed: reported in the table, nothing to re-run
        study = studies.final_study(best)
        _recover_all(study)
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

    def _search_objective(self, studies: MethodStudies, trial: optuna.Trial) -> float:
        """The mean validation error of the trial's configuration over the plan's search splits.

        At a small train ratio one split's validation part is a few dozen samples (53 at ratio 0.1
        on Office-Caltech, none for dslr), too few to tell configurations apart; more splits
        average that noise down. The pruner watches the first split only.
        """
        _claim(trial, self.plan.trials)
        searched = {d.name: d.suggest(trial) for d in studies.search_space}
        errors = []
        seeds = self.plan.search_seeds_at(studies.train_ratio)
        for index, seed in enumerate(seeds):
            config = self.plan.config(studies.method, studies.train_ratio, seed=seed, **searched)
            callbacks = [ValidationPruning(trial)] if index == 0 else []
            what = "trial" if len(seeds) == 1 else f"trial, split {index + 1}/{len(seeds)}"
            with self._reported(trial, studies, what, searched, config, "sweep"):
                result = self._train(config, trial, "sweep", callbacks, studies, search_split=index)
                if result.record["val_acc_mean"] is None:
                    raise ValueError(f"no task has a validation part at train_ratio={studies.train_ratio} and "
                                     f"val_ratio={config.val_ratio}, so a search has nothing to select on; raise either")
            errors.append(1 - result.record["val_acc_mean"])
        trial.set_user_attr("split_errors", errors)
        return search_value(errors)

    def _final_objective(self, studies: MethodStudies, best: FrozenTrial, trial: optuna.Trial) -> float:
        position = _claim(trial, len(self.plan.final_seeds))
        seed = trial.user_attrs["seed"] if position is None else self.plan.final_seeds[position]
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("best_trial", best.number)
        config = self.plan.config(studies.method, studies.train_ratio, seed=seed, **best.params)
        with self._reported(trial, studies, f"final seed {seed}", best.params, config, "final"):
            result = self._train(config, trial, "final", [], studies)
        trial.set_user_attr("test_err_mean", result.record["test_err_mean"])
        # Nothing is selected on a final's value; a fixed-budget run without validation reports test error.
        val_acc = result.record["val_acc_mean"]
        return result.record["test_err_mean"] if val_acc is None else 1 - val_acc

    def _train(self, config: TrainConfig, trial: optuna.Trial, job: str, callbacks: list[L.Callback],
               studies: MethodStudies, **fields: Any) -> RunResult:
        from .train import (
            train,  # imports Lightning's trainer stack only where trials run
        )

        study_name = trial.study.study_name
        result = train(
            config, self.data_dir, self.out_dir, progress=False, callbacks=callbacks,
            tracking=Tracking(job_type=job, group=study_name, name=f"{config.method}-{job}-t{trial.number}"),
            record_fields={"study": study_name, "trial": trial.number, "storage": storage_label(self.storage_url),
                           # the ranges searched, so a table can flag a choice at their edge
                           "search_space": {d.name: d.describe() for d in studies.search_space},
                           "equal_methods": [m for m, same in self.plan.equal_to.items() if same == studies.method],
                           **fields},
        )
        trial.set_user_attr("record", str(result.path))
        return result

    @contextmanager
    def _reported(self, trial: optuna.Trial, studies: MethodStudies, what: str, params: dict[str, Any],
                  config: TrainConfig, job: str) -> Iterator[None]:
        """Report how the trial ended; a pruned or failed one also leaves a record, so that a
        storage rebuilt from the records knows its position was settled."""
        started = time.perf_counter()
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        label = f"[w{self.index}] {studies.method} r{studies.train_ratio:g} {what} (#{trial.number}, {shown})"
        try:
            yield
        except RecordWriteError as error:
            raise RecordNotWritten(str(error)) from error
        except optuna.TrialPruned as pruned:
            self.report(f"{label}: pruned ({pruned})")
            self._record_unfinished(trial, config, job, PRUNED, str(pruned), time.perf_counter() - started)
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr("fail_reason", reason[:2000])
            self.report(f"{label}: FAILED, {reason}")
            self._record_unfinished(trial, config, job, FAILED, reason[:2000], time.perf_counter() - started)
            raise
        self.report(f"{label}: done in {time.perf_counter() - started:.1f} s")

    def _record_unfinished(self, trial: optuna.Trial, config: TrainConfig, job: str, state: str, reason: str,
                           wall_time: float) -> None:
        """The record of a trial that ended without a result: what it ran and why it stopped."""
        (frozen,) = [t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number]
        run_id = new_run_id(config.seed)
        path = record_path(self.out_dir, config.dataset, config.method, run_id)
        write_json_atomic(path, {
            "run_id": run_id, "job": job, "state": state, "reason": reason,
            "dataset": config.dataset, "method": config.method, "config": config.to_dict(), "seed": config.seed,
            "study": trial.study.study_name, "trial": trial.number, "storage": storage_label(self.storage_url),
            "reported_errors": {str(epoch): value for epoch, value in sorted(frozen.intermediate_values.items())},
            "wall_time_s": round(wall_time, 3), "git_rev": git_revision(), "versions": package_versions(),
        })
        trial.set_user_attr("record", str(path))


# ---- entry points -----------------------------------------------------------------------


def prepare(plan: SweepPlan, storage_url: str, records_dir: Path | None = None, searches_settled: bool = False,
            report: Callable[[str], None] = print) -> list[MethodStudies]:
    """Create every search study once, before workers start (two processes creating a fresh
    SQLite file at once can crash one), and re-queue this host's trials whose process died.

    A study the storage lacks is first rebuilt from the records under ``records_dir`` that name
    it (a fresh checkout, a deleted database): see :mod:`benchmark.sweep_restore`.
    """
    from .sweep_restore import restore_studies  # it builds on this module

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = plan_studies(plan, open_storage(storage_url))
    if records_dir is not None:
        for line in restore_studies(studies, records_dir, searches_settled):
            report(line)
    for method_studies in studies:
        recover_interrupted(method_studies.search_study())
    return studies


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the body; the old handlers come back after."""
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_worker(plan: SweepPlan, storage_url: str, data_dir: Path, out_dir: Path, index: int,
               report: Callable[[str], None] = print) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with interrupts_raised():
        Worker(plan, storage_url, data_dir, out_dir, index, report).run()
