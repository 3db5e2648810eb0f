"""Ignite handler collecting an evaluation's cases and writing its report through ``write_segmentation_report``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine
from monai.utils import convert_to_numpy, ensure_tuple, string_list_all_gather

from common.handlers.report_base import EpochReport, as_items, case_label_maps, case_name, parse_class_names
from common.metrics.segmentation_report import MetricSpec, write_segmentation_report
from common.metrics.sparse_measures import annotated_sections
from common.visualize import OverlaySlice, largest_foreground_slice

__all__ = ["DEFAULT_METRIC_NAMES", "OVERLAY_PLANES", "SegmentationReport"]

logger = logging.getLogger(__name__)

DEFAULT_METRIC_NAMES = ("val_mean_dice",)
"""Metric reported when none is named: the key metric name of the bundles' ``validate#key_metric``."""

OVERLAY_PLANES = ("largest", "annotated")
"""Which planes ``SegmentationReport`` draws per case: the axial plane with the largest reference foreground, or
every annotated cross-section of a sparse reference (any axis)."""


class SegmentationReport(EpochReport):
    """Ignite handler: per-case, per-class table, summary, box plots and overlays of a segmentation evaluation.

    A thin handler over :func:`common.metrics.segmentation_report.write_segmentation_report`, which does the
    writing (see it for the files, their layout and the paper section); this class only collects what an
    evaluator run holds. During the epoch it records each case's file name (``engine.state.batch``, decollated
    list of dicts or a dict of batches; ``image.meta["filename_or_obj"]`` or ``image_meta_dict``, else
    ``case_<index>``) and, for the first ``n_overlays`` cases, the planes to draw, taken from
    ``engine.state.output`` (``pred``/``label`` one-hot, argmax-ed when C > 1, or index maps with C = 1): with
    ``overlay_planes="largest"`` the plane with the largest reference foreground
    (:func:`common.visualize.largest_foreground_slice`: the image itself for 2-D ``[C, H, W]``, the axial slice for
    3-D ``[C, H, W, D]``, the frame and axial slice for 3-D + time ``[C, H, W, D, T]``); with
    ``overlay_planes="annotated"`` (3-D sparse references) every annotated cross-section of any axis
    (:func:`common.metrics.sparse_measures.annotated_sections`), one row each, as van de Leemput et al. Fig. 5. The
    grey image is the image's first channel, or ``display_image`` of all its channels (e.g. the weighted temporal
    average of a 4D CT's time points). At
    ``EPOCH_COMPLETED`` it reads ``engine.state.metric_details[name]`` (``[n_cases, n_columns]``, written by MONAI
    metric handlers with ``save_details=True`` and already all-gathered across ranks by them), gathers the file
    names from every rank with MONAI's ``string_list_all_gather`` and, on rank ``save_rank`` only, writes the
    report. Overlays are those of the cases rank ``save_rank`` saw.

    It follows MONAI's ``MetricsSaver`` (same events, same ``save_rank`` check and file-name gather) and writes the
    CSV through the same ``write_metrics_reports``, but is not a subclass of it: ``MetricsSaver.__call__`` writes
    straight into its folder (a failure leaves a partial report) under names without a prefix
    (``<metric>_raw.csv``), its file-name collection records ``"None"`` for a case without meta data, and it reads
    only ``engine.state.batch`` while the overlays need ``engine.state.output``.

    Args:
        output_dir: folder of the report; created if missing.
        class_names: label value -> name, e.g. ``{"1": "artery", ..., "7": "pancreas"}``, or a list naming labels
            1, 2, ... in order. They name the columns of every metric whose spec names none: the names of the
            values > 0, sorted by value (``include_background=False``), or all names when the metric has one
            column more and 0 is named. They also name the overlay legend.
        metric_names: names under which the metrics were attached (keys of ``engine.state.metric_details``).
        metric_specs: metric name -> :class:`common.metrics.segmentation_report.MetricSpec` or a dict of its
            fields (``label``, ``unit``: ``None`` for a ratio in [0, 1], else e.g. ``"mm"``; ``columns``: the
            metric's own column names). A metric without one is a ratio with one column per class.
        image_key: key of the image in the batch/output dicts.
        label_key: key of the reference in ``engine.state.output``.
        pred_key: key of the prediction in ``engine.state.output``.
        n_overlays: number of cases (the first ones seen) drawn in ``overlays.png``; 0 for none.
        overlay_planes: ``"largest"`` (one plane per case) or ``"annotated"`` (every annotated cross-section of a
            3-D reference, one row each); see :data:`OVERLAY_PLANES`.
        ignore_value: the reference's "not annotated" value, for ``overlay_planes="annotated"``.
        display_image: maps a case's image ``[C, *spatial]`` (numpy, float64) to the ``[*spatial]`` grey image of
            the overlays; ``None``: the first channel.
        display_window: ``(vmin, vmax)`` grey window in the image's (preprocessed) intensities; ``None``: the
            displayed volume's minimum and maximum.
        display_mask_key: key of a ``[1, *spatial]`` mask in the output or batch dicts (e.g. the cranial cavity)
            outside which the prediction is not drawn; a case without it shows the whole prediction. ``None``:
            the whole prediction.
        title: title of the tables and figures; `` (n=<cases>)`` is appended.
        prefix: prefix of every file name, e.g. ``"test_"``.
        save_rank: the rank that writes the files in a distributed run.

    Raises:
        TypeError: when ``class_names`` or a metric spec is of the wrong type.
        ValueError: when ``class_names`` is empty, has a non-integer or repeated label value or names no label
            > 0, ``metric_names`` is empty, ``metric_specs`` names a metric not in ``metric_names``, or
            ``n_overlays`` or ``save_rank`` is negative, ``overlay_planes`` is not one of :data:`OVERLAY_PLANES` or
            ``display_window`` is not two increasing numbers.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str | int, str] | Sequence[str],
        metric_names: str | Sequence[str] = DEFAULT_METRIC_NAMES,
        metric_specs: Mapping[str, MetricSpec | Mapping[str, Any]] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        n_overlays: int = 4,
        title: str = "Quantitative results of the segmentation",
        prefix: str = "",
        save_rank: int = 0,
        overlay_planes: str = "largest",
        ignore_value: int = 0,
        display_image: Callable[[np.ndarray], Any] | None = None,
        display_window: Sequence[float] | None = None,
        display_mask_key: str | None = None,
    ) -> None:
        self.output_dir = str(output_dir)
        self.class_names = parse_class_names(class_names)
        self.metric_names = tuple(str(m) for m in ensure_tuple(metric_names))
        if len(self.metric_names) == 0:
            raise ValueError("metric_names must name at least one metric, got none.")
        self.metric_specs = {str(k): MetricSpec.from_value(v) for k, v in (metric_specs or {}).items()}
        unknown = sorted(set(self.metric_specs) - set(self.metric_names))
        if unknown:
            raise ValueError(f"metric_specs names {unknown}, which are not in metric_names {self.metric_names}.")
        if int(n_overlays) < 0:
            raise ValueError(f"n_overlays must be an integer >= 0, got {n_overlays}.")
        if int(save_rank) < 0:
            raise ValueError(f"save_rank must be an integer >= 0, got {save_rank}.")
        if overlay_planes not in OVERLAY_PLANES:
            raise ValueError(f"overlay_planes must be one of {OVERLAY_PLANES}, got {overlay_planes!r}.")
        if display_window is not None:
            window = tuple(float(v) for v in display_window)
            if len(window) != 2 or not window[1] > window[0]:
                raise ValueError(f"display_window must be (vmin, vmax) with vmax > vmin, got {display_window!r}.")
            display_window = window
        self.n_overlays = int(n_overlays)
        self.overlay_planes = overlay_planes
        self.ignore_value = int(ignore_value)
        self.display_image = display_image
        self.display_window = display_window
        self.display_mask_key = display_mask_key
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.title = title
        self.prefix = prefix
        self.save_rank = int(save_rank)
        self._filenames: list[str] = []
        self._overlays: list[OverlaySlice] = []
        self._overlay_cases = 0

    def _started(self, _engine: Engine) -> None:
        """Clear the buffers of the previous epoch."""
        self._filenames = []
        self._overlays = []
        self._overlay_cases = 0

    def iteration_completed(self, engine: Engine) -> None:
        """Record the case names of this iteration and the overlay planes of the first ``n_overlays`` cases.

        Args:
            engine: Ignite Engine whose ``state.batch`` / ``state.output`` hold the current cases.
        """
        batch_items = as_items(engine.state.batch)
        output_items = as_items(engine.state.output)
        for i in range(max(len(batch_items), len(output_items))):
            batch = batch_items[i] if i < len(batch_items) else None
            name = case_name(batch, self.image_key, len(self._filenames))
            self._filenames.append(name)
            if self._overlay_cases < self.n_overlays and i < len(output_items):
                self._overlays.extend(self._overlay_slices(name, output_items[i], batch))
                self._overlay_cases += 1

    def _overlay_slices(self, name: str, output: Any, batch: Any) -> list[OverlaySlice]:
        """The planes of one case to draw (see ``overlay_planes``) with its grey image, reference and prediction.

        Returns:
            the case's :class:`OverlaySlice` list: one plane, or one per annotated cross-section (none when the
            reference holds no annotation).

        Raises:
            ValueError: when the output lacks the prediction or reference, the shapes disagree, or annotated planes
                are asked of a reference that is not 3-D.
        """
        keys = (self.image_key, self.label_key, self.pred_key)
        image, reference, prediction = case_label_maps(output, batch, keys, name, "overlays (or n_overlays=0) need")
        if image is None:
            volume = reference.astype(np.float64)
        else:
            volume = convert_to_numpy(image).astype(np.float64)
            if volume.ndim == reference.ndim + 1:
                volume = volume[0] if self.display_image is None else convert_to_numpy(self.display_image(volume))
            volume = np.asarray(volume, dtype=np.float64)
        if not (volume.shape == reference.shape == prediction.shape):
            raise ValueError(
                f"case '{name}': image {volume.shape}, reference {reference.shape} and prediction "
                f"{prediction.shape} must have the same spatial shape."
            )
        mask = None
        if self.display_mask_key is not None:
            mask = output.get(self.display_mask_key)
            if mask is None and isinstance(batch, Mapping):
                mask = batch.get(self.display_mask_key)
        if mask is not None:
            mask = convert_to_numpy(mask)
            mask = mask[0] if mask.ndim == reference.ndim + 1 else mask
            if mask.shape != reference.shape:
                raise ValueError(
                    f"case '{name}': '{self.display_mask_key}' {mask.shape} and reference {reference.shape} must "
                    "have the same spatial shape."
                )
            prediction = np.where(mask > 0, prediction, 0)
        window = self.display_window or (float(np.min(volume)), float(np.max(volume)))  # preprocessed range
        short_name = os.path.basename(name.rstrip("/\\")) or name
        if self.overlay_planes == "largest":
            planes = [(2, largest_foreground_slice(reference))]
        elif reference.ndim != 3:
            raise ValueError(
                f"case '{name}': overlay_planes='annotated' needs a 3-D reference, got shape {reference.shape}."
            )
        else:
            planes = [(axis, (index,)) for axis, index in annotated_sections(reference, self.ignore_value)]
        slices = []
        for axis, index in planes:
            where: list[Any] = [slice(None)] * reference.ndim
            if index:
                where[axis] = index[0]
                where[3:] = index[1:]
            plane = tuple(where)
            slices.append(
                OverlaySlice(short_name, volume[plane], reference[plane], prediction[plane], window, index, axis)
            )
        return slices

    def _spec(self, metric: str, n_columns: int) -> MetricSpec:
        """The metric's spec as declared, or with every class name as columns when it fits that count instead.

        Returns:
            the spec; a metric without named columns whose column count is that of all class names including
            background 0 (not that of the foreground names) gets all names as its columns.
        """
        spec = self.metric_specs.get(metric, MetricSpec())
        n_foreground = sum(1 for v in self.class_names if v > 0)
        with_background = 0 in self.class_names and n_columns == len(self.class_names) != n_foreground
        return (
            replace(spec, columns=tuple(self.class_names.values()))
            if spec.columns is None and with_background
            else spec
        )

    def __call__(self, engine: Engine) -> None:
        """Gather the case names, check every metric, then write the report (rank ``save_rank`` only).

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``, after its metrics were computed.

        Raises:
            ValueError: when ``save_rank`` is not below the world size, or (before anything is written) a metric
                is missing from ``engine.state.metric_details`` or does not fit the case names and column names.
        """
        world_size = self._check_save_rank()
        filenames = string_list_all_gather(strings=self._filenames) if world_size > 1 else list(self._filenames)
        if idist.get_rank() != self.save_rank:
            return
        details = getattr(engine.state, "metric_details", None) or {}
        metrics: dict[str, np.ndarray] = {}
        specs: dict[str, MetricSpec] = {}
        for metric in self.metric_names:
            if details.get(metric) is None:
                raise ValueError(
                    f"no metric_details['{metric}'] (available: {sorted(details)}); attach the metric under that "
                    "name with save_details=True."
                )
            metrics[metric] = np.asarray(convert_to_numpy(details[metric]), dtype=np.float64)
            n_columns = metrics[metric].shape[1] if metrics[metric].ndim == 2 else 1
            specs[metric] = self._spec(metric, n_columns)
        write_segmentation_report(
            self.output_dir,
            filenames,
            metrics,
            column_names=[n for v, n in self.class_names.items() if v > 0],
            metric_specs=specs,
            overlays=self._overlays,
            label_names=self.class_names,
            title=self.title,
            prefix=self.prefix,
        )
