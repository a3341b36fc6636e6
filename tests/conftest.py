"""Shared fixtures: deterministic torch, and the real-data folder when it exists."""

from __future__ import annotations

import os
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
