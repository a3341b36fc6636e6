"""The leaderboard as markdown: ``summary.md`` (every table, one line per train ratio) and one
``<table>.md`` per table, the statistics a reader checks before quoting a number: mean (std) over
the splits, the paired difference against STL and DMTL with its 95% interval and the splits won,
the chosen configuration and whether it sits at an edge of the range searched, and per ratio
whether the best's lead is clear or the leaders are tied. The same rows as the CSVs, formatted."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .tables import TableKey, paired_with, table_name

AUTHORSHIP = "Written by `make leaderboard` from the records; rebuilt, never edited."


def _error(mean: float, std: float) -> str:
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ({100 * std:.2f})")


def _is_clear(leader: pd.Series | None) -> bool:
    return leader is not None and leader["lead_clear"] is not pd.NA and bool(leader["lead_clear"])


def _leader(part: pd.DataFrame) -> pd.Series | None:
    """The row ranked 1 (the first by id when several tie exactly)."""
    first = part[part["rank"] == 1]
    return first.sort_values("method").iloc[0] if not first.empty else None


def _partial(row: pd.Series, part: pd.DataFrame) -> str:
    """" [3/5 splits]" after a row with fewer final splits than its ratio's fullest (not ranked)."""
    fullest = part["n_runs"].max()
    return f" [{int(row['n_runs'])}/{int(fullest)} splits]" if row["n_runs"] < fullest else ""


def summary_markdown(tables: dict[TableKey, pd.DataFrame]) -> str:
    """Mean test error % (std) per dataset and method. The best of a row is in bold only where
    its paired 95% interval against the runner-up excludes 0; otherwise the row says "tied"."""
    methods = sorted({m for t in tables.values() for m in t["method"]})
    lines = ["| dataset | train | " + " | ".join(methods) + " | best |", "|---|---|" + "---|" * (len(methods) + 1)]
    for key, table in sorted(tables.items()):
        for ratio, part in table.groupby("train_ratio", sort=True):
            leader = _leader(part)
            clear = _is_clear(leader)
            best = leader["test_err_mean"] if clear else math.nan  # type: ignore[index]
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
                text = _error(mean, std) + _partial(row.iloc[0], part)
                cells.append(f"**{text}**" if mean == best else text)
            verdict = "" if leader is None else (
                f"{leader['method']} ({leader['lead_ci95']} pts)" if clear
                else f"tied ({leader['method']} {leader['lead_ci95']} pts)" if leader["lead_ci95"] else "tied")
            lines.append(f"| {table_name(*key)} | {ratio:g} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def _difference(row: pd.Series, against: str) -> str:
    """"-3.38 (-5.54..-1.21)": the mean paired difference in points with its 95% interval, and a
    dagger where the difference stands after Holm's correction over the ratio's comparisons in
    its column."""
    points, interval = row.get(f"vs_{against}_pts"), row.get(f"vs_{against}_ci95")
    if points is None or (isinstance(points, float) and math.isnan(points)):
        return ""
    holm = row.get(f"vs_{against}_holm")
    stands = isinstance(holm, float) and holm < 0.05
    return f"{points:+.2f}" + (f" ({interval})" if isinstance(interval, str) and interval else "") + (" †" if stands else "")


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def _configuration(row: pd.Series) -> tuple[str, str]:
    """Lambda and hidden as chosen, each marked where it sits at an edge of its searched range."""
    edges = dict(part.split(" ") for part in _text(row.get("at_edge")).split(", ") if " " in part)
    lam, hidden = row.get("lam"), row.get("hidden")
    lam_text = "-" if lam is None or math.isnan(lam) else f"{lam:.3g}"  # "-": lambda weighed nothing
    hidden_text = "" if hidden is None or math.isnan(hidden) else f"{int(hidden)}"
    return (lam_text + (f" ({edges['lam']} edge)" if "lam" in edges else ""),
            hidden_text + (f" ({edges['hidden']} edge)" if "hidden" in edges else ""))


def _verdict(part: pd.DataFrame, names: dict[str, str]) -> str:
    leader = _leader(part)
    if leader is None or part["rank"].notna().sum() < 2:
        return ""
    name = names.get(leader["method"], leader["method"])
    if not leader["lead_ci95"]:
        return f"Best mean: {name}; no interval against the runner-up (fewer than two splits in common)."
    runner_up, interval = str(leader["lead_ci95"]).removeprefix("vs ").split(" ", 1)
    other = names.get(runner_up, runner_up)
    if _is_clear(leader):
        return f"Best: **{name}**, its lead over {other} clear ({interval} points, 95% interval)."
    return f"Best mean: {name}, tied with {other} ({interval} points, 95% interval, contains 0)."


def board_markdown(key: TableKey, table: pd.DataFrame, names: dict[str, str], provenance: str = "") -> str:
    """One table's rows, a section per train ratio, methods by their display names; ``provenance``
    (where its runs read more than one feature cache, or ran on more than one machine) under the
    heading."""
    variant = "vs_main_pts" in table.columns
    paper = "paper_test_err_mean" in table.columns
    header = ["rank", "method", "layers", "test error % (std)", "vs STL, points (95% interval)", "splits won vs STL",
              "vs DMTL, points (95% interval)", "splits won vs DMTL"]
    header += [f"vs {paired_with(table)}'s run, points (95% interval)", "splits lower than it"] if variant else []
    header += ["paper error % (std)", "ours - paper, points"] if paper else []
    header += ["lambda", "hidden", "note"]
    lines = [f"# {table_name(*key)}", "", AUTHORSHIP + " Test error: the mean over the tasks; mean (std) over the "
             "final splits. Differences are paired by split (a seed is the same split for every method): "
             "negative means fewer errors, and the interval is a 95% t-interval over the shared splits. "
             "†: the difference stands after Holm's correction over all of the ratio's comparisons in its "
             "column (family-wise error 5%; they share the baseline's runs, which Holm allows)."
             + (" Lambda \"-\": nothing in the method's loss is weighted by it (not searched)."
                if (table["lam"].isna() & table["test_err_mean"].notna()).any() else ""), ""]
    lines += [provenance, ""] if provenance else []
    for ratio, part in table.groupby("train_ratio", sort=True):
        lines += [f"## Train ratio {ratio:g}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, row in part.iterrows():
            name = names.get(row["method"], row["method"])
            note = _text(row.get("note"))
            if math.isnan(row["test_err_mean"]):  # equal to another method ("= tucker[; ...]"): listed, not a result
                equal, _, rest = note.removeprefix("= ").partition("; ")
                lines.append(f"| | {name} | | = {names.get(equal, equal)} |" + " |" * (len(header) - 5) + f" {rest} |")
                continue
            cells = [_text(row["rank"]), name, _text(row.get("layers")), _error(row["test_err_mean"], row["test_err_std"]),
                     _difference(row, "stl"), _text(row.get("beats_stl")), _difference(row, "dmtl"),
                     _text(row.get("beats_dmtl"))]
            if variant:
                cells += [_difference(row, "main"), _text(row.get("beats_main"))]
            if paper:
                has_paper = not math.isnan(row["paper_test_err_mean"])
                cells += [_error(row["paper_test_err_mean"], row["paper_test_err_std"]) if has_paper else "",
                          f"{row['vs_paper_pts']:+.2f}" if has_paper else ""]
            cells += [*_configuration(row), note]
            lines.append("| " + " | ".join(cells) + " |")
        verdict = _verdict(part, names)
        lines += ["", verdict, ""] if verdict else [""]
    return "\n".join(lines)
