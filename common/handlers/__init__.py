"""Ignite handlers for the bundles' train/validate/evaluate workflows."""

from common.handlers.segmentation_report import SegmentationReport

__all__ = ["SegmentationReport"]
