"""Data: registered data sets loaded as uint8 tensors, stratified splits, batch augmentation."""

# Importing the source modules registers their data sets in DATASETS. This package file runs before
# any of its modules, so `load_raw` always sees every data set.
from ticketsearch.core.data import digits, downsampled_imagenet, torchvision_sets  # noqa: F401
from ticketsearch.core.data.augment import augment_batch, to_float
from ticketsearch.core.data.bundle import DataBundle, load_cache, prepare_data, select_classes, task_info
from ticketsearch.core.data.datasets import (
    DATASETS,
    DatasetInfo,
    RawDataset,
    check_raw,
    dataset_info,
    load_raw,
)
from ticketsearch.core.data.splits import stratified_split, stratified_subset

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetInfo",
    "RawDataset",
    "augment_batch",
    "check_raw",
    "dataset_info",
    "load_cache",
    "load_raw",
    "prepare_data",
    "stratified_split",
    "select_classes",
    "stratified_subset",
    "task_info",
    "to_float",
]
