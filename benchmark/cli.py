"""The ``mtlbench`` command line: one subcommand per user job."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .data.source import DEFAULT_BACKBONE
from .sweep.launcher import LAUNCHERS
from .config import DATA_DIR_VARIABLE, EPOCHS, LAYERINGS, TrainConfig, default_data_dir, parse_assignments
from .records import RecordWriteError, RunRecord, ensure_writable, git_revision


def _data(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError, dataset_source
    from .data.datasets_report import fetch_and_report

    from .data.folder import FolderSource

    try:
        source = dataset_source(args.dataset)
    except (ValueError, DataUnavailableError) as error:
        print(f"mtlbench data: {error}", file=sys.stderr)
        return 2
    if isinstance(source, FolderSource):  # the user's own files: nothing to fetch, everything to check
        return 0 if _list_folder(args.dataset) else 1
    data_dir = args.data_dir
    try:
        complete = fetch_and_report(source, data_dir, download=not args.no_download, progress=not args.no_progress)
    except DataUnavailableError as error:
        print(f"mtlbench data: {error}", file=sys.stderr)
        return 1
    return 0 if complete else 1


def _features(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError, dataset_source
    from .data.features import Extraction
    from .data.images import ImageDatasetSource

    data_dir = args.data_dir
    try:
        source = dataset_source(args.dataset)
        if not isinstance(source, ImageDatasetSource):
            raise ValueError(f"{source.name} is not a dataset of image domains; features are made for image datasets")
        device = args.device or ("cuda" if _cuda_available() else "cpu")
        extraction = Extraction(source, data_dir, args.backbone, args.layer, args.weights, args.image_size,
                                args.batch_size, args.workers, device)
        started = time.perf_counter()
        directory = extraction.run(progress=not args.no_progress)
        print(f"took {time.perf_counter() - started:.0f} s on {device}")
    except (ValueError, DataUnavailableError) as error:
        print(f"mtlbench features: {error}", file=sys.stderr)
        return 2
    print(f"features: {directory} (train with `mtlbench train --dataset {args.dataset} --features {args.layer}"
          f"{'' if args.backbone == DEFAULT_BACKBONE else ' --backbone ' + args.backbone}`)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError, dataset_source
    from .data.gttn_text import gttn_text_to_folder

    try:
        folder = gttn_text_to_folder(args.file, args.to, args.tasks, args.features, args.shape, args.classes)
        dataset = dataset_source(str(folder)).load(Path())
    except (OSError, ValueError, DataUnavailableError) as error:
        print(f"mtlbench import: {error}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{t.name} {len(t.labels)}" for t in dataset.tasks)
    print(f"{folder}: dataset {dataset.name}, {len(dataset.tasks)} tasks ({sizes}) of {dataset.tasks[0].n_classes} "
          f"classes, inputs {' x '.join(map(str, dataset.input_shape))}\n"
          f"train with `.venv/bin/mtlbench train --dataset {folder}` or sweep with `make sweep DATASET={folder}`")
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _list(args: argparse.Namespace) -> int:
    from .data import dataset_names, dataset_source
    from .methods import method_class, method_names
    from .norms import regulariser_names

    data_dir = args.data_dir
    by_paper: dict[Any, list[str]] = {}
    for name in method_names():
        by_paper.setdefault(method_class(name).paper, []).append(name)
    print("methods:      " + ", ".join(method_names()))
    print("  by default each runs under its family's protocol (--layers paper):")
    for paper, names in sorted(by_paper.items(), key=lambda item: item[0].citation):
        print(f"    layers {paper.layers}, as in {paper.citation}: {', '.join(names)}")
    print("  parameters (--param KEY=VALUE, or method_params in a plan):")
    for name in method_names():
        declared = method_class(name).declared_parameters
        if declared:
            print(f"    {name}: " + "; ".join(p.describe() for p in declared))
    print("regularisers: " + ", ".join(regulariser_names()))
    print(f"datasets (data directory {data_dir}; present = files found, not checked: "
          "`.venv/bin/mtlbench data <name>` verifies their checksums):")
    for name in dataset_names():
        source = dataset_source(name)
        present = "present" if source.present(data_dir) else "missing"
        default = f" (default input: {source.default_features})" if source.default_features else ""
        print(f"  {name:<16} {present}{default}")
    from .data.backbones import BACKBONES

    print("backbones (mtlbench features --backbone NAME --layer LAYER):")
    for name, spec in BACKBONES.items():
        print(f"  {name:<18} layers {', '.join(spec.layers)}: {spec.note}")
    print("your own data: --dataset PATH of a folder with one <task>.npz/.mat/.csv per task "
          "(`mtlbench list PATH` checks it)")
    return 0 if all(_list_folder(folder) for folder in args.folders) else 1


def _list_folder(folder: str) -> bool:
    """Print whether a folder dataset the user points at is valid (read and checked in full)."""
    from .data import DataUnavailableError, dataset_source

    try:
        dataset = dataset_source(folder).load(Path())
    except (ValueError, DataUnavailableError) as error:
        print(f"  {folder}: INVALID: {error}")
        return False
    sizes = ", ".join(f"{t.name} {len(t.labels)}" for t in dataset.tasks)
    label = f", input {dataset.provenance['features']}" if dataset.provenance.get("features") else ""
    shifted = "; labels 1..C (MATLAB), read as 0..C-1" if dataset.provenance["label_base"] == 1 else ""
    print(f"  {folder}: valid folder dataset {dataset.name}{label}: {len(dataset.tasks)} tasks ({sizes}), "
          f"{dataset.tasks[0].n_classes} classes, inputs {' x '.join(map(str, dataset.input_shape))}{shifted}")
    return True


def _train(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError
    from .methods import DivergedError
    from .train import train

    values = {
        key: getattr(args, key)
        for key in ("dataset", "method", "lam", "hidden", "lr", "seed", "train_ratio", "val_ratio", "max_epochs", "layers",
                    "penalty_every", "epoch", "max_steps")
        if getattr(args, key) is not None
    }
    if args.split:
        values["split_file"] = str(args.split)
    values["method_params"] = parse_assignments(args.param)
    values["dataset_params"] = parse_assignments(args.data_param)
    if args.net_param:
        values["network_params"] = parse_assignments(args.net_param)
    values["dataset_params"].update({key: getattr(args, key) for key in ("features", "backbone") if getattr(args, key)})
    try:
        config = TrainConfig.from_dict(values)
        if args.out is not None:
            ensure_writable(args.out)  # before training, not after it
        # A bar redrawn into a file or a pipe is hundreds of lines: only on a terminal.
        result = train(config, args.data_dir, args.out, progress=not args.no_progress and sys.stdout.isatty())
    except (ValueError, DataUnavailableError, RecordWriteError) as error:
        print(f"mtlbench train: {error}", file=sys.stderr)
        return 2
    except DivergedError as error:
        print(f"mtlbench train: diverged, no record written: {error}", file=sys.stderr)
        return 3
    _print_summary(result.record)
    if result.path:
        print(f"record: {result.path}")
    return 0


def _print_summary(record: RunRecord) -> None:
    print(f"\n{record.dataset} / {record.method}  seed {record.seed}  "
          f"selection: {record.selection} (epoch {record.selected_epoch})")
    print(f"  {'task':<24}{'val acc':>10}{'test acc':>10}{'test err':>10}")
    for task, m in record.tasks.items():
        val = "-" if m["val_acc"] is None else f"{m['val_acc']:.4f}"
        print(f"  {task:<24}{val:>10}{m['test_acc']:>10.4f}{m['test_err']:>10.4f}")
    val_mean = "-" if record.val_acc_mean is None else f"{record.val_acc_mean:.4f}"
    print(f"  {'mean':<24}{val_mean:>10}{record.test_acc_mean:>10.4f}{record.test_err_mean:>10.4f}")
    print(f"  {record.steps} steps ({record.steps_per_epoch} per epoch, epoch = {record.config['epoch']}); "
          f"wall time {record.wall_time_s:.1f} s")


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _sweep(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError
    from .sweep.command import resolve_job, run_sweep
    from .sweep.launcher import JobResources
    from .sweep.worker import run_spawned_worker

    if args.job:  # a worker process the command below started
        return run_spawned_worker(args.job, args.worker_index or 0)
    try:
        job = resolve_job(
            args.dataset, args.data_dir, args.out, args.storage, args.sweeps_dir, args.plan, args.methods, args.trials,
            args.final_seeds, args.train_ratio,
            args.features, args.backbone, args.split,
        )
    except (ValueError, DataUnavailableError, OSError) as error:
        print(f"mtlbench sweep: {error}", file=sys.stderr)
        return 2
    gpus = _comma_list(args.gpus) if args.gpus else []
    flags = {"partition": args.partition, "time_min": args.time_min, "gpus_per_job": args.gpus_per_job,
             "cpus_per_job": args.cpus_per_job, "mem_gb": args.mem_gb, "account": args.account}
    try:
        resources = JobResources.from_values({**job.plan.launcher, **{k: v for k, v in flags.items() if v is not None}})
    except (TypeError, ValueError) as error:
        print(f"mtlbench sweep: {error}", file=sys.stderr)
        return 2
    return run_sweep(job, args.workers or max(len(gpus), 1), gpus, args.searches_settled, args.launcher, resources,
                     status_only=args.status)


def _leaderboard(args: argparse.Namespace) -> int:
    from .board.leaderboard import build_leaderboard

    if args.variants is not None:
        return _variant_leaderboards(args)
    if not args.runs.is_dir():
        print(f"mtlbench leaderboard: no run records at {args.runs} (run `make sweep` first)", file=sys.stderr)
        return 2
    if args.main_runs is not None and not args.main_runs.is_dir():
        print(f"mtlbench leaderboard: --main-runs {args.main_runs} is not a folder of records", file=sys.stderr)
        return 2
    written, notices = build_leaderboard(args.runs, args.out, jobs=_comma_list(args.jobs), plots=not args.no_plots,
                                         reference_dir=args.reference, main_runs_dir=args.main_runs)
    for notice in notices:
        print(f"mtlbench leaderboard: {notice}", file=sys.stderr)
    if not written:
        print(f"mtlbench leaderboard: no records of job(s) {args.jobs} under {args.runs}", file=sys.stderr)
        return 1
    summary = args.out / "summary.md"
    if summary.exists():
        print("mean test error % (std over seeds); the best in bold where its paired 95% interval against the "
              "runner-up excludes 0, else tied\n\n" + summary.read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _variant_leaderboards(args: argparse.Namespace) -> int:
    """Each plan variant's records (``<variants>/<dataset>_<plan>``) tabulated apart under
    ``<out>/<dataset>_<plan>``, paired with the main board (``--runs``); where the variant's plan
    names ``paired_with``, also under ``<out>/<dataset>_<plan>/vs_<other>``, paired with that
    variant's runs (e.g. a budget against the same weighting's shorter one)."""
    from .board.leaderboard import build_leaderboard
    from .board.tables import MAIN_BOARD
    from .sweep.plan import paired_variant, sweeps_dir

    if not args.variants.is_dir():  # no variant run yet: nothing to tabulate, nothing wrong
        print(f"mtlbench leaderboard: no plan variants' records at {args.variants}")
        return 0
    if not args.runs.is_dir():
        print(f"mtlbench leaderboard: no run records at {args.runs} to pair the variants with (run `make sweep` first)",
              file=sys.stderr)
        return 2
    plans = {f"{f.parent.name}_{f.stem}": (f.parent.name, f.stem) for f in sweeps_dir().glob("*/*.yaml")}
    for folder in sorted(p for p in args.variants.iterdir() if p.is_dir()):
        pairings = [(args.runs, MAIN_BOARD, args.out / folder.name)]
        if folder.name in plans and (other := paired_variant(*plans[folder.name])):
            pairings.append((args.variants / f"{plans[folder.name][0]}_{other}", f"the {other} variant",
                             args.out / folder.name / f"vs_{other}"))
        for main_runs, main_name, out in pairings:
            if not main_runs.is_dir():
                print(f"mtlbench leaderboard: {folder}: no records of {main_name} at {main_runs} to pair with", file=sys.stderr)
                continue
            written, notices = build_leaderboard(folder, out, jobs=_comma_list(args.jobs), plots=not args.no_plots,
                                                 reference_dir=args.reference, main_runs_dir=main_runs, main_name=main_name)
            for notice in notices:
                print(f"mtlbench leaderboard: {folder.name}: {notice}", file=sys.stderr)
            print(f"{folder}: " + (f"{len(written)} files in {out}, paired with {main_name}" if written
                                   else f"no records of job(s) {args.jobs} yet, no table"))
    return 0


def _curves(args: argparse.Namespace) -> int:
    from .board.leaderboard import build_curves

    written = build_curves(args.runs, args.out, _comma_list(args.jobs))
    if not written:
        print(f"mtlbench curves: no records of job(s) {args.jobs} with a validation part under {args.runs}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        written = bench.run_bench(_comma_list(args.sections), args.repeats, args.data_dir, args.out)
    except ValueError as error:
        print(f"mtlbench bench: {error}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _split_export(args: argparse.Namespace) -> int:
    import torch

    from .data import export_split
    from .records import BrokenRecord, read_record

    try:
        record = read_record(args.record)
        if record.split_file is None:
            raise ValueError(f"{args.record} names no saved split (a run written without a records folder)")
        saved = torch.load(args.record.parent / record.split_file)
        out = export_split(saved, args.out or args.record.with_suffix(".split.json"))
    except (BrokenRecord, ValueError, OSError) as error:
        print(f"mtlbench split-export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} (train on it with --split {out})")
    return 0


def _rerun(args: argparse.Namespace) -> int:
    from .data import DataUnavailableError
    from .methods import DivergedError
    from .records import BrokenRecord, read_record
    from .rerun import rerun

    same = differing = failed = 0
    for path in args.records:  # one that cannot run is reported and the rest still run
        try:
            comparison = rerun(read_record(path), args.data_dir, args.out, progress=not args.no_progress and sys.stdout.isatty())
        except (BrokenRecord, ValueError, DataUnavailableError, DivergedError, RecordWriteError) as error:
            print(f"mtlbench rerun: {path}: {error}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(comparison.describe(), flush=True)
        same, differing = same + comparison.same, differing + (not comparison.same)
    print(f"{same} of {len(args.records)} rerun(s) gave the recorded test error"
          + (f"; {differing} differ" if differing else "") + (f"; {failed} could not run" if failed else ""))
    return 2 if failed else 1 if differing else 0


def _wandb_view(args: argparse.Namespace) -> int:
    from .tracking import WANDB_PROJECT
    from .wandb_view import comparison_workspace, describe

    entity = args.entity or os.environ.get("WANDB_ENTITY")
    project = args.project or os.environ.get("WANDB_PROJECT") or WANDB_PROJECT
    if not entity and not args.dry_run:
        print("mtlbench wandb-view: name the W&B entity (--entity or $WANDB_ENTITY: your user or team name)",
              file=sys.stderr)
        return 2
    workspace = comparison_workspace(entity or "<entity>", project, args.name)
    print(describe(workspace))
    if args.dry_run:
        return 0
    try:
        saved = workspace.save()
    except Exception as error:  # not logged in, no network, no such project
        print(f"mtlbench wandb-view: could not save the workspace ({type(error).__name__}: {error}); "
              "log in with `.venv/bin/wandb login` and sync the runs (`make sync`) first", file=sys.stderr)
        return 1
    print(f"saved: {getattr(saved, 'url', '')}")
    return 0


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``; argparse names the option in its error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _comma_separated(kind: type, valid: Callable[[Any], bool], rule: str) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of ``kind`` values, each ``rule``."""
    def parse(text: str) -> list:
        values = []
        for item in _comma_list(text):
            try:
                value = kind(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {item!r}") from None
            if not valid(value):
                raise argparse.ArgumentTypeError(f"each value must be {rule}, got {value}")
            values.append(value)
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlbench", description="Tensor-trace-norm deep multi-task learning benchmark."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = f"where datasets live (default ${DATA_DIR_VARIABLE} or datasets/)"

    listing = commands.add_parser("list", help="methods, regularisers and datasets (and which are present)")
    listing.add_argument("folders", nargs="*", metavar="FOLDER", help="folder datasets to check (read and validated)")
    listing.add_argument("--data-dir", type=Path, help=data_help)
    listing.set_defaults(handler=_list)

    data = commands.add_parser(
        "data", help="download (where a URL exists), verify and report a dataset's files",
        description="Downloads what is missing to a temporary name, verifies it, then renames it; reports the "
        "files, image counts and feature caches present. Exit status 0 when the dataset is complete.")
    data.add_argument("dataset", help="dataset name (`mtlbench list` shows them)")
    data.add_argument("--no-download", action="store_true", help="only verify and report")
    data.add_argument("--data-dir", type=Path, help=data_help)
    data.add_argument("--no-progress", action="store_true", help="no progress bars")
    data.set_defaults(handler=_data)

    features = commands.add_parser(
        "features", help="extract backbone features of a dataset's images once, into a verified cache",
        description="Runs a torchvision backbone over every image in batches and caches the features with a "
        "manifest (backbone, layer, weights, image list, checksums). A verified cache is reused; a corrupt one is "
        "rebuilt; an interrupted run continues. `mtlbench import` converts the GTTN paper's feature text files.")
    features.add_argument("dataset", help="dataset name")
    features.add_argument("--backbone", default=DEFAULT_BACKBONE,
                          help=f"{DEFAULT_BACKBONE} (the papers', the default) or efficientnet_lite0 (ImageNet weights "
                          "that install offline: a stand-in)")
    features.add_argument("--layer", default="fc7", help="vgg19: fc7 (4096-d) or pool5 (7 x 7 x 512); "
                          "efficientnet_lite0: pool (1280-d) or map (7 x 7 x 1280)")
    features.add_argument("--weights", default="imagenet",
                          help="imagenet (torchvision's download), a state-dict file PATH, or random (tests only)")
    features.add_argument("--image-size", type=_at_least(1), default=224, help="center-crop size (default 224)")
    features.add_argument("--batch-size", type=_at_least(1), default=32, help="images per forward pass")
    features.add_argument("--workers", type=_at_least(0), default=min(4, os.cpu_count() or 1), help="image-decoding processes")
    features.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    features.add_argument("--data-dir", type=Path, help=data_help)
    features.add_argument("--no-progress", action="store_true", help="no progress bar")
    features.set_defaults(handler=_features)

    imports = commands.add_parser(
        "import", help="convert a GTTN-paper feature text file into a folder dataset",
        description="Writes one <task>.npz per task and dataset.json into a new folder (never into an existing "
        "one); train on it with --dataset FOLDER. Folders of .npz/.mat/.csv files need no import.")
    imports.add_argument("file", type=Path, help="the GTTN text file (line 1 tasks, line 2 classes, line 3 offsets, ...)")
    imports.add_argument("--to", type=Path, required=True, help="the new folder; its name is the dataset's name")
    imports.add_argument("--tasks", type=_comma_list, help="task names in file order (default task0, task1, ...)")
    imports.add_argument("--features", default="", help="the input's name in records and tables, e.g. gnet1024")
    imports.add_argument("--shape", type=_comma_separated(int, lambda n: n >= 1, ">= 1"),
                         help="per-row shape, e.g. 7,7,512 for pool5 rows (default: a flat vector)")
    imports.add_argument("--classes", type=_comma_list, help="class names in label order")
    imports.set_defaults(handler=_import)

    train = commands.add_parser("train", help="train one method on one dataset and write its record")
    train.add_argument("--dataset", help="dataset name (default synthetic), or a folder of per-task .npz/.mat/.csv files")
    train.add_argument("--method", help="method name (default tucker)")
    train.add_argument("--lam", type=float, help="trade-off lambda of the coupling term")
    train.add_argument("--hidden", type=_at_least(1), help="hidden units")
    train.add_argument("--lr", type=float, help="Adam learning rate")
    train.add_argument("--seed", type=int, help="seed of the split and the initialisation")
    train.add_argument("--train-ratio", type=float, help="train part per task and class (rest: test)")
    train.add_argument("--val-ratio", type=float, help="validation part of train (0: fixed budget)")
    train.add_argument("--max-epochs", type=_at_least(1), help="epochs")
    train.add_argument("--epoch", choices=list(EPOCHS),
                       help="what an epoch is: largest_task (default: the largest task's training part seen once) or "
                       "all_samples (the GTTN code: all training samples / (batch per task x tasks))")
    train.add_argument("--max-steps", type=_at_least(1),
                       help="a budget in optimiser steps instead of --max-epochs (rounded up to whole epochs)")
    train.add_argument("--layers", choices=list(LAYERINGS),
                       help="all: stack and regularise hidden and heads; head: share the hidden layer (Frobenius) and "
                       "regularise the stacked heads; paper (default): the method's paper's layering; other: the other one "
                       "(an ablation)")
    train.add_argument("--penalty-every", type=_at_least(1),
                       help="lazy regularisation: the coupling term every k-th step, weighted k (default 1: exact)")
    train.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="method parameter, e.g. axis=1 (laf_i), d=3 (tr), eps=0.1 (laf_tf)")
    train.add_argument("--net-param", action="append", default=[], metavar="KEY=VALUE",
                       help="a network choice for an ablation, e.g. padding=same or init=tf_normal (Omniglot CNN)")
    train.add_argument("--data-param", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset parameter, e.g. alphabets=5 (omniglot)")
    train.add_argument("--features", help="the input of a dataset that has several: surf (office_caltech), or "
                       "fc7 / pool5 extracted by `mtlbench features` (default: the dataset's own)")
    train.add_argument("--backbone", help="backbone of the extracted features (default vgg19)")
    train.add_argument("--split", type=Path, metavar="FILE",
                       help="train on a given split: JSON {task: {train: [...], val: [...], test: [...]}} of row indices "
                       "(a published split, or `mtlbench split-export`'s); the seed then varies only the initialisation")
    train.add_argument("--data-dir", type=Path, help=data_help)
    train.add_argument("--out", type=Path, default=Path("results/runs"), help="where records go")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    sweep = commands.add_parser(
        "sweep", help="Optuna search of lambda and hidden per method, then final runs of the best",
        description="Runs the plan sweeps/<dataset>.yaml (over sweeps/default.yaml). Run the same "
        "command again to continue; run it on several machines against one --storage to share the work.",
    )
    sweep.add_argument("--dataset", default="synthetic", help="dataset name (default synthetic), or a folder of per-task .npz/.mat/.csv files")
    sweep.add_argument("--methods", help="all, or a comma-separated list (default: the plan's)")
    sweep.add_argument("--trials", type=_at_least(0), help="search trials per method (default: the plan's)")
    sweep.add_argument("--final-seeds", type=_comma_separated(int, lambda seed: seed >= 0, ">= 0"),
                       help="comma-separated seeds of the final runs (default: the plan's)")
    sweep.add_argument("--train-ratio", type=_comma_separated(float, lambda ratio: 0 < ratio < 1, "in (0, 1)"),
                       help="comma-separated train ratios, one study each (default: the plan's)")
    sweep.add_argument("--features", help="the dataset's input, e.g. fc7 or pool5 (default: the plan's, else the dataset's)")
    sweep.add_argument("--backbone", help="backbone of --features (default vgg19)")
    sweep.add_argument("--split", type=Path, metavar="FILE",
                       help="every trial and final run on this given split (JSON, as for train --split); the seeds "
                       "then vary only the initialisation")
    sweep.add_argument("--workers", type=_at_least(1), help="workers: processes on this machine, or scheduler jobs "
                       "with --launcher (default 1, or one per GPU)")
    sweep.add_argument("--launcher", choices=LAUNCHERS, default="process",
                       help="process: subprocesses of this command; slurm: one Slurm job per worker through submitit "
                       "(needs a storage every node reaches); local: submitit's local executor, the same path here")
    sweep.add_argument("--partition", help="Slurm partition (default: the plan's launcher.partition)")
    sweep.add_argument("--time-min", type=_at_least(1), help="time limit per job in minutes (default 240)")
    sweep.add_argument("--gpus-per-job", type=_at_least(0), help="GPUs per job (default 0)")
    sweep.add_argument("--cpus-per-job", type=_at_least(1), help="CPUs per job (default 2)")
    sweep.add_argument("--mem-gb", type=float, help="memory per job in GB (default: the partition's)")
    sweep.add_argument("--account", help="Slurm account to charge")
    sweep.add_argument("--gpus", help="comma-separated GPU ids; worker i sees only gpus[i mod n]")
    sweep.add_argument("--storage", default=None,
                       help="Optuna storage: an RDB URL (sqlite:///..., postgresql://user:pw@host/db) or a "
                       "journal file path (default sqlite:///results/optuna.db)")
    sweep.add_argument("--sweeps-dir", type=Path, help="where the plans are (default sweeps/)")
    sweep.add_argument("--plan", help="a variant of the dataset's plan: <sweeps-dir>/<dataset>/<PLAN>.yaml, merged over it")
    sweep.add_argument("--data-dir", type=Path, help=data_help)
    sweep.add_argument("--out", type=Path, help="where records go (default results/runs; a --plan variant's: "
                       "results/variants/<dataset>_<plan>, tabulated apart by `make leaderboard`)")
    sweep.add_argument("--searches-settled", action="store_true",
                       help="rebuilding a lost storage from the records: count each search's positions that left "
                            "no record as settled (pruned or failed, as your logs say) instead of running them again")
    sweep.add_argument("--status", action="store_true",
                       help="say where each method's search and finals stand and the time left, then exit "
                            "without running anything (the same command, without --status, continues the sweep)")
    sweep.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # a spawned worker: the resolved job's file
    sweep.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    sweep.set_defaults(handler=_sweep)

    board = commands.add_parser("leaderboard", help="tables and plots from the run records")
    board.add_argument("--runs", type=Path, default=Path("results/runs"), help="where the records are")
    board.add_argument("--out", type=Path, default=Path("results/leaderboard"), help="where tables and plots go")
    board.add_argument("--jobs", default="final", help="comma-separated record jobs to tabulate: final, train, sweep")
    board.add_argument("--no-plots", action="store_true", help="tables only")
    board.add_argument("--reference", type=Path, default=Path("results/reference"),
                       help="published results and method notes shown beside the records (default results/reference)")
    board.add_argument("--main-runs", type=Path,
                       help="the main board's records (results/runs) for a plan variant's --runs: each row is paired "
                       "with the same method there (vs_main_* columns), and a variant without STL or DMTL gets theirs")
    board.add_argument("--variants", type=Path, metavar="DIR",
                       help="instead of one board: every plan variant's records under DIR (results/variants), each "
                       "tabulated in <out>/<dataset>_<plan>, paired with --runs (the main board) and, where its plan "
                       "names paired_with, with that variant too (<out>/<dataset>_<plan>/vs_<other>)")
    board.set_defaults(handler=_leaderboard)

    curves = commands.add_parser("curves", help="validation accuracy per epoch of every run, one figure per dataset")
    curves.add_argument("--runs", type=Path, default=Path("results/calibration"), help="where the records are")
    curves.add_argument("--out", type=Path, default=Path("results/leaderboard/calibration"), help="where the figures go")
    curves.add_argument("--jobs", default="train,sweep,final", help="comma-separated record jobs to draw")
    curves.set_defaults(handler=_curves)

    export = commands.add_parser(
        "split-export", help="write the split a run trained on as JSON, for train --split / sweep --split")
    export.add_argument("record", type=Path, help="the run's record (results/runs/<dataset>/<method>/<run_id>.json)")
    export.add_argument("--out", type=Path, help="where the JSON goes (default: beside the record, <run_id>.split.json)")
    export.set_defaults(handler=_split_export)

    again = commands.add_parser(
        "rerun", help="train recorded runs again from their records and compare the test errors",
        description="Each record's configuration is trained again (same split, same initialisation); prints the "
        "recorded and the new test error, which tasks differ, and whether the same feature files were read. "
        "Exit status 1 when any rerun differs, 2 when a record cannot be rerun.")
    again.add_argument("records", type=Path, nargs="+", metavar="RECORD",
                       help="a complete run's record (results/runs/<dataset>/<method>/<run_id>.json)")
    again.add_argument("--data-dir", type=Path, help=data_help)
    again.add_argument("--out", type=Path, help="keep the reruns' records here (default: none written)")
    again.add_argument("--no-progress", action="store_true", help="no progress bar")
    again.set_defaults(handler=_rerun)

    view = commands.add_parser(
        "wandb-view", help="save a W&B workspace comparing the methods (needs `wandb login`; --dry-run does not)",
        description="Builds a workspace of the project's final runs grouped by method and train ratio: test error "
        "by method, validation curves, GTTN flattening weights and training curves; saves it to W&B.")
    view.add_argument("--entity", help="W&B user or team (default $WANDB_ENTITY)")
    view.add_argument("--project", help="W&B project (default $WANDB_PROJECT or mtl-trace-norm-benchmark)")
    view.add_argument("--name", default="Method comparison", help="the workspace's name")
    view.add_argument("--dry-run", action="store_true", help="print the workspace, save nothing")
    view.set_defaults(handler=_wandb_view)

    bench = commands.add_parser("bench", help="speed, accuracy and memory benchmarks into results/bench/")
    bench.add_argument("--sections", default="norms,batching,training,lazy,trained,cost,loop,profile",
                       help="comma-separated sections (also: selection, about 20 min, not in the default)")
    bench.add_argument("--repeats", type=_at_least(1), default=3, help="runs per timing (the median is reported)")
    bench.add_argument("--data-dir", type=Path, help=data_help)
    bench.add_argument("--out", type=Path, default=Path("results/bench"), help="where the CSVs and summary go")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    git_revision()  # fixed now, before anything runs: the records name the code this process imported
    if getattr(args, "data_dir", "absent") is None:  # resolved once, here: $BENCHMARK_DATA_DIR or datasets/
        args.data_dir = default_data_dir()
    return args.handler(args)
