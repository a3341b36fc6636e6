"""Rebuild a sweep's studies from its run records when the Optuna storage has lost them.

The records under ``results/runs/`` are committed; the SQLite storage is not. A sweep started on
a fresh checkout, or after ``results/optuna.db`` was deleted, would otherwise run every search
and final again. Before the workers start, each study the storage does not know is rebuilt from
the records that name it (``study`` and ``trial`` fields), so the sweep continues where the
records end:

- A recorded search trial comes back in the state it ended in, under its own trial number (so
  the best trial, and the name of its finals, are unchanged): COMPLETE with its parameters, its
  value (1 - mean validation accuracy of the selected epoch) and the best-so-far errors it
  reported each epoch, which the pruner reads; PRUNED or FAILED (these records hold no results).
- A number without a record was cut off and retried under a later number, or ran before
  pruned and failed trials left records. Where the records hold finals of the study, its search
  was settled when they started, so the missing positions are restored as settled (failed, with
  the reason); so they are where the user says the searches had finished
  (``--searches-settled``). Otherwise they are restored as ``skipped`` placeholders that only
  keep the numbering, and the positions run again.
- A recorded final comes back with its seed. A final seed below the last recorded one that has
  no record (its run was cut off) is queued again, as an interrupted trial would be.

Only studies absent from the storage are rebuilt: a shared storage that already holds a study
is the truth, and records gathered from other machines never add trials to it twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from ..records import COMPLETE, FAILED, FINAL, PRUNED, SEARCH, RunRecord, read_records, search_objective
from .studies import MethodStudies, requeue

LOST = "restored from records: this trial left none (pruned, failed or cut off)"


def _restored_trial(record: RunRecord, distributions: dict[str, BaseDistribution],
                    user_attrs: dict[str, Any], split_records: Sequence[RunRecord] = ()) -> FrozenTrial:
    """The trial a record was written by, in the state it ended in (see ``Worker._reported``).

    A search trial over several splits left one record per split (``split_records``, ``record``
    the first); its value is the mean over them, as the worker's objective computed it.
    """
    common = {
        "params": {name: record.config[name] for name in distributions},
        "distributions": distributions,
        "user_attrs": {**user_attrs, "record": str(record.path), "restored": True},
    }
    if record.state == PRUNED:
        reported = {int(epoch): value for epoch, value in (record.reported_errors or {}).items()}
        return create_trial(state=TrialState.PRUNED, intermediate_values=reported, **common)
    if record.state == FAILED:
        common["user_attrs"]["fail_reason"] = record.reason
        return create_trial(state=TrialState.FAIL, **common)
    if record.job == SEARCH:
        value = search_objective([r.val_err for r in split_records or [record]])
        return create_trial(state=TrialState.COMPLETE, value=value, intermediate_values=record.best_so_far_errors(),
                            **common)
    return create_trial(state=TrialState.COMPLETE, value=record.final_objective(), **common)


def _add_in_order(study: optuna.Study, recorded: dict[int, FrozenTrial], placeholder: dict[str, Any]) -> None:
    """Add the recorded trials under their own numbers; a number without a record gets a failed
    trial with ``placeholder`` user attributes."""
    for number in range(max(recorded, default=-1) + 1):
        study.add_trial(recorded.get(number) or create_trial(state=TrialState.FAIL, user_attrs=placeholder))


def _restore_search(studies: MethodStudies, records: Sequence[RunRecord], settled: bool) -> int:
    """Rebuild the search study; return how many positions were restored as lost but settled."""
    study = studies.search_study()
    distributions = {d.name: d.distribution() for d in studies.search_space}
    by_trial: dict[int, list[RunRecord]] = defaultdict(list)
    for record in records:
        by_trial[record.trial].append(record)
    recorded = {}
    n_splits = len(studies.plan.search_seeds_at(studies.train_ratio))
    for number, runs in by_trial.items():
        unfinished = [r for r in runs if r.state != COMPLETE]
        runs = sorted(runs, key=lambda r: r.search_split or 0)
        if unfinished:
            recorded[number] = _restored_trial(unfinished[0], distributions, {})
        elif len(runs) == n_splits:
            recorded[number] = _restored_trial(runs[0], distributions, {}, split_records=runs)
        # else: cut off between its splits; the number is restored as lost (below)
    _add_in_order(study, recorded, {"fail_reason": LOST} if settled else {"skipped": LOST})
    if not settled:
        return 0
    for _ in range(studies.budget - len(study.get_trials(deepcopy=False))):
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": LOST}))
    return len(study.get_trials(deepcopy=False)) - len(recorded)


def _restore_final(studies: MethodStudies, best_number: int | None, records: Sequence[RunRecord]) -> list[int]:
    """Rebuild one final study; return the seeds queued again."""
    if best_number is None:  # a fixed plan: its finals study is named after no trial
        study = studies.final_study(studies.best_trial())
    else:
        best = create_trial(state=TrialState.COMPLETE, value=0.0)
        best.number = best_number  # the finals are named after the search trial they re-run
        study = studies.final_study(best)
    recorded = {}
    for record in records:
        attrs = {"seed": record.seed, **({} if best_number is None else {"best_trial": best_number})}
        if record.test_err_mean is not None:
            attrs["test_err_mean"] = record.test_err_mean
        recorded[record.trial] = _restored_trial(record, {}, attrs)
    # Gaps in a final study are runs cut off and retried under a later number: never a position.
    _add_in_order(study, recorded, {"skipped": LOST})
    seeds = list(studies.plan.final_seeds)
    done = {record.seed for record in records if record.seed in seeds}
    last = max((seeds.index(seed) for seed in done), default=-1)
    missing = [seed for seed in seeds[: last + 1] if seed not in done]
    for seed in missing:  # a position taken by a run that never finished: queue it again
        study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"seed": seed, "fail_reason": LOST}))
        requeue(study, study.get_trials(deepcopy=False)[-1])
    return missing


def restore_studies(method_studies: Iterable[MethodStudies], records_dir: Path,
                    searches_settled: bool = False) -> list[str]:
    """Rebuild every study of ``method_studies`` that the storage lacks and the records under
    ``records_dir`` name; return one line per rebuilt study, for the user.

    ``searches_settled``: the user knows the searches had finished (from the sweep's logs), so
    positions without a record are settled even where no final had started yet.
    """
    method_studies = list(method_studies)
    if not method_studies:
        return []
    storage = method_studies[0].storage
    known = {summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    wanted = {s.search_name: s for s in method_studies if s.search_name not in known}
    if not wanted:
        return []
    by_study: dict[str, list[RunRecord]] = defaultdict(list)
    dataset = method_studies[0].plan.dataset_name
    found = read_records(Path(records_dir) / dataset, jobs=(SEARCH, FINAL), states=(COMPLETE, PRUNED, FAILED))
    for record in found.runs:
        if record.study is not None and record.trial is not None:
            by_study[record.study].append(record)

    lines = []
    for name, studies in wanted.items():
        finals = {study: runs for study, runs in by_study.items() if study.startswith(f"{name}/final/")}
        searched = by_study.get(name, [])
        if not searched and not finals:
            continue
        lost = _restore_search(studies, searched, settled=bool(finals) or searches_settled) if not studies.plan.fixed else 0
        line = f"restored {name} from {records_dir}: {len(searched)} search record(s)"
        line += f" and {lost} settled without a record" if lost else ""
        for final_name, runs in sorted(finals.items()):
            tag = final_name.rsplit("/", 1)[1]
            queued = _restore_final(studies, None if tag == "fixed" else int(tag.removeprefix("t")), runs)
            line += f"; finals {tag}: seeds {sorted(r.seed for r in runs)}"
            line += f" (seeds {queued} queued again)" if queued else ""
        best = studies.best_trial()
        ran = {f.rsplit("/", 1)[1] for f in finals}
        if best is not None and not studies.plan.fixed and ran and f"t{best.number}" not in ran:
            line += f"; the best search trial is now t{best.number}, whose finals will run"
        lines.append(line)
    return lines
