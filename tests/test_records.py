"""The run record's one home: schema, validation naming path and field, migration of old records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.methods import method_names
from benchmark.records import (
    COMPLETE,
    JOBS,
    PROTOCOL_VERSION,
    STATES,
    BrokenRecord,
    RunRecord,
    flattening_weight_key,
    metric_key,
    parse_flattening_weight_key,
    read_record,
    read_records,
    search_edges,
)

REPO = Path(__file__).resolve().parents[1]


def complete(**changes) -> dict:
    values = {
        "run_id": "r1", "job": "final", "dataset": "synthetic", "method": "tucker", "seed": 1,
        "config": {"lam": 0.1, "hidden": 8, "train_ratio": 0.5, "dataset_params": {}},
        "tasks": {"a": {"val_acc": 0.8, "test_acc": 0.7, "test_err": 0.3}, "b": {"val_acc": None, "test_acc": 0.9,
                                                                                  "test_err": 0.1}},
        "test_err_mean": 0.2, "test_acc_mean": 0.8, "val_acc_mean": 0.8, "val_acc_history": [0.5, 0.8, 0.7],
        "selection": "best_val_acc_mean", "selected_epoch": 1, "protocol_version": PROTOCOL_VERSION,
    }
    return {**values, **changes}


def test_a_record_written_and_read_back_is_the_same(tmp_path: Path) -> None:
    record = RunRecord.from_dict(complete(features="fc7", equal_methods=["tr"], search_split=0))
    path = record.write(tmp_path / "r1.json")
    again = read_record(path)
    assert again == record and again.path == path
    # None fields are left out on disk; what a reader needs of the results is there.
    on_disk = json.loads(path.read_text())
    assert "reason" not in on_disk and on_disk["tasks"]["b"]["val_acc"] is None
    assert again.val_err == pytest.approx(0.2) and again.final_objective() == pytest.approx(0.2)
    assert again.best_so_far_errors() == pytest.approx({0: 0.5, 1: 0.2, 2: 0.2})


@pytest.mark.parametrize(("values", "message"), [
    (complete(seed="1"), "field seed: expected int, got str"),
    (complete(test_err_mean="0.2"), "field test_err_mean: expected float | None, got str"),
    (complete(tasks={"a": {"test_err": "x"}}), "field tasks: expected"),
    (complete(tasks={"a": {"test_acc": 0.5}}), "a task without a numeric test_err"),
    (complete(job="search"), f"job 'search'; valid: {', '.join(JOBS)}"),
    (complete(state="crashed"), f"state 'crashed'; valid: {', '.join(STATES)}"),
    (complete(test_err_mean=None), "a complete record without test_err_mean"),
    (complete(state="failed"), "a failed record without reason"),
    (complete(colour="blue"), r"unknown field\(s\) \['colour'\]"),
    ({"run_id": "x", "job": "final"}, "missing dataset, method, config, seed"),
])
def test_a_broken_record_names_its_path_and_field(tmp_path: Path, values: dict, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(values))
    with pytest.raises(BrokenRecord, match=f"record {path}: .*{message}"):
        read_record(path)
    found = read_records(tmp_path, jobs=JOBS, states=STATES)
    assert not found.runs and found.broken[0][0] == path


def test_version_1_records_are_migrated_on_read() -> None:
    old = {key: value for key, value in complete().items() if key != "protocol_version"}
    record = RunRecord.from_dict({**old, "dataset": "office_caltech"})
    assert (record.protocol_version, record.state, record.features, record.paper_layering) == (1, COMPLETE, "surf", True)
    pool5 = RunRecord.from_dict({**old, "config": {**old["config"], "dataset_params": {"features": "pool5",
                                                                                      "backbone": "resnet50"}}})
    assert pool5.features == "resnet50_pool5"


def test_every_committed_record_reads_cleanly() -> None:
    """The records under results/ were written by every version of the suite; all stay readable."""
    found = read_records(REPO / "results", jobs=JOBS, states=STATES)
    assert len(found.runs) > 400 and not found.broken
    assert {r.features for r in found.runs if r.dataset == "office_caltech"} >= {"surf"}
    assert {r.features for r in found.runs if r.dataset == "omniglot"} == {""}
    assert all(r.protocol_version >= 1 for r in found.runs)
    # A pruned or failed trial never reached its test: only complete runs carry test metrics.
    assert all(r.test_err_mean is not None for r in found.runs if r.state == COMPLETE)
    assert any(r.state != COMPLETE for r in found.runs)  # the sweeps' pruned trials are committed too


def test_metric_keys_are_made_and_parsed_in_one_place() -> None:
    assert metric_key("val", "acc_mean") == "val/acc_mean" and metric_key("test", "err", "dslr") == "test/dslr/err"
    key = flattening_weight_key(1, (0, 2))
    assert key == "alpha/layer1/0-2" and parse_flattening_weight_key(key) == ("layer1", (0, 2))
    assert parse_flattening_weight_key("rank/layer0") is None


def test_a_value_at_the_edge_of_its_recorded_range_is_flagged() -> None:
    space = {"lam": {"low": 1e-4, "high": 10.0, "log": True}, "hidden": {"choices": [128, 256, 512, 1024]}}
    assert search_edges(space, {"lam": 1.1e-4, "hidden": 256}) == ["lam low"]
    assert search_edges(space, {"lam": 0.05, "hidden": 1024}) == ["hidden high"]


def test_the_reference_tables_name_every_registered_method() -> None:
    import pandas as pd

    methods = pd.read_csv(REPO / "results" / "reference" / "methods.csv", keep_default_na=False)
    assert sorted(methods["method"]) == method_names() and methods["name"].str.len().min() > 0
    paper = pd.read_csv(REPO / "results" / "reference" / "paper_results.csv", keep_default_na=False)
    assert set(paper["method"]) <= set(method_names())
