"""One data-module layer over small per-dataset sources (DESIGN.md)."""

from . import office_caltech, omniglot, synthetic  # noqa: F401  (register the sources)
from .module import MultiTaskDataModule
from .source import DataUnavailableError, MultiTaskDataset, TaskData, dataset_names, dataset_source
from .splits import stratified_split

__all__ = [
    "DataUnavailableError",
    "MultiTaskDataModule",
    "MultiTaskDataset",
    "TaskData",
    "dataset_names",
    "dataset_source",
    "stratified_split",
]
