"""``mtlbench bench --sections loop,profile``: the training loop's own cost against a plain loop.

Both loops do the same work on the same module and batches: the stacked network, the method's
penalty (``MultiTaskModule.objective``), one batch per task per step from the same data module
and the optimiser the method configures. The plain loop is that and nothing else
(``zero_grad``, ``backward``, ``step``); the Lightning loop is :func:`benchmark.train.train`'s
trainer (no validation, no W&B, no progress bar). A step's time is the wall time from the start
of the first timed step to the end of the last, over the steps, so what runs between two steps
(fetching the batch, hooks, logging) counts. The two alternate, one thread each, in one process.

``profile`` runs the Lightning loop of one method under cProfile and splits the time by where
the code lives: torch (the model's work), lightning, this package, the standard library (the
data pipeline's iterators, logging) and the rest.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

LOOP_METHODS = ("stl", "dmtl", "laf", "gttn_a")
LOOP_TARGET = 1.2  # a Lightning step may cost at most this many plain-loop steps


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _setup(data_dir: Path, method: str, layers: str, hidden: int = 128) -> tuple[Any, Any]:
    """A fresh module and data module of ``method`` on Office-Caltech SURF, seeded."""
    from .config import TrainConfig
    from .data import dataset_source
    from .methods import method_class, resolve_config
    from .train import data_module

    torch.manual_seed(0)
    config = resolve_config(TrainConfig(dataset="office_caltech", method=method, layers=layers, lam=0.01, hidden=hidden))
    dataset = dataset_source("office_caltech").load(data_dir)
    module_class = method_class(config.method)
    data = data_module(dataset, config, module_class)
    return module_class(data.network_spec, config, dataset.task_names), data


def plain_loop(module: Any, data: Any, warmup: int, steps: int) -> float:
    """Seconds per step of a bare PyTorch loop over the module's objective."""
    optimiser = module.configure_optimizers()
    batches = _endless(data)
    for _ in range(warmup):
        _plain_step(module, optimiser, next(batches))
    started = time.perf_counter()
    for _ in range(steps):
        _plain_step(module, optimiser, next(batches))
    return (time.perf_counter() - started) / steps


def _endless(data: Any) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from data.train_dataloader()


def _plain_step(module: Any, optimiser: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    loss, _, _ = module.objective(batch)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


def lightning_loop(module: Any, data: Any, warmup: int, steps: int) -> float:
    """Seconds per step of the trainer :func:`benchmark.train.train` builds (validation off)."""
    import lightning as L

    from .train import quiet_lightning

    quiet_lightning()
    marks: list[float] = []

    class Marks(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == warmup and not marks:
                marks.append(time.perf_counter())

        def on_train_batch_end(self, *args: Any) -> None:
            if marks:
                marks[1:] = [time.perf_counter()]

    trainer = L.Trainer(max_steps=warmup + steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Marks()])
    trainer.fit(module, datamodule=data)
    return (marks[1] - marks[0]) / steps


def bench_loop(data_dir: Path, repeats: int, warmup: int = 5, steps: int = 60,
               progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Per method and layering: seconds per step of the plain loop and of Lightning, and their ratio."""
    from .data import dataset_source

    if not dataset_source("office_caltech").present(data_dir):
        progress(f"loop  Office-Caltech SURF not found under {data_dir}, skipped")
        return pd.DataFrame()
    rows = []
    with _one_thread():
        for method in LOOP_METHODS:
            for layers in ("all", "head"):
                plain, lightning = [], []
                for _ in range(repeats):  # alternating, so drift on a noisy machine hits both alike
                    plain.append(plain_loop(*_setup(data_dir, method, layers), warmup, steps))
                    lightning.append(lightning_loop(*_setup(data_dir, method, layers), warmup, steps))
                row = {"method": method, "layers": layers, "steps": steps, "plain_step_ms": 1e3 * statistics.median(plain),
                       "lightning_step_ms": 1e3 * statistics.median(lightning)}
                row["ratio"] = row["lightning_step_ms"] / row["plain_step_ms"]
                rows.append(row)
                progress(f"loop  {method:<8}{layers:<5} plain {row['plain_step_ms']:6.2f} ms  lightning "
                         f"{row['lightning_step_ms']:6.2f} ms  x{row['ratio']:.2f}")
    return pd.DataFrame(rows)


def _where(filename: str, function: str) -> str:
    if filename == "~":  # a built-in: torch's kernels are called as built-in methods of torch._C
        return "torch" if "torch" in function else "python (built-ins, standard library)"
    for marker, place in (("/torch/", "torch"), ("/lightning/", "lightning"), ("/lightning_utilities/", "lightning"),
                          ("/torchmetrics/", "lightning"), ("/benchmark/", "this package"), ("/numpy/", "numpy")):
        if marker in filename:
            return place
    if "/lib/python3" in filename and "site-packages" not in filename:  # the standard library
        return "python (built-ins, standard library)"
    return "other"


def bench_profile(data_dir: Path, method: str = "stl", layers: str = "head", steps: int = 200,
                  progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Where a Lightning step's time goes (cProfile self time by package), beside the plain loop's."""
    from .data import dataset_source

    if not dataset_source("office_caltech").present(data_dir):
        progress(f"profile  Office-Caltech SURF not found under {data_dir}, skipped")
        return pd.DataFrame()
    rows = []
    with _one_thread():
        for loop_name, loop in (("plain", plain_loop), ("lightning", lightning_loop)):
            module, data = _setup(data_dir, method, layers)
            profiler = cProfile.Profile()
            profiler.enable()
            loop(module, data, 5, steps)
            profiler.disable()
            by_place: dict[str, float] = {}
            for (filename, _, function), (_, _, self_time, _, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
                place = _where(filename, function)
                by_place[place] = by_place.get(place, 0.0) + self_time
            total = sum(by_place.values())
            for place, seconds in sorted(by_place.items(), key=lambda item: -item[1]):
                rows.append({"loop": loop_name, "method": method, "layers": layers, "where": place,
                             "ms_per_step": 1e3 * seconds / (steps + 5), "share": seconds / total})
            progress(f"profile  {loop_name:<10}" + ", ".join(
                f"{r['where']} {r['share']:.0%}" for r in rows if r["loop"] == loop_name))
    return pd.DataFrame(rows)


def loop_summary(loop: pd.DataFrame | None, profile: pd.DataFrame | None) -> list[str]:
    """The summary's lines for the two sections."""
    lines: list[str] = []
    if loop is not None and not loop.empty:
        lines += ["## The training loop against a plain PyTorch loop (Office-Caltech SURF, hidden 128, 1 thread)", "",
                  f"Target: a Lightning step costs at most {LOOP_TARGET}x a plain-loop step of the same work.", ""]
        for row in loop.itertuples():
            lines.append(f"- {row.method}, layers {row.layers}: plain {row.plain_step_ms:.2f} ms, Lightning "
                         f"{row.lightning_step_ms:.2f} ms per step, x{row.ratio:.2f} "
                         f"({'met' if row.ratio <= LOOP_TARGET else 'MISSED'})")
        lines.append("")
    if profile is not None and not profile.empty:
        first = profile.iloc[0]
        lines += [f"Where a step's time goes ({first['method']}, layers {first['layers']}; cProfile self time, "
                  "which inflates Python-heavy code):", ""]
        for loop_name, part in profile.groupby("loop", sort=False):
            lines.append(f"- {loop_name}: " + ", ".join(
                f"{r.where} {r.ms_per_step:.2f} ms ({r.share:.0%})" for r in part.itertuples()))
        lines.append("")
    return lines

