"""``mtlbench rerun``: train a recorded run again from its record and say whether it came out the same.

A published table is only as good as the claim that its runs can be rebuilt. A record holds the
whole configuration (``config``), so rerunning it needs nothing else: the same split (seeded by
the config, or the given split file) and the same initialisation. The rerun's test error is
compared with the record's, task by task; so are the feature files read (their SHA-256), which
tells a rebuilt or moved feature cache from the original."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .config import TrainConfig
from .records import COMPLETE, RunRecord, machine_label


@dataclass(frozen=True)
class Comparison:
    """A record and its rerun, side by side."""

    record: RunRecord
    rerun: RunRecord

    @property
    def difference_points(self) -> float:
        """Rerun minus record, mean test error in percentage points."""
        return 100 * (self.rerun.test_err_mean - self.record.test_err_mean)

    @property
    def same(self) -> bool:
        """The same mean test error, to the last digit recorded."""
        return self.rerun.test_err_mean == self.record.test_err_mean

    @property
    def tasks_differing(self) -> list[str]:
        recorded, rerun = self.record.tasks or {}, self.rerun.tasks or {}
        return sorted(t for t in recorded if rerun.get(t, {}).get("test_err") != recorded[t].get("test_err"))

    @property
    def same_inputs(self) -> bool | None:
        """Whether both read the same feature files (None: the record keeps no checksums)."""
        recorded = (self.record.inputs or {}).get("files")
        return None if not recorded else recorded == (self.rerun.inputs or {}).get("files")

    def describe(self) -> str:
        r = self.record
        what = f"{r.dataset} {r.method} r{r.config['train_ratio']:g} seed {r.seed} ({r.job} {r.run_id}, code {r.git_rev[:8]})"
        errors = f"test error {100 * r.test_err_mean:.4f}% recorded, {100 * self.rerun.test_err_mean:.4f}% now"
        tasks = self.tasks_differing
        where = f"in {len(tasks)} task(s): {', '.join(tasks)}" if tasks else \
            "though no task does: the record's mean is not the mean of its tasks"
        verdict = "same" if self.same else f"differs by {self.difference_points:+.4f} points, {where}"
        inputs = {None: "", True: "; same feature files",
                  False: "; other feature files than the record's (e.g. a rebuilt cache)"}[self.same_inputs]
        threads = r.torch_threads, self.rerun.torch_threads
        if None not in threads and threads[0] != threads[1]:
            inputs += f"; {threads[1]} torch thread(s) now, {threads[0]} then (another count may sum in another order)"
        return f"{what}: {errors}: {verdict}{inputs}{self._machines()}"

    def _machines(self) -> str:
        """Where the two ran, when that may explain a difference: another CPU, or a record that
        does not say (it predates the field, and may have run on another machine)."""
        then, now = self.record.machine, self.rerun.machine
        if then is None:
            return "" if self.same else "; the record does not say which machine ran it"
        if then == now:
            return ""
        return (f"; another machine now ({machine_label(now) or 'unknown'}) than then ({machine_label(then)}: its "
                "kernels may round otherwise)")


def rerun(record: RunRecord, data_dir: Path, out_dir: Path | None = None, progress: bool = False) -> Comparison:
    """Train ``record``'s configuration again (a ``train`` job); write the new record under
    ``out_dir`` only when given, so a rerun never enters a board twice."""
    from .train import train

    if record.state != COMPLETE or record.test_err_mean is None or math.isnan(record.test_err_mean):
        raise ValueError(f"{record.run_id} is a {record.state} run with no test error to compare with")
    config = TrainConfig.from_dict(record.config)
    result = train(config, data_dir, out_dir, progress=progress)
    return Comparison(record, result.record)
