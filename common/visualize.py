"""Plotting helpers for evaluation reports: per-column box plots and plane overlays of reference and prediction.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display), so they can be
drawn in a headless evaluation run or a test; callers save them with ``fig.savefig(path, format="png")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "ChannelOverlaySlice",
    "OverlaySlice",
    "describe_plane",
    "label_colour",
    "new_figure",
    "largest_foreground_slice",
    "to_radiological",
    "plot_boxplots",
    "plot_overlays",
    "percentile_window",
    "plot_channel_overlays",
]

# 50 distinct colours; label value v (>= 1) always gets _PALETTE[(v - 1) % 50], whatever other labels exist.
_PALETTE = [*colormaps["tab10"].colors, *colormaps["tab20b"].colors, *colormaps["tab20c"].colors]

# opacity of the label colours drawn over the grey image in plot_overlays
OVERLAY_ALPHA = 0.55


def label_colour(value: int) -> tuple[float, float, float, float]:
    """Fixed RGBA colour of a label value (0, background, is transparent), the same in every figure.

    Args:
        value: a label value of the segmentation map.

    Returns:
        ``(r, g, b, a)`` in [0, 1]: matplotlib's ``tab10`` colours for labels 1 to 10, then ``tab20b`` and
        ``tab20c``, repeating after 50 labels; ``(0, 0, 0, 0)`` for 0 and negative values.

    Raises:
        TypeError: when ``value`` is not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"label value must be an integer, got {value!r} ({type(value).__name__}).")
    if value <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    return to_rgba(_PALETTE[(int(value) - 1) % len(_PALETTE)])


_PLANE_NAMES = {0: ("sagittal", "x"), 1: ("coronal", "y"), 2: ("axial", "z")}


def describe_plane(index: Sequence[int], axis: int = 2) -> str:
    """Words for where a 2-D plane lies in its label map, for figure titles.

    Args:
        index: position of the plane: ``()`` for a 2-D map, ``(i,)`` for 3-D (the index along ``axis``),
            ``(i, t)`` for 3-D + time (then the frame), as :func:`largest_foreground_slice` returns them for axial
            planes.
        axis: the spatial axis normal to the plane of a 3-D (or 3-D + time) map: 0 sagittal (x), 1 coronal (y),
            2 axial (z), in the RAS array convention of the bundles.

    Returns:
        ``"2-D image"``, ``"axial slice z=12"``, ``"sagittal slice x=40"`` or ``"frame t=3, axial slice z=12"``.

    Raises:
        ValueError: when ``index`` has more than two entries or ``axis`` is not 0, 1 or 2.
    """
    index = tuple(int(i) for i in index)
    if int(axis) not in _PLANE_NAMES:
        raise ValueError(f"plane axis must be 0 (sagittal), 1 (coronal) or 2 (axial), got {axis}.")
    plane, letter = _PLANE_NAMES[int(axis)]
    if len(index) == 0:
        return "2-D image"
    if len(index) == 1:
        return f"{plane} slice {letter}={index[0]}"
    if len(index) == 2:
        return f"frame t={index[1]}, {plane} slice {letter}={index[0]}"
    raise ValueError(f"plane index must have 0 to 2 entries (slice, then frame), got {index}.")


@dataclass
class OverlaySlice:
    """One 2-D plane of a case for :func:`plot_overlays`.

    Attributes:
        name: case name shown as the row title.
        image: ``[H, W]`` intensities: the plane's two remaining axes in volume order (``[x, y]`` axial,
            ``[x, z]`` coronal, ``[y, z]`` sagittal), before display re-orientation.
        reference: ``[H, W]`` integer label map of the reference.
        prediction: ``[H, W]`` integer label map of the prediction.
        window: ``(vmin, vmax)`` grey window, e.g. the preprocessed volume's intensity range.
        index: where the plane lies in the case's label map (see :func:`describe_plane`): ``()`` for a 2-D
            case, ``(i,)`` for 3-D, ``(i, t)`` for 3-D + time, ``i`` the index along ``axis``.
        axis: the spatial axis normal to the plane: 2 axial (default), 1 coronal, 0 sagittal.
    """

    name: str
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    window: tuple[float, float]
    index: tuple[int, ...] = ()
    axis: int = 2


@dataclass
class ChannelOverlaySlice:
    """One 2-D plane of a multi-channel case (e.g. the four MRI modalities of BraTS) for :func:`plot_channel_overlays`.

    Attributes:
        name: case name shown as the row title.
        channels: ``[C, H, W]`` intensities of every channel on the plane, the plane's two remaining axes in volume
            order (as :attr:`OverlaySlice.image`), before display re-orientation.
        reference: ``[H, W]`` integer label map of the reference.
        prediction: ``[H, W]`` integer label map of the prediction.
        index: where the plane lies in the case's label map (see :func:`describe_plane`).
        axis: the spatial axis normal to the plane: 2 axial (default), 1 coronal, 0 sagittal.
    """

    name: str
    channels: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    index: tuple[int, ...] = ()
    axis: int = 2


def largest_foreground_slice(label_map: np.ndarray) -> tuple[int, ...]:
    """Where the axial plane with the largest reference foreground (label > 0) area lies in a label map.

    ``[H, W]``: the image itself, ``()``. ``[H, W, D]``: the axial slice (last axis) with the most foreground
    voxels, ``(z,)``. ``[H, W, D, T]`` (3-D + time): the frame and axial slice with the most foreground voxels,
    ``(z, t)``. Ties go to the first (lowest z, then lowest t); a map without foreground gives the middle slice
    (and middle frame).

    Args:
        label_map: ``[H, W]``, ``[H, W, D]`` or ``[H, W, D, T]`` integer label map.

    Returns:
        the indices along the axes after the first two; ``label_map[(slice(None), slice(None), *index)]`` is the
        plane.

    Raises:
        ValueError: when ``label_map`` is not 2-D, 3-D or 4-D.
    """
    array = np.asarray(label_map)
    if array.ndim not in (2, 3, 4):
        raise ValueError(
            f"label map must be [H, W], [H, W, D] or [H, W, D, T], got shape {tuple(array.shape)}.",
        )
    if array.ndim == 2:
        return ()
    area = (array > 0).sum(axis=(0, 1))  # [D] or [D, T]
    if area.max() == 0:
        return tuple(n // 2 for n in area.shape)
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(area)), area.shape))


def to_radiological(slice2d: np.ndarray) -> np.ndarray:
    """Re-orient an ``[H, W]`` plane of an RAS array for display in radiological convention.

    MONAI arrays after ``Orientationd(axcodes="RAS")`` index (x to the patient's right, y to anterior, z to
    superior). The radiological view puts, in an axial ``[x, y]`` slice, the patient's right on the viewer's left
    and anterior at the top (rows = -y, columns = -x); in a coronal ``[x, z]`` slice the right on the left and
    superior at the top (rows = -z, columns = -x); in a sagittal ``[y, z]`` slice anterior on the left and superior
    at the top (rows = -z, columns = -y). All three are the same flip of both axes and a transpose. For other
    orientations the picture is only flipped, never wrong in content.

    Args:
        slice2d: ``[H, W]`` = ``[x, y]``, ``[x, z]`` or ``[y, z]`` plane.

    Returns:
        ``[W, H]`` array to pass to ``imshow``.

    Raises:
        ValueError: when ``slice2d`` is not 2-D.
    """
    array = np.asarray(slice2d)
    if array.ndim != 2:
        raise ValueError(f"slice must be 2-D [H, W], got shape {tuple(array.shape)}.")
    return np.ascontiguousarray(array[::-1, ::-1].T)


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot state, safe in worker threads), 100 dpi.

    Args:
        width: width in inches.
        height: height in inches.

    Returns:
        the figure.
    """
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_boxplots(
    values: np.ndarray,
    column_names: Sequence[str],
    title: str = "",
    ylabel: str = "Dice",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """Per-column box plots of a per-case measure, one box per column with the cases drawn as points.

    In the manner of the per-organ Dice box plots of multi-organ CT papers (e.g. Roth et al., sec. III.B): the box
    spans the quartiles, the line is the median, the whiskers reach 1.5 IQR, the diamond is the mean.

    Args:
        values: ``[n_cases, n_columns]``; NaN entries (class absent) are left out of that column's box, and a
            column with no finite value gets no box.
        column_names: one name per column (a class, a region, or the measure itself), shown on the x axis.
        title: figure title.
        ylabel: y axis label, e.g. ``"Dice"`` or ``"CMD (mm)"``.
        ylim: y axis range, ``(0, 1)`` for a ratio such as Dice; ``None`` to let matplotlib choose.

    Returns:
        the figure (Agg canvas).

    Raises:
        ValueError: when ``values`` is not ``[n_cases, len(column_names)]``.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(column_names):
        raise ValueError(
            f"values must be [n_cases, n_columns] with one column per name ({len(column_names)} names), "
            f"got shape {tuple(array.shape)}."
        )
    columns = [array[~np.isnan(array[:, i]), i] for i in range(array.shape[1])]
    fig = new_figure(max(4.0, 1.1 * len(column_names) + 1.5), 4.5)
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
    ax.set_xticklabels([str(n) for n in column_names], rotation=30, ha="right")
    ax.set_xlim(0.4, len(columns) + 0.6)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.yaxis.grid(True, linestyle=":", alpha=0.6)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


class _LabelColours:
    """The label colours of one overlay figure: the colour map of its label maps and its legend entries.

    Args:
        class_names: label value -> name for the legend (background 0 may be omitted).
        label_maps: every label map the figure draws; the colour map spans their largest value.
        colours: label value (> 0) -> matplotlib colour replacing its :func:`label_colour`; ``None``: none.

    Raises:
        ValueError: when ``colours`` names a label value <= 0 (background stays transparent) or an invalid colour.
    """

    def __init__(
        self,
        class_names: Mapping[int, str],
        label_maps: Sequence[np.ndarray],
        colours: Mapping[int, Any] | None = None,
    ) -> None:
        self.custom: dict[int, tuple[float, float, float, float]] = {}
        for value, colour in (colours or {}).items():
            if int(value) <= 0:
                raise ValueError(f"label colours are for label values > 0 (0 is transparent), got {value!r}.")
            self.custom[int(value)] = to_rgba(colour)
        self.values = sorted(int(v) for v in class_names if int(v) > 0)
        self.top = max([*self.values, *(int(np.max(m)) for m in label_maps), 1])
        self.cmap = ListedColormap([self.colour(v) for v in range(self.top + 1)])
        self.handles = [
            Patch(facecolor=self.colour(v), label=f"{v}: {class_names.get(v, str(v))}") for v in self.values
        ]
        self.inches = 0.2 + 0.2 * -(-len(self.values) // 4)  # legend height: 4 legend entries a line

    def colour(self, value: int) -> tuple[float, float, float, float]:
        """RGBA colour of a label value in this figure.

        Args:
            value: a label value.

        Returns:
            its colour given to the figure, else its :func:`label_colour`.
        """
        return self.custom.get(int(value), label_colour(int(value)))


def _grid_figure(n_rows: int, n_columns: int, legend: _LabelColours) -> tuple[Figure, float]:
    """A figure for a grid of planes above a legend.

    Returns:
        the figure and its height in inches: 3 in a column, 3.1 in a row (keeps rows of square 2.7 in panels
        apart), 0.7 in for titles and the legend's own height.
    """
    height = 3.1 * n_rows + 0.7 + legend.inches
    return new_figure(n_columns * 3.0, height), height


def _draw_plane(
    ax: Any, image: np.ndarray, window: tuple[float, float], labels: np.ndarray | None, legend: _LabelColours
) -> None:
    """Draw a grey plane (already in display orientation) and, unless ``labels`` is ``None``, its labels over it.

    ``labels`` is the plane's ``[H, W]`` label map before :func:`to_radiological`; each value > 0 is drawn in its
    colour at opacity :data:`OVERLAY_ALPHA`. An empty ``window`` (``vmax <= vmin``) becomes ``(vmin, vmin + 1)``.
    """
    vmin, vmax = window
    if not vmax > vmin:
        vmax = vmin + 1.0
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    if labels is not None:
        shown = to_radiological(np.asarray(labels)).astype(np.int64)
        masked = np.ma.masked_where(shown <= 0, shown)
        ax.imshow(
            masked, cmap=legend.cmap, vmin=-0.5, vmax=legend.top + 0.5, alpha=OVERLAY_ALPHA, interpolation="nearest"
        )
    ax.set_xticks([])
    ax.set_yticks([])


def _finish_grid(fig: Figure, height: float, legend: _LabelColours, title: str) -> None:
    """Add the legend below the grid and the title above it, then lay the panels out clear of the legend."""
    if legend.handles:
        fig.legend(
            handles=legend.handles, loc="lower center", ncol=min(len(legend.handles), 4), fontsize=8, frameon=False
        )
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0.0, legend.inches / height, 1.0, 1.0))


def plot_overlays(cases: Sequence[OverlaySlice], class_names: Mapping[int, str], title: str = "") -> Figure:
    """Grid of planes, one row per plane, columns image | reference | prediction, with a label legend.

    Reference and prediction are drawn over the grey image, each label value in its fixed :func:`label_colour`
    at opacity :data:`OVERLAY_ALPHA` (paper Fig. 5 of Roth et al. shows the same side-by-side comparison of
    result and ground truth; van de Leemput et al. Fig. 5 the temporal average, reference and prediction on each
    annotated cross-section). Planes are shown in radiological convention (:func:`to_radiological`); each row is
    labelled with the case name and where its plane lies (:func:`describe_plane`: the slice of any axis, and for
    3-D + time the frame).

    Args:
        cases: the planes to draw, one row each.
        class_names: label value -> name for the legend (background 0 may be omitted).
        title: figure title.

    Returns:
        the figure (Agg canvas).

    Raises:
        ValueError: when ``cases`` is empty or a case's image, reference and prediction are not 2-D arrays of one
            shape.
    """
    if len(cases) == 0:
        raise ValueError("plot_overlays needs at least one OverlaySlice, got none.")
    for case in cases:
        shapes = [np.shape(a) for a in (case.image, case.reference, case.prediction)]
        if len(shapes[0]) != 2 or len(set(shapes)) != 1:
            raise ValueError(
                f"overlay '{case.name}': image, reference and prediction must be 2-D of one shape, got {shapes}."
            )
    legend = _LabelColours(class_names, [m for c in cases for m in (c.reference, c.prediction)])
    fig, height = _grid_figure(len(cases), 3, legend)
    for row, case in enumerate(cases):
        image = to_radiological(np.asarray(case.image, dtype=np.float64))
        for col, (heading, labels) in enumerate(
            (("image", None), ("reference", case.reference), ("prediction", case.prediction))
        ):
            ax = fig.add_subplot(len(cases), 3, row * 3 + col + 1)
            _draw_plane(ax, image, case.window, labels, legend)
            if row == 0:
                ax.set_title(heading)
            if col == 0:
                ax.set_ylabel(f"{case.name}\n{describe_plane(case.index, case.axis)}", fontsize=8)
    _finish_grid(fig, height, legend, title)
    return fig


def percentile_window(plane: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Grey window of one plane: its ``low`` and ``high`` percentiles, robust to a few very bright voxels.

    Args:
        plane: intensities; non-finite values are left out.
        low: lower percentile, in [0, 100].
        high: upper percentile, in [0, 100].

    Returns:
        ``(vmin, vmax)``; ``(0, 1)`` when the plane holds no finite value.
    """
    values = np.asarray(plane, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 1.0)
    vmin, vmax = np.percentile(values, [low, high])
    return (float(vmin), float(vmax))


def plot_channel_overlays(
    cases: Sequence[ChannelOverlaySlice],
    channel_names: Sequence[str],
    class_names: Mapping[int, str],
    overlay_channel: int = 0,
    title: str = "",
    label_colours: Mapping[int, Any] | None = None,
) -> Figure:
    """Grid of multi-channel planes: every channel in grey, then reference and prediction over one channel.

    One row per plane; columns: each channel in grey with its own 1-99 percentile window
    (:func:`percentile_window`), then the reference and then the prediction drawn over channel
    ``overlay_channel`` (opacity :data:`OVERLAY_ALPHA`), with a legend of the label colours below. In the manner of
    Kayalibay et al. 2017, Fig. 7 (the four BraTS MRI modalities of a case together with its ground truth
    labels), Fig. 6 (ground truth over T1C) and Figs. 14-15 (model outputs). Planes are shown in radiological
    convention (:func:`to_radiological`); each row is labelled with the case name and where its plane lies
    (:func:`describe_plane`). Same colours as :func:`plot_overlays` unless ``label_colours`` replaces some
    (the paper's: necrosis red, edema green, non-enhancing yellow, enhancing orange).

    Args:
        cases: the planes to draw, one row each.
        channel_names: one name per channel, in channel order, e.g. ``["T1", "T2", "T1C", "FLAIR"]``: the column
            titles.
        class_names: label value -> name for the legend (background 0 may be omitted).
        overlay_channel: index of the channel the reference and prediction are drawn over (negative counts from
            the last), e.g. 2 for T1C in the order above.
        title: figure title.
        label_colours: label value -> matplotlib colour (e.g. ``{1: "red", 2: "green"}``) for the values whose
            :func:`label_colour` it replaces; ``None``: the fixed colours.

    Returns:
        the figure (Agg canvas).

    Raises:
        ValueError: when ``cases`` or ``channel_names`` is empty, ``overlay_channel`` is not a channel, a case's
            channels are not ``[len(channel_names), H, W]`` or its reference and prediction not ``[H, W]``, or
            ``label_colours`` names a value <= 0.
    """
    names = [str(n) for n in channel_names]
    if len(cases) == 0:
        raise ValueError("plot_channel_overlays needs at least one ChannelOverlaySlice, got none.")
    if len(names) == 0:
        raise ValueError("channel_names must name at least one channel, got none.")
    if not -len(names) <= int(overlay_channel) < len(names):
        raise ValueError(f"overlay_channel {overlay_channel} is not one of the {len(names)} channels {names}.")
    overlay = int(overlay_channel) % len(names)
    for case in cases:
        shapes = [np.shape(a) for a in (case.channels, case.reference, case.prediction)]
        if len(shapes[0]) != 3 or shapes[0][0] != len(names) or not shapes[0][1:] == shapes[1] == shapes[2]:
            raise ValueError(
                f"overlay '{case.name}': channels must be [{len(names)}, H, W] (one per channel name) and reference "
                f"and prediction [H, W], got {shapes}."
            )
    legend = _LabelColours(class_names, [m for c in cases for m in (c.reference, c.prediction)], label_colours)
    n_columns = len(names) + 2
    fig, height = _grid_figure(len(cases), n_columns, legend)
    headings = [*names, f"reference on {names[overlay]}", f"prediction on {names[overlay]}"]
    for row, case in enumerate(cases):
        channels = np.asarray(case.channels, dtype=np.float64)
        windows = [percentile_window(plane) for plane in channels]
        shown = [to_radiological(plane) for plane in channels]
        panels = [(c, None) for c in range(len(names))]
        panels += [(overlay, case.reference), (overlay, case.prediction)]
        for col, (channel, labels) in enumerate(panels):
            ax = fig.add_subplot(len(cases), n_columns, row * n_columns + col + 1)
            _draw_plane(ax, shown[channel], windows[channel], labels, legend)
            if row == 0:
                ax.set_title(headings[col])
            if col == 0:
                ax.set_ylabel(f"{case.name}\n{describe_plane(case.index, case.axis)}", fontsize=8)
    _finish_grid(fig, height, legend, title)
    return fig
