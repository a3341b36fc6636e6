"""One data-module layer over small per-dataset sources (DESIGN.md)."""

from . import (  # noqa: F401  (register)
    domainnet,
    imageclef,
    office31,
    office_caltech,
    office_home,
    omniglot,
    synthetic,
)
from .module import MultiTaskDataModule
from .source import (
    DEFAULT_BACKBONE,
    DataUnavailableError,
    MultiTaskDataset,
    TaskData,
    dataset_name,
    dataset_names,
    dataset_source,
)
from .splits import SplitFileError, export_split, read_split_file, stratified_split

__all__ = [
    "DEFAULT_BACKBONE",
    "DataUnavailableError",
    "MultiTaskDataModule",
    "MultiTaskDataset",
    "TaskData",
    "dataset_name",
    "dataset_names",
    "dataset_source",
    "SplitFileError",
    "export_split",
    "read_split_file",
    "stratified_split",
]
