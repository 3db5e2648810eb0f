"""Ignite handlers for the bundles' train/validate/evaluate/infer workflows."""

from common.handlers.segmentation_report import SegmentationReport
from common.handlers.staged_outputs import StagedOutputs

__all__ = ["SegmentationReport", "StagedOutputs"]
