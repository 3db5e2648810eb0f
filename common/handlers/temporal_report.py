"""Ignite handler reporting frame Dice, temporal smoothness and ejection fraction of 4D segmentations (sec. 4).

Implements the evaluation of the cardiac 4D CCTA paper (4D CNN with sparse temporal labels), section 4 and Table 2:
the Dice score "frame by frame" on the annotated frames, the temporal smoothness of the produced label maps (the L2
norm of the first-order time derivative and the average surface distance between consecutive frames), and the
ejection fraction analysis (EF from the minimum and maximum predicted LV cavity volume over the cycle, a reduced
EF < 55 % detected against the clinical reports). The measures themselves are the plain functions of
:mod:`common.metrics.temporal`; :func:`temporal_case_measures` gathers them for one case and
:class:`TemporalSegmentationReport` collects them over an evaluation and writes the report.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from monai.utils import convert_to_numpy, string_list_all_gather

from common.data.writers import write_files_atomically
from common.handlers.report_base import EpochReport, as_items, index_map, meta_name, parse_class_names
from common.metrics.segmentation_report import json_safe, png_bytes
from common.metrics.summary import format_table, summarize_per_class
from common.metrics.temporal import (
    EF_REDUCED_THRESHOLD,
    consecutive_frame_surface_distance,
    ef_detection,
    ejection_fraction,
    frame_dice,
    lv_volume_curve,
    temporal_smoothness_l2,
)
from common.visualize import OVERLAY_ALPHA, label_colour, new_figure, to_radiological

__all__ = ["REFERENCE_OUTLINE_COLOUR", "TemporalSegmentationReport", "temporal_case_measures"]

logger = logging.getLogger(__name__)

REFERENCE_OUTLINE_COLOUR = "lime"
"""Colour of the reference outlines in ``<prefix>_through_time.png`` (the prediction is filled in label colours)."""

_CLASS_MEASURES = {  # per-class measure -> unit in the summary (None: a ratio in [0, 1])
    "frame_dice": None,
    "smoothness_l2": "sqrt(ml)",
    "surface_distance": "mm",
    "ref_smoothness_l2": "sqrt(ml)",
    "ref_surface_distance": "mm",
}
_CASE_MEASURES = {"edv_ml": ("EDV", "ml"), "esv_ml": ("ESV", "ml"), "ef_percent": ("EF", "%")}


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (not None, not NaN).

    Returns:
        True for a finite number.
    """
    return value is not None and math.isfinite(float(value))


def temporal_case_measures(
    pred: Any,
    label: Any,
    spacing: Sequence[float],
    classes: Sequence[int] = (1, 2),
    lv_class: int = 1,
    ignore_value: int = 255,
    surface_distance: bool = True,
) -> dict[str, Any]:
    """The section 4 / Table 2 measures of one 4D case: frame Dice, smoothness, LV volume curve and EF.

    Smoothness (:func:`~common.metrics.temporal.temporal_smoothness_l2`, and with ``surface_distance``
    :func:`~common.metrics.temporal.consecutive_frame_surface_distance`) is measured on the prediction, as Table 2
    measures the networks' outputs; on the reference only when it is dense (every frame annotated), else NaN.

    Args:
        pred: predicted class map ``[X, Y, Z, T]`` (or ``[1, X, Y, Z, T]``).
        label: reference class map of the same shape, ``ignore_value`` in its unannotated frames.
        spacing: voxel size in mm of the 3D frames (three values).
        classes: the classes measured (1 LV cavity, 2 LV myocardium).
        lv_class: the class of the LV cavity (volume curve and EF).
        ignore_value: the reference's value of unannotated frames.
        surface_distance: whether to compute the consecutive-frame surface distances.

    Returns:
        ``{"n_frames", "annotated_frames": [t, ...], "frame_dice": {c: mean Dice over the annotated frames, NaN
        without any}, "smoothness_l2": {c: sqrt(ml)}, "surface_distance": {c: mm} (only with surface_distance),
        "reference_dense": bool, "ref_smoothness_l2": {c}, "ref_surface_distance": {c} (NaN unless dense),
        "lv_volume_ml": [ml per frame], "ref_lv_volume_ml": [ml per annotated frame], "ed_frame", "es_frame"
        (first frame of the largest / smallest predicted volume), "edv_ml", "esv_ml", "ef_percent" (NaN when the
        prediction has no LV cavity in any frame)}``.

    Raises:
        ValueError: maps that are not 4D, of different shapes, with fewer than 2 frames, or a bad spacing.
    """
    pred_np = np.asarray(convert_to_numpy(pred))
    label_np = np.asarray(convert_to_numpy(label))
    pred_np = pred_np[0] if pred_np.ndim == 5 and pred_np.shape[0] == 1 else pred_np
    label_np = label_np[0] if label_np.ndim == 5 and label_np.shape[0] == 1 else label_np
    if pred_np.ndim != 4 or pred_np.shape != label_np.shape:
        raise ValueError(
            f"pred and label must be class maps [X, Y, Z, T] of one shape, got {pred_np.shape} and {label_np.shape}."
        )
    classes = [int(c) for c in classes]
    n_frames = int(pred_np.shape[-1])
    annotated = [t for t in range(n_frames) if not np.any(label_np[..., t] == ignore_value)]
    if annotated:
        dice = frame_dice(pred_np, label_np, classes, ignore_value)["dice"]
    else:
        dice = dict.fromkeys(classes, math.nan)
    result: dict[str, Any] = {"n_frames": n_frames, "annotated_frames": annotated, "frame_dice": dice}
    result["smoothness_l2"] = temporal_smoothness_l2(pred_np, classes, spacing)
    if surface_distance:
        result["surface_distance"] = consecutive_frame_surface_distance(pred_np, classes, spacing=spacing)
    dense = len(annotated) == n_frames
    result["reference_dense"] = dense
    result["ref_smoothness_l2"] = (
        temporal_smoothness_l2(label_np, classes, spacing) if dense else dict.fromkeys(classes, math.nan)
    )
    if surface_distance:
        result["ref_surface_distance"] = (
            consecutive_frame_surface_distance(label_np, classes, spacing=spacing)
            if dense
            else dict.fromkeys(classes, math.nan)
        )
    volumes = lv_volume_curve(pred_np, lv_class, spacing=spacing)
    reference = lv_volume_curve(label_np, lv_class, spacing=spacing)
    ed, es = int(np.argmax(volumes)), int(np.argmin(volumes))
    result.update(
        lv_volume_ml=volumes.tolist(),
        ref_lv_volume_ml=[float(reference[t]) for t in annotated],
        ed_frame=ed,
        es_frame=es,
        edv_ml=float(volumes[ed]),
        esv_ml=float(volumes[es]),
        ef_percent=ejection_fraction(volumes) if volumes.max() > 0 else math.nan,
    )
    return result


def _slug(name: str) -> str:
    """A class name as part of a metric or column name: lower case, runs of other characters as ``_``.

    Returns:
        e.g. ``"lv_cavity"`` for ``"LV cavity"``.
    """
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _window(values: Sequence[float] | None, name: str) -> tuple[float, float] | None:
    """Two increasing numbers.

    Returns:
        ``(low, high)``, or None for None.

    Raises:
        ValueError: when not two finite increasing numbers.
    """
    if values is None:
        return None
    pair = tuple(float(v) for v in values)
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair) or not pair[1] > pair[0]:
        raise ValueError(f"{name} must be two finite numbers (low, high) with high > low, got {values!r}.")
    return pair


def _spacing_of(arrays: Sequence[Any], name: str) -> tuple[float, float, float]:
    """Voxel size (mm) of the 3D frames from the first MetaTensor's 4x4 affine among ``arrays``.

    Returns:
        three column norms of the affine's upper-left 3x3 block.

    Raises:
        ValueError: when none of them carries an affine.
    """
    for array in arrays:
        affine = getattr(array, "affine", None)
        if affine is not None:
            matrix = np.asarray(convert_to_numpy(affine), dtype=np.float64)
            matrix = matrix[0] if matrix.ndim == 3 else matrix
            if matrix.shape[0] >= 3 and matrix.shape[1] >= 3:
                return tuple(float(s) for s in np.linalg.norm(matrix[:3, :3], axis=0))
    raise ValueError(
        f"case '{name}': the prediction, reference and image carry no affine to take the voxel size from; pass "
        "MetaTensors (as MONAI's loaders and post-transforms give)."
    )


@dataclass
class _ThroughTime:
    """The axial slice of one case to draw at every frame: image, prediction, reference ``[X, Y, T]``."""

    name: str
    z: int
    image: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray
    annotated: list[int]
    aspect: float


def _mid_ventricular_slice(prediction: np.ndarray, reference: np.ndarray, annotated: list[int], lv_class: int) -> int:
    """The axial slice through the centre of the LV cavity: of the prediction, else the annotated reference.

    Returns:
        the rounded mean z of the cavity's voxels over all frames (half up); the middle slice without any.
    """
    mask = prediction == lv_class
    if not mask.any() and annotated:
        mask = reference[..., annotated] == lv_class
    if not mask.any():
        return prediction.shape[2] // 2
    return int(math.floor(float(np.nonzero(mask)[2].mean()) + 0.5))


def _outline(ax: Any, mask: np.ndarray) -> None:
    """Draw the boundary of a 2-D boolean mask (already re-oriented for display), if it has one."""
    if 0 < int(mask.sum()) < mask.size:
        ax.contour(mask.astype(np.float64), levels=[0.5], colors=[REFERENCE_OUTLINE_COLOUR], linewidths=1.2)


def _plot_through_time(
    cases: Sequence[_ThroughTime],
    records: Sequence[Mapping[str, Any]],
    class_names: Mapping[int, str],
    window: tuple[float, float],
    title: str,
) -> Figure:
    """One row per case, one column per frame: the mid-ventricular slice, prediction filled, reference outlined.

    Returns:
        the figure (Agg canvas).
    """
    n_frames = max(c.image.shape[-1] for c in cases)
    values = [v for v in class_names if v > 0]
    top = max([*values, *(int(c.prediction.max()) for c in cases), 1])
    cmap = ListedColormap([label_colour(v) for v in range(top + 1)])
    panel = 1.5
    height = panel * 1.15 * len(cases) + 1.2
    fig = new_figure(panel * n_frames + 1.0, height)
    for row, (case, record) in enumerate(zip(cases, records, strict=True)):
        for t in range(case.image.shape[-1]):
            ax = fig.add_subplot(len(cases), n_frames, row * n_frames + t + 1)
            ax.imshow(
                to_radiological(case.image[..., t]),
                cmap="gray",
                vmin=window[0],
                vmax=window[1],
                interpolation="nearest",
                aspect=case.aspect,
            )
            shown = to_radiological(case.prediction[..., t]).astype(np.int64)
            ax.imshow(
                np.ma.masked_where(shown <= 0, shown),
                cmap=cmap,
                vmin=-0.5,
                vmax=top + 0.5,
                alpha=OVERLAY_ALPHA,
                interpolation="nearest",
                aspect=case.aspect,
            )
            if t in case.annotated:
                for value in values:
                    _outline(ax, to_radiological(case.reference[..., t] == value))
            marks = [m for m, f in (("ED", record["ed_frame"]), ("ES", record["es_frame"])) if f == t]
            ax.set_title(
                f"t={t}{' ref' if t in case.annotated else ''}{' ' + '/'.join(marks) if marks else ''}", fontsize=7
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if t == 0:
                ax.set_ylabel(f"{case.name}\nz={case.z}", fontsize=7)
    handles = [
        Patch(facecolor=label_colour(v), alpha=OVERLAY_ALPHA, label=f"{class_names[v]} (prediction)") for v in values
    ]
    handles.append(Line2D([], [], color=REFERENCE_OUTLINE_COLOUR, label="reference (annotated frames)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"{title}: mid-ventricular axial slice through time", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.35 / height, 1.0, 1.0 - 0.3 / height))
    return fig


def _plot_volumes(records: Sequence[Mapping[str, Any]], lv_class: int, title: str) -> Figure:
    """Per case the predicted LV cavity volume over the frames, reference volumes as markers, ED/ES marked.

    Returns:
        the figure (Agg canvas).
    """
    n_cols = min(len(records), 2)
    n_rows = -(-len(records) // n_cols)
    fig = new_figure(5.0 * n_cols, 3.6 * n_rows + 0.4)
    for k, record in enumerate(records):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        volumes = np.asarray(record["lv_volume_ml"], dtype=np.float64)
        ax.plot(np.arange(volumes.size), volumes, "-o", color=label_colour(lv_class), ms=4, label="prediction")
        if record["annotated_frames"]:
            ax.plot(
                record["annotated_frames"],
                record["ref_lv_volume_ml"],
                linestyle="none",
                marker="s",
                ms=7,
                mfc="none",
                mec="black",
                label="reference (annotated)",
            )
        if _finite(record["ef_percent"]):
            ax.axvline(record["ed_frame"], color="tab:red", linestyle="--", lw=1, label=f"ED t={record['ed_frame']}")
            ax.axvline(record["es_frame"], color="tab:purple", linestyle=":", lw=1, label=f"ES t={record['es_frame']}")
        predicted = f"{record['ef_percent']:.1f} %" if _finite(record["ef_percent"]) else "n/a"
        reference = f"{record['ref_ef_percent']:.1f} %" if _finite(record["ref_ef_percent"]) else "n/a"
        ax.set_title(
            f"{os.path.basename(record['filename'])}\nEF predicted {predicted}, reference {reference}", fontsize=9
        )
        ax.set_xlabel("frame")
        ax.set_ylabel("LV cavity volume (ml)")
        ax.set_ylim(bottom=0.0)
        ax.grid(True, linestyle=":", alpha=0.6)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: LV cavity volume over the cardiac cycle", fontsize=10)
    fig.tight_layout()
    return fig


def _cell(value: Any) -> str:
    """A CSV cell: NaN/None as ``nan``, numbers in full precision, lists space-separated.

    Returns:
        the text.
    """
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


class TemporalSegmentationReport(EpochReport):
    """Ignite handler: per-case table, summary, LV volume curves and through-time slices of a 4D evaluation.

    Implements the evaluation of the cardiac 4D CCTA paper, section 4 and Table 2 (frame-by-frame Dice on the
    annotated frames, temporal smoothness of the network's output) and its ejection fraction analysis (EF from the
    predicted LV cavity volume curve, detection of a reduced EF < 55 % against the clinical reports), through
    :func:`temporal_case_measures` and :mod:`common.metrics.temporal`.

    On ``ITERATION_COMPLETED`` it measures every case of ``engine.state.output`` (a decollated list of dicts or a
    dict of batches): ``pred`` and ``label`` are ``[1, X, Y, Z, T]`` index maps (or one-hot, argmax-ed), the
    reference holding ``ignore_value`` in its unannotated frames; the voxel size comes from the prediction's (else
    the reference's, else the image's) 4x4 affine; the case name is the prediction's ``filename_or_obj`` (else the
    image's in the output or batch, else ``case_<index>``); the reference EF (%) is ``ef_key`` of the batch (or
    output) item when present (a number or 0-d tensor; None or missing: no reference). For the first ``n_plots``
    cases it keeps the mid-ventricular axial slice (through the centre of the predicted, else reference, LV
    cavity) of the image (``engine.state.output[i]`` or ``engine.state.batch[i]`` ``image_key``), prediction and
    reference at every frame.

    On ``EPOCH_COMPLETED`` (the event at which MONAI's metric handlers and ``StatsHandler`` work; for an evaluator
    its one epoch is the run) it gathers the cases of all ranks, puts the mean values into
    ``engine.state.metrics`` on every rank, and on ``save_rank`` writes into ``output_dir``:

    - ``<prefix>_per_case.csv``: one row per case: ``filename``, ``n_frames``, ``annotated_frames``, per class
      (``<c>``: the class name in lower case, other characters as ``_``, e.g. ``lv_cavity``)
      ``frame_dice_<c>``, ``smoothness_l2_<c>`` (sqrt(ml)), ``surface_distance_<c>`` (mm; with
      ``surface_distance``), ``ref_smoothness_l2_<c>``, ``ref_surface_distance_<c>`` (the reference's, only for a
      dense reference, else ``nan``), then ``ed_frame``, ``es_frame``, ``edv_ml``, ``esv_ml``, ``ef_percent``,
      ``ref_ef_percent``, ``ef_abs_error``, ``lv_volume_ml`` (the predicted curve, space-separated) and
      ``ref_lv_volume_ml`` (the reference volumes of the annotated frames); ``nan`` marks a missing value;
    - ``<prefix>_summary.json``: ``{"title", "n_cases", "std_ddof": 0, "classes", "lv_class", "measures"}``, with
      ``measures`` per measure (``frame_dice``, ``smoothness_l2``, ``surface_distance``, ``ref_smoothness_l2``,
      ``ref_surface_distance``, ``edv_ml``, ``esv_ml``, ``ef_percent``, and ``ref_ef_percent`` when any reference EF
      exists) ``{"unit", "summary"}``, ``summary`` per class (or for the measure itself) ``{"avg", "std", "min",
      "max", "n"}`` (:func:`common.metrics.summary.summarize_per_class`, population std, NaN cases skipped, per
      class measures with a ``"Total Avg."`` row); when some case has a reference EF also ``"ef_detection"``: the
      :func:`common.metrics.temporal.ef_detection` result (``mae``, ``sensitivity``, ``specificity``, counts,
      ``absolute_error``) over the cases with a reference and a predicted EF, with ``threshold``, ``n_cases`` and
      ``cases``;
    - ``<prefix>_lv_volume.png`` (when ``n_plots`` > 0): for the first ``n_plots`` cases the predicted LV cavity
      volume per frame, the reference volumes of the annotated frames as squares, ED and ES of the prediction as
      vertical lines, predicted and reference EF in the title;
    - ``<prefix>_through_time.png`` (when ``n_plots`` > 0): for the first ``n_plots`` cases evaluated on
      ``save_rank`` one row of the mid-ventricular slice at every frame, in the CT window ``display_window_hu``,
      the prediction filled in the label colours of :func:`common.visualize.label_colour`, the reference outlined
      in :data:`REFERENCE_OUTLINE_COLOUR` on the annotated frames (titled ``ref``), ED/ES frames named.

    ``engine.state.metrics`` receives ``frame_dice_<c>``, ``smoothness_l2_<c>`` and (with ``surface_distance``)
    ``surface_distance_<c>`` (means over the cases, NaN cases skipped), and, when reference EFs exist,
    ``ef_mae``, ``ef_sensitivity`` and ``ef_specificity``. List this handler before ``StatsHandler`` so that
    the values are there when it logs them.

    Every file is made in memory first and then written to a temporary file beside its target and moved into
    place (:func:`common.data.writers.atomic_path`), so a failing run never leaves a half-written or partial
    report, nor loses the files of an earlier one.

    Args:
        output_dir: folder of the report; created if missing.
        class_names: label value -> name, e.g. ``{"1": "LV cavity", "2": "LV myocardium"}``, or a list naming
            labels 1, 2, ... in order; the values > 0 are the classes measured.
        prefix: start of every file name (``<prefix>_per_case.csv``, ...), e.g. ``"test_temporal"``.
        lv_class: the class of the LV cavity (volume curve and EF).
        ignore_value: the reference's value of unannotated frames.
        surface_distance: whether to compute the consecutive-frame average surface distance (the slowest measure).
        ef_threshold: EF (%) below which a case is reduced (section 3.4: 55 %).
        ef_key: key of the reference EF in the batch (datalist) or output items.
        image_key: key of the image ``[1, X, Y, Z, T]`` in the output or batch items (for the through-time figure).
        label_key: key of the reference in the output items.
        pred_key: key of the prediction in the output items.
        n_plots: number of cases drawn in the two figures; 0 for no figure.
        display_window_hu: ``(low, high)`` CT window of the through-time figure, in HU.
        hu_range: the HU range the preprocessing mapped linearly onto [-1, 1] (``ScaleIntensityRanged`` with
            ``a_min``, ``a_max`` and ``b_min=-1``, ``b_max=1``); None when the image is in HU.
        title: title of the figures and the logged tables; `` (n=<cases>)`` is appended.
        save_rank: the rank that writes the files in a distributed run.

    Raises:
        TypeError: when ``class_names`` is neither a dict nor a list.
        ValueError: when ``class_names`` is bad (see :class:`common.handlers.SegmentationReport`) or two class names
            give one column name, ``prefix`` is empty or holds a path separator, ``lv_class`` is not a class
            > 0, ``n_plots`` or ``save_rank`` is negative, or a window is not two increasing numbers.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str | int, str] | Sequence[str],
        prefix: str = "temporal",
        lv_class: int = 1,
        ignore_value: int = 255,
        surface_distance: bool = True,
        ef_threshold: float = EF_REDUCED_THRESHOLD,
        ef_key: str = "ejection_fraction",
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        n_plots: int = 4,
        display_window_hu: Sequence[float] = (-200.0, 600.0),
        hu_range: Sequence[float] | None = (-1024.0, 1024.0),
        title: str = "Frame Dice, temporal smoothness and ejection fraction (paper sec. 4, Table 2)",
        save_rank: int = 0,
    ) -> None:
        self.output_dir = str(output_dir)
        self.class_names = parse_class_names(class_names)
        self.classes = [v for v in self.class_names if v > 0]
        self.slugs = {v: _slug(self.class_names[v]) for v in self.classes}
        if len(set(self.slugs.values())) != len(self.slugs) or not all(self.slugs.values()):
            raise ValueError(f"class_names must give distinct column names (lower case, _), got {self.slugs}.")
        if not isinstance(prefix, str) or not prefix or os.path.basename(prefix) != prefix or prefix in (".", ".."):
            raise ValueError(
                f"prefix starts every file name and must be non-empty without a separator, got {prefix!r}."
            )
        if int(lv_class) not in self.classes:
            raise ValueError(f"lv_class must be one of the classes > 0 of class_names {self.classes}, got {lv_class}.")
        if int(n_plots) < 0:
            raise ValueError(f"n_plots must be an integer >= 0, got {n_plots}.")
        if int(save_rank) < 0:
            raise ValueError(f"save_rank must be an integer >= 0, got {save_rank}.")
        self.display_window_hu = _window(display_window_hu, "display_window_hu")
        self.hu_range = _window(hu_range, "hu_range")
        self.prefix = prefix
        self.lv_class = int(lv_class)
        self.ignore_value = int(ignore_value)
        self.surface_distance = bool(surface_distance)
        self.ef_threshold = float(ef_threshold)
        self.ef_key = ef_key
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.n_plots = int(n_plots)
        self.title = title
        self.save_rank = int(save_rank)
        self._records: list[dict[str, Any]] = []
        self._slices: list[_ThroughTime] = []

    @property
    def display_window(self) -> tuple[float, float]:
        """The CT window ``display_window_hu`` in the image's (preprocessed) intensities."""
        if self.hu_range is None:
            return self.display_window_hu
        low, high = self.hu_range
        return tuple(-1.0 + 2.0 * (hu - low) / (high - low) for hu in self.display_window_hu)

    def _started(self, _engine: Engine) -> None:
        """Clear the cases of the previous epoch."""
        self._records = []
        self._slices = []

    def iteration_completed(self, engine: Engine) -> None:
        """Measure every case of this iteration; keep the through-time slices of the first ``n_plots`` cases.

        Args:
            engine: Ignite Engine whose ``state.output`` (and ``state.batch``) hold the current cases.

        Raises:
            ValueError: when an output item lacks the prediction or reference, a map is not ``[1, X, Y, Z, T]``,
                no affine gives the voxel size, a reference EF is not a finite number, a figure needs an image that
                is missing or of another shape, or a measure rejects the case (named in the message).
        """
        batch_items = as_items(engine.state.batch)
        for i, output in enumerate(as_items(engine.state.output)):
            batch = batch_items[i] if i < len(batch_items) and isinstance(batch_items[i], Mapping) else {}
            index = len(self._records)
            if not isinstance(output, Mapping) or self.pred_key not in output or self.label_key not in output:
                found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
                raise ValueError(
                    f"case {index}: engine output holds {found}; the temporal report needs dicts with "
                    f"'{self.pred_key}' and '{self.label_key}'."
                )
            image = output.get(self.image_key)
            image = batch.get(self.image_key) if image is None else image
            name = meta_name(
                [getattr(a, "meta", None) for a in (output[self.pred_key], image, batch.get(self.image_key))], index
            )
            prediction = index_map(output[self.pred_key], self.pred_key, name)
            reference = index_map(output[self.label_key], self.label_key, name)
            if prediction.ndim != 4:
                raise ValueError(f"case '{name}': '{self.pred_key}' must be [1, X, Y, Z, T], got {prediction.shape}.")
            spacing = _spacing_of([output[self.pred_key], output[self.label_key], image], name)
            try:
                record = temporal_case_measures(
                    prediction,
                    reference,
                    spacing,
                    self.classes,
                    self.lv_class,
                    self.ignore_value,
                    self.surface_distance,
                )
            except ValueError as err:
                raise ValueError(f"case '{name}': {err}") from err
            if not record["annotated_frames"]:
                logger.warning("case '%s': the reference has no annotated frame; its frame Dice is NaN.", name)
            record["filename"] = name
            record["ref_ef_percent"] = self._reference_ef(batch, output, name)
            self._records.append(record)
            if len(self._slices) < self.n_plots:
                self._slices.append(self._through_time(name, image, prediction, reference, record, spacing))

    def _reference_ef(self, batch: Mapping[str, Any], output: Mapping[str, Any], name: str) -> float | None:
        """The case's reference EF in %.

        Returns:
            ``ef_key`` of the batch item (else the output item) as a float; None when absent or None.

        Raises:
            ValueError: when it is not a single finite number.
        """
        value = batch.get(self.ef_key, output.get(self.ef_key))
        if value is None:
            return None
        array = np.asarray(convert_to_numpy(value), dtype=np.float64)
        if array.size != 1 or not np.isfinite(array).all():
            raise ValueError(
                f"case '{name}': '{self.ef_key}' must be one finite reference EF in %, got {value!r}; leave it out "
                "of the datalist entry when there is none."
            )
        return float(array.reshape(()))

    def _through_time(
        self,
        name: str,
        image: Any,
        prediction: np.ndarray,
        reference: np.ndarray,
        record: Mapping[str, Any],
        spacing: Sequence[float],
    ) -> _ThroughTime:
        """The mid-ventricular slice of one case at every frame.

        Returns:
            the slices ``[X, Y, T]`` of image (first channel), prediction and reference.

        Raises:
            ValueError: when the image is missing or its frames differ in shape from the prediction's.
        """
        if image is None:
            raise ValueError(
                f"case '{name}': no '{self.image_key}' in the engine output or batch; the through-time figure needs "
                "it (or n_plots=0)."
            )
        volume = np.asarray(convert_to_numpy(image), dtype=np.float64)
        volume = volume[0] if volume.ndim == prediction.ndim + 1 else volume
        if volume.shape != prediction.shape:
            raise ValueError(
                f"case '{name}': '{self.image_key}' {volume.shape} and '{self.pred_key}' {prediction.shape} must have "
                "one shape [X, Y, Z, T] after the channel."
            )
        z = _mid_ventricular_slice(prediction, reference, record["annotated_frames"], self.lv_class)
        short = os.path.basename(name.rstrip("/\\")) or name
        return _ThroughTime(
            short,
            z,
            volume[:, :, z],
            prediction[:, :, z],
            reference[:, :, z],
            list(record["annotated_frames"]),
            aspect=float(spacing[1]) / float(spacing[0]),  # displayed rows are y, columns x (to_radiological)
        )

    def _columns(self) -> list[str]:
        """Column names of the per-case CSV.

        Returns:
            the names, in order.
        """
        measures = ["frame_dice", "smoothness_l2"]
        measures += ["surface_distance"] if self.surface_distance else []
        measures += ["ref_smoothness_l2"]
        measures += ["ref_surface_distance"] if self.surface_distance else []
        per_class = [f"{m}_{self.slugs[c]}" for m in measures for c in self.classes]
        tail = ["ed_frame", "es_frame", "edv_ml", "esv_ml", "ef_percent", "ref_ef_percent", "ef_abs_error"]
        return ["filename", "n_frames", "annotated_frames", *per_class, *tail, "lv_volume_ml", "ref_lv_volume_ml"]

    def _row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One case's values by CSV column.

        Returns:
            column name -> value.
        """
        row: dict[str, Any] = {k: record[k] for k in ("filename", "n_frames", "annotated_frames")}
        for measure in _CLASS_MEASURES:
            if measure in record:
                for c in self.classes:
                    row[f"{measure}_{self.slugs[c]}"] = record[measure][str(c)]
        for key in ("ed_frame", "es_frame", "edv_ml", "esv_ml", "ef_percent", "ref_ef_percent"):
            row[key] = record[key]
        both = _finite(record["ef_percent"]) and _finite(record["ref_ef_percent"])
        row["ef_abs_error"] = abs(record["ef_percent"] - record["ref_ef_percent"]) if both else None
        row["lv_volume_ml"] = record["lv_volume_ml"]
        row["ref_lv_volume_ml"] = record["ref_lv_volume_ml"]
        return row

    def _gather(self) -> list[dict[str, Any]]:
        """The records of every rank, as JSON round trips (class keys as strings).

        Returns:
            the records in rank order.
        """
        strings = [json.dumps(r) for r in self._records]
        if idist.get_world_size() > 1:
            strings = string_list_all_gather(strings=strings)
        return [json.loads(s) for s in strings if s]

    def _summary(self, records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, float], list[str]]:
        """Summary document, metric values and logged tables of all cases.

        Returns:
            ``(summary JSON document, engine.state.metrics entries, table texts)``.
        """
        n_cases = len(records)
        names = [self.class_names[c] for c in self.classes]
        measures: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        tables = []
        for measure, unit in _CLASS_MEASURES.items():
            if measure not in records[0]:
                continue
            values = np.array([[r[measure][str(c)] for c in self.classes] for r in records], dtype=np.float64)
            summary = summarize_per_class(values, names)
            measures[measure] = {"unit": unit, "summary": summary}
            if not measure.startswith("ref_"):
                metrics.update(
                    {f"{measure}_{self.slugs[c]}": summary[n]["avg"] for c, n in zip(self.classes, names, strict=True)}
                )
                heading = f"{measure} ({unit})" if unit else measure
                tables.append(
                    format_table(
                        summary,
                        f"{self.title} (n={n_cases}): {measure}",
                        heading,
                        percent=unit is None,
                        digits=3 if unit else 1,
                    )
                )
        for key, (label, unit) in {**_CASE_MEASURES, "ref_ef_percent": ("reference EF", "%")}.items():
            values = np.array([[np.nan if r[key] is None else r[key]] for r in records], dtype=np.float64)
            if key == "ref_ef_percent" and np.isnan(values).all():
                continue
            measures[key] = {"unit": unit, "summary": {label: summarize_per_class(values, [label])[label]}}
        document: dict[str, Any] = {
            "title": self.title,
            "n_cases": n_cases,
            "std_ddof": 0,
            "classes": {str(c): self.class_names[c] for c in self.classes},
            "lv_class": self.lv_class,
            "measures": measures,
        }
        used = [r for r in records if _finite(r["ref_ef_percent"]) and _finite(r["ef_percent"])]
        skipped = [r["filename"] for r in records if _finite(r["ref_ef_percent"]) and not _finite(r["ef_percent"])]
        if skipped:
            logger.warning("no predicted LV cavity, so no EF, in %s: left out of the EF detection.", skipped)
        if used:
            detection = ef_detection(
                [r["ef_percent"] for r in used], [r["ref_ef_percent"] for r in used], self.ef_threshold
            )
            document["ef_detection"] = {
                "threshold": self.ef_threshold,
                "n_cases": len(used),
                "cases": [r["filename"] for r in used],
                **detection,
            }
            metrics.update(
                ef_mae=detection["mae"],
                ef_sensitivity=detection["sensitivity"],
                ef_specificity=detection["specificity"],
            )
        return document, metrics, tables

    def __call__(self, engine: Engine) -> None:
        """Gather the cases, set the mean measures in ``engine.state.metrics``, write the report on ``save_rank``.

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``.

        Raises:
            ValueError: when ``save_rank`` is not below the world size, or no case was evaluated.
        """
        self._check_save_rank()
        records = self._gather()
        if not records:
            raise ValueError("the temporal report has no case: the evaluation yielded no output dicts.")
        document, metrics, tables = self._summary(records)
        engine.state.metrics.update(metrics)
        if idist.get_rank() != self.save_rank:
            return
        base = os.path.join(self.output_dir, self.prefix)
        files: dict[str, bytes] = {}
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self._columns(), lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(v) for k, v in self._row(record).items()})
        files[f"{base}_per_case.csv"] = text.getvalue().encode()
        files[f"{base}_summary.json"] = json.dumps(json_safe(document), indent=2, allow_nan=False).encode()
        if self.n_plots > 0:
            title = f"{self.title} (n={len(records)})"
            files[f"{base}_lv_volume.png"] = png_bytes(_plot_volumes(records[: self.n_plots], self.lv_class, title))
            if self._slices:  # empty on a save_rank that evaluated no case
                drawn = self._records[: len(self._slices)]  # this rank's first cases, for their ED/ES frames
                figure = _plot_through_time(self._slices, drawn, self.class_names, self.display_window, title)
                files[f"{base}_through_time.png"] = png_bytes(figure)
        for table in tables:
            logger.info("\n%s", table)
        write_files_atomically(files)
        logger.info("temporal segmentation report wrote:\n  %s", "\n  ".join(files))
