"""``mtlbench leaderboard`` and ``mtlbench curves``: read the records, write the tables and figures."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..records import FINAL, SEARCH, read_records
from .plots import draw_plots, draw_validation_curves
from .inputs import mixed_caches_line, mixed_machines_line
from .markdown import board_markdown, summary_markdown
from .tables import (MAIN_BOARD, REFERENCE_DIR, Reference, method_rows, pairwise_differences, summary_table, table_name,
                     write_csv)


def build_leaderboard(runs_dir: Path, out_dir: Path, jobs: Iterable[str] = (FINAL,), plots: bool = True,
                      reference_dir: Path = REFERENCE_DIR, main_runs_dir: Path | None = None,
                      main_name: str = MAIN_BOARD) -> tuple[list[Path], list[str]]:
    """Write every CSV (and plot) of the leaderboard; return the files written and the notices
    (broken or duplicate records skipped, configurations superseded, feature caches or machines mixed). ``main_runs_dir``: the main
    board's records, which a plan variant's tables are paired with (:func:`method_rows`); ``main_name``
    names them in the tables where another variant's records stand in for the main board's."""
    records = read_records(runs_dir, jobs)
    reference = Reference.read(reference_dir)
    main_runs = read_records(main_runs_dir, jobs).runs if main_runs_dir is not None else []
    tables, chosen_runs, notices = method_rows(records.runs, reference, main_runs, main_name)
    if tables:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, table in sorted(tables.items()):
        path = out_dir / f"{table_name(*key)}.csv"
        write_csv(table, path)
        pairwise = pairwise_differences(table)
        if not pairwise.empty:
            write_csv(pairwise, out_dir / f"{table_name(*key)}_pairwise.csv")
            written.append(out_dir / f"{table_name(*key)}_pairwise.csv")
        markdown = path.with_suffix(".md")
        provenance = [line for line in (mixed_caches_line(chosen_runs[key]), mixed_machines_line(chosen_runs[key])) if line]
        notices += [f"{table_name(*key)}: {line}" for line in provenance]
        markdown.write_text(board_markdown(key, table, reference.names, "\n\n".join(provenance)))
        written += [path, markdown]
    if tables:
        write_csv(summary_table(tables), out_dir / "summary.csv")
        (out_dir / "summary.md").write_text(summary_markdown(tables))
        written += [out_dir / "summary.csv", out_dir / "summary.md"]
    if plots and tables:
        written += draw_plots(tables, chosen_runs, read_records(runs_dir, (SEARCH,)).runs, out_dir, reference.names)
    return written, records.problems() + notices


def build_curves(runs_dir: Path, out_dir: Path, jobs: Iterable[str]) -> list[Path]:
    """The validation curves of every record of ``jobs`` under ``runs_dir``, one figure per dataset."""
    return draw_validation_curves(read_records(runs_dir, jobs).runs, out_dir) if runs_dir.is_dir() else []
