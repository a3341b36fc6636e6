"""Run records: one JSON file per finished run, written atomically (DESIGN.md: results live in files).

W&B is a view of these records and arrives with the sweeps; the records are the source of truth.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "lightning", "numpy", "optuna", "wandb", "mtl-trace-norm-benchmark")


def git_revision() -> str:
    """The checkout's commit, with ``-dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def new_run_id(seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-s{seed}-{uuid.uuid4().hex[:8]}"


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write to a temporary name beside ``path``, then rename: a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def record_path(out_dir: Path, dataset: str, method: str, run_id: str) -> Path:
    return Path(out_dir) / dataset / method / f"{run_id}.json"
