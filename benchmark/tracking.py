"""Run tracking: the W&B run beside each run's record (:mod:`benchmark.records`).

Results live in the records (DESIGN.md); the leaderboard is rebuilt from them alone. W&B is a
view of the same runs, for the dashboard. This module is the only one that talks to W&B:
``mtlbench train`` and every sweep trial and final run open their W&B run through :func:`wandb_run`.

W&B never stops a run: with no API key the run is written offline (``make sync`` uploads it
later), an online start that fails falls back to offline, and an offline start that fails
falls back to a disabled run, with a warning each time.
"""

from __future__ import annotations

import netrc
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WANDB_PROJECT = "mtl-trace-norm-benchmark"  # overridden by $WANDB_PROJECT
WANDB_ROOT = Path("results")  # runs land in results/wandb/; overridden by $WANDB_DIR


@dataclass(frozen=True)
class Tracking:
    """Where a run appears in W&B: its job type (train, sweep, final), group and name."""

    job_type: str = "train"
    group: str | None = None
    name: str | None = None


def run_name(config: Any, job: str, dataset: str) -> str:
    """``office_caltech/tucker/r0.1/final/s3``: what ran, readable in the dashboard's run list
    (``dataset`` by its name: a folder dataset's path would not fit)."""
    return f"{dataset}/{config.method}/r{config.train_ratio:g}/{job}/s{config.seed}"


def run_tags(config: Any, job: str, dataset: str, features: str, protocol_version: int) -> list[str]:
    """Tags to filter and group the dashboard by: dataset, method, ratio, job, layering, protocol, input."""
    # key:value, not key=value: W&B's workspace filters rewrite "=" inside a value (job=final -> job==final).
    tags = [dataset, config.method, f"ratio:{config.train_ratio:g}", f"job:{job}", f"layers:{config.layers}",
            f"protocol:{protocol_version}"]
    return tags + ([f"features:{features}"] if features else [])


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``$WANDB_MODE`` when set; else online with an API key (``wandb login``), offline without."""
    return os.environ.get("WANDB_MODE") or ("online" if _has_wandb_key() else "offline")


def _start_wandb(tracking: Tracking, config: Mapping, tags: Sequence[str]):
    import wandb

    directory = Path(os.environ.get("WANDB_DIR") or WANDB_ROOT)
    directory.mkdir(parents=True, exist_ok=True)
    arguments = dict(
        project=os.environ.get("WANDB_PROJECT") or WANDB_PROJECT,
        dir=str(directory),
        group=tracking.group,
        job_type=tracking.job_type,
        name=tracking.name,
        tags=list(tags),
        config=dict(config),
        reinit="create_new",  # several runs in one process (sweep workers) must not share one
        settings=wandb.Settings(silent=True, console="off", init_timeout=60, x_disable_stats=True),
    )
    fallbacks = {"online": "offline", "offline": "disabled"}
    mode = wandb_mode()
    while True:
        try:
            return wandb.init(mode=mode, **arguments)
        except Exception as error:  # W&B unreachable or misconfigured must not cost the run
            if mode not in fallbacks:
                raise
            warnings.warn(f"W&B {mode} start failed ({error}); continuing {fallbacks[mode]}", stacklevel=3)
            mode = fallbacks[mode]


# Ctrl-C, SIGTERM (raised by a sweep worker's stop point, or by Lightning's loops): the run is re-queued
INTERRUPTIONS = ("Interrupted", "KeyboardInterrupt", "SystemExit", "SIGTERMException")


def _add_tag(run: Any, tag: str) -> None:
    try:
        run.tags = (*run.tags, tag)
    except Exception as error:  # best effort, as finishing is
        warnings.warn(f"W&B run not tagged {tag!r}: {error}", stacklevel=3)


@contextmanager
def wandb_run(tracking: Tracking, config: Mapping, tags: Sequence[str]) -> Iterator:
    """One W&B run for the body; always finished, and marked with the exception that ended it.

    The summary's ``status`` says how the run ended (``finished``, ``TrialPruned``,
    ``DivergedError``, ...), so failed trials are visible in the dashboard. An interrupted run
    (Ctrl-C, SIGTERM: its trial is queued again) finishes with exit code 0, the status
    ``interrupted: queued again`` and the tag ``interrupted``, not as a failed run.
    """
    run = _start_wandb(tracking, config, tags)
    status, exit_code = "finished", 0
    try:
        yield run
    except BaseException as error:
        if type(error).__name__ in INTERRUPTIONS:
            # Not a failure: the sweep queues the trial again and a later run repeats it.
            status = "interrupted: queued again"
            _add_tag(run, "interrupted")
        else:
            status, exit_code = type(error).__name__, 1
        raise
    finally:
        try:
            run.summary["status"] = status
            run.finish(exit_code=exit_code)
        except Exception as error:  # finishing is best effort: the record is what counts
            warnings.warn(f"W&B run did not finish cleanly: {error}", stacklevel=2)
