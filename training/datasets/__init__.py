"""Offline learning-history datasets: the on-disk format, a validating loader and batch samplers.

``load_dataset(dir)`` reads what ``t2mir collect`` wrote; ``sample_ad_batch`` / ``sample_dpt_batch``
turn it into Algorithm 1 / Algorithm 3 query and key batches (plain numpy; the trainer converts).
"""

from training.datasets.format import SCHEMA_VERSION, DatasetError
from training.datasets.history import LearningHistoryDataset, TaskHistory, load_dataset
from training.datasets.sampling import (
    ADBatch,
    DPTBatch,
    DPTQueries,
    Segments,
    sample_ad_batch,
    sample_dpt_batch,
    sample_task_ids,
)

__all__ = [
    "SCHEMA_VERSION",
    "ADBatch",
    "DPTBatch",
    "DPTQueries",
    "DatasetError",
    "LearningHistoryDataset",
    "Segments",
    "TaskHistory",
    "load_dataset",
    "sample_ad_batch",
    "sample_dpt_batch",
    "sample_task_ids",
]
