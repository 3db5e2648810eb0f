"""Segmentation measures, their summaries and the evaluation report (one concept per module)."""

from common.metrics.segmentation_report import MetricSpec, write_segmentation_report
from common.metrics.summary import SUMMARY_COLUMNS, TOTAL_ROW, format_table, summarize_per_class, total_row

__all__ = [
    "SUMMARY_COLUMNS",
    "TOTAL_ROW",
    "MetricSpec",
    "format_table",
    "summarize_per_class",
    "total_row",
    "write_segmentation_report",
]
