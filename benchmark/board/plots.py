"""The leaderboard's figures (seaborn, PNG), drawn from the same runs as its tables.

Per dataset (and features): ``<name>_errors.png`` test error per method (dots: mean, whiskers:
std over seeds; one panel per train ratio, the single-task mean dashed);
``<name>_vs_stl.png`` change of error against STL, methods x train ratios (blue: better);
``<name>_vs_stl_ci.png`` the paired difference to STL in points with its 95% interval, a panel per
train ratio; ``<name>_vs_main.png`` (a plan variant's tables) the same against the main board;
``<name>_pairwise.png`` every pair of methods per train ratio, row minus column with Holm's dagger;
``<name>_lambda.png`` validation error of every completed sweep trial against lambda, one panel per
method; ``<name>_gttn_weights.png``
the learned flattening weights of the GTTN methods that learn them; ``<name>_sharing.png``
TNRDMTL's sharing strength by layer, 1 - ||W_(T)||_* selected / ||W_(T)||_* initial;
``<name>_vs_paper.png`` our accuracy beside the published one, where a paper reports this setting.

Apart from the tables, :func:`draw_validation_curves` draws the validation accuracy of every
epoch of any set of runs (``mtlbench curves``), e.g. the budget checks in ``results/calibration``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.text

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from ..records import RunRecord, parse_flattening_weight_key
from .tables import TableKey, paired_with, pairwise_differences, table_key, table_name


def _method_order(table: pd.DataFrame) -> list[str]:
    """Best first, by the mean rank over train ratios."""
    return list(table.groupby("method")["rank"].mean().sort_values(kind="stable").index)


def _errors(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """Dots and std whiskers over seeds, one panel per train ratio on its own scale.

    Bars from zero would hide the differences that matter (a point or two of error), and the
    dashed single-task mean shows at a glance which methods help.
    """
    order = _method_order(table)
    height = max(2.6, 1.2 + 0.28 * len(order))  # inches: a readable row per method
    grid = sns.catplot(data=runs, x="test_err", y="method", order=order, col="train_ratio", kind="point",
                       errorbar="sd", capsize=0.3, linestyle="none", color="tab:blue", sharex=False,
                       height=height, aspect=3.6 / height)
    single_task = runs[runs["method"] == "stl"].groupby("train_ratio")["test_err"].mean()
    references = [axes.axvline(single_task[ratio], color="grey", linestyle="--", linewidth=1, label="STL mean")
                  for ratio, axes in grid.axes_dict.items() if ratio in single_task.index]
    if references:  # one legend, outside the panels, where it hides no method
        grid.figure.legend(handles=references[:1], fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 0.95))
    grid.set_titles("train ratio {col_name}")
    grid.set_axis_labels("mean test error over tasks", "")
    grid.figure.suptitle(f"{name}: test error per method (mean and std over seeds)", y=1.03)
    return grid.figure


def _vs_stl(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """Change of mean test error against STL in percent, methods x train ratios, with the splits won.

    Error falls so much with the train ratio that lines of error against it hide the one to five
    percent that separate methods; relative to STL at each ratio, those are what is left.
    """
    others = table[table["method"] != "stl"]
    if others.empty or not (table["method"] == "stl").any():
        return None
    order = [m for m in _method_order(table) if m != "stl"]
    change = others.pivot(index="method", columns="train_ratio", values="vs_stl_pct").reindex(order)
    wins = others.pivot(index="method", columns="train_ratio", values="beats_stl").reindex(order)
    labels = [["" if pd.isna(pct) else f"{pct:+.1f}%" + (f"\n{won}" if isinstance(won, str) and won else "")
               for pct, won in zip(pct_row, won_row)]
              for pct_row, won_row in zip(change.to_numpy(), wins.to_numpy())]
    figure, axes = plt.subplots(figsize=(2.2 + 1.3 * change.shape[1], 1.0 + 0.42 * len(order)))
    # Symmetric, so that equal colours mean equal gains and losses; at the 90th percentile, so that
    # one method far off (a +14% GTTN-meta) does not wash out every other colour.
    limit = max(float(change.abs().stack().quantile(0.9)), 1.0)
    sns.heatmap(change, annot=labels, fmt="", cmap="RdBu_r", vmin=-limit, vmax=limit, linewidths=0.5,
                annot_kws={"fontsize": "x-small"}, cbar_kws={"label": "test error vs STL (%)"}, ax=axes)
    axes.set(title=f"{name}: change against STL (splits won below)", xlabel="train ratio", ylabel="")
    return figure


def _bounds(intervals: pd.Series) -> pd.DataFrame:
    """"-5.54..-1.21" as two float columns, low and high."""
    return intervals.str.split("..", regex=False, expand=True).astype(float).set_axis(["low", "high"], axis=1)


def _forest(axes: plt.Axes, rows: pd.DataFrame, column: str, positions: list[int], wins: str) -> None:
    """Paired differences in points (``<column>_pts``) with their 95% intervals (``<column>_ci95``)
    at ``positions``: blue where the interval lies below 0 (fewer errors), red above, grey across
    it (no difference shown); the splits won (column ``wins``) beside each interval, with a dagger
    where the difference stands Holm's correction (``<column>_holm`` < 0.05)."""
    bounds = _bounds(rows[f"{column}_ci95"])
    holm = rows[f"{column}_holm"].astype(float) if f"{column}_holm" in rows else pd.Series(float("nan"), index=rows.index)
    for position, centre, low, high, won, adjusted in zip(positions, rows[f"{column}_pts"].astype(float), bounds["low"],
                                                          bounds["high"], rows[wins], holm):
        colour = "tab:blue" if high < 0 else "tab:red" if low > 0 else "grey"
        axes.errorbar([centre], [position], xerr=[[centre - low], [high - centre]], fmt="o", color=colour, capsize=3)
        label = (won if isinstance(won, str) else "") + (" †" if adjusted < 0.05 else "")
        if label.strip():
            axes.annotate(label.strip(), (high, position), xytext=(6, 0), textcoords="offset points", va="center",
                          fontsize="x-small", color="dimgrey")
    axes.axvline(0.0, color="black", linewidth=0.8)


def _with_interval(table: pd.DataFrame, column: str) -> pd.DataFrame:
    return table[table[f"{column}_ci95"].fillna("").str.contains("..", regex=False)] if f"{column}_ci95" in table \
        else table.iloc[0:0]


def _vs_stl_intervals(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """Each method's paired difference to STL in points with its 95% interval, a panel per train
    ratio: the tables' claims ("below STL, interval excluding 0") as a picture."""
    paired = _with_interval(table, "vs_stl")
    if paired.empty:
        return None
    order = [m for m in _method_order(table) if m in set(paired["method"])]
    ratios = sorted(paired["train_ratio"].unique())
    figure, axes_row = plt.subplots(1, len(ratios), figsize=(1.0 + 3.6 * len(ratios), 1.2 + 0.36 * len(order)),
                                    sharey=True, squeeze=False)
    for axes, ratio in zip(axes_row[0], ratios):
        part = paired[paired["train_ratio"] == ratio]
        _forest(axes, part, "vs_stl", [order.index(m) for m in part["method"]], "beats_stl")
        axes.set(title=f"train ratio {ratio:g}", xlabel="test error minus STL's, points")
    axes_row[0][0].set_yticks(range(len(order)), order)
    axes_row[0][0].set_ylim(len(order) - 0.5, -0.5)
    figure.suptitle(f"{name}: against STL on the same splits (95% interval; splits won beside it)\n"
                    "blue: fewer errors than STL, interval below 0; grey: the interval contains 0; "
                    "†: stands Holm's correction over the ratio's comparisons", y=1.02)
    return figure


def _vs_main(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """A plan variant's or ablation's effect: each method's paired difference to the same method on
    the main board, in points, with its 95% interval (a bar crossing 0 is no effect shown)."""
    paired = _with_interval(table, "vs_main")
    if paired.empty:
        return None
    labels = [f"{m}  r{r:g}" for m, r in zip(paired["method"], paired["train_ratio"])]
    figure, axes = plt.subplots(figsize=(6.4, 1.0 + 0.45 * len(paired)))
    _forest(axes, paired, "vs_main", list(range(len(paired))), "beats_main")
    axes.set_yticks(range(len(paired)), labels)
    axes.invert_yaxis()
    board = paired_with(table)
    axes.set(xlabel=f"test error minus {board}'s, points (95% interval over shared splits)",
             title=f"{name}: against {board} (splits won beside each interval; †: stands Holm)")
    return figure


def _pairwise(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """Every pair of methods at each train ratio, paired by split: the row's test error minus the
    column's (methods in rank order, so every cell is >= 0 in mean), a dagger where the difference
    stands Holm's correction over the ratio's pairs, bold where its 95% interval excludes 0."""
    pairs = pairwise_differences(table)
    if pairs.empty:
        return None
    ratios = sorted(pairs["train_ratio"].unique())
    size = max(pairs.groupby("train_ratio")["method"].nunique()) + 1
    figure, axes_row = plt.subplots(1, len(ratios), figsize=(1.5 + 0.55 * size * len(ratios), 1.0 + 0.45 * size), squeeze=False)
    for axes, ratio in zip(axes_row[0], ratios):
        part = pairs[pairs["train_ratio"] == ratio]
        compared = {*part["method"], *part["other"]}
        ranked = table[table["train_ratio"] == ratio].sort_values(["rank", "method"], kind="stable")["method"]
        order = [m for m in ranked if m in compared]  # as pairwise_differences orders each pair: the better first
        matrix = pd.DataFrame(float("nan"), index=order, columns=order)
        labels = pd.DataFrame("", index=order, columns=order)
        for row in part.itertuples():
            matrix.loc[row.other, row.method] = -row.diff_pts  # the worse-ranked row minus the better column
            labels.loc[row.other, row.method] = f"{-row.diff_pts:+.2f}" + ("†" if row.holm < 0.05 else "")
        sns.heatmap(matrix.iloc[1:, :-1], annot=labels.iloc[1:, :-1], fmt="", cmap="Reds", vmin=0, linewidths=0.5,
                    annot_kws={"fontsize": "xx-small"}, cbar=False, ax=axes)
        excludes = {(row.other, row.method) for row in part.itertuples()
                    if float(row.ci95.split("..")[0]) > 0 or float(row.ci95.split("..")[1]) < 0}
        for text in axes.texts:  # bold where the interval alone excludes 0
            x, y = text.get_position()
            if (order[1:][int(y)], order[:-1][int(x)]) in excludes:
                text.set_fontweight("bold")
        axes.set(title=f"train ratio {ratio:g}", xlabel="", ylabel="")
        axes.grid(False)
    figure.suptitle(f"{name}: row minus column, test error points, paired by split\n"
                    "bold: 95% interval excludes 0; †: stands Holm's correction over all pairs of the ratio", y=1.02)
    return figure


def _lambda(name: str, table: pd.DataFrame, trials: pd.DataFrame) -> plt.Figure | None:
    if trials.empty:
        return None
    order = [m for m in _method_order(table) if m in set(trials["method"])]
    order += sorted(set(trials["method"]) - set(order))
    # Points, not lines: the trials of a search are separate draws, and a line plot would join them
    # and draw a bootstrap band (random, so the PNG changed on every rebuild from the same records).
    grid = sns.relplot(data=trials.sort_values("lam"), x="lam", y="val_err", hue="hidden", col="method",
                       col_order=order, col_wrap=min(5, len(order)), kind="scatter", palette="viridis",
                       height=2.6, aspect=1.1, facet_kws={"sharex": True, "sharey": True})
    grid.set(xscale="log")
    for axes in grid.axes.flat:  # label decades only: minor labels overlap in small panels
        axes.xaxis.set_minor_formatter(NullFormatter())
    grid.set_titles("{col_name}")
    grid.set_axis_labels("lambda", "validation error")
    grid.figure.suptitle(f"{name}: lambda sensitivity, every completed sweep trial", y=1.03)
    return grid.figure


def _bars(data: pd.DataFrame, table: pd.DataFrame, x: str, y: str, labels: tuple[str, str], title: str,
          titles: str, **facets: Any) -> plt.Figure:
    """Bars per method (best first), mean and std over seeds, in the given facets."""
    order = [m for m in _method_order(table) if m in set(data["method"])]
    # Up to 20 clearly different colours (the default palette repeats its 10 in near-identical shades).
    palette = sns.color_palette("tab20" if len(order) > 10 else "tab10", len(order))
    grid = sns.catplot(data=data, x=x, y=y, hue="method", hue_order=order, kind="bar", errorbar="sd",
                       palette=palette, height=3.6, aspect=1.3, legend_out=True, **facets)
    for axes in grid.axes.flat:
        axes.axhline(0, color="black", linewidth=0.8)
    grid.set_titles(titles)
    grid.set_axis_labels(*labels)
    grid.figure.suptitle(title, y=1.08)
    return grid.figure


def _gttn_weights(name: str, table: pd.DataFrame, weights: pd.DataFrame) -> plt.Figure | None:
    if weights.empty:
        return None
    return _bars(weights, table, "flattening", "alpha", ("flattening (modes on the rows)", "weight alpha"),
                 f"{name}: learned GTTN flattening weights at the selected epoch",
                 "{col_name}, train ratio {row_name}", col="layer", row="train_ratio", sharex=False)


def _sharing(name: str, table: pd.DataFrame, sharing: pd.DataFrame) -> plt.Figure | None:
    if sharing.empty:
        return None
    return _bars(sharing, table, "layer", "strength", ("stacked layer", "sharing strength"),
                 f"{name}: sharing strength by layer, 1 - ||W_(T)||* selected / initial\n"
                 "(towards 1: the tasks' weights collapse onto a shared span; below 0: training spread them apart)",
                 "train ratio {col_name}", col="train_ratio")


def _vs_paper(name: str, table: pd.DataFrame, runs: pd.DataFrame) -> plt.Figure | None:
    """Accuracy in % (the paper's unit), ours and the paper's, mean and std over repeats."""
    if "paper_test_err_mean" not in table.columns:
        return None
    order = _method_order(table)
    rows = table.set_index("method").loc[order]
    figure, axes = plt.subplots(figsize=(max(4.5, 1.2 + 0.75 * len(order)), 4.2))
    positions = range(len(order))
    for shift, (label, mean, std, colour) in enumerate([
        ("this suite", "test_err_mean", "test_err_std", "tab:blue"),
        ("paper", "paper_test_err_mean", "paper_test_err_std", "tab:orange"),
    ]):
        known = rows[mean].notna()
        x = [p + 0.12 * (2 * shift - 1) for p, k in zip(positions, known) if k]
        axes.errorbar(x, 100 * (1 - rows[mean][known]), yerr=100 * rows[std][known].fillna(0), fmt="o",
                      capsize=4, color=colour, label=label)
    axes.set_xticks(list(positions), order, rotation=45)
    axes.set_xlim(-0.5, len(order) - 0.5)
    axes.set(title=f"{name}: test accuracy, ours and published\n(mean and std over repeats)",
             ylabel="mean test accuracy over tasks (%)")
    axes.legend(fontsize="small")
    return figure


def _frames(runs: list[RunRecord], trials: list[RunRecord]) -> dict[str, pd.DataFrame]:
    run_rows, weight_rows, sharing_rows = [], [], []
    for run in runs:
        base = {"method": run.method, "train_ratio": run.train_ratio, "seed": run.seed}
        run_rows.append({**base, "test_err": run.test_err_mean})
        for key, value in sorted((run.method_state or {}).items()):
            weight = parse_flattening_weight_key(key)
            if weight is not None:
                layer, subset = weight
                weight_rows.append({**base, "layer": layer, "flattening": "{" + ",".join(map(str, subset)) + "}",
                                    "alpha": value})
        for layer, values in sorted((run.sharing or {}).items()):
            sharing_rows.append({**base, "layer": layer, "strength": values["strength"]})
    trial_rows = [
        {"method": t.method, "lam": t.config["lam"], "hidden": t.config["hidden"], "val_err": t.val_err}
        for t in trials if t.val_err is not None
    ]
    columns = {"trials": ["method", "lam", "hidden", "val_err"]}
    frames = {"runs": run_rows, "weights": weight_rows, "sharing": sharing_rows, "trials": trial_rows}
    return {key: pd.DataFrame(rows, columns=columns.get(key)) for key, rows in frames.items()}


PLOTS: dict[str, tuple[str, Callable[[str, pd.DataFrame, pd.DataFrame], plt.Figure | None]]] = {
    "errors": ("runs", _errors),
    "vs_stl": ("runs", _vs_stl),
    "vs_stl_ci": ("runs", _vs_stl_intervals),
    "vs_main": ("runs", _vs_main),
    "pairwise": ("runs", _pairwise),
    "lambda": ("trials", _lambda),
    "gttn_weights": ("weights", _gttn_weights),
    "sharing": ("sharing", _sharing),
    "vs_paper": ("runs", _vs_paper),
}


def _displayed(label: str, names: dict[str, str]) -> str:
    """``label`` with the method id it is, or starts with (``gttn_a  r0.1``), as its display name."""
    head, space, rest = label.partition(" ")
    return names[label] if label in names else f"{names[head]}{space}{rest}" if head in names else label


def display_names(figure: plt.Figure, names: dict[str, str]) -> None:
    """Every method id the figure shows (tick labels, facet titles, legends) as its display name:
    ``GTTN-a`` for ``gttn_a``. The drawing code works on the ids the tables hold."""
    if not names:
        return
    figure.canvas.draw()  # seaborn's categorical tick labels exist once drawn
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            labels = [label.get_text() for label in axis.get_ticklabels()]
            shown = [_displayed(label, names) for label in labels]
            if shown != labels:
                axis.set_ticks(axis.get_ticklocs(), shown)
    for text in figure.findobj(matplotlib.text.Text):
        if text.get_text() in names:
            text.set_text(names[text.get_text()])


def draw_plots(
    tables: dict[TableKey, pd.DataFrame],
    chosen_runs: dict[TableKey, list[RunRecord]],
    sweep_runs: list[RunRecord],
    out_dir: Path,
    names: dict[str, str] | None = None,
) -> list[Path]:
    """Every figure of every table that has data for it, methods shown by ``names``; returns the files written."""
    sns.set_theme(style="whitegrid", context="notebook")
    written = []
    for key, table in sorted(tables.items()):
        name = table_name(*key)
        table = table.dropna(subset=["test_err_mean"])  # a method listed as "= <method>" has no result to draw
        trials = [t for t in sweep_runs if table_key(t) == key]
        frames = _frames(chosen_runs.get(key, []), trials)
        for suffix, (frame_name, draw) in PLOTS.items():
            figure = draw(name, table, frames[frame_name])
            if figure is None:
                continue
            display_names(figure, names or {})
            path = out_dir / f"{name}_{suffix}.png"
            figure.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
            plt.close(figure)
            written.append(path)
    return written


def _run_label(run: RunRecord) -> str:
    """method, lambda and any method parameters: what tells two runs of one method apart."""
    params = "".join(f", {k}={v}" for k, v in sorted(run.config.get("method_params", {}).items()))
    return f"{run.method} (lambda {run.config['lam']:g}{params}; seed {run.seed})"


def draw_validation_curves(runs: list[RunRecord], out_dir: Path) -> list[Path]:
    """``<dataset>_validation.png``: mean validation accuracy over tasks against epoch, one line
    per run, a dot at the epoch each selected. Runs without a validation part are left out."""
    sns.set_theme(style="whitegrid", context="notebook")
    rows = [
        {"dataset": run.dataset, "run": _run_label(run), "epoch": epoch, "val_acc": 100 * value,
         "selected": epoch == run.selected_epoch}
        for run in runs for epoch, value in enumerate(run.val_acc_history or []) if value is not None
    ]
    if not rows:
        return []
    curves = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset, part in curves.groupby("dataset", sort=True):
        figure, axes = plt.subplots(figsize=(8.0, 4.6))
        sns.lineplot(data=part, x="epoch", y="val_acc", hue="run", errorbar=None, ax=axes)
        chosen = part[part["selected"]]
        sns.scatterplot(data=chosen, x="epoch", y="val_acc", hue="run", legend=False, s=60, ax=axes)
        axes.set_ylim(bottom=part["val_acc"].quantile(0.25) - 1)  # the plateau, where runs differ, not the climb
        axes.set(title=f"{dataset}: validation accuracy per epoch (dots: the selected epoch)",
                 xlabel="epoch (from 0, as selected_epoch in the records)",
                 ylabel="mean validation accuracy over tasks (%)")
        axes.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
        path = out_dir / f"{dataset}_validation.png"
        figure.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    return written
