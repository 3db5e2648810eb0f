"""Per-class summary of per-case segmentation measures, laid out as the tables of Roth et al. (Tables 1 and 2).

The paper (abdominal CT multi-organ 3D FCN, section III.B) reports, for each organ, the average, standard deviation,
minimum and maximum Dice over the cases, and a "Total Avg." row. The total row is the mean over the organs of each
column (Table 2: the std column 4.1, 6.8, 1.0, 0.8, 7.9, 15.7, 9.1 averages to the reported 6.5, the min column to
63.1), not statistics of the pooled values; :func:`total_row` reproduces that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TOTAL_ROW", "SUMMARY_COLUMNS", "summarize_per_class", "total_row", "format_table"]

TOTAL_ROW = "Total Avg."
"""Name of the row that averages every column over the classes, as in the paper's tables."""

SUMMARY_COLUMNS = ("avg", "std", "min", "max", "n")
"""Columns of a summary row: mean, population standard deviation (ddof=0), minimum, maximum, number of cases."""

_HEADINGS = {"avg": "Avg.", "std": "Std.", "min": "Min.", "max": "Max.", "n": "n"}


def _class_row(column: np.ndarray) -> dict[str, float]:
    """Summary of one class's per-case values, NaN (class absent in reference and prediction) skipped.

    Returns:
        ``{"avg", "std", "min", "max", "n"}``; all NaN and ``n`` 0 when every value is NaN.
    """
    valid = column[~np.isnan(column)]
    if valid.size == 0:
        return {"avg": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "avg": float(np.mean(valid)),
        "std": float(np.std(valid)),  # population std (numpy's default ddof=0); the paper does not say which
        "min": float(np.min(valid)),
        "max": float(np.max(valid)),
        "n": int(valid.size),
    }


def total_row(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over classes of every summary column: the "Total Avg." row of the paper's Tables 1 and 2 (sec. III.B).

    Args:
        per_class: class name -> row with the keys of :data:`SUMMARY_COLUMNS` (``n`` may be missing); rows whose
            value in a column is NaN (a class with no valid case) are skipped for that column.

    Returns:
        one row with the same keys; a column that is NaN for every class stays NaN.

    Raises:
        ValueError: when ``per_class`` is empty.
    """
    if len(per_class) == 0:
        raise ValueError("total_row needs at least one class row to average, got none.")
    total: dict[str, float] = {}
    for key in SUMMARY_COLUMNS:
        column = np.asarray([float(row[key]) for row in per_class.values() if key in row], dtype=np.float64)
        valid = column[~np.isnan(column)]
        if column.size:
            total[key] = float(np.mean(valid)) if valid.size else math.nan
    return total


def summarize_per_class(values: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Average, std, min, max and count of a per-case measure for each class, plus the paper's "Total Avg." row.

    Implements the evaluation of Roth et al., sec. III.B, Tables 1 and 2. The standard deviation is the population
    one (numpy's default ``ddof=0``); the paper does not say which it used. A NaN entry (MONAI's ``DiceMetric``
    gives NaN where a class is absent from the reference) is skipped for that class only, so ``n`` can differ
    between classes.

    Args:
        values: array-like ``[n_cases, n_classes]`` of per-case, per-class values (e.g. Dice in [0, 1]), such as
            ``engine.state.metric_details[name]`` of a MONAI metric handler with ``save_details=True``.
        class_names: one name per column of ``values``, in column order: the classes, or the measure's own
            columns (BraTS regions, a single ``"EF"``); ``"Total Avg."`` is reserved.

    Returns:
        ordered dict: class name -> ``{"avg", "std", "min", "max", "n"}``, then ``"Total Avg."`` whose every
        column is the mean over the classes of that column (NaN classes skipped).

    Raises:
        ValueError: when ``values`` is not 2-D, its column count differs from the number of names, or the names
            are not unique or include ``"Total Avg."``.
    """
    array = np.asarray(values, dtype=np.float64)
    names = [str(n) for n in class_names]
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D array [n_cases, n_classes], got shape {tuple(array.shape)}.")
    if array.shape[1] != len(names):
        raise ValueError(
            f"values have {array.shape[1]} metric columns but {len(names)} class names {names} were given; "
            "expected one name per column."
        )
    if len(set(names)) != len(names) or TOTAL_ROW in names:
        raise ValueError(f"class names must be unique and none of them '{TOTAL_ROW}', got {names}.")
    summary = {name: _class_row(array[:, i]) for i, name in enumerate(names)}
    summary[TOTAL_ROW] = total_row(summary)
    return summary


def format_table(
    summary: Mapping[str, Mapping[str, float]],
    title: str = "",
    measure: str = "Dice",
    percent: bool = True,
    digits: int = 1,
) -> str:
    """Text table of a :func:`summarize_per_class` result in the layout of the paper's Tables 1 and 2 (sec. III.B).

    Args:
        summary: class name -> row with the keys of :data:`SUMMARY_COLUMNS`, e.g. the output of
            :func:`summarize_per_class`.
        title: first line of the table (e.g. ``"Quantitative results ... in testing (n=37)."``); omitted if empty.
        measure: name of the measure in the header cell, e.g. ``"Dice"``.
        percent: show values multiplied by 100 with a ``%`` sign, as the paper does for Dice; otherwise as is.
        digits: decimals shown (the paper uses one).

    Returns:
        the table as one multi-line string; NaN shows as ``n/a``.
    """
    scale, suffix = (100.0, "%") if percent else (1.0, "")

    def cell(value: float) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}{suffix}"

    def count(value: float) -> str:
        if value is None or math.isnan(value):
            return "n/a"
        return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"

    header_label = f"{measure} (%)" if percent else measure
    first_width = max([len(header_label), *(len(str(name)) for name in summary)]) + 2
    value_columns = SUMMARY_COLUMNS[:-1]
    cells = {name: [cell(row.get(k, math.nan)) for k in value_columns] for name, row in summary.items()}
    width = max([7, *(len(c) + 2 for row in cells.values() for c in row)])
    lines = [title] if title else []
    lines.append(header_label.ljust(first_width) + "".join(_HEADINGS[k].rjust(width) for k in SUMMARY_COLUMNS))
    for name, row in summary.items():
        n_cell = count(row.get("n", math.nan))
        lines.append(str(name).ljust(first_width) + "".join(c.rjust(width) for c in cells[name]) + n_cell.rjust(width))
    return "\n".join(lines)
