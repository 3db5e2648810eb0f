"""Ignite handler writing the paper's per-class evaluation report (CSV, summary JSON, box plots, overlays)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine, Events
from monai.data import decollate_batch
from monai.handlers.utils import write_metrics_reports
from monai.utils import ImageMetaKey, convert_to_numpy, ensure_tuple, string_list_all_gather

from common.data.errors import BundleInputError
from common.data.writers import atomic_path
from common.metrics.summary import format_table, summarize_per_class
from common.visualize import OverlaySlice, largest_foreground_slice, plot_boxplots, plot_overlays

__all__ = ["SegmentationReport"]

logger = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _as_items(data: Any) -> list[Any]:
    """Engine batch/output as a list of per-case items: decollated list as is, a dict of batches decollated."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return decollate_batch(data, detach=True)
    return []


def _index_map(x: Any, key: str) -> np.ndarray:
    """``[C, H, W, D]`` one-hot/probabilities (argmax over C) or ``[1, H, W, D]`` index map -> ``[H, W, D]`` ints."""
    array = convert_to_numpy(x)
    if array.ndim != 4:
        raise BundleInputError(
            None, f"'{key}' of shape {tuple(array.shape)}", "channel-first 3-D data [C, H, W, D] (one-hot or index)"
        )
    return (np.argmax(array, axis=0) if array.shape[0] > 1 else np.rint(array[0])).astype(np.int64)


class SegmentationReport:
    """Ignite handler: per-case, per-class table, summary, box plots and overlays of a segmentation evaluation.

    Implements the evaluation of Roth et al. (abdominal CT multi-organ 3D FCN), sec. III.B, Tables 1 and 2, for a
    MONAI ``SupervisedEvaluator``: per class the average, (population) standard deviation, minimum and maximum of
    the per-case values of each metric, and a "Total Avg." row averaging each column over the classes
    (:func:`common.metrics.summary.summarize_per_class`).

    During the epoch it records each case's file name (``engine.state.batch``, decollated list of dicts or a dict
    of batches; ``image.meta["filename_or_obj"]`` or ``image_meta_dict``) and, for the first ``n_overlays`` cases,
    the axial slice (last array axis) with the largest reference foreground, taken from ``engine.state.output``
    (``pred``/``label`` as one-hot ``[C, H, W, D]``, argmax-ed when C > 1, or index maps ``[1, H, W, D]``).
    At ``EPOCH_COMPLETED`` it reads ``engine.state.metric_details[name]`` (``[n_cases, n_classes]``, written by
    MONAI metric handlers with ``save_details=True``) and writes, into ``output_dir``:

    - ``<prefix><metric>_per_case.csv``: MONAI's ``write_metrics_reports`` layout, a ``filename`` column, one
      column per class and the per-case ``mean`` over classes;
    - ``<prefix><metric>_summary.json``: ``{"metric", "n_cases", "std_ddof", "summary"}`` with ``summary`` the
      :func:`summarize_per_class` dict (NaN written as ``null``);
    - ``<prefix><metric>_boxplot.png``: per-class box plots;
    - ``<prefix>overlays.png``: image | reference | prediction per case (when ``n_overlays > 0``).

    It logs the table in the paper's layout at INFO, then each file written. Every file is written to a temporary
    file in ``output_dir`` and moved into place, and all inputs are checked before the first write, so a failed
    or interrupted run never leaves a partial report. In a distributed run file names are gathered from every
    rank (MONAI already all-gathers ``metric_details``) and only rank ``save_rank`` writes.

    Args:
        output_dir: folder of the report; created if missing.
        class_names: label value -> name, e.g. ``{"1": "artery", ..., "7": "pancreas"}``, or a list naming labels
            1, 2, ... in order. Background (0) is excluded from the measures: the names of the values > 0, sorted
            by value, name the metric columns (``include_background=False``); if the metric has one column more
            and 0 is named, all names are used.
        metric_names: names under which the metrics were attached (keys of ``engine.state.metric_details``).
        image_key: key of the image in the batch/output dicts.
        label_key: key of the reference in ``engine.state.output``.
        pred_key: key of the prediction in ``engine.state.output``.
        n_overlays: number of cases (the first ones seen) drawn in ``overlays.png``; 0 for none.
        title: title of the table and figures; `` (n=<cases>)`` is appended to the table title.
        prefix: prefix of every file name, e.g. ``"test_"``.
        ratio_metrics: metrics valued in [0, 1] (table in percent, box plot y axis 0-1); default: all of
            ``metric_names``. Other metrics are shown as they are.
        save_rank: the rank that writes the files in a distributed run.

    Raises:
        BundleInputError: on bad arguments here; at epoch end, before writing anything, when a metric is missing
            from ``metric_details`` or its column count differs from the number of class names.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str | int, str] | Sequence[str],
        metric_names: str | Sequence[str] = ("val_mean_dice",),
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        n_overlays: int = 4,
        title: str = "Quantitative results of the segmentation",
        prefix: str = "",
        ratio_metrics: Sequence[str] | None = None,
        save_rank: int = 0,
    ) -> None:
        self.output_dir = str(output_dir)
        self.class_names = self._parse_class_names(class_names)
        self.metric_names = tuple(str(m) for m in ensure_tuple(metric_names))
        if len(self.metric_names) == 0:
            raise BundleInputError(None, "metric_names=()", "at least one metric name")
        self.ratio_metrics = self.metric_names if ratio_metrics is None else tuple(ensure_tuple(ratio_metrics))
        unknown = [m for m in self.ratio_metrics if m not in self.metric_names]
        if unknown:
            raise BundleInputError(None, f"ratio_metrics {unknown}", f"a subset of metric_names {self.metric_names}")
        if int(n_overlays) < 0:
            raise BundleInputError(None, f"n_overlays={n_overlays}", "an integer >= 0")
        self.n_overlays = int(n_overlays)
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.title = title
        self.prefix = prefix
        self.save_rank = int(save_rank)
        self._filenames: list[str] = []
        self._overlays: list[OverlaySlice] = []

    @staticmethod
    def _parse_class_names(class_names: Mapping[str | int, str] | Sequence[str]) -> dict[int, str]:
        """Label value -> name; a list names labels 1, 2, ... in order."""
        if isinstance(class_names, str) or not isinstance(class_names, (Mapping, Sequence)) or not class_names:
            raise BundleInputError(
                None, f"class_names={class_names!r}", "a non-empty dict label value -> name or list of names"
            )
        items = class_names.items() if isinstance(class_names, Mapping) else enumerate(class_names, start=1)
        parsed: dict[int, str] = {}
        for value, name in items:
            try:
                label = int(value)
            except (TypeError, ValueError) as err:
                raise BundleInputError(None, f"class_names key {value!r}", "integer label values like '1'") from err
            if label < 0 or label in parsed or not str(name):
                raise BundleInputError(
                    None, f"class_names entry {value!r}: {name!r}", "unique label values >= 0 with non-empty names"
                )
            parsed[label] = str(name)
        if not any(v > 0 for v in parsed):
            raise BundleInputError(None, f"class_names={class_names!r}", "at least one label value > 0")
        return dict(sorted(parsed.items()))

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (an evaluator): reset at epoch start, collect per iteration, report.

        Args:
            engine: Ignite Engine, typically a MONAI ``SupervisedEvaluator`` with the metrics already attached.
        """
        if not engine.has_event_handler(self._started, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, _engine: Engine) -> None:
        """Clear the buffers of the previous epoch."""
        self._filenames = []
        self._overlays = []

    def iteration_completed(self, engine: Engine) -> None:
        """Record the case names of this iteration and the overlay slices of the first ``n_overlays`` cases.

        Args:
            engine: Ignite Engine whose ``state.batch`` / ``state.output`` hold the current cases.
        """
        batch_items = _as_items(engine.state.batch)
        output_items = _as_items(engine.state.output)
        n_items = max(len(batch_items), len(output_items))
        for i in range(n_items):
            name = self._case_name(batch_items[i] if i < len(batch_items) else None, len(self._filenames))
            self._filenames.append(name)
            if len(self._overlays) < self.n_overlays and i < len(output_items):
                self._overlays.append(
                    self._overlay_slice(name, output_items[i], batch_items[i] if i < len(batch_items) else None)
                )

    def _case_name(self, item: Any, index: int) -> str:
        """``filename_or_obj`` of the item's image (MetaTensor meta or ``<image_key>_meta_dict``), else an index."""
        name = None
        if isinstance(item, Mapping):
            image = item.get(self.image_key)
            meta = getattr(image, "meta", None) or item.get(f"{self.image_key}_meta_dict") or {}
            name = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
        if isinstance(name, (list, tuple)) and len(name) == 1:
            name = name[0]
        return f"case_{index:04d}" if name is None or name == "" else str(name)

    def _overlay_slice(self, name: str, output: Any, batch: Any) -> OverlaySlice:
        """Axial slice with the largest reference foreground of one case's image, reference and prediction."""
        if not isinstance(output, Mapping) or self.label_key not in output or self.pred_key not in output:
            found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
            raise BundleInputError(
                name, f"engine output {found}", f"dicts with '{self.pred_key}' and '{self.label_key}' for overlays"
            )
        image = output.get(self.image_key)
        if image is None and isinstance(batch, Mapping):
            image = batch.get(self.image_key)
        reference = _index_map(output[self.label_key], self.label_key)
        prediction = _index_map(output[self.pred_key], self.pred_key)
        if image is None:
            volume = reference.astype(np.float64)
        else:
            volume = convert_to_numpy(image).astype(np.float64)
            volume = volume[0] if volume.ndim == 4 else volume
        if not (volume.shape == reference.shape == prediction.shape):
            raise BundleInputError(
                name,
                f"image {volume.shape}, reference {reference.shape}, prediction {prediction.shape}",
                "the same spatial shape for image, reference and prediction",
            )
        z = largest_foreground_slice(reference)
        window = (float(np.min(volume)), float(np.max(volume)))  # CT window of the preprocessed intensities
        return OverlaySlice(
            os.path.basename(name.rstrip("/\\")) or name,
            volume[..., z],
            reference[..., z],
            prediction[..., z],
            window,
            z,
        )

    def _column_names(self, metric: str, n_columns: int) -> list[str]:
        """Class names of the metric columns: labels > 0 in order, or all labels if 0 is named and fits."""
        foreground = [n for v, n in self.class_names.items() if v > 0]
        if n_columns == len(foreground):
            return foreground
        if 0 in self.class_names and n_columns == len(self.class_names):
            return list(self.class_names.values())
        raise BundleInputError(
            None,
            f"{n_columns} columns in metric_details['{metric}'] but {len(foreground)} foreground class names "
            f"{foreground}",
            "one class name per metric column (labels 1..N when the metric has include_background=False)",
        )

    def _path(self, name: str) -> str:
        return os.path.join(self.output_dir, f"{self.prefix}{name}")

    def __call__(self, engine: Engine) -> None:
        """Check every metric, then write the report files (rank ``save_rank`` only) and log the tables.

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``, after its metrics were computed.
        """
        world_size = idist.get_world_size()
        if self.save_rank >= world_size:
            raise BundleInputError(None, f"save_rank={self.save_rank}", f"a rank below the world size {world_size}")
        filenames = string_list_all_gather(strings=self._filenames) if world_size > 1 else list(self._filenames)
        if idist.get_rank() != self.save_rank:
            return

        details = getattr(engine.state, "metric_details", None) or {}
        tables: dict[str, tuple[np.ndarray, list[str]]] = {}
        for metric in self.metric_names:
            if metric not in details or details[metric] is None:
                raise BundleInputError(
                    None,
                    f"no metric_details['{metric}'] (available: {sorted(details)})",
                    "a metric attached under that name with save_details=True",
                )
            values = convert_to_numpy(details[metric]).astype(np.float64)
            values = values.reshape(-1, 1) if values.ndim == 1 else values
            if values.ndim != 2:
                raise BundleInputError(
                    None, f"metric_details['{metric}'] of shape {values.shape}", "[n_cases, n_classes]"
                )
            if values.shape[0] != len(filenames):
                raise BundleInputError(
                    None,
                    f"{values.shape[0]} rows in metric_details['{metric}'] but {len(filenames)} cases seen",
                    "one metric row per evaluated case",
                )
            tables[metric] = (values, self._column_names(metric, values.shape[1]))

        os.makedirs(self.output_dir, exist_ok=True)
        written: list[str] = []
        for metric, (values, columns) in tables.items():
            written += self._write_metric(metric, values, columns, filenames)
        if self._overlays:
            fig = plot_overlays(self._overlays, self.class_names, title=self.title)
            path = self._path("overlays.png")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png")
            written.append(path)
        logger.info("SegmentationReport wrote:\n  %s", "\n  ".join(written))

    def _write_metric(self, metric: str, values: np.ndarray, columns: list[str], filenames: list[str]) -> list[str]:
        """Write the CSV, JSON and box plot of one metric and log its table; return the paths written."""
        ratio = metric in self.ratio_metrics
        summary = summarize_per_class(values, columns)
        n_cases = int(values.shape[0])
        measure = "Dice" if "dice" in metric.lower() else metric
        table = format_table(summary, f"{self.title} (n={n_cases}): {metric}", measure=measure, percent=ratio)
        logger.info("\n%s", table)

        csv_path = self._path(f"{metric}_per_case.csv")
        staging = tempfile.mkdtemp(dir=self.output_dir, prefix=".report.")
        try:  # MONAI's own CSV layout, staged in a temporary folder then moved into place atomically
            write_metrics_reports(staging, filenames, None, {metric: values}, None, class_labels=list(columns))
            os.replace(os.path.join(staging, f"{metric}_raw.csv"), csv_path)
        finally:
            shutil.rmtree(staging)

        json_path = self._path(f"{metric}_summary.json")
        document = {"metric": metric, "n_cases": n_cases, "std_ddof": 0, "summary": summary}
        with atomic_path(json_path) as tmp, open(tmp, "w") as f:
            json.dump(_json_safe(document), f, indent=2, allow_nan=False)

        box_path = self._path(f"{metric}_boxplot.png")
        fig = plot_boxplots(
            values,
            columns,
            title=f"{self.title} (n={n_cases})",
            ylabel=measure,
            ylim=(0.0, 1.0) if ratio else None,
        )
        with atomic_path(box_path) as tmp:
            fig.savefig(tmp, format="png")
        return [csv_path, json_path, box_path]
