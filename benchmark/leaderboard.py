"""The leaderboard: a pure function of the run records under ``results/runs/``.

Records from any number of workers and machines are gathered into one folder tree and read
here; nothing else is consulted, so the tables can be rebuilt anywhere, and rebuilding them from
the same records gives byte-identical CSVs (rows sorted, numbers rounded, no timestamps).

One row per dataset (and features), train ratio and method. When a method has final runs of
more than one configuration (a longer sweep found a new best), the configuration with the lowest
mean *validation* error is shown and the others are reported as superseded: test error never
chooses.

Tables never mix protocols or layerings: records of the current protocol with each method under
its paper's layering make ``<dataset>[_<features>].csv``; the other layering (an ablation) makes
``..._ablation.csv``; records of an earlier protocol version make ``..._protocol<v>.csv``. A
method a sweep did not run because it equals another on this dataset (``equal_methods`` in the
records) is listed as "= <method>", never as a result of its own.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import PROTOCOL_VERSION
from .sweep_plan import SearchDimension, edges

REQUIRED_KEYS = ("run_id", "job", "dataset", "method", "config", "seed", "tasks", "test_err_mean")
UNFINISHED_KEYS = ("run_id", "job", "dataset", "method", "config", "seed", "state", "reason", "study", "trial")
DIGITS = 6  # rounding of every number written, so reruns are byte-identical

# TNRDMTL (Yang & Hospedales 2017) Table 1, Omniglot, 10% train: mean test accuracy % (std).
# SPEC.md section 4. Stored as error, the leaderboard's metric.
PAPER_RESULTS: dict[tuple[str, str, float], dict[str, tuple[float, float]]] = {
    ("omniglot", "", 0.1): {
        method: (round(1 - accuracy / 100, DIGITS), round(std / 100, DIGITS))
        for method, (accuracy, std) in {
            "stl": (34.11, 0.60), "laf": (35.65, 0.38), "tucker": (35.50, 0.48), "tt": (35.33, 0.45),
        }.items()
    },
}


@dataclass
class Records:
    """Parsed records, and what could not be used, with the reason."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)  # (skipped, kept)

    def problems(self) -> list[str]:
        lines = [f"skipped broken record {path}: {reason}" for path, reason in self.broken]
        lines += [f"skipped duplicate record {path} (same config and seed as {kept})" for path, kept in self.duplicates]
        return lines


def _config_key(config: dict[str, Any], drop: Sequence[str] = ()) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in drop}, sort_keys=True)


def read_records(root: Path, jobs: Iterable[str] = ("final",), states: Iterable[str] = ("complete",)) -> Records:
    """Every ``*.json`` record under ``root`` whose job is in ``jobs`` and whose state is in
    ``states`` (a sweep's pruned or failed trial leaves a record without results); broken ones
    are listed."""
    wanted, wanted_states = set(jobs), set(states)
    result = Records()
    kept: dict[str, Path] = {}
    for path in sorted(Path(root).rglob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            state = record.get("state", "complete")
            if "job" in record and (record["job"] not in wanted or state not in wanted_states):
                continue
            required = REQUIRED_KEYS if state == "complete" else UNFINISHED_KEYS
            missing = [key for key in required if key not in record]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            if state == "complete" and not all(isinstance(t.get("test_err"), (int, float)) for t in record["tasks"].values()):
                raise ValueError("a task without a numeric test_err")
        except (OSError, ValueError, AttributeError) as error:  # JSONDecodeError is a ValueError
            result.broken.append((path, str(error)))
            continue
        # The same run gathered twice (copied from two machines, or re-run with the same seed).
        identity = _config_key({**record["config"], "job": record["job"], "state": state,
                                "protocol_version": record.get("protocol_version", 1)})
        if identity in kept:
            result.duplicates.append((path, kept[identity]))
            continue
        kept[identity] = path
        record["_path"] = str(path)
        result.runs.append(record)
    return result


def features_of(record: dict[str, Any]) -> str:
    """The feature set a run used ('' for datasets with one input), e.g. ``surf``, ``fc7``, or
    ``resnet50_pool`` where the backbone is not the default VGG-19."""
    from .backbones import DEFAULT_BACKBONE
    from .data import dataset_source

    params = record["config"].get("dataset_params", {})
    if params.get("features"):
        backbone = params.get("backbone") or DEFAULT_BACKBONE
        return str(params["features"]) if backbone == DEFAULT_BACKBONE else f"{backbone}_{params['features']}"
    try:
        return dataset_source(record["dataset"]).default_features
    except ValueError:
        return ""


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), DIGITS)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), NaN for a single run."""
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return round(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), DIGITS)


def _val_err(runs: Sequence[dict[str, Any]]) -> float:
    values = [1 - r["val_acc_mean"] for r in runs if r.get("val_acc_mean") is not None]
    return _mean(values) if values else math.nan


def _choose_configuration(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """The runs of the configuration with the lowest mean validation error; the others."""
    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_config[_config_key(run["config"], drop=("seed",))].append(run)
    ranked = sorted(by_config.items(), key=lambda item: (
        math.inf if math.isnan(_val_err(item[1])) else _val_err(item[1]), -len(item[1]), item[0]))
    return ranked[0][1], [group for _, group in ranked[1:]]


TableKey = tuple[str, str, str]  # (dataset, features, variant: "", "ablation" or "protocol<v>")


def table_variant(record: dict[str, Any]) -> str:
    """Which table a record belongs in: the current protocol under the method's paper's layering
    (""), under the other layering ("ablation"), or an earlier protocol ("protocol<v>")."""
    version = int(record.get("protocol_version", 1))
    if version != PROTOCOL_VERSION:
        return f"protocol{version}"
    return "" if record.get("paper_layering", True) else "ablation"


def at_edge(record: dict[str, Any]) -> str:
    """The searched values of a run's configuration at an edge of the range it was searched in."""
    space = record.get("search_space") or {}
    dims = [SearchDimension.parse(name, spec.get("choices") or {k: spec[k] for k in ("low", "high", "log")})
            for name, spec in space.items()]
    return ", ".join(edges(dims, record["config"]))


def method_rows(records: Records) -> tuple[dict[TableKey, pd.DataFrame], dict[TableKey, list[dict[str, Any]]], list[str]]:
    """Per (dataset, features): one row per train ratio and method, the runs behind the rows, notices."""
    from .methods import method_class

    groups: dict[tuple[str, str, str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for run in records.runs:
        key = (run["dataset"], features_of(run), table_variant(run), float(run["config"]["train_ratio"]), run["method"])
        groups[key].append(run)
    rows: dict[TableKey, list[dict[str, Any]]] = defaultdict(list)
    chosen_runs: dict[TableKey, list[dict[str, Any]]] = defaultdict(list)
    notices = []
    for (dataset, features, variant, ratio, method), runs in sorted(groups.items()):
        chosen, superseded = _choose_configuration(runs)
        for group in superseded:
            notices.append(
                f"{dataset} {method} r{ratio:g}: {len(group)} run(s) of another configuration (lam "
                f"{group[0]['config']['lam']:.4g}, hidden {group[0]['config']['hidden']}) superseded by "
                "one with lower validation error"
            )
        errors = [r["test_err_mean"] for r in chosen]
        paper = PAPER_RESULTS.get((dataset, features, ratio), {}).get(method, (math.nan, math.nan))
        try:
            caveat = method_class(method).caveat
        except ValueError:
            caveat = "method no longer registered"
        row: dict[str, Any] = {
            "dataset": dataset, "features": features, "train_ratio": ratio, "method": method,
            "layers": chosen[0]["config"].get("layers", "all"),
            "n_runs": len(chosen), "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in chosen)),
            "lam": round(chosen[0]["config"]["lam"], DIGITS), "hidden": chosen[0]["config"]["hidden"],
            "at_edge": at_edge(chosen[0]),
            "test_err_mean": _mean(errors), "test_err_std": _std(errors), "val_err_mean": _val_err(chosen),
            "paper_test_err_mean": paper[0], "paper_test_err_std": paper[1],
            # our mean test error minus the paper's, in percentage points (positive: we err more)
            "vs_paper_pts": round(100 * (_mean(errors) - paper[0]), DIGITS - 2), "note": caveat,
            "_errors_by_seed": {r["seed"]: r["test_err_mean"] for r in chosen},
        }
        for task in sorted({task for r in chosen for task in r["tasks"]}):
            row[f"test_err/{task}"] = _mean([r["tasks"][task]["test_err"] for r in chosen if task in r["tasks"]])
        rows[(dataset, features, variant)].append(row)
        chosen_runs[(dataset, features, variant)].extend(chosen)
        for same in sorted({m for r in chosen for m in r.get("equal_methods", [])}):
            rows[(dataset, features, variant)].append(
                {"dataset": dataset, "features": features, "train_ratio": ratio, "method": same, "note": f"= {method}"})
    return {key: _rank(pd.DataFrame(value)) for key, value in rows.items()}, dict(chosen_runs), notices


def _wins(errors: dict[int, float], reference: dict[int, float] | None) -> str:
    """"k/n": on k of the n seeds both have run, the lower test error; empty with none in common.

    A seed is a split, the same for every method, so this pairs runs on the same data: at five
    seeds a mean difference smaller than the std over seeds can still be 5/5, or a coin toss.
    """
    shared = sorted(set(errors) & set(reference or {}))
    return f"{sum(errors[s] < reference[s] for s in shared)}/{len(shared)}" if shared else ""


def _rank(table: pd.DataFrame) -> pd.DataFrame:
    """Rank 1 = lowest mean test error within a train ratio; change against STL in percent, and
    on how many seeds (splits) the method beats STL. Rows of methods equal to another ("= m")
    have no numbers and no rank."""
    table["rank"] = table.groupby("train_ratio")["test_err_mean"].rank(method="min").astype("Int64")
    is_stl = table["method"] == "stl"
    stl = table[is_stl].set_index("train_ratio")
    reference = table["train_ratio"].map(stl["test_err_mean"])
    table["vs_stl_pct"] = (100 * (table["test_err_mean"] - reference) / reference).round(DIGITS - 2)
    stl_errors = stl["_errors_by_seed"].to_dict()
    table["beats_stl"] = [
        "" if stl_row or not isinstance(errors, dict) else _wins(errors, stl_errors.get(ratio))
        for errors, ratio, stl_row in zip(table["_errors_by_seed"], table["train_ratio"], is_stl)
    ]
    first = ["dataset", "features", "train_ratio", "rank", "method", "layers", "n_runs", "seeds", "lam", "hidden",
             "at_edge", "test_err_mean", "test_err_std", "vs_stl_pct", "beats_stl", "val_err_mean", "paper_test_err_mean",
             "paper_test_err_std", "vs_paper_pts"]
    tasks = sorted(c for c in table.columns if c.startswith("test_err/"))
    ordered = table[[*first, *tasks, "note"]].sort_values(["train_ratio", "rank", "method"], kind="stable", na_position="last")
    if ordered["paper_test_err_mean"].isna().all():
        ordered = ordered.drop(columns=["paper_test_err_mean", "paper_test_err_std", "vs_paper_pts"])
    return ordered.reset_index(drop=True)


def table_name(dataset: str, features: str, variant: str = "") -> str:
    return "_".join(part for part in (dataset, features, variant) if part)


def summary_table(tables: dict[TableKey, pd.DataFrame]) -> pd.DataFrame:
    """Datasets (with features and ratio) x methods: mean test error."""
    frames = [t.assign(table=table_name(*key)) for key, t in sorted(tables.items())]
    if not frames:
        return pd.DataFrame()
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(index=["table", "train_ratio"], columns="method", values="test_err_mean", aggfunc="first")
    return wide.reset_index().rename_axis(columns=None)


def summary_markdown(tables: dict[TableKey, pd.DataFrame]) -> str:
    """Mean test error % (std) per dataset and method; the best of each row in bold."""
    methods = sorted({m for t in tables.values() for m in t["method"]})
    lines = ["| dataset | train | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for key, table in sorted(tables.items()):
        for ratio, part in table.groupby("train_ratio", sort=True):
            best = part["test_err_mean"].min()
            cells = []
            for method in methods:
                row = part[part["method"] == method]
                if row.empty:
                    cells.append("")
                    continue
                mean, std = row["test_err_mean"].iloc[0], row["test_err_std"].iloc[0]
                if math.isnan(mean):  # a method equal to another: "= tucker"
                    cells.append(str(row["note"].iloc[0]))
                    continue
                text = f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ({100 * std:.2f})")
                cells.append(f"**{text}**" if mean == best else text)
            lines.append(f"| {table_name(*key)} | {ratio:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, float_format=f"%.{DIGITS}g", lineterminator="\n")


def build_leaderboard(runs_dir: Path, out_dir: Path, jobs: Iterable[str] = ("final",), plots: bool = True) -> tuple[list[Path], list[str]]:
    """Write every CSV (and plot) of the leaderboard; return the files written and the notices."""
    records = read_records(runs_dir, jobs)
    tables, chosen_runs, notices = method_rows(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, table in sorted(tables.items()):
        path = out_dir / f"{table_name(*key)}.csv"
        _write_csv(table, path)
        written.append(path)
    if tables:
        _write_csv(summary_table(tables), out_dir / "summary.csv")
        (out_dir / "summary.md").write_text(summary_markdown(tables))
        written += [out_dir / "summary.csv", out_dir / "summary.md"]
    if plots and tables:
        from .leaderboard_plots import draw_plots

        sweep_runs = read_records(runs_dir, ("sweep",)).runs
        written += draw_plots(tables, chosen_runs, sweep_runs, out_dir)
    return written, records.problems() + notices
