"""The views users compare methods in: the saved W&B workspace and the Optuna dashboard."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from benchmark.cli import main


def test_the_wandb_workspace_groups_final_runs_by_method_and_ratio_built_offline() -> None:
    from benchmark.wandb_view import comparison_workspace

    workspace = comparison_workspace("me", "mtl-trace-norm-benchmark")
    spec = json.dumps(workspace._to_model().model_dump(by_alias=True))  # what save() would send
    assert '"grouping": [{"section": "config", "name": "method.value"}, {"section": "config", "name": "train_ratio.value"}]' in spec
    assert '"value": ["job:final"]' in spec  # the final runs only, by the tag every final run carries
    names = [section.name for section in workspace.sections]
    assert names[0].startswith("Test error by method") and "GTTN flattening weights" in names
    panels = {panel.title: panel for section in workspace.sections for panel in section.panels}
    assert panels["mean test error over tasks"].metrics == ["test/err_mean"]
    assert panels["learned flattening weights alpha"].metric_regex == "^alpha/.*"


def test_wandb_view_without_an_entity_says_what_to_give(capsys, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert main(["wandb-view"]) == 2
    assert "name the W&B entity" in capsys.readouterr().err
    assert main(["wandb-view", "--dry-run"]) == 0
    assert "Validation curves" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_make_dashboard_serves_the_sweep_storage_to_a_real_browser(tmp_path: Path) -> None:
    """optuna-dashboard on a sweep's storage, read by headless Chromium: the studies are listed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium not found (Debian: apt-get install chromium)")
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="synthetic/tucker/r0.5/0123abcd")
    study.optimize(lambda trial: trial.suggest_float("lam", 1e-4, 10, log=True), n_trials=2)
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("optuna-dashboard")), url, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("optuna-dashboard did not start") from None
                time.sleep(0.5)
        page = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                               f"http://127.0.0.1:{port}/dashboard"], capture_output=True, text=True, timeout=120).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "synthetic/tucker/r0.5/0123abcd" in page
