"""``mtlbench wandb-view``: a saved W&B workspace that compares the methods of a project.

The runs carry what the view needs (:mod:`benchmark.tracking`): config ``method`` and
``train_ratio``, the tag ``job:final`` on final runs, the selected epoch's metrics in the summary
and, for GTTN, the ``alpha/...`` flattening weights logged each epoch. The workspace shows the
final runs grouped by method and train ratio:

- **Test error by method**: mean test error of each group, its std over seeds as the bar's range;
- **Validation curves**: mean validation accuracy over tasks against epoch, per group;
- **GTTN flattening weights**: every ``alpha/...`` curve, per group;
- **Training**: loss, cross-entropy and penalty (epoch means).

Building it needs nothing but the package (:func:`comparison_workspace`); saving it needs a W&B
login (``wandb login``), so ``--dry-run`` prints the view instead.
"""

from __future__ import annotations

import warnings
from typing import Any

from .records import FINAL, metric_key

FINAL_TAG = f"job:{FINAL}"  # benchmark.tracking.run_tags


def comparison_workspace(entity: str, project: str, name: str = "Method comparison") -> Any:
    """The workspace (``wandb_workspaces.workspaces.Workspace``), built offline."""
    with warnings.catch_warnings():  # the package's own Pydantic-1-style validators warn on import
        warnings.simplefilter("ignore", DeprecationWarning)
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws

    by_group = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}
    sections = [
        ws.Section(name="Test error by method (final runs, mean and std over seeds)", is_open=True, panels=[
            wr.BarPlot(title="mean test error over tasks", metrics=[metric_key("test", "err_mean")], **by_group),
            wr.BarPlot(title="mean validation error over tasks (the selected epoch)",
                       metrics=[metric_key("val", "err_mean")], **by_group),
        ]),
        ws.Section(name="Validation curves", is_open=True, panels=[
            wr.LinePlot(title="mean validation accuracy over tasks", x="epoch", y=[metric_key("val", "acc_mean")],
                        **by_group),
        ]),
        ws.Section(name="GTTN flattening weights", panels=[
            wr.LinePlot(title="learned flattening weights alpha", x="epoch", metric_regex="^alpha/.*", **by_group),
        ]),
        ws.Section(name="Training", panels=[
            wr.LinePlot(title=key, x="epoch", y=[key], **by_group) for key in ("train/loss", "train/ce", "train/penalty")
        ]),
    ]
    runset = ws.RunsetSettings(
        filters=ws.And(ws.Tags().isin([FINAL_TAG])),
        groupby=[ws.Config("method"), ws.Config("train_ratio")],
    )
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections, runset_settings=runset)


def describe(workspace: Any) -> str:
    """The workspace's sections and panels, as ``--dry-run`` prints them."""
    lines = [f"W&B workspace {workspace.name!r} for {workspace.entity}/{workspace.project}: final runs grouped by "
             "method and train ratio"]
    for section in workspace.sections:
        lines.append(f"  {section.name}")
        lines += [f"    - {panel.title}" for panel in section.panels]
    return "\n".join(lines)
