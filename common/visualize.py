"""Plotting helpers for evaluation reports: per-class box plots and axial overlays of reference and prediction.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display), so they can be
drawn in a headless evaluation run or a test; callers save them with ``fig.savefig(path, format="png")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from common.data.errors import BundleInputError

__all__ = [
    "OverlaySlice",
    "label_colour",
    "largest_foreground_slice",
    "to_radiological",
    "plot_boxplots",
    "plot_overlays",
]

# 50 distinct colours; label value v (>= 1) always gets _PALETTE[(v - 1) % 50], whatever other labels exist.
_PALETTE = [*colormaps["tab10"].colors, *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]


def label_colour(value: int) -> tuple[float, float, float, float]:
    """Fixed RGBA colour of a label value (0, background, is transparent), the same in every figure.

    Args:
        value: a label value of the segmentation map.
    """
    if value <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    return to_rgba(_PALETTE[(int(value) - 1) % len(_PALETTE)])


@dataclass
class OverlaySlice:
    """One 2-D axial slice of a case for :func:`plot_overlays`.

    Args:
        name: case name shown as the row title.
        image: ``[H, W]`` intensities (array axes as in the volume, before display re-orientation).
        reference: ``[H, W]`` integer label map of the reference.
        prediction: ``[H, W]`` integer label map of the prediction.
        window: ``(vmin, vmax)`` grey window, e.g. the preprocessed volume's intensity range.
        index: index of the slice along the volume's last (axial) axis, shown in the title.
    """

    name: str
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    window: tuple[float, float]
    index: int = 0


def largest_foreground_slice(label_map: np.ndarray) -> int:
    """Index along the last (axial) axis of the slice with the largest reference foreground (label > 0) area.

    Args:
        label_map: ``[H, W, D]`` integer label map.

    Returns:
        the slice index; the middle slice when the map has no foreground.
    """
    if label_map.ndim != 3:
        raise BundleInputError(None, f"label map of shape {tuple(label_map.shape)}", "a 3-D label map [H, W, D]")
    area = (label_map > 0).reshape(-1, label_map.shape[-1]).sum(axis=0)
    return int(np.argmax(area)) if area.max() > 0 else label_map.shape[-1] // 2


def to_radiological(slice2d: np.ndarray) -> np.ndarray:
    """Re-orient an ``[H, W]`` axial slice of an RAS array for display in radiological convention.

    MONAI arrays after ``Orientationd(axcodes="RAS")`` index (x to the patient's right, y to anterior); the
    radiological view puts the patient's right on the viewer's left and anterior at the top, i.e. rows = -y,
    columns = -x. For other orientations the picture is only flipped, never wrong in content.

    Args:
        slice2d: ``[H, W]`` = ``[x, y]`` slice.

    Returns:
        ``[W, H]`` array to pass to ``imshow``.
    """
    return np.ascontiguousarray(slice2d[::-1, ::-1].T)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_boxplots(
    values: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
    ylabel: str = "Dice",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """Per-class box plots of a per-case measure, one box per class with the cases drawn as points.

    In the manner of the per-organ Dice box plots of multi-organ CT papers (e.g. Roth et al., sec. III.B): the box
    spans the quartiles, the line is the median, the whiskers reach 1.5 IQR, the diamond is the mean.

    Args:
        values: ``[n_cases, n_classes]``; NaN entries (class absent) are left out of that class's box.
        class_names: one name per column, shown on the x axis.
        title: figure title.
        ylabel: y axis label, e.g. ``"Dice"``.
        ylim: y axis range, ``(0, 1)`` for Dice; ``None`` to let matplotlib choose.

    Returns:
        the figure (Agg canvas).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(class_names):
        raise BundleInputError(
            None, f"values of shape {tuple(array.shape)} for {len(class_names)} classes", "[n_cases, n_classes]"
        )
    columns = [array[~np.isnan(array[:, i]), i] for i in range(array.shape[1])]
    fig = _new_figure(max(4.0, 1.1 * len(class_names) + 1.5), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(1, len(columns) + 1)
    drawn = [i for i, c in enumerate(columns) if c.size > 0]
    if drawn:
        ax.boxplot(
            [columns[i] for i in drawn],
            positions=positions[drawn],
            widths=0.6,
            showmeans=True,
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black", "markersize": 5},
            medianprops={"color": "black"},
            flierprops={"marker": ""},  # every case is drawn as a point below
            patch_artist=True,
            boxprops={"facecolor": "lightsteelblue", "alpha": 0.8},
        )
    rng = np.random.default_rng(0)  # fixed jitter: the same data always gives the same picture
    for i in drawn:
        jitter = rng.uniform(-0.12, 0.12, size=columns[i].size)
        ax.scatter(positions[i] + jitter, columns[i], s=10, color="black", alpha=0.6, zorder=3, clip_on=False)
    ax.set_xticks(positions)
    ax.set_xticklabels([str(n) for n in class_names], rotation=30, ha="right")
    ax.set_xlim(0.4, len(columns) + 0.6)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.yaxis.grid(True, linestyle=":", alpha=0.6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_overlays(cases: Sequence[OverlaySlice], class_names: Mapping[int, str], title: str = "") -> Figure:
    """Grid of axial slices, one row per case, columns image | reference | prediction, with a label legend.

    Reference and prediction are drawn over the grey image, each label value in its fixed :func:`label_colour`
    (paper Fig. 5 shows the same side-by-side comparison of result and ground truth). Slices are shown in
    radiological convention (:func:`to_radiological`).

    Args:
        cases: the slices to draw, one row each.
        class_names: label value -> name for the legend (background 0 may be omitted).
        title: figure title.

    Returns:
        the figure (Agg canvas).
    """
    if len(cases) == 0:
        raise BundleInputError(None, "no cases to draw", "at least one overlay slice")
    values = sorted(int(v) for v in class_names if int(v) > 0)
    top = max([*values, *(int(max(c.reference.max(), c.prediction.max())) for c in cases), 1])
    colours = [label_colour(v) for v in range(top + 1)]
    cmap = ListedColormap(colours)

    fig = _new_figure(3 * 3.0, 3.0 * len(cases) + 0.9)
    for row, case in enumerate(cases):
        image = to_radiological(np.asarray(case.image, dtype=np.float64))
        vmin, vmax = case.window
        if not vmax > vmin:
            vmax = vmin + 1.0
        for col, (heading, labels) in enumerate(
            (("image", None), ("reference", case.reference), ("prediction", case.prediction))
        ):
            ax = fig.add_subplot(len(cases), 3, row * 3 + col + 1)
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            if labels is not None:
                shown = to_radiological(np.asarray(labels)).astype(np.int64)
                masked = np.ma.masked_where(shown <= 0, shown)
                ax.imshow(masked, cmap=cmap, vmin=-0.5, vmax=top + 0.5, alpha=0.55, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(heading)
            if col == 0:
                ax.set_ylabel(f"{case.name}\nslice {case.index}", fontsize=8)
    handles = [Patch(facecolor=label_colour(v), label=f"{v}: {class_names.get(v, str(v))}") for v in values]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0.0, 0.9 / (3.0 * len(cases) + 0.9), 1.0, 1.0))
    return fig
