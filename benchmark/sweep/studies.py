"""The sweep's studies in one Optuna storage, and the bookkeeping that shares them between workers.

Every (dataset, method, protocol) has a *search* study, whose objective is the mean validation
error of the selected epoch (:func:`benchmark.records.search_objective`), and a *final* study,
one trial per final seed with the best search configuration. Both live in one Optuna storage
(SQLite under ``results/`` by default; any RDB URL or a journal file for several machines), so
any number of worker processes, on one machine or many, share the work without a coordinator:

- A *fresh* trial takes the next free position of its study: its position is the number of
  fresh trials numbered below it (Optuna numbers trials atomically). Position k < budget runs
  (in a final study, with final seed k); a trial past the budget, created only when two
  workers ask at the same moment, is closed at once as ``skipped`` and runs nothing.
- A trial whose process died (killed, machine lost) is failed and re-queued with the same
  parameters as a *retry* (``retry_of``): on this host found by its dead process id, on other
  hosts by Optuna's heartbeat (RDB storages). Finished trials are never re-run, and a study is
  done when every position is settled and nothing is running.
- A trial that raises or diverges is recorded as failed with its reason and counts as settled.

Only Optuna's public API is used, so a storage written by one Optuna version stays readable.
"""

from __future__ import annotations

import itertools
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .plan import SearchDimension, SweepPlan

DEFAULT_STORAGE = "sqlite:///results/optuna.db"
HEARTBEAT_INTERVAL_S = 60  # RDB storages: a trial whose process is silent for the grace period
HEARTBEAT_GRACE_S = 180  # ... is failed and re-queued by the next worker that looks


class SkippedTrial(Exception):
    """A fresh trial created past its study's budget (two workers asked at once): runs nothing."""


# ---- storage ---------------------------------------------------------------------------------


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")  # with an optional driver: postgresql+psycopg://


def check_storage_url(url: str) -> None:
    """Raise ValueError, saying what to write instead, for a storage URL that cannot work: an
    unknown scheme, or an SQLite file given as a bare path (read as a journal file, it fails
    with a decoding error)."""
    if "://" in url:
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"storage {storage_label(url)}: unknown scheme {scheme!r}; give sqlite:///PATH, "
                             "postgresql://USER:PASSWORD@HOST/DB, mysql://... or the path of a journal file")
        return
    path = Path(url)
    if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00":
        raise ValueError(f"storage {url} is an SQLite database; give it as sqlite:///{url} (a bare path is a "
                         "journal file)")


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


def is_fresh(trial: FrozenTrial) -> bool:
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
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first and re-queued it
        requeue(study, trial)
        recovered.append(trial.number)
    return recovered


def recover_all(study: optuna.Study) -> None:
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
        fresh=sum(1 for t in trials if is_fresh(t) and "skipped" not in t.user_attrs and t.state != TrialState.WAITING),
        settled=len(finished),
        complete=sum(1 for t in finished if t.state == TrialState.COMPLETE),
        pruned=sum(1 for t in finished if t.state == TrialState.PRUNED),
        failed=sum(1 for t in finished if t.state == TrialState.FAIL),
        running=sum(1 for t in counted if t.state == TrialState.RUNNING),
        waiting=sum(1 for t in counted if t.state == TrialState.WAITING),
    )


def fresh_position(number: int, trials: Sequence[FrozenTrial]) -> int:
    """The position of fresh trial ``number`` in its study: the fresh trials numbered below it."""
    return sum(1 for t in trials if t.number < number and is_fresh(t) and t.state != TrialState.WAITING
               and "skipped" not in t.user_attrs)


def claim(trial: optuna.Trial, budget: int) -> int | None:
    """Mark the trial as this process's; return its fresh position (None for a retry)."""
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    if "retry_of" in trial.user_attrs:
        return None
    position = fresh_position(trial.number, trial.study.get_trials(deepcopy=False))
    if position >= budget:
        trial.set_user_attr("skipped", "budget already taken by other workers")
        raise SkippedTrial(f"trial {trial.number}: all {budget} positions are taken")
    return position


class GridByPosition(optuna.samplers.BaseSampler):
    """Fresh trial k of a study runs point k of a grid, so a grid within the budget is searched
    once per point, by any number of workers; a retry keeps its parameters (enqueued). Optuna's
    GridSampler could not serve: its points are kept per trial in storage, and a retry, which has
    none, fails its bookkeeping (KeyError 'grid_id')."""

    def __init__(self, space: Sequence[SearchDimension]) -> None:
        self.names = [d.name for d in space]
        self.points = list(itertools.product(*(d.choices for d in space)))

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        position = fresh_position(trial.number, study.get_trials(deepcopy=False))
        return self.points[position % len(self.points)][self.names.index(param_name)]


# ---- the studies of one method ---------------------------------------------------------------


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

    @property
    def budget(self) -> int:
        """The search trials: the plan's, or fewer where the space is a smaller grid."""
        return self.plan.search_budget(self.method)

    def search_study(self, sampler_seed: int | None = None) -> optuna.Study:
        sampler: optuna.samplers.BaseSampler
        if self.plan.exhaustive(self.method):  # every point of a small grid once, none twice
            sampler = GridByPosition(self.search_space)
        else:
            sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=self.plan.n_startup_trials)
        return optuna.create_study(
            storage=self.storage,
            study_name=self.search_name,
            direction="minimize",
            load_if_exists=True,
            sampler=sampler,
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
        return study_progress(self.search_study(), self.budget)

    def progress(self) -> tuple[StudyProgress, StudyProgress | None]:
        """(search, finals) progress, reading the search study once: a watcher calls this for
        every method every few seconds, and each read of a study is a query of all its trials."""
        trials = self.search_study().get_trials(deepcopy=False)
        search = trials_progress(trials, self.budget)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = self.best_trial() if self.plan.fixed else _best_of(complete)
        study = None if best is None else self.final_study(best, create=False)
        return search, None if study is None else study_progress(study, len(self.plan.final_seeds))


def plan_studies(plan: SweepPlan, storage: optuna.storages.BaseStorage) -> list[MethodStudies]:
    """The studies of every method at every train ratio of the plan, in the order they run."""
    return [MethodStudies(plan, method, ratio, storage) for ratio in plan.train_ratios for method in plan.running_methods]
