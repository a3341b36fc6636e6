"""How long runs take, from the records' run times: the time a sweep has left, announced when it
starts, and the bench's time to leaderboard (:func:`benchmark.bench.bench_cost`).

A record's run time (:attr:`RunRecord.run_seconds`) is its process's CPU time, or its wall time
on one worker in records older than that field, so sums are CPU-hours of the machine that wrote
the records (this suite's 2-core reference machine for the committed ones): a projection for
another machine is only as good as that likeness.
"""

from __future__ import annotations

import math
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


def expected_run_seconds(runs: Sequence[tuple[float, int, float]], train_ratio: float,
                         hidden: Sequence[int] | None) -> tuple[float, bool] | None:
    """A study's mean run time at ``train_ratio`` when its runs use the ``hidden`` sizes, each as
    often (its search's choices, or the one size the protocol fixes), from the method's ``(train
    ratio, hidden, seconds)`` runs; None when it never ran. The ratio is handled as in
    :func:`mean_run_seconds`. A size the records did not run is scaled from the nearest size they
    did by seconds ~ hidden^b, b fitted to the sizes they did (kept in [0, 3]: a dense layer's cost
    grows with H, a trace norm's eigendecomposition with H^3), so a plan that widens the hidden
    range (2048 units for a method measured up to 1024) is not projected at the old sizes' mean;
    then each size counts as often. Where every size was run, where only one was, or ``hidden``
    is None: the mean of the runs as they are."""
    mixed = mean_run_seconds([(ratio, seconds) for ratio, _, seconds in runs], train_ratio)
    if mixed is None or not hidden:
        return mixed
    source = train_ratio if mixed[1] else max(ratio for ratio, _, _ in runs)
    by_size: dict[int, list[float]] = {}
    for ratio, size, seconds in runs:
        if ratio == source:
            by_size.setdefault(int(size), []).append(seconds * train_ratio / source)
    means = {size: sum(times) / len(times) for size, times in by_size.items()}
    if set(hidden) <= set(means) or len(means) < 2:
        # Every size was run (the runs' mix says how often a search visits each, which a uniform
        # weighting would not), or only one was: nothing to scale the others by.
        return mixed
    xs, ys = [math.log(size) for size in means], [math.log(t) for t in means.values()]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys)) / sum((x - x_mean) ** 2 for x in xs)
    slope = min(max(slope, 0.0), 3.0)

    def estimate(size: int) -> float:  # from the nearest size measured, along the fitted exponent
        nearest = min(means, key=lambda measured: abs(math.log(measured / size)))
        return means[nearest] * (size / nearest) ** slope

    estimates = [means[size] if size in means else estimate(size) for size in hidden]
    return sum(estimates) / len(estimates), mixed[1]


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


def _matching(records: Sequence[RunRecord], studies: MethodStudies,
              hidden: Sequence[int] | None) -> tuple[list[tuple[float, int, float]], bool]:
    """(train ratio, hidden, seconds) of the records of this study's method on the same input and
    layering, and whether they are this very study's: its own where they ran every one of its
    ``hidden`` sizes, else those of every study of the method (a variant, an earlier protocol, and
    its own), whose sizes tell how its time grows with hidden."""
    config = studies.plan.config(studies.method, studies.train_ratio, seed=0)
    same = [r for r in records if r.dataset == studies.plan.dataset_name and r.method == studies.method
            and r.run_seconds > 0 and r.config.get("layers") == config.layers
            and dict(r.config.get("dataset_params") or {}) == dict(config.dataset_params)]
    def is_own(record: RunRecord) -> bool:
        return (record.study or "").startswith(studies.search_name)

    own = [r for r in same if is_own(r)]
    covered = hidden is None or set(hidden) <= {int(r.config["hidden"]) for r in own}
    used = own if own and covered else same
    return [(r.train_ratio, int(r.config["hidden"]), r.run_seconds) for r in used], bool(used) and all(map(is_own, used))


def _hidden_sizes(studies: MethodStudies) -> list[int] | None:
    """The hidden sizes this study's runs will use: its search's choices, the protocol's one size
    where hidden is not searched, None where it is searched over a range."""
    searched = {d.name: d for d in studies.plan.search_space(studies.method)}
    if "hidden" not in searched:
        return [int(studies.plan.config(studies.method, studies.train_ratio, seed=0).hidden)]
    choices = searched["hidden"].choices
    return [int(c) for c in choices] if choices else None


def time_left(all_studies: Sequence[MethodStudies], records: Sequence[RunRecord]) -> TimeLeft:
    """The runs not yet settled in ``all_studies`` (a running one counts as left) and their
    projected CPU-hours: each method's mean run time over the study's hidden sizes
    (:func:`expected_run_seconds`), a search position
    costing one run per search split; a method with no recorded run counts at the others' mean."""
    pending: list[tuple[int, float | None, bool]] = []  # (runs left, seconds per run or None, own records)
    for studies in all_studies:
        search, final = studies.progress()
        n_seeds = len(studies.plan.final_seeds)
        splits = len(studies.plan.search_seeds_at(studies.train_ratio))
        left = max(search.budget - search.settled, 0) * splits + n_seeds - (min(final.settled, n_seeds) if final else 0)
        if left:
            hidden = _hidden_sizes(studies)
            times, own = _matching(records, studies, hidden)
            mean = expected_run_seconds(times, studies.train_ratio, hidden)
            pending.append((left, None if mean is None else mean[0], own))
    known = [seconds for _, seconds, _ in pending if seconds is not None]
    fallback = sum(known) / len(known) if known else 0.0
    seconds = sum(left * (fallback if s is None else s) for left, s, _ in pending)
    own = sum(1 for _, s, is_own in pending if s is not None and is_own)
    return TimeLeft(runs=sum(left for left, _, _ in pending), cpu_hours=seconds / 3600, own=own,
                    other=len(known) - own, guessed=len(pending) - len(known))
