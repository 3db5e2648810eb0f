"""Ignite handlers for the bundles' train/validate/evaluate/infer workflows."""

from common.handlers.atomic_save import save_atomically
from common.handlers.channel_overlays import ChannelOverlays
from common.handlers.healthy_brain import HealthyBrainSpecificity
from common.handlers.non_finite import StopOnNonFinite
from common.handlers.progress import ProgressBar
from common.handlers.replayable_loader import ReplayableLoader
from common.handlers.segmentation_report import SegmentationReport
from common.handlers.sparse_measure import SparseSegmentationMeasure
from common.handlers.staged_outputs import StagedOutputs
from common.handlers.tracking import PerClassMetrics, local_mlflow_store, loss_and_learning_rate
from common.handlers.training_checkpoint import TrainingCheckpoint, load_training_checkpoint

__all__ = [
    "ChannelOverlays",
    "HealthyBrainSpecificity",
    "PerClassMetrics",
    "ProgressBar",
    "ReplayableLoader",
    "SegmentationReport",
    "SparseSegmentationMeasure",
    "StagedOutputs",
    "StopOnNonFinite",
    "TrainingCheckpoint",
    "load_training_checkpoint",
    "local_mlflow_store",
    "loss_and_learning_rate",
    "save_atomically",
]
