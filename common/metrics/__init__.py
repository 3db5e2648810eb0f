"""Segmentation measures and their summaries (one concept per module)."""

from common.metrics.summary import SUMMARY_COLUMNS, TOTAL_ROW, format_table, summarize_per_class, total_row

__all__ = ["SUMMARY_COLUMNS", "TOTAL_ROW", "format_table", "summarize_per_class", "total_row"]
