"""Which extracted-feature files a table's runs read, told apart by their checksums, and which
machines ran them.

A feature cache is rebuilt when it is lost or moved to another machine, and a rebuild on other
hardware or library versions can round a few float16 values differently. The records keep each
file's SHA-256 (``RunRecord.inputs["files"]``), so a table whose runs read more than one cache
of the same backbone and images says so, with how many runs read each: the reader decides
whether it matters, and can rerun a run on the other cache to check. Runs of one configuration
on two CPUs (another instruction set, another BLAS blocking) can drift apart in the last digits
too; records name their machine (``RunRecord.machine``), and a table that mixes machines says so."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from ..records import RunRecord, machine_label

DIGEST_CHARS = 8  # enough to tell a handful of caches apart in a sentence


def cache_digest(run: RunRecord) -> str | None:
    """One short name for the set of feature files a run read (None: no extracted features)."""
    files = (run.inputs or {}).get("files")
    if not files:
        return None
    joined = "\n".join(f"{name} {checksum}" for name, checksum in sorted(files.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:DIGEST_CHARS]


def mixed_caches_line(runs: Sequence[RunRecord]) -> str:
    """A sentence for the table when its runs read more than one feature cache; else ""."""
    counts = Counter(digest for run in runs if (digest := cache_digest(run)) is not None)
    if len(counts) < 2:
        return ""
    parts = ", ".join(f"{n} read cache {digest}" for digest, n in counts.most_common())
    return (f"Inputs: these {sum(counts.values())} runs read {len(counts)} feature caches of the same "
            f"backbone and images whose files differ (a rebuilt cache): {parts} (a digest of the files' SHA-256 "
            "in each record's `inputs.files`).")


def mixed_machines_line(runs: Sequence[RunRecord]) -> str:
    """A sentence for the table when the runs that name their machine name more than one; else ""."""
    counts = Counter(name for run in runs if (name := machine_label(run.machine)) is not None)
    if len(counts) < 2:
        return ""
    parts = "; ".join(f"{n} on {name}" for name, n in counts.most_common())
    unnamed = len(runs) - sum(counts.values())
    older = f"; {unnamed} older record(s) do not say" if unnamed else ""
    return (f"Machines: these runs ran on {len(counts)} machines, whose kernels may round otherwise: {parts}{older} "
            "(each record's `machine`).")
