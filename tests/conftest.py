"""Shared fixtures: deterministic torch, and the real-data folder when it exists."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

# Tests never reach W&B's servers.
os.environ.setdefault("WANDB_MODE", "disabled")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data_dir() -> Path:
    """``$BENCHMARK_TEST_DATA`` or ``../shared/data``; the test is skipped when neither exists."""
    path = Path(os.environ.get("BENCHMARK_TEST_DATA", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set BENCHMARK_TEST_DATA)")
    return path


def _postgres_binary(name: str) -> str | None:
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL cluster on loopback: initdb in a temp folder, its own port."""
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install '.[test]')")
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The server refuses to run as root: then it runs as the postgres user, in a folder that
    # user can reach (pytest's own temp folders are private to root).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="mtlbench-pg-"))
    os.chmod(root, 0o777)
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "bench", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="bench", dbname="postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE optuna")
        yield f"postgresql://bench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
