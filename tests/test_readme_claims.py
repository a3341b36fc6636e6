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


def _with_negations(intervals: set[tuple[float, float]]) -> set[tuple[float, float]]:
    """The intervals as given and negated: an accuracy table's -hi..-lo is an error's lo..hi."""
    return intervals | {(-hi, -lo) for lo, hi in intervals}


def _table_intervals() -> set[tuple[float, float]]:
    tables = [p for p in (REPO / "results").rglob("*.md") if p.name != "README.md"]
    tables += list((REPO / "results" / "leaderboard").rglob("*_pairwise.csv"))  # every pair of methods
    return _with_negations(set().union(*(_intervals(p.read_text()) for p in tables)))


def stale_intervals(text: str, tables: set[tuple[float, float]]) -> list[str]:
    """The intervals ``text`` quotes that no table holds, each with the words before it."""
    return [f"{match.group(0)} in '...{text[max(0, match.start() - 90):match.end()]}'".replace("\n", " ")
            for match in INTERVAL.finditer(text)
            if (_canonical(match.group(1)), _canonical(match.group(2))) not in tables]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_quoted_interval_is_in_a_committed_table(document: str) -> None:
    stale = stale_intervals((REPO / document).read_text(), _table_intervals())
    assert not stale, (f"{document} quotes intervals no table under results/ holds (rerun `make leaderboard` and "
                       "copy the current figures):\n" + "\n".join(stale))


def test_the_check_finds_a_stale_interval_and_accepts_a_negated_or_signed_zero_one() -> None:
    """The check is not vacuous: a figure one digit off is reported, an accuracy table's negation
    and a -0.00 for +0.00 are not."""
    tables = _with_negations(_intervals("| TT | -0.96 (-1.29..-0.63) | LAF | -0.07 (-0.15..+0.00) |"))
    text = "TT -0.96 (-1.29..-0.63), LAF +0.07 (-0.00..+0.15), GTTN-a -0.52 (-1.02..-0.04)."
    assert stale_intervals(text, tables) == ["-1.02..-0.04 in '...TT -0.96 (-1.29..-0.63), LAF +0.07 (-0.00..+0.15), GTTN-a -0.52 (-1.02..-0.04'"]
    assert len(_intervals((REPO / "README.md").read_text())) >= 5  # the README does quote intervals
