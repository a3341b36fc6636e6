"""How long runs take, from the records' run times: the time a sweep has left, announced when it
starts, and the bench's time to leaderboard (:func:`benchmark.bench.bench_cost`).

A record's run time (:attr:`RunRecord.run_seconds`) is its process's CPU time, or its wall time
on one worker in records older than that field, so sums are CPU-hours of the machine that wrote
the records (this suite's 2-core reference machine for the committed ones): a projection for
another machine is only as good as that likeness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..records import RunRecord
from .studies import MethodStudies


def mean_run_seconds(times: Iterable[tuple[float, float]], train_ratio: float) -> tuple[float, bool] | None:
    """A method's mean run time at ``train_ratio`` from its ``(train_ratio, seconds)`` runs, and
    whether it was measured there (True) or scaled from the largest ratio it ran at (False); None
    when it never ran. Scaled by the ratio of the train ratios: an epoch is a pass over the largest
    task, so its steps grow with the train ratio, while the penalty's cost per step does not."""
    times = list(times)
    here = [seconds for ratio, seconds in times if ratio == train_ratio]
    if here:
        return sum(here) / len(here), True
    if not times:
        return None
    largest = max(ratio for ratio, _ in times)
    at_largest = [seconds for ratio, seconds in times if ratio == largest]
    return sum(at_largest) / len(at_largest) * train_ratio / largest, False


@dataclass(frozen=True)
class TimeLeft:
    """The runs a sweep has left, the CPU-hours they will take, and what each study's time is
    projected from: its own runs, the method's runs in other studies (a plan variant, an earlier
    protocol: other code, perhaps slower), or the others' mean (no run of the method at all)."""

    runs: int
    cpu_hours: float
    own: int  # studies with runs left, timed from their own records
    other: int  # ... from the method's records in other studies
    guessed: int  # ... at the mean of the others

    def describe(self, workers: int) -> str:
        if self.runs == 0:
            return "time left: none, every run is settled"
        if self.own + self.other == 0:
            return f"time left: {self.runs} runs; no recorded run of these methods to project their time from"
        basis = ", ".join(f"{n} {what}" for n, what in ((self.own, "from their own runs"),
                                                        (self.other, "from the method's runs in other studies"),
                                                        (self.guessed, "at the others' mean")) if n)
        return (f"time left: {self.runs} runs, about {self.cpu_hours:.1f} CPU-hours (about "
                f"{self.cpu_hours / max(workers, 1):.1f} h with {workers} worker(s)), projected from the records' run "
                f"times (studies: {basis})")


def _matching(records: Sequence[RunRecord], studies: MethodStudies) -> tuple[list[tuple[float, float]], bool]:
    """(train ratio, seconds) of the records of this study's method on the same input and layering,
    and whether they are this very study's: its own where it has any, else those of any other
    study (a variant, an earlier protocol)."""
    config = studies.plan.config(studies.method, studies.train_ratio, seed=0)
    same = [r for r in records if r.dataset == studies.plan.dataset_name and r.method == studies.method
            and r.run_seconds > 0 and r.config.get("layers") == config.layers
            and dict(r.config.get("dataset_params") or {}) == dict(config.dataset_params)]
    own = [r for r in same if (r.study or "").startswith(studies.search_name)]
    return [(r.train_ratio, r.run_seconds) for r in (own or same)], bool(own)


def time_left(all_studies: Sequence[MethodStudies], records: Sequence[RunRecord]) -> TimeLeft:
    """The runs not yet settled in ``all_studies`` (a running one counts as left) and their
    projected CPU-hours: each method's mean run time (:func:`mean_run_seconds`), a search position
    costing one run per search split; a method with no recorded run counts at the others' mean."""
    pending: list[tuple[int, float | None, bool]] = []  # (runs left, seconds per run or None, own records)
    for studies in all_studies:
        search, final = studies.progress()
        n_seeds = len(studies.plan.final_seeds)
        splits = len(studies.plan.search_seeds_at(studies.train_ratio))
        left = max(search.budget - search.settled, 0) * splits + n_seeds - (min(final.settled, n_seeds) if final else 0)
        if left:
            times, own = _matching(records, studies)
            mean = mean_run_seconds(times, studies.train_ratio)
            pending.append((left, None if mean is None else mean[0], own))
    known = [seconds for _, seconds, _ in pending if seconds is not None]
    fallback = sum(known) / len(known) if known else 0.0
    seconds = sum(left * (fallback if s is None else s) for left, s, _ in pending)
    own = sum(1 for _, s, is_own in pending if s is not None and is_own)
    return TimeLeft(runs=sum(left for left, _, _ in pending), cpu_hours=seconds / 3600, own=own,
                    other=len(known) - own, guessed=len(pending) - len(known))
