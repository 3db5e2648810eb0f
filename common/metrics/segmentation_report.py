"""The evaluation report of per-case segmentation measures: per-case CSV, summary JSON, box plots and overlays.

:func:`write_segmentation_report` is the plain function behind :class:`common.handlers.SegmentationReport`; a test or
a script can call it with arrays it made. What each measure is (a ratio in [0, 1] or a value with a unit) and what
its columns are (the classes, or its own such as BraTS regions or a single ejection-fraction column) is declared per
measure with a :class:`MetricSpec`, so a new measure needs no new code here.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from monai.handlers.utils import write_metrics_reports
from monai.utils import convert_to_numpy

from common.data.writers import write_files_atomically
from common.metrics.summary import format_table, summarize_per_class
from common.visualize import OverlaySlice, plot_boxplots, plot_overlays

__all__ = ["MetricSpec", "write_segmentation_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    """How one measure of a segmentation report is named, scaled and laid out in columns.

    In a bundle config it is written as a plain dict under the handler's ``metric_specs``, e.g.
    ``{"val_cmd": {"label": "CMD", "unit": "mm"}, "val_ef": {"label": "EF", "unit": "%", "columns": ["EF"]},
    "val_brats_dice": {"label": "Dice", "columns": ["whole", "core", "enhancing"]}}``.

    Attributes:
        label: name of the measure in the table header and on the box plot's y axis, e.g. ``"Dice"``, ``"CMD"``;
            ``None``: ``"Dice"`` for a metric whose name contains ``dice`` (any case), else the metric's name.
        unit: ``None`` for a ratio in [0, 1] (Dice, Jaccard): the table shows percent and the box plot's y axis
            spans 0 to 1. Otherwise the unit the values are in, shown as they are and named in the headings:
            ``"mm"`` (contour mean distance), ``"%"`` (absolute volume difference, ejection fraction),
            ``"mm^3"``/``"cm^3"`` (volume difference), ``""`` for a dimensionless measure (temporal smoothness).
        columns: names of the measure's columns when they are not the classes, e.g. BraTS regions
            ``("whole", "core", "enhancing")`` or ``("EF",)`` for one value per case; ``None``: the class names.

    Raises:
        TypeError: when ``label`` or ``unit`` is not a string (or None), or ``columns`` is a single string.
        ValueError: when ``columns`` is empty or names a column twice.
    """

    label: str | None = None
    unit: str | None = None
    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for field in ("label", "unit"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"MetricSpec.{field} must be a string or None, got {value!r}.")
        if self.columns is not None:
            if isinstance(self.columns, str) or not isinstance(self.columns, Sequence):
                raise TypeError(f"MetricSpec.columns must be a list of names, got {self.columns!r}.")
            columns = tuple(str(c) for c in self.columns)
            if len(columns) == 0 or len(set(columns)) != len(columns):
                raise ValueError(f"MetricSpec.columns must be non-empty and unique, got {list(columns)}.")
            object.__setattr__(self, "columns", columns)

    @classmethod
    def from_value(cls, value: MetricSpec | Mapping[str, Any] | None) -> MetricSpec:
        """A spec from a config value: a :class:`MetricSpec`, a dict of its fields, or ``None`` for the defaults.

        Args:
            value: the spec as written in a config (``{"label": ..., "unit": ..., "columns": [...]}``).

        Returns:
            the :class:`MetricSpec`.

        Raises:
            TypeError: when ``value`` is of another type or the dict holds an unknown field.
        """
        if value is None:
            return cls()
        if isinstance(value, MetricSpec):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"label", "unit", "columns"})
            if unknown:
                raise TypeError(f"metric spec fields are 'label', 'unit' and 'columns', got also {unknown}.")
            return cls(**dict(value))
        raise TypeError(f"a metric spec must be a MetricSpec or a dict of its fields, got {value!r}.")

    @property
    def is_ratio(self) -> bool:
        """Whether the measure is a ratio in [0, 1] (``unit`` is None)."""
        return self.unit is None

    def measure(self, metric: str) -> str:
        """The measure's display name for the metric called ``metric``.

        Args:
            metric: the metric's name, e.g. ``"val_mean_dice"``.

        Returns:
            ``label``, or ``"Dice"`` when the name contains ``dice``, else ``metric``.
        """
        if self.label is not None:
            return self.label
        return "Dice" if "dice" in metric.lower() else metric

    def heading(self, metric: str) -> str:
        """Axis and table heading: the measure with its unit, e.g. ``"CMD (mm)"``; a ratio or ``""`` unit: none.

        Args:
            metric: the metric's name.

        Returns:
            the heading.
        """
        return f"{self.measure(metric)} ({self.unit})" if self.unit else self.measure(metric)


def json_safe(value: Any) -> Any:
    """A value JSON can hold.

    Returns:
        ``value`` with NaN/inf as None (JSON has no NaN) and numpy scalars as Python numbers, recursively.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def png_bytes(fig: Figure) -> bytes:
    """Render a figure.

    Returns:
        the PNG file's bytes.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _monai_csv(metric: str, values: np.ndarray, columns: Sequence[str], filenames: Sequence[str]) -> bytes:
    """MONAI's per-case CSV of one metric, made by ``write_metrics_reports`` in a scratch folder outside the report.

    Returns:
        the CSV file's bytes.
    """
    scratch = tempfile.mkdtemp(prefix="segmentation_report.")
    try:
        with warnings.catch_warnings():  # a case whose every column is NaN gets a NaN mean; numpy warns about it
            warnings.simplefilter("ignore", RuntimeWarning)
            write_metrics_reports(scratch, list(filenames), None, {metric: values}, None, class_labels=list(columns))
        with open(os.path.join(scratch, f"{metric}_raw.csv"), "rb") as f:
            return f.read()
    finally:
        shutil.rmtree(scratch)


def _check_file_part(kind: str, name: str) -> None:
    """Check that ``name`` can be part of a file name in the report folder.

    Raises:
        ValueError: when it is not a string or holds a path separator.
    """
    if not isinstance(name, str) or os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"{kind} becomes part of a file name and must not hold a path separator, got {name!r}.")


def write_segmentation_report(
    output_dir: str | os.PathLike,
    filenames: Sequence[str],
    metrics: Mapping[str, Any],
    column_names: Sequence[str],
    metric_specs: Mapping[str, MetricSpec | Mapping[str, Any]] | None = None,
    overlays: Sequence[OverlaySlice] = (),
    label_names: Mapping[int, str] | None = None,
    title: str = "Quantitative results of the segmentation",
    prefix: str = "",
) -> list[str]:
    """Write the per-case table, summary, box plot and overlays of a segmentation evaluation; log the tables.

    Implements the evaluation of Roth et al. (abdominal CT multi-organ 3D FCN), sec. III.B, Tables 1 and 2: per
    column the average, (population) standard deviation, minimum and maximum of the per-case values, and a
    "Total Avg." row averaging each statistic over the columns (:func:`common.metrics.summary.summarize_per_class`).
    For each metric ``m`` it writes into ``output_dir``:

    - ``<prefix><m>_per_case.csv``: MONAI's ``write_metrics_reports`` layout (reused as is), a ``filename``
      column, one column per class (or per named column) and the per-case ``mean`` over them;
    - ``<prefix><m>_summary.json``: ``{"metric", "measure", "unit", "n_cases", "std_ddof", "summary"}``, with
      ``summary`` the :func:`summarize_per_class` dict (NaN written as ``null``) and ``unit`` ``null`` for a ratio;
    - ``<prefix><m>_boxplot.png``: one box per column (y axis 0 to 1 for a ratio);

    and ``<prefix>overlays.png`` (image | reference | prediction per case) when ``overlays`` is not empty. The
    table of each metric in the paper's layout is logged at INFO (percent for a ratio, as is with the unit
    otherwise), then the files written.

    Every input is checked, every table computed and every figure drawn before ``output_dir`` is touched; each
    file is then written to a temporary file beside its target and moved into place, so a bad input or an
    interrupted run never leaves a partial report.

    MONAI's ``write_metrics_reports(summary_ops=...)`` summary is not used: its overall row summarises each case's
    mean over the classes, whereas the paper's "Total Avg." row averages each per-class statistic over the
    classes (the two differ, e.g. for the std and min columns), and it writes straight into its folder.

    Args:
        output_dir: folder of the report; created if missing.
        filenames: one name per case, in the row order of the metric arrays.
        metrics: metric name -> per-case values ``[n_cases, n_columns]`` (``[n_cases]`` for one column per
            case), e.g. ``engine.state.metric_details``; NaN marks a value that does not exist (class absent).
        column_names: names of the columns of every metric whose spec names none, e.g. the class names of labels
            1..N for a metric computed with ``include_background=False``.
        metric_specs: metric name -> :class:`MetricSpec` (or a dict of its fields); a metric without one is a
            ratio whose columns are ``column_names``.
        overlays: planes to draw in ``overlays.png``, one row each.
        label_names: label value -> name for the overlay legend.
        title: title of the tables and figures; `` (n=<cases>)`` is appended.
        prefix: prefix of every file name, e.g. ``"test_"``.

    Returns:
        the paths written, in order: per metric its CSV, JSON and box plot, then the overlays.

    Raises:
        TypeError: when ``filenames`` or ``column_names`` is a single string, ``metrics`` is not a dict, or a spec
            is of the wrong type.
        ValueError: when there is no metric, a spec names an unknown metric, a metric array is not
            ``[n_cases, n_columns]`` with one row per file name and one column per name, a column name repeats,
            or a metric name or the prefix holds a path separator.
    """
    if isinstance(filenames, str) or isinstance(column_names, str):
        raise TypeError("filenames and column_names must be lists of names, not a single string.")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict metric name -> per-case values, got {type(metrics).__name__}.")
    filenames = [str(f) for f in filenames]
    if len(metrics) == 0:
        raise ValueError("write_segmentation_report needs at least one metric, got none.")
    specs = {str(k): MetricSpec.from_value(v) for k, v in (metric_specs or {}).items()}
    unknown = sorted(set(specs) - set(metrics))
    if unknown:
        raise ValueError(f"metric_specs names metrics {unknown} that are not reported; metrics: {sorted(metrics)}.")
    _check_file_part("prefix", prefix)

    files: dict[str, bytes] = {}  # path -> content, all made before the first write
    tables: list[str] = []
    for metric, raw in metrics.items():
        _check_file_part("metric name", metric)
        spec = specs.get(metric, MetricSpec())
        columns = list(spec.columns) if spec.columns is not None else [str(c) for c in column_names]
        values = np.asarray(convert_to_numpy(raw), dtype=np.float64)
        values = values.reshape(-1, 1) if values.ndim == 1 else values
        if values.ndim != 2:
            raise ValueError(f"metric '{metric}' must be [n_cases, n_columns], got shape {tuple(values.shape)}.")
        if values.shape[0] != len(filenames):
            raise ValueError(
                f"metric '{metric}' has {values.shape[0]} rows but {len(filenames)} file names were given; "
                "expected one row per evaluated case."
            )
        if values.shape[1] != len(columns):
            raise ValueError(
                f"metric '{metric}' has {values.shape[1]} columns but {len(columns)} column names {columns}; "
                "expected one name per column (the class names of labels 1..N for a metric computed with "
                "include_background=False, or the metric's own MetricSpec columns)."
            )
        summary = summarize_per_class(values, columns)
        n_cases = len(filenames)
        heading = spec.heading(metric)
        tables.append(format_table(summary, f"{title} (n={n_cases}): {metric}", heading, percent=spec.is_ratio))
        base = os.path.join(str(output_dir), f"{prefix}{metric}")
        files[f"{base}_per_case.csv"] = _monai_csv(metric, values, columns, filenames)
        document = {
            "metric": metric,
            "measure": spec.measure(metric),
            "unit": spec.unit,
            "n_cases": n_cases,
            "std_ddof": 0,
            "summary": summary,
        }
        files[f"{base}_summary.json"] = json.dumps(json_safe(document), indent=2, allow_nan=False).encode()
        box = plot_boxplots(
            values, columns, f"{title} (n={n_cases})", heading, ylim=(0.0, 1.0) if spec.is_ratio else None
        )
        files[f"{base}_boxplot.png"] = png_bytes(box)
    if len(overlays) > 0:
        figure = plot_overlays(overlays, dict(label_names or {}), title=title)
        files[os.path.join(str(output_dir), f"{prefix}overlays.png")] = png_bytes(figure)

    for table in tables:
        logger.info("\n%s", table)
    os.makedirs(output_dir, exist_ok=True)  # even when nothing is written
    written = write_files_atomically(files)
    logger.info("segmentation report wrote:\n  %s", "\n  ".join(written))
    return written
