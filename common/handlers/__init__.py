"""Ignite handlers for the bundles' train/validate/evaluate/infer workflows."""

from common.handlers.progress import ProgressBar
from common.handlers.segmentation_report import SegmentationReport
from common.handlers.staged_outputs import StagedOutputs
from common.handlers.tracking import PerClassMetrics, local_mlflow_store, loss_and_learning_rate

__all__ = [
    "PerClassMetrics",
    "ProgressBar",
    "SegmentationReport",
    "StagedOutputs",
    "local_mlflow_store",
    "loss_and_learning_rate",
]
