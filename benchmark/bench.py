"""``mtlbench bench``: speed, accuracy and memory, measured side by side, written to results/bench/.

Every time is the median of ``repeats`` runs in this process (training: one child process per
method, for its own peak memory), and every comparison is a ratio of two figures measured in the
same run, so the numbers mean the same on a noisy machine. Sections:

- ``norms``: value + gradient of every regulariser on the paper's layer shapes, ours against the
  naive path (autograd through ``svdvals``, one flattening at a time, what the public code does),
  their ratio, the relative error of both against a float64 SVD, and the time of the flattenings'
  Gram products alone: the floor no exact method goes below.
- ``batching``: the stacked Omniglot CNN (50 tasks, one grouped op per layer) against a Python
  loop over the tasks, forward + backward.
- ``training``: training steps per second of every method on Office-Caltech SURF (hidden 128) and
  on Omniglot (the CNN, 50 alphabets), as a ratio to STL, and the peak memory of each.
- ``lazy``: test error and step time with the penalty every step and every k-th step (weighted k)
  on Office-Caltech SURF: what the approximation costs and saves.
- ``trained``: the trace norms where training spends its time. GTTN-a (every layer) trains a few
  epochs on Office-Caltech SURF; on the hidden tensor it reaches, each flattening's cond(G) and
  route, and the penalty's value + gradient with a route memo kept across calls against a fresh
  one each call (the code before the memo), interleaved, with the float32 Gram floor, the
  float64 pieces (float64 Gram, eigh, product) that bound any exact route, and the matrix-product
  route (on the GPU where there is one, and then it says so).
- ``cost``: time to leaderboard, from the committed run records alone (no training): the run
  time of every search trial and final run per dataset, input, protocol version and train ratio,
  in CPU-hours, with the runs counted; for the current protocol, the runs its plan has and the
  hours they will take, projected from each method's mean run time so far.
- ``loop`` and ``profile``: the training loop's own cost, Lightning against a plain PyTorch loop
  doing the same work, and where a step's time goes (:mod:`benchmark.bench_loop`).
- ``selection``: model selection at a small train ratio. STL on Office-Caltech SURF at ratio 0.1,
  on a fixed grid of lambda x hidden, trained on the search splits and on the final splits: which
  configuration one search split's validation error picks, which the mean over three picks, and
  how far each is from the best configuration of the grid by test error over the final splits
  (a yardstick only: nothing in a sweep selects on test).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torch.nn.functional as F

from .bench_loop import bench_loop, bench_profile, loop_summary

if TYPE_CHECKING:
    from .sweep.plan import SweepPlan

NORM_SHAPES: dict[str, tuple[int, ...]] = {
    "office31 fc7 hidden H=128": (4096, 128, 3),
    "office31 fc7 hidden H=512": (4096, 512, 3),
    "office31 head H=128": (128, 31, 3),
    "office31 head H=512": (512, 31, 3),
    "office31 pool5 conv H=128": (7, 7, 512, 128, 3),
    "omniglot FC": (1936, 64, 50),
}


def median_time(run: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference).norm() / reference.norm().clamp_min(1e-300))


# ---- norms ---------------------------------------------------------------------------------


def _value_and_gradient(name: str, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from .norms import regulariser

    leaf = weights.detach().clone().requires_grad_(True)
    value = regulariser(name, ndim=leaf.ndim)(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def _grams(name: str, weights: torch.Tensor) -> list[torch.Tensor]:
    from .norms import regulariser

    talls = [f.apply(weights) for f in regulariser(name, ndim=weights.ndim).flattenings(tuple(weights.shape))]
    return [t if t.shape[0] >= t.shape[1] else t.T for t in talls]


def _gram_floor(name: str, weights: torch.Tensor) -> Callable[[], None]:
    """The Gram products of the regulariser's flattenings, smaller side, in the weights' dtype."""
    talls = _grams(name, weights)
    return lambda: [t.T @ t for t in talls]


def _eigen_time(name: str, weights: torch.Tensor) -> Callable[[], None]:
    """The eigen-decompositions of those Gram matrices alone (float32): part of any Gram route."""
    grams = [t.T @ t for t in _grams(name, weights)]
    return lambda: [torch.linalg.eigh(g) for g in grams]


def bench_norms(repeats: int, shapes: dict[str, tuple[int, ...]] = NORM_SHAPES, progress: Callable[[str], None] = print) -> pd.DataFrame:
    from .norms import naive_svd_trace_norm, regulariser, regulariser_names

    rows = []
    generator = torch.Generator().manual_seed(0)
    for shape_name, shape in shapes.items():
        weights = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[:-2]) or 1)
        for name in regulariser_names():
            count = len(regulariser(name, ndim=len(shape)).flattenings(shape))
            with naive_svd_trace_norm():
                reference_value, reference_grad = _value_and_gradient(name, weights.double())
                naive_value, naive_grad = _value_and_gradient(name, weights)
                naive = median_time(lambda: _value_and_gradient(name, weights), repeats)
            ours_value, ours_grad = _value_and_gradient(name, weights)
            ours = median_time(lambda: _value_and_gradient(name, weights), repeats)
            floor = median_time(_gram_floor(name, weights), repeats)
            eigen = median_time(_eigen_time(name, weights), repeats)
            rows.append({
                "shape": shape_name, "dims": "x".join(map(str, shape)), "regulariser": name, "flattenings": count,
                "ours_s": ours, "naive_s": naive, "speedup": naive / ours, "gram_floor_s": floor,
                "ours_over_floor": ours / floor, "eigh_s": eigen,
                "value_rel_err": _relative_error(ours_value, reference_value),
                "grad_rel_err": _relative_error(ours_grad, reference_grad),
                "naive_value_rel_err": _relative_error(naive_value, reference_value),
                "naive_grad_rel_err": _relative_error(naive_grad, reference_grad),
            })
            progress(f"norms  {shape_name:<28}{name:<10} ours {ours:8.4f} s  naive {naive:8.4f} s  "
                     f"x{naive / ours:5.1f}  floor {floor:.4f} s  grad err {rows[-1]['grad_rel_err']:.1e}")
    return pd.DataFrame(rows)


# ---- batching --------------------------------------------------------------------------------


def per_task_loop(network: Any, images: torch.Tensor) -> torch.Tensor:
    """The Omniglot CNN computed task by task, one small op per task and layer (the baseline)."""
    outputs = []
    for task in range(images.shape[0]):
        x = images[task]
        for conv in (network.conv1, network.conv2, network.conv3):
            kernel = conv.weight[..., task].permute(3, 2, 0, 1)
            x = torch.tanh(F.max_pool2d(F.conv2d(x, kernel, conv.bias[:, task]), 2))  # the stacked net's order
        hidden = torch.tanh(x.flatten(1) @ network.fc.weight[..., task] + network.fc.bias[:, task])
        outputs.append(hidden @ network.out.weight[..., task] + network.out.bias[:, task])
    return torch.stack(outputs)


def bench_batching(repeats: int, n_tasks: int = 50, per_task: tuple[int, ...] = (2, 20),
                   progress: Callable[[str], None] = print) -> pd.DataFrame:
    from .nets import NetworkSpec, build_network

    spec = NetworkSpec(input_shape=(1, 105, 105), class_counts=[20] * n_tasks, kind="omniglot_cnn")
    network = build_network(spec, hidden=64, share_hidden=False)
    rows = []
    for images_per_task in per_task:
        images = torch.randn(n_tasks, images_per_task, 1, 105, 105)

        def stacked() -> None:
            network.zero_grad()
            network(images).square().mean().backward()

        def loop() -> None:
            network.zero_grad()
            per_task_loop(network, images).square().mean().backward()

        with torch.no_grad():  # the two compute the same function
            difference = _relative_error(per_task_loop(network, images), network(images).double())
        stacked_s, loop_s = median_time(stacked, repeats), median_time(loop, repeats)
        progress(f"batching  {images_per_task} images/task  stacked {stacked_s:.3f} s  loop {loop_s:.3f} s  "
                 f"x{loop_s / stacked_s:.1f}")
        rows.append({"network": "omniglot CNN", "tasks": n_tasks, "images_per_task": images_per_task,
                     "stacked_s": stacked_s, "loop_s": loop_s, "speedup": loop_s / stacked_s,
                     "output_rel_diff": difference})
    return pd.DataFrame(rows)


# ---- training --------------------------------------------------------------------------------


class _StepTimer:
    """Lightning callback: wall time of every training step."""

    def __init__(self) -> None:
        import lightning as L

        outer = self

        class Callback(L.Callback):
            def on_train_batch_start(self, *args: Any) -> None:
                outer.started = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                outer.times.append(time.perf_counter() - outer.started)

        self.times: list[float] = []
        self.started = 0.0
        self.callback = Callback()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _time_training(job: dict[str, Any]) -> dict[str, Any]:
    """In a child process: build one method's module and data, time ``steps`` training steps."""
    import lightning as L

    from .config import TrainConfig
    from .data import dataset_source
    from .methods import method_class
    from .train import data_module, quiet_lightning

    quiet_lightning()
    torch.manual_seed(0)
    config = TrainConfig.from_dict(job["config"])
    dataset = dataset_source(config.dataset).load(Path(job["data_dir"]), **config.dataset_params)
    module_class = method_class(config.method)
    data = data_module(dataset, dataclasses.replace(config, seed=0), module_class)
    module = module_class(data.network_spec, config, dataset.task_names)
    before = _rss_mb()
    timer = _StepTimer()
    trainer = L.Trainer(max_steps=job["warmup"] + job["steps"], max_epochs=-1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer.callback])
    trainer.fit(module, datamodule=data)
    step = statistics.median(timer.times[job["warmup"]:])
    return {"step_s": step, "steps_per_s": 1 / step, "peak_rss_mb": _rss_mb(), "training_extra_mb": _rss_mb() - before}


def bench_training(data_dir: Path, steps: int, progress: Callable[[str], None] = print) -> pd.DataFrame:
    from .config import TrainConfig
    from .data import dataset_source
    from .methods import method_names

    setups = {
        "office_caltech SURF H=128": ({"dataset": "office_caltech", "hidden": 128}, steps, 3),
        "omniglot CNN, 50 alphabets": ({"dataset": "omniglot", "hidden": 64, "train_ratio": 0.1, "val_ratio": 0.0},
                                       max(2, steps // 10), 1),
    }
    rows = []
    context = multiprocessing.get_context("spawn")  # a fresh process: its own peak memory
    for setup, (values, n_steps, warmup) in setups.items():
        if not dataset_source(values["dataset"]).present(data_dir):
            progress(f"training  {setup}: data not found under {data_dir}, skipped")
            continue
        for method in method_names():
            # Every method on every layer: the step that stacks and regularises the most (and the only
            # layering the Omniglot CNN has for a tensor norm), the same for all methods.
            config = TrainConfig.from_dict({**values, "method": method, "lam": 0.01, "layers": "all"})
            job = {"config": config.to_dict(), "data_dir": str(data_dir), "steps": n_steps, "warmup": warmup}
            with context.Pool(1) as pool:
                result = pool.apply(_time_training, (job,))
            rows.append({"setup": setup, "method": method, "steps": n_steps, **result})
            progress(f"training  {setup:<28}{method:<10} {result['steps_per_s']:7.2f} steps/s  "
                     f"peak {result['peak_rss_mb']:.0f} MB")
    table = pd.DataFrame(rows)
    if not table.empty:
        stl = table[table["method"] == "stl"].set_index("setup")["step_s"]
        table["step_vs_stl"] = table["step_s"] / table["setup"].map(stl)
    return table


# ---- lazy regularisation ---------------------------------------------------------------------


def bench_lazy(data_dir: Path, seeds: tuple[int, ...], every: int, progress: Callable[[str], None] = print) -> pd.DataFrame:
    from .config import TrainConfig
    from .data import dataset_source
    from .train import train

    if not dataset_source("office_caltech").present(data_dir):
        progress(f"lazy  office_caltech not found under {data_dir}, skipped")
        return pd.DataFrame()
    rows = []
    for method in ("tucker", "gttn_a"):
        for penalty_every in (1, every):
            for seed in seeds:
                config = TrainConfig(dataset="office_caltech", method=method, lam=0.01, hidden=128, seed=seed,
                                     penalty_every=penalty_every, layers="all")
                record = train(config, data_dir, out_dir=None, progress=False).record
                rows.append({"method": method, "penalty_every": penalty_every, "seed": seed,
                             "test_err_mean": record.test_err_mean, "wall_time_s": record.wall_time_s})
                progress(f"lazy  {method:<8} every {penalty_every}  seed {seed}  test err "
                         f"{record.test_err_mean:.4f}  {record.wall_time_s:.1f} s")
    return pd.DataFrame(rows)


def _trained_module(data_dir: Path, method: str, hidden: int, epochs: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """``method`` (every layer) trained ``epochs`` epochs on SURF at lambda 0.01: the module and one
    training batch, as training has them mid-run."""
    import lightning as L

    from .config import TrainConfig
    from .train import train

    class Capture(L.Callback):
        module: Any
        batch: dict[str, torch.Tensor]

        def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
            self.batch = batch

        def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
            self.module = module
            self.last_epoch = {k: v.detach().clone() for k, v in module.state_dict().items()}

    capture = Capture()
    config = TrainConfig(dataset="office_caltech", method=method, layers="all", lam=0.01, hidden=hidden, max_epochs=epochs)
    train(config, data_dir, out_dir=None, progress=False, callbacks=[capture])
    capture.module.load_state_dict(capture.last_epoch)  # train() restored the selected epoch; training ends here
    return capture.module, capture.batch


def _training_step(module: Any, batch: dict[str, torch.Tensor], forget_routes: bool) -> None:
    """Loss (cross-entropy + penalty) and backward of one batch; ``forget_routes``: as before the memo."""
    if forget_routes:
        for reg in getattr(module, "regularisers", []):
            reg._route_memos.clear()
    module.zero_grad()
    module.objective(batch)[0].backward()


def _penalty_step(reg: Any, weights: torch.Tensor) -> None:
    leaf = weights.clone().requires_grad_(True)
    torch.autograd.grad(reg(leaf), leaf)


def _float64_pieces(name: str, weights: torch.Tensor) -> Callable[[], None]:
    """Gram, eigh and product in float64 for every flattening: what any exact float64 route pays."""
    talls = [t.double() for t in _grams(name, weights)]

    def run() -> None:
        for tall in talls:
            _, vectors = torch.linalg.eigh(tall.T @ tall)
            tall @ vectors
    return run


def bench_trained(data_dir: Path, repeats: int, settings: tuple[tuple[int, int], ...] = ((128, 12), (1024, 4)),
                  progress: Callable[[str], None] = print) -> pd.DataFrame:
    from .data import dataset_source
    from .norms import RouteMemo, regulariser, trace_norm
    from .norms.trace_norm import trace_norm_route

    if not dataset_source("office_caltech").present(data_dir):
        progress(f"trained  office_caltech not found under {data_dir}, skipped")
        return pd.DataFrame()
    rows = []
    for hidden, epochs in settings:
        module, batch = _trained_module(data_dir, "gttn_a", hidden, epochs)
        weights = module.stacked_layers()[0].weight.detach().clone()
        name = "gttn_a"
        routes = []
        for flattening in regulariser(name).flattenings(tuple(weights.shape)):
            matrix = flattening.apply(weights)
            memo = RouteMemo(routes={})
            trace_norm(matrix, memo)
            singular = torch.linalg.svdvals(matrix.double())
            routes.append(f"{'x'.join(map(str, matrix.shape))}: cond(G) {float((singular[0] / singular[-1]) ** 2):.1e}, "
                          f"{next(iter(memo.routes))}")
        remembered = regulariser(name)
        _penalty_step(remembered, weights)  # the memo learns the routes, as after the first steps of a run
        fresh_times, memo_times = [], []
        for _ in range(repeats):  # interleaved: the two see the same machine state
            started = time.perf_counter()
            _penalty_step(regulariser(name), weights)
            fresh_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            _penalty_step(remembered, weights)
            memo_times.append(time.perf_counter() - started)
        fresh, memo = statistics.median(fresh_times), statistics.median(memo_times)
        # A whole training step of GTTN-a (both stacked layers), and of STL on the same batch.
        stl, _ = _trained_module(data_dir, "stl", hidden, 1)
        step_times: dict[str, list[float]] = {"fresh": [], "memo": [], "stl": []}
        _training_step(module, batch, forget_routes=False)
        for _ in range(repeats):
            for kind, (target, forget) in {"fresh": (module, True), "memo": (module, False), "stl": (stl, False)}.items():
                started = time.perf_counter()
                _training_step(target, batch, forget)
                step_times[kind].append(time.perf_counter() - started)
            _training_step(module, batch, forget_routes=False)  # the memo back as the fresh step left it
        steps = {kind: statistics.median(times) for kind, times in step_times.items()}
        # The matrix-product route, on a GPU when there is one (there it is the default route).
        device = "cuda" if torch.cuda.is_available() else "cpu"
        on_device = weights.to(device)
        with trace_norm_route("matmul"):
            matmul = median_time(lambda: (_penalty_step(regulariser(name), on_device),
                                          torch.cuda.synchronize() if device == "cuda" else None), repeats)
        rows.append({
            "tensor": "x".join(map(str, weights.shape)), "epochs": epochs, "regulariser": name,
            "routes": "; ".join(routes), "fresh_s": fresh, "memo_s": memo, "memo_over_fresh": memo / fresh,
            "gram_floor_s": median_time(_gram_floor(name, weights), repeats),
            "float64_bound_s": median_time(_float64_pieces(name, weights), repeats),
            "matmul_s": matmul, "matmul_device": device,
            "step_fresh_s": steps["fresh"], "step_memo_s": steps["memo"], "step_stl_s": steps["stl"],
            "step_memo_over_fresh": steps["memo"] / steps["fresh"],
        })
        progress(f"trained  {rows[-1]['tensor']:<12} fresh {fresh:.4f} s  memo {memo:.4f} s  "
                 f"x{memo / fresh:.2f}  ({rows[-1]['routes']})")
    return pd.DataFrame(rows)


def bench_cost(runs_dir: Path = Path("results/runs"), sweeps_dir: Path | None = None,
               progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Run time summed per dataset, input, protocol version, train ratio and job, from the records;
    for the current protocol also every ratio and job of the dataset's plan (run yet or not), the
    runs it has and the hours they will take (:func:`projected_hours`)."""
    from .board.tables import table_variant
    from .records import FINAL, SEARCH, STATES, read_records
    from .sweep.plan import SweepPlan

    records = read_records(runs_dir, jobs=(SEARCH, FINAL), states=STATES).runs
    rows = [{"dataset": r.dataset, "features": r.features, "protocol": table_variant(r) or "current",
             "train_ratio": r.train_ratio, "job": r.job, "method": r.method, "run_s": r.run_seconds,
             "equal_methods": tuple(r.equal_methods)} for r in records if table_variant(r) != "ablation"]
    if not rows:
        progress(f"cost  no records under {runs_dir}")
        return pd.DataFrame()
    runs = pd.DataFrame(rows)
    keys = ["dataset", "features", "protocol", "train_ratio", "job"]
    table = (runs.groupby(keys).agg(runs=("run_s", "size"), cpu_hours=("run_s", lambda t: t.sum() / 3600))
             .reset_index())
    planned = []
    for (dataset, features), current in runs[runs["protocol"] == "current"].groupby(["dataset", "features"]):
        try:
            plan = SweepPlan.load(dataset, sweeps_dir)
        except (ValueError, OSError) as error:  # a folder dataset that is not here, a plan that no longer loads
            progress(f"cost  {dataset}: no projection, its plan does not load ({error})")
            continue
        for train_ratio in plan.train_ratios:
            for job in (SEARCH, FINAL):
                n_runs, hours, basis = projected_hours(current, plan, train_ratio, job)
                planned.append({"dataset": dataset, "features": features, "protocol": "current",
                                "train_ratio": train_ratio, "job": job, "planned_runs": n_runs,
                                "projected_cpu_hours": hours, "projection_basis": basis})
    if planned:
        table = table.merge(pd.DataFrame(planned), on=keys, how="outer").sort_values(keys, ignore_index=True)
        table["runs"] = table["runs"].fillna(0).astype(int)
        table["cpu_hours"] = table["cpu_hours"].fillna(0.0)
    for _, row in table.iterrows():
        projection = "" if pd.isna(row.get("planned_runs", math.nan)) else (
            f" of {row['planned_runs']:.0f} planned, {row['projected_cpu_hours']:.1f} h projected ({row['projection_basis']})")
        progress(f"cost  {row['dataset']} {row['features']} {row['protocol']} r{row['train_ratio']:g} {row['job']}: "
                 f"{row['runs']} runs, {row['cpu_hours']:.1f} h{projection}")
    return table


def board_totals(cost: pd.DataFrame) -> list[str]:
    """One line per board of the current protocol: its hours run so far and projected in all."""
    if "projected_cpu_hours" not in cost:
        return []
    current = cost[cost["protocol"] == "current"]
    return [f"- {dataset} {features or '(default input)'}: {part['cpu_hours'].sum():.1f} CPU-hours run, "
            f"{part['projected_cpu_hours'].sum():.1f} projected for the whole board"
            for (dataset, features), part in current.groupby(["dataset", "features"])]


def projected_hours(runs: pd.DataFrame, plan: SweepPlan, train_ratio: float, job: str) -> tuple[float, float, str]:
    """(runs ``plan`` has at this ratio and job, their projected CPU-hours, the projection's basis).

    ``runs``: one input's records of the current protocol (method, train_ratio, job, run_s: the
    record's run seconds, equal_methods). A method's run time at a ratio: :func:`benchmark.sweep.cost.mean_run_seconds`
    over its search and final runs alike (the same training, another seed), measured there or
    scaled from another ratio; a method with no run at all counts at the mean of the others (the
    GTTN family's runs cost more than STL's, so the projection firms up as methods finish).
    """
    from .records import SEARCH
    from .sweep.cost import mean_run_seconds

    equal = {m for methods in runs["equal_methods"] for m in methods}
    methods = [m for m in plan.methods if m not in equal]
    runs_of = {m: plan.search_budget(m) * len(plan.search_seeds_at(train_ratio)) if job == SEARCH else len(plan.final_seeds)
               for m in methods}
    seconds: dict[str, float] = {}
    measured = scaled = 0
    for method in methods:
        own = runs[runs["method"] == method]
        mean = mean_run_seconds(zip(own["train_ratio"].astype(float), own["run_s"].astype(float)), train_ratio)
        if mean is None:
            continue
        seconds[method] = mean[0]
        measured, scaled = measured + mean[1], scaled + (not mean[1])
    if not seconds:
        return float(sum(runs_of.values())), math.nan, f"0/{len(methods)} methods run"
    fallback = sum(seconds.values()) / len(seconds)
    total = sum(runs_of[m] * seconds.get(m, fallback) for m in methods)
    basis = f"{measured}/{len(methods)} methods measured here" + (f", {scaled} scaled from another ratio" if scaled else "")
    return float(sum(runs_of.values())), total / 3600, basis


SELECTION_GRID = {"lam": (1e-4, 1e-3, 1e-2, 1e-1, 1.0), "hidden": (128, 256, 512, 1024)}


def bench_selection(data_dir: Path, method: str = "stl", train_ratio: float = 0.1, search_seeds: tuple[int, ...] = (0, 6, 7),
                    final_seeds: tuple[int, ...] = (1, 2, 3, 4, 5), grid: dict[str, tuple] = SELECTION_GRID,
                    progress: Callable[[str], None] = print) -> pd.DataFrame:
    """One row per grid configuration and seed: the selected epoch's validation error and its test error."""
    from .config import TrainConfig
    from .data import dataset_source
    from .train import train

    if not dataset_source("office_caltech").present(data_dir):
        progress(f"selection  office_caltech not found under {data_dir}, skipped")
        return pd.DataFrame()
    rows = []
    for lam in grid["lam"]:
        for hidden in grid["hidden"]:
            for seed in (*search_seeds, *final_seeds):
                config = TrainConfig(dataset="office_caltech", method=method, lam=lam, hidden=hidden, seed=seed,
                                     train_ratio=train_ratio)
                record = train(config, data_dir, out_dir=None, progress=False).record
                rows.append({"method": method, "train_ratio": train_ratio, "lam": lam, "hidden": hidden, "seed": seed,
                             "split": "search" if seed in search_seeds else "final",
                             "val_err": record.val_err, "test_err": record.test_err_mean})
            progress(f"selection  {method} lam {lam:g} hidden {hidden}: mean test err "
                     f"{statistics.mean(r['test_err'] for r in rows[-len(final_seeds):]):.4f}")
    return pd.DataFrame(rows)


def selection_summary(table: pd.DataFrame) -> list[str]:
    """What each selection rule picks from the grid, against the grid's best by test error.

    The difference to the best is paired over the final splits (every configuration ran on the
    same splits); its 95% interval is Student's t over those splits.
    """
    search = table[table["split"] == "search"]
    final = table[table["split"] == "final"].pivot_table(index=["lam", "hidden"], columns="seed", values="test_err")
    first_seed = search["seed"].min()
    rules = {
        f"validation error of one search split (seed {first_seed})":
            search[search["seed"] == first_seed].groupby(["lam", "hidden"])["val_err"].mean(),
        f"mean validation error over {search['seed'].nunique()} search splits":
            search.groupby(["lam", "hidden"])["val_err"].mean(),
    }
    best = final.mean(axis=1).idxmin()
    lines = [f"Grid best by mean test error over {final.shape[1]} final splits: lambda {best[0]:g}, hidden {best[1]} "
             f"({100 * final.loc[best].mean():.2f}%).", ""]
    lines += ["| selection rule | picks lambda, hidden | ties at its best value | test error % | minus the grid best, pts (95% CI) |",
              "|---|---|---|---|---|"]
    for rule, values in rules.items():
        ties = int((values == values.min()).sum())
        # Among tied configurations, the first on the grid (what a fixed order would pick).
        pick = values[values == values.min()].index[0]
        difference = 100 * (final.loc[pick] - final.loc[best])
        half = _t_half_width(difference.tolist())
        lines.append(f"| {rule} | {pick[0]:g}, {pick[1]} | {ties} | {100 * final.loc[pick].mean():.2f} | "
                     f"{difference.mean():+.2f} ({difference.mean() - half:+.2f}, {difference.mean() + half:+.2f}) |")
    return lines


def _t_half_width(values: list[float]) -> float:
    """Half-width of the 95% Student t interval of the mean of ``values``."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def machine() -> str:
    """The CPU (model and the vector instructions torch dispatches to), the threads and torch: what
    another reader needs before comparing a time with one of theirs."""
    from .records import machine_description, machine_label

    return f"{machine_label(machine_description())} ({platform.machine()}), {torch.get_num_threads()} threads, torch {torch.__version__}"


# ---- the summary ---------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _markdown_table(frame: pd.DataFrame, columns: list[tuple[str, str, str]]) -> list[str]:
    """Rows of ``frame`` as markdown; ``columns`` lists (header, column, format spec)."""
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join("-" if isinstance(row[column], float) and math.isnan(row[column])
                                        else format(row[column], spec) for _, column, spec in columns) + " |")
    return lines


def summary_markdown(tables: dict[str, pd.DataFrame], settings: str) -> str:
    """The targets of the issue, each met or missed by how much, with the figures behind it."""
    lines = ["# Benchmark summary", "", f"Machine: {machine()}. {settings}", ""]
    norms = tables.get("norms")
    if norms is not None and not norms.empty:
        worst = norms[["value_rel_err", "grad_rel_err"]].max()
        lines += [
            "## Trace norms", "",
            f"- Accuracy against a float64 SVD, worst over all regularisers and shapes: value "
            f"{worst['value_rel_err']:.1e}, gradient {worst['grad_rel_err']:.1e} (target 1e-5: "
            f"{_verdict(worst.max() <= 1e-5)}). The naive float32 path: value "
            f"{norms['naive_value_rel_err'].max():.1e}, gradient {norms['naive_grad_rel_err'].max():.1e}.",
        ]
        key = norms[(norms["dims"] == "4096x512x3") & norms["regulariser"].isin(["gttn_a", "tucker", "tt"])]
        for _, row in key.iterrows():
            lines.append(
                f"- {row['regulariser']} on 4096x512x3: {row['ours_s']:.3f} s vs naive {row['naive_s']:.3f} s, "
                f"x{row['speedup']:.1f} (target >= 2: {_verdict(row['speedup'] >= 2)}); "
                f"{row['ours_over_floor']:.1f}x the Gram floor of {row['gram_floor_s']:.3f} s (target <= 2: "
                f"{_verdict(row['ours_over_floor'] <= 2)}). The eigen-decompositions of its Gram matrices alone "
                f"take {row['eigh_s']:.3f} s, {row['eigh_s'] / row['gram_floor_s']:.1f}x the floor."
            )
        if not key.empty and (key["ours_over_floor"] > 2).any():
            lines.append(
                "- Why the floor target is missed: an exact Gram route needs the Gram products (the floor), "
                "the eigen-decompositions of the Gram matrices and the gradient products A G^(-1/2), which cost "
                "about as much as the Gram products again. On this CPU the eigen-decomposition of the "
                "1536 x 1536 Gram matrix alone costs more than its product, so 2 + (eigen / floor) is the "
                "bound for any exact Gram route here; the rest is the float64 accumulation and the "
                "flattening copies. One Gram matrix shared by the three flattenings (their Grams are "
                "partial traces of one larger Gram, benchmark/norms/mode_gram.py) saves part of the "
                "products, not the eigen-decompositions; it serves the float64 regime late in training "
                "(the section on trained tensors below), not these initial weights, whose flattenings "
                "take the float32 route."
            )
        lines += ["", *_markdown_table(norms, [
            ("shape", "shape", ""), ("regulariser", "regulariser", ""), ("ours s", "ours_s", ".4f"),
            ("naive s", "naive_s", ".4f"), ("speed-up", "speedup", ".1f"), ("floor s", "gram_floor_s", ".4f"),
            ("ours / floor", "ours_over_floor", ".1f"), ("eigh s", "eigh_s", ".4f"), ("grad err", "grad_rel_err", ".1e"),
        ]), ""]
    batching = tables.get("batching")
    if batching is not None and not batching.empty:
        lines += ["## Batching", ""]
        for _, row in batching.iterrows():
            lines.append(f"- Stacked Omniglot CNN, {row['tasks']} tasks x {row['images_per_task']} images, forward + "
                         f"backward: {row['stacked_s']:.3f} s vs a loop over tasks {row['loop_s']:.3f} s, "
                         f"x{row['speedup']:.1f} (target >= 5: {_verdict(row['speedup'] >= 5)}).")
        if (batching["speedup"] < 5).any():
            lines.append(
                "- Why: on a CPU, stacking saves the per-operation overhead of the loop, not arithmetic. With "
                "few images per task that overhead dominates and stacking pays; with 20 images of 105 x 105 "
                "per task each task's convolutions already keep both cores busy, and oneDNN's grouped "
                "convolution (50 groups of 1-16 channels) is no faster per operation than 50 plain ones. "
                "The 5x target assumes per-kernel overheads of a GPU; no GPU was available to measure it."
            )
        lines.append("")
    training = tables.get("training")
    if training is not None and not training.empty:
        lines += ["## Training steps", ""]
        surf = training[training["setup"].str.startswith("office_caltech")].set_index("method")
        if "gttn_a" in surf.index:
            ratio = surf.loc["gttn_a", "step_vs_stl"]
            lines.append(f"- GTTN-a step at hidden 128 on Office-Caltech SURF: {ratio:.2f}x an STL step "
                         f"(target <= 1.5: {_verdict(ratio <= 1.5)}).")
            if ratio > 1.5:
                stl_ms, gttn_ms = 1000 * surf.loc["stl", "step_s"], 1000 * surf.loc["gttn_a", "step_s"]
                lines.append(
                    f"- Why: an STL step on 800-d SURF features with 4 tasks takes {stl_ms:.1f} ms, so the exact "
                    f"trace norms of the two stacked layers (800 x 128 x 4 and 128 x 10 x 4: eigen-decompositions "
                    f"of Gram matrices up to 512 x 512, three flattenings per layer) dominate at {gttn_ms:.1f} ms. "
                    "The network is too small for any exact trace norm to hide behind it. Lazy regularisation "
                    "(below) is the remedy where the approximation is acceptable."
                )
        lines += ["", *_markdown_table(training, [
            ("setup", "setup", ""), ("method", "method", ""), ("steps/s", "steps_per_s", ".2f"),
            ("step / STL step", "step_vs_stl", ".2f"), ("peak RSS MB", "peak_rss_mb", ".0f"),
            ("of it, training MB", "training_extra_mb", ".0f"),
        ])]
        lines.append("")
    lazy = tables.get("lazy")
    if lazy is not None and not lazy.empty:
        grouped = lazy.groupby(["method", "penalty_every"]).agg(
            test_err=("test_err_mean", "mean"), test_err_std=("test_err_mean", "std"), seconds=("wall_time_s", "mean"))
        lines += ["## Lazy regularisation (Office-Caltech SURF, hidden 128, lambda 0.01)", "",
                  *_markdown_table(grouped.reset_index(), [
                      ("method", "method", ""), ("penalty every", "penalty_every", "d"),
                      ("mean test error", "test_err", ".4f"), ("std", "test_err_std", ".4f"),
                      ("mean run s", "seconds", ".1f"),
                  ]), "", "Mean over seeds; the same seeds and splits for both settings. A run includes data "
                  "loading, validation every epoch and the test pass, so it understates the saving per step.", ""]
    trained = tables.get("trained")
    if trained is not None and not trained.empty:
        lines += ["## Trace norms where training spends its time (GTTN-a, every layer, Office-Caltech SURF)", "",
                  "Value + gradient of the penalty on the hidden tensor GTTN-a reached, medians of at least 15 "
                  "interleaved pairs (with a memo kept across calls, and without: a fresh one each call).", ""]
        for _, row in trained.iterrows():
            target = 0.7 if row["tensor"].split("x")[1] == "128" else 0.85
            lines.append(
                f"- {row['tensor']} after {row['epochs']} epochs: the penalty with a route memo takes "
                f"{row['memo_over_fresh']:.2f}x the time without one ({1000 * row['memo_s']:.1f} vs "
                f"{1000 * row['fresh_s']:.1f} ms; target <= {target}: {_verdict(row['memo_over_fresh'] <= target)}); "
                f"float32 Gram floor {1000 * row['gram_floor_s']:.1f} ms; the float64 pieces (Gram, eigh, product of "
                f"every flattening), which bound an exact route here, {1000 * row['float64_bound_s']:.1f} ms, "
                f"{row['float64_bound_s'] / row['fresh_s']:.2f}x the time without a memo, and the memo's path is "
                f"{row['memo_s'] / row['float64_bound_s']:.2f}x them. The matrix-product route (Newton-Schulz, "
                f"the default on CUDA) on {row['matmul_device']}: {1000 * row['matmul_s']:.1f} ms"
                f"{' (a GPU route: on this CPU it is slower than eigh)' if row['matmul_device'] == 'cpu' else ''}. "
                f"A whole GTTN-a training step there: {row['step_memo_over_fresh']:.2f}x its time without the memo "
                f"({1000 * row['step_memo_s']:.1f} vs {1000 * row['step_fresh_s']:.1f} ms; target <= 0.75: "
                f"{_verdict(row['step_memo_over_fresh'] <= 0.75)}), {row['step_memo_s'] / row['step_stl_s']:.1f}x an STL step "
                f"(was {row['step_fresh_s'] / row['step_stl_s']:.1f}x). Flattenings: {row['routes']}.")
        lines.append("")
    cost = tables.get("cost")
    if cost is not None and not cost.empty:
        lines += ["## Time to leaderboard (from the committed records' run times)", "",
                  *_markdown_table(cost, [("dataset", "dataset", ""), ("input", "features", ""), ("protocol", "protocol", ""),
                                          ("train ratio", "train_ratio", "g"), ("job", "job", ""), ("runs", "runs", "d"),
                                          ("hours of run time", "cpu_hours", ".1f"), ("runs planned", "planned_runs", ".0f"),
                                          ("hours projected", "projected_cpu_hours", ".1f"),
                                          ("projected from", "projection_basis", "")]),
                  "", "A run's time is its process's wall time with one thread per worker; records written before "
                  "the workers split the cores (Office-Caltech ratio 0.1) ran beside other sweeps and overstate it. "
                  "For the current protocol, every ratio and job of the plan, run yet or not: its runs and the hours "
                  "they take, projected from each method's mean run time at that ratio, or at another ratio scaled "
                  "by the train ratio (steps per epoch grow with it), or, for a method not yet run, the others' mean: "
                  "the current code's time to leaderboard, firmer as more methods finish. Ablation records are left "
                  "out.", "", *board_totals(cost), ""]
    lines += loop_summary(tables.get("loop"), tables.get("profile"))
    selection = tables.get("selection")
    if selection is not None and not selection.empty:
        lines += [f"## Model selection at a small train ratio ({selection['method'].iloc[0].upper()}, Office-Caltech SURF, "
                  f"ratio {selection['train_ratio'].iloc[0]:g})", "",
                  *selection_summary(selection), "",
                  "The grid's best is chosen on test error: a yardstick for the selection rules, never a result.", ""]
    return "\n".join(lines)


SECTIONS = ("norms", "batching", "training", "lazy", "trained", "cost", "loop", "profile", "selection")


def run_section(section: str, repeats: int, data_dir: Path) -> pd.DataFrame:
    """One section of the benchmark, with its settings for ``make bench``."""
    if section == "norms":
        return bench_norms(repeats)
    if section == "batching":
        return bench_batching(repeats)
    if section == "training":
        return bench_training(data_dir, steps=20)
    if section == "selection":
        return bench_selection(data_dir)
    if section == "cost":
        return bench_cost()
    if section == "loop":
        return bench_loop(data_dir, repeats)
    if section == "profile":
        return bench_profile(data_dir)
    if section == "trained":
        return bench_trained(data_dir, repeats=max(repeats, 15))
    return bench_lazy(data_dir, seeds=(1, 2, 3), every=4)


def run_bench(sections: list[str], repeats: int, data_dir: Path, out_dir: Path) -> list[Path]:
    """Run ``sections``; write each one's CSV as it finishes (a cut-off run keeps what it measured)
    and ``summary.md`` over them and the sections earlier runs left in ``out_dir``."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, written = {}, []
    started = time.perf_counter()
    for section in sections:
        tables[section] = run_section(section, repeats, data_dir)
        if not tables[section].empty:
            path = out_dir / f"{section}.csv"
            tables[section].to_csv(path, index=False, float_format="%.6g", lineterminator="\n")
            written.append(path)
    for section in set(SECTIONS) - set(sections):  # the summary keeps what earlier runs measured
        if (out_dir / f"{section}.csv").exists():
            tables[section] = pd.read_csv(out_dir / f"{section}.csv")
    settings = (f"Sections {', '.join(sections)} measured in this run (the others, where shown, in an earlier one); "
                f"medians of {repeats} runs (training: the median step of 20 "
                f"steps on SURF, 2 on Omniglot); data {data_dir}; the run took {(time.perf_counter() - started) / 60:.0f} min.")
    (out_dir / "summary.md").write_text(summary_markdown(tables, settings))
    return [*written, out_dir / "summary.md"]
