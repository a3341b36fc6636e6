"""Every interval the READMEs quote is one a committed leaderboard table holds.

The README's results and results/README.md are written by hand from the tables `make leaderboard`
writes; a figure copied before the records changed (a rerun, a method added to a board) would
stay behind unnoticed. An interval "lo..hi" is specific enough to identify its row: each one
quoted must appear in a table under results/ (a markdown table, or a leaderboard's pairwise
comparisons), as written or negated (the Omniglot tables quote
accuracy, the leaderboards error).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INTERVAL = re.compile(r"([-+]\d+\.\d+)\.\.([-+]\d+\.\d+)")
DOCUMENTS = ("README.md", "results/README.md")


def _canonical(number: str) -> float:
    return float(number) + 0.0  # -0.00 and +0.00 are one value


def _intervals(text: str) -> set[tuple[float, float]]:
    return {(_canonical(lo), _canonical(hi)) for lo, hi in INTERVAL.findall(text)}


def _table_intervals() -> set[tuple[float, float]]:
    tables = [p for p in (REPO / "results").rglob("*.md") if p.name != "README.md"]
    tables += list((REPO / "results" / "leaderboard").rglob("*_pairwise.csv"))  # every pair of methods
    found = set().union(*(_intervals(p.read_text()) for p in tables))
    return found | {(-hi, -lo) for lo, hi in found}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_quoted_interval_is_in_a_committed_table(document: str) -> None:
    tables = _table_intervals()
    text = (REPO / document).read_text()
    stale = [f"{match.group(0)} in '...{text[max(0, match.start() - 90):match.end()]}'".replace("\n", " ")
             for match in INTERVAL.finditer(text)
             if (_canonical(match.group(1)), _canonical(match.group(2))) not in tables]
    assert not stale, (f"{document} quotes intervals no table under results/ holds (rerun `make leaderboard` and "
                       "copy the current figures):\n" + "\n".join(stale))


def test_the_check_finds_a_stale_interval() -> None:
    """The check is not vacuous: the documents quote intervals, and a changed digit is caught."""
    tables = _table_intervals()
    quoted = _intervals((REPO / "README.md").read_text())
    assert len(quoted) >= 5 and quoted <= tables
    lo, hi = next(iter(quoted))
    assert (lo, hi + 0.01) not in tables or (lo - 0.01, hi) not in tables
