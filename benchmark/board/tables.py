"""The leaderboard's tables: a pure function of the run records and two small reference tables.

Records from any number of workers and machines are gathered into one folder tree and read
(:mod:`benchmark.records`); besides them only ``results/reference/`` is read (published results
to compare with, and notes shown beside a method), so the tables can be rebuilt anywhere, and
rebuilding them from the same files gives byte-identical CSVs (rows sorted, numbers rounded, no
timestamps).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..records import PROTOCOL_VERSION, RunRecord, search_edges

DIGITS = 6  # rounding of every number written, so reruns are byte-identical
REFERENCE_DIR = Path("results/reference")
MAIN_BOARD = "the main board"  # what a plan variant's rows are paired with, unless another variant stands in


@dataclass(frozen=True)
class Reference:
    """What the tables show beside the records: published results, and notes on methods.

    ``paper_results.csv``: dataset, features, train_ratio, method, test_acc_pct, test_acc_std_pct,
    source (e.g. TNRDMTL Table 1). ``methods.csv``: method, name (shown in figures), note (shown
    beside its results, e.g. a provisional definition).
    """

    paper: dict[tuple[str, str, float], dict[str, tuple[float, float]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path = REFERENCE_DIR) -> Reference:
        paper: dict[tuple[str, str, float], dict[str, tuple[float, float]]] = defaultdict(dict)
        if (directory / "paper_results.csv").exists():
            frame = pd.read_csv(directory / "paper_results.csv", keep_default_na=False)
            for row in frame.itertuples():
                # Stored as error, the leaderboard's metric.
                paper[(row.dataset, row.features, float(row.train_ratio))][row.method] = (
                    round(1 - row.test_acc_pct / 100, DIGITS), round(row.test_acc_std_pct / 100, DIGITS))
        notes, names = {}, {}
        if (directory / "methods.csv").exists():
            frame = pd.read_csv(directory / "methods.csv", keep_default_na=False)
            notes = {method: note for method, note in zip(frame["method"], frame["note"]) if note}
            names = dict(zip(frame["method"], frame["name"]))
        return cls(dict(paper), notes, names)


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), DIGITS)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), NaN for a single run."""
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return round(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)), DIGITS)


def _val_err(runs: Sequence[RunRecord]) -> float:
    values = [r.val_err for r in runs if r.val_err is not None]
    return _mean(values) if values else math.nan


def weighs_lambda(record: RunRecord) -> bool:
    """Whether lambda weighed anything in the run's loss (not for LAF-TF under its paper's
    layering: every lambda trains the same network); a method no longer registered: assumed so."""
    from ..methods import method_class, method_names

    return record.method not in method_names() or method_class(record.method).weighs_lambda(record.config.get("layers", "all"))


def _config_key(record: RunRecord) -> str:
    """The configuration a run trained, less its split; a lambda that weighed nothing is left out,
    so runs that differ in it alone are one configuration."""
    dropped = {"seed"} if weighs_lambda(record) else {"seed", "lam"}
    return json.dumps({k: v for k, v in record.config.items() if k not in dropped}, sort_keys=True)


def _choose_configuration(runs: list[RunRecord]) -> tuple[list[RunRecord], list[list[RunRecord]], int]:
    """The runs of the configuration with the lowest mean validation error (one per split: the
    latest where a split ran twice, as a rerun under another study does); the other
    configurations; how many repeated runs were left out."""
    by_config: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    repeated = 0
    for run in sorted(runs, key=lambda r: r.run_id):
        repeated += run.seed in by_config[_config_key(run)]
        by_config[_config_key(run)][run.seed] = run
    groups = {key: sorted(by_seed.values(), key=lambda r: r.run_id) for key, by_seed in by_config.items()}
    ranked = sorted(groups.items(), key=lambda item: (
        math.inf if math.isnan(_val_err(item[1])) else _val_err(item[1]), -len(item[1]), item[0]))
    return ranked[0][1], [group for _, group in ranked[1:]], repeated


TableKey = tuple[str, str, str]  # (dataset, features, variant: "", "ablation" or "protocol<v>")


def table_variant(record: RunRecord) -> str:
    """Which table a record belongs in: the current protocol under the method's paper's layering
    (""), under the other layering ("ablation"), or an earlier protocol ("protocol<v>")."""
    if record.protocol_version != PROTOCOL_VERSION:
        return f"protocol{record.protocol_version}"
    return "" if record.paper_layering else "ablation"


def table_key(record: RunRecord) -> TableKey:
    return record.dataset, record.features, table_variant(record)


def at_edge(record: RunRecord) -> str:
    """The searched values of a run's configuration at an edge of the range it was searched in (not
    a lambda that weighed nothing, which earlier sweeps searched)."""
    space = {k: v for k, v in (record.search_space or {}).items() if k != "lam" or weighs_lambda(record)}
    return ", ".join(search_edges(space, record.config))


BASELINES = ("stl", "dmtl")  # the reference rows every table is paired against; no layering of their own


def _raw_rows(runs: Sequence[RunRecord], reference: Reference
              ) -> tuple[dict[TableKey, list[dict[str, Any]]], dict[TableKey, list[RunRecord]], list[str]]:
    """Per table: one unranked row per train ratio and method (with its errors by seed), the runs
    behind the rows, notices."""
    groups: dict[tuple[str, str, str, float, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(*table_key(run), run.train_ratio, run.method)].append(run)
    rows: dict[TableKey, list[dict[str, Any]]] = defaultdict(list)
    chosen_runs: dict[TableKey, list[RunRecord]] = defaultdict(list)
    notices = []
    for (dataset, features, variant, ratio, method), group in sorted(groups.items()):
        chosen, superseded, repeated = _choose_configuration(group)
        for other in superseded:
            notices.append(
                f"{dataset} {method} r{ratio:g}: {len(other)} run(s) of another configuration (lam "
                f"{other[0].config['lam']:.4g}, hidden {other[0].config['hidden']}) superseded by "
                "one with lower validation error"
            )
        if repeated:
            notices.append(f"{dataset} {method} r{ratio:g}: {repeated} run(s) of a split already run in the same "
                           "configuration left out (the latest run of each split counts)")
        errors = [r.test_err_mean for r in chosen]
        paper = reference.paper.get((dataset, features, ratio), {}).get(method, (math.nan, math.nan))
        first = chosen[0]
        row: dict[str, Any] = {
            "dataset": dataset, "features": features, "train_ratio": ratio, "method": method,
            "layers": first.config.get("layers", "all"),
            "n_runs": len(chosen), "seeds": " ".join(str(s) for s in sorted(r.seed for r in chosen)),
            # NaN: lambda weighed nothing (the table shows "-")
            "lam": round(first.config["lam"], DIGITS) if weighs_lambda(first) else math.nan, "hidden": first.config["hidden"],
            "at_edge": at_edge(first),
            # Optimiser steps per run: an epoch means a different amount of training in each code.
            "steps": _mean([r.steps for r in chosen]) if all(r.steps is not None for r in chosen) else math.nan,
            "test_err_mean": _mean(errors), "test_err_std": _std(errors), "val_err_mean": _val_err(chosen),
            "paper_test_err_mean": paper[0], "paper_test_err_std": paper[1],
            # our mean test error minus the paper's, in percentage points (positive: we err more)
            "vs_paper_pts": round(100 * (_mean(errors) - paper[0]), DIGITS - 2), "note": reference.notes.get(method, ""),
            "_errors_by_seed": {r.seed: r.test_err_mean for r in chosen},
        }
        for task in sorted({task for r in chosen for task in r.tasks}):
            row[f"test_err/{task}"] = _mean([r.tasks[task]["test_err"] for r in chosen if task in r.tasks])
        key = (dataset, features, variant)
        rows[key].append(row)
        chosen_runs[key].extend(chosen)
        for same in sorted({m for r in chosen for m in r.equal_methods}):
            rows[key].append({"dataset": dataset, "features": features, "train_ratio": ratio, "method": same,
                              "note": f"= {method}"})
    return rows, chosen_runs, notices


def _pair_with_main(rows: list[dict[str, Any]], main: list[dict[str, Any]],
                    earlier: Sequence[tuple[str, list[dict[str, Any]]]] = (),
                    main_name: str = MAIN_BOARD) -> list[tuple[str, str]]:
    """Pair a plan variant's or ablation's rows with the main board's (the same dataset, input and
    splits): each row keeps the main board's errors of its method (``vs_main_*`` columns), and
    every method the variant did not rerun at its ratios comes in with the main board's row, so
    the table is the main board with the variant's runs in place of its own: STL and DMTL to pair
    against, and every other method ranked and compared against the variant's STL (a stronger
    STL changes every ``vs_stl``).

    ``earlier``: the main board's tables of earlier protocols, newest first, as (variant, rows): a
    method the main table lacks is paired with its run there (a variant rerunning a method whose
    main run predates the protocol change). ``main_name``: what the rows are paired with, in the
    ``paired_with`` column and the borrowed rows' notes (another variant may stand in for the main
    board). Returns those (method, variant) pairs, for a notice.
    """
    def by_method(table: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, Any]]:
        return {(r["train_ratio"], r["method"]): r for r in table if "_errors_by_seed" in r}

    sources = [("", by_method(main))] + [(variant, by_method(table)) for variant, table in earlier]
    from_earlier: list[tuple[str, str]] = []
    for row in rows:
        row["paired_with"] = main_name
        found = next(((variant, table[row["train_ratio"], row["method"]]) for variant, table in sources
                      if (row["train_ratio"], row["method"]) in table), None)
        if found is not None and "_errors_by_seed" in row:
            row["_main_errors_by_seed"] = found[1]["_errors_by_seed"]
            if found[0]:
                from_earlier.append((row["method"], found[0]))
    ratios = {r["train_ratio"] for r in rows}
    present = {(r["train_ratio"], r["method"]) for r in rows}
    for counterpart in sorted(main, key=lambda r: (r["train_ratio"], r["method"])):
        if counterpart["train_ratio"] in ratios and (counterpart["train_ratio"], counterpart["method"]) not in present:
            note, borrowed = counterpart.get("note"), f"{main_name}'s run"
            rows.append({**counterpart, "paired_with": main_name, "note": f"{note}; {borrowed}" if note else borrowed})
    return from_earlier


def _earlier_tables(main_rows: dict[TableKey, list[dict[str, Any]]], key: TableKey
                    ) -> list[tuple[str, list[dict[str, Any]]]]:
    """The main board's tables of protocols older than table ``key``'s, newest first."""
    dataset, features, variant = key
    version = int(variant.removeprefix("protocol")) if variant.startswith("protocol") else PROTOCOL_VERSION
    older = [k for k in main_rows if k[:2] == (dataset, features) and k[2].startswith("protocol")
             and int(k[2].removeprefix("protocol")) < version]
    return [(k[2], main_rows[k]) for k in sorted(older, key=lambda k: -int(k[2].removeprefix("protocol")))]


def _main_table(main_rows: dict[TableKey, list[dict[str, Any]]], key: TableKey) -> TableKey | None:
    """The main board's table a variant's table ``key`` is paired with: the one of the same
    protocol under the papers' layerings, else the latest earlier protocol's (a plan variant run
    after the protocol changed, on a board not yet rerun: the pairing says so)."""
    dataset, features, variant = key
    same = (dataset, features, variant if variant.startswith("protocol") else "")
    if same in main_rows:
        return same
    earlier = [key for key in main_rows if key[:2] == (dataset, features) and key[2].startswith("protocol")]
    return max(earlier, key=lambda key: int(key[2].removeprefix("protocol")), default=None)


def method_rows(runs: Sequence[RunRecord], reference: Reference = Reference(), main_runs: Sequence[RunRecord] = (),
                main_name: str = MAIN_BOARD) -> tuple[dict[TableKey, pd.DataFrame], dict[TableKey, list[RunRecord]], list[str]]:
    """Per table: one row per train ratio and method, the runs behind the rows, notices.

    ``main_runs``: the main board's records, for the tables of a plan variant or an ablation read
    from another folder: each of their rows is paired with the same method's row there (the
    ``vs_main_*`` columns), and every method it did not rerun gets the main board's row.
    ``main_name`` names those records in the tables (another variant's, e.g. the same weighting
    at its shorter budget, may stand in for the main board's).
    """
    rows, chosen_runs, notices = _raw_rows(runs, reference)
    if main_runs:
        main_rows, _, _ = _raw_rows(main_runs, reference)
        for key, table_rows in rows.items():
            main_key = _main_table(main_rows, key)
            if main_key is None:
                notices.append(f"{table_name(*key)}: {main_name} has no table of {key[0]} {key[1]}: nothing to pair with")
                continue
            if main_key[2] != (key[2] if key[2].startswith("protocol") else ""):
                notices.append(f"{table_name(*key)}: paired with {main_name}'s {main_key[2]} records (it has no "
                               "table of this protocol)")
            for method, variant in _pair_with_main(table_rows, main_rows[main_key], _earlier_tables(main_rows, main_key),
                                                   main_name):
                notices.append(f"{table_name(*key)}: {method} paired with {main_name}'s {variant} run (it has "
                               "none of this protocol)")
    return {key: _rank(pd.DataFrame(value)) for key, value in rows.items()}, dict(chosen_runs), notices


def _wins(errors: dict[int, float], reference: dict[int, float] | None) -> str:
    """"k/n": on k of the n seeds both have run, the lower test error; empty with none in common.

    A seed is a split, the same for every method, so this pairs runs on the same data: at five
    seeds a mean difference smaller than the std over seeds can still be 5/5, or a coin toss.
    """
    shared = sorted(set(errors) & set(reference or {}))
    return f"{sum(errors[s] < reference[s] for s in shared)}/{len(shared)}" if shared else ""


def _paired_differences(errors: dict[int, float], reference: dict[int, float] | None) -> tuple[int, float, float] | None:
    """(n, mean, sd) of ``errors - reference`` in percentage points over the seeds both have;
    None with fewer than two in common."""
    shared = sorted(set(errors) & set(reference or {}))
    if len(shared) < 2:
        return None
    differences = [100 * (errors[s] - reference[s]) for s in shared]  # type: ignore[index]
    n = len(differences)
    mean = sum(differences) / n
    return n, mean, math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))


def paired_interval(errors: dict[int, float], reference: dict[int, float] | None) -> tuple[float, float, float] | None:
    """Mean paired difference ``errors - reference`` in percentage points over the seeds both
    have, with its 95% t-interval (a seed is a split, the same data for both methods); None with
    fewer than two seeds in common. Five splits give t = 2.78: wide, and honest about it."""
    from scipy import stats

    summary = _paired_differences(errors, reference)
    if summary is None:
        return None
    n, mean, spread = summary
    half = float(stats.t.ppf(0.975, n - 1)) * spread / math.sqrt(n)
    return round(mean, DIGITS - 2), round(mean - half, DIGITS - 2), round(mean + half, DIGITS - 2)


def paired_p_value(errors: dict[int, float], reference: dict[int, float] | None) -> float | None:
    """Two-sided p-value of the paired t-test behind :func:`paired_interval` (its 95% interval
    excludes 0 exactly where p < 0.05); None with fewer than two seeds in common."""
    from scipy import stats

    summary = _paired_differences(errors, reference)
    if summary is None:
        return None
    n, mean, spread = summary
    if spread == 0:  # the same difference on every split: certain, or no difference at all
        return 0.0 if mean != 0 else 1.0
    return round(float(2 * stats.t.sf(abs(mean) / (spread / math.sqrt(n)), n - 1)), DIGITS)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (Holm 1979): the k-th smallest is
    multiplied by (m - k + 1), then made non-decreasing. An adjusted p < 0.05 holds the
    family-wise error at 5% under any dependence between the tests, which the comparisons of a
    ratio's methods against one STL (or DMTL) have: they share its runs."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for k, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - k) * p_values[index]))
        adjusted[index] = round(running, DIGITS)
    return adjusted


def _interval_text(interval: tuple[float, float, float] | None) -> str:
    return "" if interval is None else f"{interval[1]:+.2f}..{interval[2]:+.2f}"


Pair = tuple[dict[int, float], dict[int, float] | None]  # a row's errors by seed and its reference's


def _paired_columns(table: pd.DataFrame, name: str, pairs: Sequence[Pair | None]) -> None:
    """Columns ``vs_<name>_pts`` (mean paired difference, points), ``vs_<name>_ci95``,
    ``vs_<name>_p`` (its paired t-test), ``vs_<name>_holm`` (that p adjusted over the ratio's
    comparisons against the same reference, :func:`holm_adjusted`) and ``beats_<name>`` (splits
    won), from each row's (errors, reference errors) or None where the row has nothing to pair."""
    intervals = [None if pair is None else paired_interval(*pair) for pair in pairs]
    table[f"vs_{name}_pts"] = [math.nan if i is None else i[0] for i in intervals]
    table[f"vs_{name}_ci95"] = [_interval_text(i) for i in intervals]
    p_values = [None if pair is None else paired_p_value(*pair) for pair in pairs]
    table[f"vs_{name}_p"] = pd.Series([math.nan if p is None else p for p in p_values], index=table.index, dtype=float)
    table[f"vs_{name}_holm"] = math.nan
    for _, part in table[f"vs_{name}_p"].dropna().groupby(table["train_ratio"]):
        table.loc[part.index, f"vs_{name}_holm"] = holm_adjusted(list(part))
    table[f"beats_{name}"] = ["" if pair is None else _wins(*pair) for pair in pairs]


def _against(table: pd.DataFrame, method: str) -> None:
    """The paired columns (:func:`_paired_columns`) of every row but ``method``'s own against
    ``method``'s row of the same train ratio."""
    own = table["method"] == method
    reference = table[own].set_index("train_ratio")["_errors_by_seed"].to_dict()
    _paired_columns(table, method, [
        None if is_own or not isinstance(errors, dict) else (errors, reference.get(ratio))
        for errors, ratio, is_own in zip(table["_errors_by_seed"], table["train_ratio"], own)
    ])


def _lead(table: pd.DataFrame) -> None:
    """On each ratio's best row: the paired interval against the runner-up (``lead_ci95``) and
    whether it excludes 0 (``lead_clear``); only then is the best a winner, else it is tied."""
    table["lead_ci95"], table["lead_clear"] = "", pd.array([pd.NA] * len(table), dtype="boolean")
    for _, part in table[table["rank"].notna()].groupby("train_ratio"):
        ordered = part.sort_values(["test_err_mean", "method"], kind="stable")
        if len(ordered) < 2:
            continue
        best, runner_up = ordered.index[0], ordered.index[1]
        interval = paired_interval(table.at[best, "_errors_by_seed"], table.at[runner_up, "_errors_by_seed"])
        table.at[best, "lead_ci95"] = f"vs {table.at[runner_up, 'method']} {_interval_text(interval)}" if interval else ""
        table.at[best, "lead_clear"] = bool(interval is not None and interval[2] < 0)


def paired_with(table: pd.DataFrame) -> str:
    """What a variant's table is paired with (its ``vs_main_*`` columns): the main board, or the
    variant its plan names."""
    named = table["paired_with"].dropna() if "paired_with" in table else ()
    return str(named.iloc[0]) if len(named) else MAIN_BOARD


def _against_main(table: pd.DataFrame) -> None:
    """The paired columns (:func:`_paired_columns`, ``vs_main_*``, ``beats_main``) of each row
    against the same method on the main board, paired by split (a plan variant's or a layering's
    effect)."""
    main = table["_main_errors_by_seed"] if "_main_errors_by_seed" in table else pd.Series([None] * len(table), index=table.index)
    _paired_columns(table, "main", [(errors, reference) if isinstance(errors, dict) and isinstance(reference, dict) else None
                                    for errors, reference in zip(table["_errors_by_seed"], main)])


def _mark_incomplete(table: pd.DataFrame) -> pd.Series:
    """Whether each row has as many final splits as the fullest row of its train ratio; the others
    get a note ("3 of 5 final splits: not ranked") and stay out of the ranking and the lead. Their
    mean is over fewer splits than their neighbours' (a sweep still running its finals, or a plan
    variant's rerun part-way), so ranking it among full means would compare different splits; its
    paired columns stay, since they pair on the shared splits and say how many."""
    fullest = table.groupby("train_ratio")["n_runs"].transform("max")
    complete = table["n_runs"] >= fullest  # NaN for the "= m" rows: not ranked either way
    for index in table.index[table["n_runs"].notna() & ~complete]:
        partial = f"{int(table.at[index, 'n_runs'])} of {int(fullest[index])} final splits: not ranked"
        note = table.at[index, "note"]
        table.at[index, "note"] = f"{partial}; {note}" if isinstance(note, str) and note else partial
    return complete


def _rank(table: pd.DataFrame) -> pd.DataFrame:
    """Rank 1 = lowest mean test error within a train ratio; change against STL in percent; the
    paired difference against STL and against DMTL with its 95% interval and the splits won;
    whether the best's lead over the runner-up is clear; in a table paired with the main board,
    the same against each method's main-board row. Rows of methods equal to another ("= m") have
    no numbers and no rank; a row with fewer final splits than its ratio's fullest is shown, noted
    and not ranked (:func:`_mark_incomplete`)."""
    table = table.reset_index(drop=True)
    complete = _mark_incomplete(table)
    table["rank"] = table["test_err_mean"].where(complete).groupby(table["train_ratio"]).rank(method="min").astype("Int64")
    stl = table[table["method"] == "stl"].set_index("train_ratio")
    reference = table["train_ratio"].map(stl["test_err_mean"])
    table["vs_stl_pct"] = (100 * (table["test_err_mean"] - reference) / reference).round(DIGITS - 2)
    for baseline in BASELINES:
        _against(table, baseline)
    _lead(table)
    _against_main(table)
    if "paired_with" not in table:
        table["paired_with"] = None
    first = ["dataset", "features", "train_ratio", "rank", "method", "layers", "n_runs", "seeds", "lam", "hidden",
             "at_edge", "steps", "test_err_mean", "test_err_std", "vs_stl_pct", "vs_stl_pts", "vs_stl_ci95", "vs_stl_p",
             "vs_stl_holm", "beats_stl", "vs_dmtl_pts", "vs_dmtl_ci95", "vs_dmtl_p", "vs_dmtl_holm", "beats_dmtl", "lead_ci95", "lead_clear", "vs_main_pts", "vs_main_ci95",
             "vs_main_p", "vs_main_holm", "beats_main", "paired_with", "val_err_mean", "paper_test_err_mean", "paper_test_err_std", "vs_paper_pts"]
    tasks = sorted(c for c in table.columns if c.startswith("test_err/"))
    # Each row's errors by seed stay, for the pairwise comparisons; write_csv leaves them out.
    hidden = ["_errors_by_seed"] if "_errors_by_seed" in table else []
    ordered = table[[*first, *tasks, "note", *hidden]].sort_values(["train_ratio", "rank", "method"], kind="stable", na_position="last")
    if ordered["paper_test_err_mean"].isna().all():
        ordered = ordered.drop(columns=["paper_test_err_mean", "paper_test_err_std", "vs_paper_pts"])
    if ordered["steps"].isna().all():  # records written before runs counted their steps
        ordered = ordered.drop(columns=["steps"])
    if ordered["vs_main_ci95"].eq("").all():  # the main board itself, or a variant with nothing to pair
        ordered = ordered.drop(columns=["vs_main_pts", "vs_main_ci95", "vs_main_p", "vs_main_holm", "beats_main", "paired_with"])
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


def pairwise_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Every pair of a train ratio's methods, paired by split, each pair once: ``method`` (the
    better ranked) minus ``other`` in points (``diff_pts``) with its 95% interval (``ci95``), the
    paired t-test's ``p``, ``holm`` (p adjusted over all of the ratio's pairs: with 13 methods,
    78 tests) and ``wins`` (splits on which ``method`` erred less). The comparisons the tables do
    not give, e.g. the second-best against the third."""
    columns = ["train_ratio", "method", "other", "diff_pts", "ci95", "p", "holm", "wins"]
    if "_errors_by_seed" not in table:
        return pd.DataFrame(columns=columns)
    rows: list[dict[str, Any]] = []
    for ratio, part in table[table["_errors_by_seed"].map(lambda e: isinstance(e, dict))].groupby("train_ratio"):
        ranked = part.sort_values(["rank", "method"], kind="stable")
        methods, errors = list(ranked["method"]), list(ranked["_errors_by_seed"])
        pairs = [(i, j) for i in range(len(methods)) for j in range(i + 1, len(methods))
                 if paired_interval(errors[i], errors[j]) is not None]
        p_values = [paired_p_value(errors[i], errors[j]) for i, j in pairs]
        for (i, j), p, adjusted in zip(pairs, p_values, holm_adjusted(p_values)):  # type: ignore[arg-type]
            interval = paired_interval(errors[i], errors[j])
            rows.append({"train_ratio": ratio, "method": methods[i], "other": methods[j], "diff_pts": interval[0],  # type: ignore[index]
                         "ci95": _interval_text(interval), "p": p, "holm": adjusted, "wins": _wins(errors[i], errors[j])})
    return pd.DataFrame(rows, columns=columns)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])  # working columns, not results
    frame.to_csv(path, index=False, float_format=f"%.{DIGITS}g", lineterminator="\n")
