"""Ignite handler accumulating a voxel confusion matrix over an evaluation and writing it as CSV, JSON and a heatmap.

Implements Figure 3 of the head CT neuroanatomy paper (2D U-Net segmenting 11 intracranial structures): "Confusion
matrices for (a) model 3 (cross-entropy loss with attenuated weighting) and (b) model 5 (Dice loss) on the
validation dataset. Numbers represent the percentage of voxels in each category." The paper reads them to show which
structures a model confuses (with Dice loss CS, SP and the basal ganglia structures were predicted as SS, VS and BC).
Here the rows are the reference classes, the columns the predicted classes, and by default each reference row is
normalised to 100 % (``normalize="true"``, as scikit-learn's ``confusion_matrix`` names it).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from matplotlib import colormaps
from matplotlib.figure import Figure

from common.data.writers import write_files_atomically
from common.handlers.report_base import EpochReport, as_items, index_map, meta_name, parse_class_names
from common.metrics.segmentation_report import json_safe, png_bytes
from common.visualize import OVERLAY_ALPHA, label_colour, new_figure

__all__ = ["CELL_INCHES", "NORMALIZATIONS", "ConfusionMatrixReport", "confusion_percentages", "figure_inches"]

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("true", "pred", "all", None)
"""What the figure's numbers are a percentage of: each reference row (``"true"``), each predicted column
(``"pred"``), all counted voxels (``"all"``); ``None``: the figure shows the counts."""

CELL_INCHES = 0.7
"""Side of one cell of the heatmap in inches (at 100 dpi, 70 pixels)."""

_COLOURBAR_LABELS = {
    "true": "% of the reference class's voxels",
    "pred": "% of the predicted class's voxels",
    "all": "% of all counted voxels",
    None: "voxels",
}
_PERCENT_KEYS = {"true": "percent_of_reference", "pred": "percent_of_prediction", "all": "percent_of_all"}


def confusion_percentages(counts: np.ndarray, normalize: str = "true") -> np.ndarray:
    """A confusion matrix of counts as percentages.

    Args:
        counts: ``[n, n]`` counts, rows the reference classes, columns the predicted classes.
        normalize: ``"true"``: each row sums to 100; ``"pred"``: each column sums to 100; ``"all"``: the whole
            matrix sums to 100.

    Returns:
        ``[n, n]`` float64 percentages; NaN in a row (column, matrix) with no voxel.

    Raises:
        ValueError: when ``normalize`` is not ``"true"``, ``"pred"`` or ``"all"``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if normalize == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    elif normalize == "all":
        totals = counts.sum(keepdims=True)
    else:
        raise ValueError(f"normalize must be 'true', 'pred' or 'all', got {normalize!r}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * counts / totals, np.nan)


def figure_inches(axis_names: Sequence[str]) -> tuple[float, float]:
    """Size of the heatmap figure: cells of :data:`CELL_INCHES`, margins for the tick labels, title and colour bar.

    Args:
        axis_names: the tick labels of both axes.

    Returns:
        ``(width, height)`` in inches: ``n * 0.7 + 0.07 * L + 2.6`` and ``n * 0.7 + 0.07 * L + 1.4`` for ``n``
        classes whose longest tick label has ``L`` characters.
    """
    margin = 0.07 * max((len(n) for n in axis_names), default=1)
    side = CELL_INCHES * len(axis_names) + margin
    return side + 2.6, side + 1.4


def _cell_text(value: float, normalize: str | None) -> str:
    """The number written in one cell.

    Returns:
        a percentage with one decimal (``"0"`` for none, ``"<0.1"`` for a trace, ``"-"`` for NaN), or a count in
        at most four characters (``"950"``, ``"12k"``, ``"3.4M"``).
    """
    if not np.isfinite(value):
        return "-"
    if normalize is not None:
        return "0" if value == 0 else "<0.1" if value < 0.05 else f"{value:.1f}"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2g}{unit}" if value < 10 * scale else f"{value / scale:.0f}{unit}"
    return f"{value:.0f}"


def _plot_confusion_matrix(
    values: np.ndarray,
    labels: Sequence[int],
    axis_names: Sequence[str],
    normalize: str | None,
    title: str,
) -> Figure:
    """Heatmap of a confusion matrix with the numbers in the cells, reference down, prediction across.

    Returns:
        the figure (Agg canvas); the tick labels of classes > 0 sit on boxes of their overlay colours
        (:func:`common.visualize.label_colour` at :data:`common.visualize.OVERLAY_ALPHA`).
    """
    width, height = figure_inches(axis_names)
    fig = new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    finite = values[np.isfinite(values)]
    vmax = 100.0 if normalize is not None else max(float(finite.max(initial=0.0)), 1.0)
    cmap = colormaps["Blues"].with_extremes(bad="0.9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    n = len(labels)
    for row in range(n):
        for col in range(n):
            value = values[row, col]
            dark = np.isfinite(value) and value > 0.5 * vmax
            colour = "white" if dark else "black"
            ax.text(col, row, _cell_text(value, normalize), ha="center", va="center", fontsize=8, color=colour)
    ticks = np.arange(n)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(axis_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticklabels(axis_names, fontsize=8)
    for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for text, value in zip(tick_labels, labels, strict=True):
            if value > 0:  # background has no colour (transparent in the overlays)
                text.set_bbox({"facecolor": label_colour(int(value)), "alpha": OVERLAY_ALPHA, "edgecolor": "none"})
    ax.set_xlabel("predicted class")
    ax.set_ylabel("reference class")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label(_COLOURBAR_LABELS[normalize])
    fig.tight_layout()
    return fig


def _format_matrix(values: np.ndarray, axis_names: Sequence[str], heading: str) -> str:
    """A text table of a confusion matrix for the log.

    Returns:
        the table, one reference class a line.
    """
    width = max(6, *(len(n) for n in axis_names))
    lines = [heading, " " * width + "".join(f" {n:>{width}}" for n in axis_names)]
    for name, row in zip(axis_names, values, strict=True):
        lines.append(f"{name:<{width}}" + "".join(f" {v:>{width}.1f}" for v in row))
    return "\n".join(lines)


class ConfusionMatrixReport(EpochReport):
    """Ignite handler: the voxel confusion matrix of an evaluation (reference x prediction), head CT paper Fig. 3.

    Attach it to a MONAI evaluator (``validate#handlers`` of a bundle's ``evaluate.json``)::

        {"_target_": "common.handlers.confusion_matrix.ConfusionMatrixReport", "output_dir": "@output_dir",
         "class_names": "@class_names", "prefix": "test_"}

    :meth:`attach` (of :class:`common.handlers.report_base.EpochReport`) registers it on the three events below.
    At ``EPOCH_STARTED`` it clears the matrix. At every ``ITERATION_COMPLETED`` it reads ``engine.state.output``
    (a list of per-case dicts, as MONAI engines decollate it, or a dict of batches) and adds each case's voxels to
    an int64 matrix of counts, rows the reference class, columns the predicted class: ``pred`` and ``label`` are
    channel-first index maps ``[1, *spatial]`` or one-hot/probability maps ``[C, *spatial]`` (argmax-ed), of one
    spatial shape; voxels whose reference equals ``ignore_value`` are skipped. At ``EPOCH_COMPLETED`` the counts
    of every rank are summed and rank ``save_rank`` writes, each file atomically (whole or absent):

    - ``<prefix>confusion_matrix.csv``: the counts, a header of the predicted class names and one row per
      reference class;
    - ``<prefix>confusion_matrix.json``: ``labels``, ``names``, ``n_cases``, ``n_voxels`` (counted),
      ``ignored_voxels``, ``counts`` and the percentages ``percent_of_reference`` (each reference row sums to 100),
      ``percent_of_prediction`` (each column) and ``percent_of_all`` (NaN, a class without voxels, as null);
    - ``<prefix>confusion_matrix.png``: a heatmap of the percentages chosen by ``normalize`` (by default of each
      reference row; the paper says only "the percentage of voxels in each category") with the numbers written in
      the cells, the abbreviations (else the names) on both axes. Its size is :func:`figure_inches` at 100 dpi.

    The last epoch's summed counts stay in :attr:`counts` (None before the first epoch ends).

    Args:
        output_dir: folder of the files; created if missing.
        class_names: label value -> name, e.g. ``{"0": "background", "1": "brainstem and cerebrum", ...}``, or a
            list naming labels 1, 2, ... in order. Label 0 is added as ``"background"`` when not named (unless it is
            ``ignore_value``). Rows and columns follow the label values in increasing order.
        prefix: prefix of every file name, e.g. ``"test_"``.
        ignore_value: the reference's "not annotated" value, whose voxels are not counted; None: every voxel is.
        normalize: what the figure's numbers are a percentage of, one of :data:`NORMALIZATIONS`.
        pred_key: key of the prediction in the output dicts.
        label_key: key of the reference in the output dicts.
        title: title of the figure; `` (n=<cases>)`` is appended.
        save_rank: the rank that writes the files in a distributed run.
        abbreviations: label value -> short name for the axes (e.g. the paper's ``{"1": "BC", ...}``), or a list for
            labels 1, 2, ...; a class without one is shown by its name. None: the names.

    Raises:
        TypeError: when ``class_names`` or ``abbreviations`` is neither a dict nor a list.
        ValueError: when ``class_names`` has a non-integer or repeated label value or names no label > 0,
            ``ignore_value`` is a named class, ``abbreviations`` names a label that is not a class, ``normalize`` is
            not one of :data:`NORMALIZATIONS` or ``save_rank`` is negative.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Mapping[str | int, str] | Sequence[str],
        prefix: str = "",
        ignore_value: int | None = None,
        normalize: str | None = "true",
        pred_key: str = "pred",
        label_key: str = "label",
        title: str = "Confusion matrix of the voxels",
        save_rank: int = 0,
        abbreviations: Mapping[str | int, str] | Sequence[str] | None = None,
    ) -> None:
        classes = parse_class_names(class_names)
        self.ignore_value = None if ignore_value is None else int(ignore_value)
        if self.ignore_value is not None and self.ignore_value in classes:
            raise ValueError(
                f"ignore_value={self.ignore_value} is the label value of class '{classes[self.ignore_value]}'; the "
                "ignored reference value must not be a class."
            )
        if 0 not in classes and self.ignore_value != 0:
            classes = {0: "background", **classes}
        self.class_names = classes
        self.labels = np.array(list(classes), dtype=np.int64)
        short: dict[int, str] = {}
        if abbreviations is not None:
            try:
                short = parse_class_names(abbreviations)
            except (TypeError, ValueError) as err:
                raise type(err)(f"abbreviations: {err}") from err
            unknown = sorted(set(short) - set(classes))
            if unknown:
                raise ValueError(f"abbreviations name label values {unknown}, which are not classes {list(classes)}.")
        self.axis_names = [short.get(v, name) for v, name in classes.items()]
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}.")
        if int(save_rank) < 0:
            raise ValueError(f"save_rank must be an integer >= 0, got {save_rank}.")
        self.output_dir = str(output_dir)
        self.prefix = prefix
        self.normalize = normalize
        self.pred_key = pred_key
        self.label_key = label_key
        self.title = title
        self.save_rank = int(save_rank)
        self.counts: np.ndarray | None = None
        self._started(None)

    def _started(self, _engine: Engine | None) -> None:
        """Clear the counts of the previous epoch."""
        n = self.labels.size
        self._counts = np.zeros((n, n), dtype=np.int64)
        self._n_cases = 0
        self._ignored = 0

    def _indices(self, values: np.ndarray, key: str, name: str) -> np.ndarray:
        """Row/column index of each voxel's label value.

        Returns:
            int64 indices into :attr:`labels`.

        Raises:
            ValueError: when a value is not a class.
        """
        index = np.searchsorted(self.labels, values)
        known = (index < self.labels.size) & (self.labels[np.minimum(index, self.labels.size - 1)] == values)
        if not known.all():
            unknown = np.unique(values[~known])
            raise ValueError(
                f"case '{name}': '{key}' holds label values {unknown[:10].tolist()} that are not classes "
                f"{self.labels.tolist()} (name them in class_names, or set ignore_value for the reference)."
            )
        return index

    def iteration_completed(self, engine: Engine) -> None:
        """Add the voxels of every case of this iteration to the matrix.

        Args:
            engine: Ignite Engine whose ``state.output`` holds the current cases.

        Raises:
            ValueError: when an output item lacks the prediction or reference, a map is not channel-first 2-D to
                4-D, the two differ in spatial shape, or a counted voxel has a value that is not a class.
        """
        for output in as_items(engine.state.output):
            index = self._n_cases
            if not isinstance(output, Mapping) or self.pred_key not in output or self.label_key not in output:
                found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
                raise ValueError(
                    f"case {index}: engine output holds {found}; the confusion matrix needs dicts with "
                    f"'{self.pred_key}' and '{self.label_key}'."
                )
            name = meta_name([getattr(output[k], "meta", None) for k in (self.pred_key, self.label_key)], index)
            prediction = index_map(output[self.pred_key], self.pred_key, name)
            reference = index_map(output[self.label_key], self.label_key, name)
            if prediction.shape != reference.shape:
                raise ValueError(
                    f"case '{name}': '{self.pred_key}' {prediction.shape} and '{self.label_key}' {reference.shape} "
                    "must have the same spatial shape."
                )
            prediction, reference = prediction.ravel(), reference.ravel()
            if self.ignore_value is not None:
                counted = reference != self.ignore_value
                self._ignored += int(reference.size - np.count_nonzero(counted))
                prediction, reference = prediction[counted], reference[counted]
            rows = self._indices(reference, self.label_key, name)
            cols = self._indices(prediction, self.pred_key, name)
            n = self.labels.size
            self._counts += np.bincount(rows * n + cols, minlength=n * n).reshape(n, n)
            self._n_cases += 1

    def _reduced(self) -> tuple[np.ndarray, int, int]:
        """The counts, case count and ignored voxels summed over all ranks.

        Returns:
            ``(counts [n, n] int64, n_cases, ignored_voxels)``.
        """
        packed = np.concatenate([self._counts.ravel(), [self._n_cases, self._ignored]])
        if idist.get_world_size() > 1:
            packed = idist.all_reduce(torch.as_tensor(packed, dtype=torch.int64)).cpu().numpy()
        n = self.labels.size
        return packed[: n * n].reshape(n, n).astype(np.int64), int(packed[-2]), int(packed[-1])

    def __call__(self, engine: Engine) -> None:
        """Sum the counts of every rank, then write the CSV, JSON and PNG (rank ``save_rank`` only).

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``.

        Raises:
            ValueError: when ``save_rank`` is not below the world size, or no case was counted.
        """
        self._check_save_rank()
        counts, n_cases, ignored = self._reduced()
        if n_cases == 0:
            raise ValueError("the confusion matrix has no case: the evaluation yielded no output dicts.")
        self.counts = counts
        if idist.get_rank() != self.save_rank:
            return
        percent = {key: confusion_percentages(counts, how) for how, key in _PERCENT_KEYS.items()}
        names = list(self.class_names.values())
        document = {
            "title": self.title,
            "rows": "reference",
            "columns": "prediction",
            "labels": self.labels.tolist(),
            "names": names,
            "n_cases": n_cases,
            "n_voxels": int(counts.sum()),
            "ignore_value": self.ignore_value,
            "ignored_voxels": ignored,
            "figure_normalize": self.normalize,
            "counts": counts.tolist(),
            **{key: values.tolist() for key, values in percent.items()},
        }
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["reference \\ prediction", *names])
        writer.writerows([name, *row] for name, row in zip(names, counts.tolist(), strict=True))
        shown = counts.astype(np.float64) if self.normalize is None else percent[_PERCENT_KEYS[self.normalize]]
        title = f"{self.title} (n={n_cases})"
        figure = _plot_confusion_matrix(shown, self.labels.tolist(), self.axis_names, self.normalize, title)
        base = os.path.join(self.output_dir, f"{self.prefix}confusion_matrix")
        files = {
            f"{base}.csv": text.getvalue().encode(),
            f"{base}.json": json.dumps(json_safe(document), indent=2, allow_nan=False).encode(),
            f"{base}.png": png_bytes(figure),
        }
        logger.info("\n%s", _format_matrix(percent["percent_of_reference"], self.axis_names, f"{title}, % of row"))
        write_files_atomically(files)
        logger.info("confusion matrix wrote:\n  %s", "\n  ".join(files))
