"""``mtlbench rerun``: a record trains again to the same test error, and a changed one is caught."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.cli import main

TINY = ["--dataset", "synthetic", "--method", "tucker", "--hidden", "6", "--max-epochs", "3", "--no-progress",
        "--data-param", "n_tasks=3", "--data-param", "samples_per_task=40"]


def test_a_record_reruns_to_the_same_test_error_and_a_tampered_one_is_reported(tmp_path: Path, capsys) -> None:
    assert main(["train", *TINY, "--out", str(tmp_path / "runs")]) == 0
    (record,) = (tmp_path / "runs").rglob("*.json")
    capsys.readouterr()
    assert main(["rerun", str(record), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert ": same" in out and "1 of 1 rerun(s) gave the recorded test error" in out
    assert not list((tmp_path / "runs").rglob("*.json"))[1:]  # nothing written beside it without --out
    # A record whose test error is not what its configuration gives: reported, with the difference.
    values = json.loads(record.read_text())
    values["test_err_mean"] += 0.01
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(values))
    assert main(["rerun", str(tampered), str(record), "--out", str(tmp_path / "again"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "differs by -1.0000 points, though no task does: the record's mean is not the mean of its tasks" in out and "1 of 2 rerun(s) gave the recorded test error; 1 differ" in out
    assert "torch thread" not in out  # the same thread count: nothing to say
    # A run under another thread count sums in another order: said beside the verdict.
    values["torch_threads"] = values["torch_threads"] + 1
    tampered.write_text(json.dumps(values))
    assert main(["rerun", str(tampered), "--no-progress"]) == 1
    assert f"thread(s) now, {values['torch_threads']} then (another count may sum" in capsys.readouterr().out
    # Another CPU rounds otherwise: said, naming both; a record older than the field says nothing of it.
    assert values["machine"]["cpu_capability"]  # what torch's kernels dispatched to here
    values["torch_threads"] -= 1
    values["machine"] = {**values["machine"], "cpu": "Other CPU 9000", "cpu_capability": "AVX512"}
    tampered.write_text(json.dumps(values))
    assert main(["rerun", str(tampered), "--no-progress"]) == 1
    assert "another machine now (" in (out := capsys.readouterr().out) and "than then (Other CPU 9000, AVX512: its kernels" in out
    del values["machine"]
    tampered.write_text(json.dumps(values))
    assert main(["rerun", str(tampered), "--no-progress"]) == 1
    assert "; the record does not say which machine ran it" in capsys.readouterr().out
    assert main(["rerun", str(record), "--no-progress"]) == 0
    assert "machine" not in capsys.readouterr().out  # the same machine, the same result: nothing to say
    assert len(list((tmp_path / "again").rglob("*.json"))) == 2


def test_a_record_that_cannot_rerun_is_named_and_the_rest_still_run(tmp_path: Path, capsys) -> None:
    assert main(["train", *TINY, "--out", str(tmp_path / "runs")]) == 0
    (record,) = (tmp_path / "runs").rglob("*.json")
    pruned = tmp_path / "pruned.json"
    pruned.write_text(json.dumps(json.loads(record.read_text()) | {"state": "pruned", "reason": "epoch 1: pruned", "test_err_mean": None}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    capsys.readouterr()
    assert main(["rerun", str(pruned), str(broken), str(record), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "is a pruned run with no test error to compare with" in captured.err and str(broken) in captured.err
    assert "1 of 3 rerun(s) gave the recorded test error; 2 could not run" in captured.out
