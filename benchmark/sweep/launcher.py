"""Sweep workers as scheduler jobs, through submitit: ``--launcher slurm`` on a cluster,
``--launcher local`` (submitit's local executor) to run the same path on one machine.

Each job runs one worker of the resolved :class:`~benchmark.sweep.plan.SweepJob` (the JSON file
every spawned worker reads) against the shared storage; the workers share the studies exactly as
processes on one machine do. A job that times out or is preempted is checkpointed by submitit and
re-queued with the same arguments; its running trial is re-queued by the storage (this host's
dead processes at once, other hosts' by the RDB heartbeat). Submitting the same command again
adds workers that continue where the others stopped.

Slurm needs a storage every node reaches: an RDB server (``postgresql://...``) or a journal file
on a shared file system. SQLite is refused: its file locking across nodes corrupts it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

LAUNCHERS = ("process", "local", "slurm")  # process: subprocesses of this command (no submitit)
POLL_S = 5.0  # how often the watcher asks the jobs whether they are done


@dataclass(frozen=True)
class JobResources:
    """What each worker job asks the scheduler for (a plan's ``launcher:`` section, or flags)."""

    partition: str | None = None
    time_min: int = 240  # a trial cut off by it is re-queued; the job is re-submitted by submitit
    gpus_per_job: int = 0
    cpus_per_job: int = 2
    mem_gb: float | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the worker starts, e.g. "module load cuda"

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> JobResources:
        """From a plan's ``launcher:`` section merged with flags; unknown keys and bad values are refused."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"launcher: unknown key(s) {unknown}; valid: {', '.join(known)}")
        resources = cls(**{k: (tuple(v) if k == "setup" else v) for k, v in values.items() if v is not None})
        if resources.time_min < 1 or resources.cpus_per_job < 1 or resources.gpus_per_job < 0:
            raise ValueError(f"launcher: time_min and cpus_per_job must be >= 1 and gpus_per_job >= 0, got {resources}")
        return resources


def check_launcher(launcher: str, storage_url: str) -> None:
    """Refuse a launcher that cannot share the storage: SQLite on several nodes."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if launcher == "slurm" and storage_url.startswith("sqlite"):
        raise ValueError(
            f"a Slurm sweep runs its workers on several nodes, which cannot share the SQLite storage {storage_url}: "
            "give --storage postgresql://USER:PASSWORD@HOST/DB (an RDB server every node reaches) or the path of a "
            "journal file on a shared file system (e.g. --storage /shared/project/optuna.journal)"
        )


class SweepWorkerJob:
    """The callable each job runs: one worker of the job file, from the submitting directory.

    On a time-out or preemption the scheduler sends SIGUSR2 (submitit's signal): the worker first
    re-queues its running trial in the storage, as on SIGTERM, then submitit's own handler
    checkpoints this job (:meth:`checkpoint`) and re-queues it with the same arguments; the new
    job takes up whatever the storage has left.
    """

    def __call__(self, job_file: str, index: int, cwd: str, threads: int) -> int:
        os.chdir(cwd)  # relative paths of the job (records, data, a folder dataset) as submitted
        import torch

        torch.set_num_threads(threads)
        from .worker import request_stop, run_spawned_worker

        requeue_signal = signal.SIGUSR2
        submitit_handler = signal.getsignal(requeue_signal)
        caught: list[tuple[int, Any]] = []

        def requeue_trial_first(signum: int, frame: Any) -> None:
            caught.append((signum, frame))
            request_stop(signum, frame)

        signal.signal(requeue_signal, requeue_trial_first)
        code = run_spawned_worker(Path(job_file), index)
        if caught and callable(submitit_handler):
            submitit_handler(*caught[0])  # checkpoint and re-queue this job (exits the process)
        if code not in (0, 130):
            raise RuntimeError(f"sweep worker {index} failed (exit code {code}); its log is this job's output")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(type(self)(), *args, **kwargs)


def make_executor(launcher: str, folder: Path, resources: JobResources, workers: int) -> Any:
    """A submitit executor for ``workers`` jobs of ``resources`` (``local`` or ``slurm``)."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--launcher local|slurm needs submitit, a dependency of the suite: "
                         "run `make install` again") from None
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    except RuntimeError as error:  # submitit's SlurmExecutor looks for srun
        raise ValueError(f"no Slurm cluster reachable from here ({error}); submit from a login node, or try the "
                         "same path on this machine with --launcher local") from None
    parameters: dict[str, Any] = {"name": "mtlbench-sweep", "timeout_min": resources.time_min,
                                  "cpus_per_task": resources.cpus_per_job, "gpus_per_node": resources.gpus_per_job}
    if resources.mem_gb is not None:
        parameters["mem_gb"] = resources.mem_gb
    if launcher == "slurm":
        parameters.update(slurm_array_parallelism=workers, slurm_setup=list(resources.setup))
        if resources.partition:
            parameters["slurm_partition"] = resources.partition
        if resources.account:
            parameters["slurm_account"] = resources.account
    executor.update_parameters(**parameters)
    return executor


def submit_workers(job_file: Path, launcher: str, workers: int, resources: JobResources,
                   folder: Path) -> list[Any]:
    """Submit ``workers`` jobs (one Slurm array) that each run a worker of ``job_file``."""
    executor = make_executor(launcher, folder, resources, workers)
    threads = resources.cpus_per_job if launcher == "slurm" else max(1, len(os.sched_getaffinity(0)) // workers)
    cwd = str(Path.cwd())
    with executor.batch():
        jobs = [executor.submit(SweepWorkerJob(), str(job_file.resolve()), index, cwd, threads) for index in range(workers)]
    return jobs


def job_logs(jobs: Sequence[Any]) -> list[str]:
    """``<job id>: <stdout path>`` per job, for the user to follow."""
    return [f"{j.job_id}: {j.paths.stdout}" for j in jobs]


def watch_jobs(jobs: Sequence[Any], refresh: Callable[[], None], write: Callable[[str], None]) -> int:
    """Refresh progress until every job is done; 0 when all succeeded, else 1 with each failure's tail."""
    while not all(j.done() for j in jobs):
        refresh()
        time.sleep(POLL_S)
    failed = 0
    for j in jobs:
        try:
            j.result()
        except Exception as error:  # submitit re-raises the worker's failure with its traceback
            failed += 1
            tail = "\n    ".join(str(error).strip().splitlines()[-12:])
            write(f"job {j.job_id} failed; log {j.paths.stdout}:\n    {tail}")
    return 1 if failed else 0
