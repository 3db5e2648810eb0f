"""Tests of common.visualize: display orientation, slice choice, fixed colours, and what the figures show.

The figures are decoded back to pixels (matplotlib.image.imread) and checked for content: where a label's colour
lands, and where a box plot's quartile and median lines are. Expected values are worked out by hand.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from monai.data import MetaTensor
from monai.transforms import Orientation

from common.data.errors import BundleInputError
from common.visualize import (
    OverlaySlice,
    describe_plane,
    label_colour,
    largest_foreground_slice,
    plot_boxplots,
    plot_overlays,
    to_radiological,
)

# matplotlib's tab10 colours 1 and 2 (#1f77b4 blue, #ff7f0e orange) and tab20b's first (#393b79), by hand
BLUE = np.array([0x1F, 0x77, 0xB4]) / 255
ORANGE = np.array([0xFF, 0x7F, 0x0E]) / 255
TAB20B_FIRST = np.array([0x39, 0x3B, 0x79]) / 255
OVERLAY_OPACITY = 0.55  # label colours are drawn at this opacity over the grey image (plot_overlays' docstring)


# --- pixel helpers, also used by test_segmentation_report ----------------------------------------------------------


def png_pixels(source) -> np.ndarray:
    """RGB floats [rows, cols, 3] of a PNG file, or of a figure saved as PNG."""
    if hasattr(source, "savefig"):
        buffer = io.BytesIO()
        source.savefig(buffer, format="png")
        buffer.seek(0)
        source = buffer
    return imread(source, format="png")[..., :3]


def label_pixels(rgb: np.ndarray, colour: np.ndarray, tol: float = 0.03) -> np.ndarray:
    """Mask of pixels showing ``colour`` at the overlay opacity over any grey: rgb - opacity * colour is grey."""
    rest = rgb - OVERLAY_OPACITY * colour
    grey = rest.max(axis=-1) - rest.min(axis=-1) < tol
    return grey & (rest.mean(axis=-1) > -tol) & (rest.mean(axis=-1) < 1 - OVERLAY_OPACITY + tol)


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs (first, last) of sorted integer indices."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], int(i))
        else:
            runs.append((int(i), int(i)))
    return runs


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """Per column of a 2-D boolean mask, the length of its longest run of True."""
    current = np.zeros(mask.shape[1], np.int64)
    longest = np.zeros(mask.shape[1], np.int64)
    for row in mask:
        current = (current + 1) * row
        longest = np.maximum(longest, current)
    return longest


def overlay_panels(rgb: np.ndarray, colours, min_size: int = 50) -> list[list[np.ndarray]]:
    """The drawn planes of an overlay figure, [row][column]: blocks of grey image (below white) or label colour.

    A column (row) of pixels belongs to a panel where it holds an unbroken run of at least ``min_size`` such
    pixels: images are hundreds of pixels tall and wide, text and legend patches are not.
    """
    grey = (rgb.max(axis=-1) - rgb.min(axis=-1) < 0.01) & (rgb.mean(axis=-1) < 0.9)
    mask = grey | np.any([label_pixels(rgb, c) for c in colours], axis=0)
    columns = [r for r in _runs(np.flatnonzero(_longest_runs(mask) >= min_size)) if r[1] - r[0] >= min_size]
    in_columns = np.zeros_like(mask)
    for first, last in columns:
        in_columns[:, first : last + 1] = mask[:, first : last + 1]
    rows = [r for r in _runs(np.flatnonzero(_longest_runs(in_columns.T) >= min_size)) if r[1] - r[0] >= min_size]
    return [[rgb[r0 : r1 + 1, c0 : c1 + 1] for c0, c1 in columns] for r0, r1 in rows]


def box_lines(rgb: np.ndarray) -> list[list[float]]:
    """Per box (left to right), the values of the dark horizontal lines across it, on a y axis spanning 0 to 1.

    The y range is read from the axes frame (the two long dark horizontal lines: value 1 at the top, 0 at the
    bottom); a box is a run of columns holding the box fill; the lines are read in a column at 85% of the box
    width, clear of the jittered case points and the mean marker in the middle: the quartiles (box edges) and
    the median, merged where they coincide.
    """
    dark = rgb.max(axis=-1) < 0.35
    frame = _runs(np.flatnonzero(dark.mean(axis=1) > 0.5))
    assert len(frame) == 2, f"expected the top and bottom of the axes frame, found rows {frame}"
    top, bottom = (sum(frame[0]) / 2, sum(frame[1]) / 2)
    # lightsteelblue (176, 196, 222) at opacity 0.8 over white
    fill = np.abs(rgb - (0.8 * np.array([176, 196, 222]) / 255 + 0.2)).max(axis=-1) < 0.04
    boxes = []
    for first, last in _runs(np.flatnonzero(fill.any(axis=0))):
        if last - first < 5:
            continue
        col = int(round(first + 0.85 * (last - first)))
        rows = np.flatnonzero(fill[:, col])
        span = np.arange(max(rows.min() - 4, 0), min(rows.max() + 5, rgb.shape[0]))
        lines = _runs(span[dark[span, col]])
        boxes.append([round((bottom - (a + b) / 2) / (bottom - top), 4) for a, b in lines])
    return boxes


# --- to_radiological -------------------------------------------------------------------------------------------


def test_to_radiological_hand_made_ras_slice():
    # RAS array axes: x (index 0) grows to the patient's right, y (index 1) to anterior
    ras = np.zeros((4, 6), np.int64)
    ras[3, 5] = 1  # patient's right-most, anterior-most voxel
    ras[0, 1] = 2  # patient's left-most, one row from the posterior edge
    shown = to_radiological(ras)
    assert shown.shape == (6, 4)  # rows: anterior (top) -> posterior; columns: patient's right (viewer's left) -> left
    assert shown[0, 0] == 1
    assert shown[4, 3] == 2
    assert np.count_nonzero(shown) == 2


def test_to_radiological_after_monai_orientation_from_lps():
    """A marker at world (+x, +y) (RAS+ world: patient's right, anterior) lands top-left on screen."""
    lps_affine = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0]))  # voxel axes to the left, posterior, superior
    volume = torch.zeros((1, 5, 7, 3))
    # voxel (i, j) lies at world (-i, -j): the most right-anterior voxel is (0, 0), in slice k = 1
    volume[0, 0, 0, 1] = 1
    ras = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(MetaTensor(volume, affine=lps_affine))
    shown = to_radiological(ras[0, :, :, 1].numpy())
    assert shown.shape == (7, 5)
    assert shown[0, 0] == 1 and np.count_nonzero(shown) == 1


def test_to_radiological_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D") as info:
        to_radiological(np.zeros((2, 2, 2)))
    assert type(info.value) is ValueError


# --- largest_foreground_slice ------------------------------------------------------------------------------------


def test_largest_foreground_slice_2d_is_the_image():
    assert largest_foreground_slice(np.ones((3, 4), np.int64)) == ()


def test_largest_foreground_slice_3d():
    label = np.zeros((4, 4, 5), np.int64)
    label[0, 0:3, 1] = 1  # slice 1: 3 voxels
    label[0:2, 0:2, 2] = 2  # slice 2: 4 voxels
    label[2:4, 2:4, 3] = 3  # slice 3: 4 voxels as well (tie: the first, 2, wins)
    label[0, 0, 4] = 1  # slice 4: 1 voxel
    assert largest_foreground_slice(label) == (2,)
    assert largest_foreground_slice(np.zeros((4, 4, 5), np.int64)) == (2,)  # no foreground: the middle (5 // 2)


def test_largest_foreground_slice_3d_plus_time():
    label = np.zeros((4, 4, 3, 6), np.int64)
    label[0:2, 0:2, 2, 0] = 1  # z=2, t=0: 4 voxels
    label[0:3, 0:2, 1, 4] = 1  # z=1, t=4: 6 voxels, the largest
    label[0, 0:3, 0, 5] = 2  # z=0, t=5: 3 voxels
    assert largest_foreground_slice(label) == (1, 4)
    assert largest_foreground_slice(np.zeros((4, 4, 3, 6), np.int64)) == (1, 3)


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2, 2, 2)])
def test_largest_foreground_slice_rejects_other_ranks(shape):
    with pytest.raises(ValueError, match=r"\[H, W, D, T\]") as info:
        largest_foreground_slice(np.zeros(shape))
    assert type(info.value) is ValueError


def test_describe_plane():
    assert describe_plane(()) == "2-D image"
    assert describe_plane((12,)) == "axial slice z=12"
    assert describe_plane((12, 3)) == "frame t=3, axial slice z=12"
    with pytest.raises(ValueError, match="0 to 2 entries"):
        describe_plane((1, 2, 3))
    assert describe_plane((40,), axis=0) == "sagittal slice x=40"
    assert describe_plane((7,), axis=1) == "coronal slice y=7"
    assert describe_plane((7, 2), axis=1) == "frame t=2, coronal slice y=7"
    with pytest.raises(ValueError, match="axis"):
        describe_plane((7,), axis=3)


# --- label_colour ------------------------------------------------------------------------------------------------


def test_label_colour_is_fixed_per_value():
    assert label_colour(0) == (0.0, 0.0, 0.0, 0.0)
    assert label_colour(-3) == (0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(label_colour(1), [*BLUE, 1.0])
    np.testing.assert_allclose(label_colour(2), [*ORANGE, 1.0])
    np.testing.assert_allclose(label_colour(11), [*TAB20B_FIRST, 1.0])  # after tab10's 10 colours
    np.testing.assert_allclose(label_colour(51), [*BLUE, 1.0])  # 50 colours, then they repeat
    assert label_colour(np.int64(2)) == label_colour(2)


@pytest.mark.parametrize("value", [1.5, "1", True])
def test_label_colour_rejects_non_integers(value):
    with pytest.raises(TypeError, match="integer"):
        label_colour(value)


# --- plot_boxplots -----------------------------------------------------------------------------------------------


def test_boxplot_draws_quartiles_and_median_and_skips_nan():
    values = np.array(
        [
            [0.2, np.nan, 0.1],
            [0.4, np.nan, 0.2],
            [0.6, np.nan, 0.3],
            [0.8, np.nan, np.nan],
            [np.nan, np.nan, np.nan],
        ]
    )
    rgb = png_pixels(plot_boxplots(values, ["a", "absent", "c"], title="t", ylabel="Dice"))
    boxes = box_lines(rgb)
    # a: 0.2, 0.4, 0.6, 0.8 -> quartiles at positions 0.75 and 2.25 of the sorted values: 0.35 and 0.65, median 0.5
    # "absent": no finite value, no box; c: 0.1, 0.2, 0.3 -> 0.15, median 0.2, 0.25
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], [0.65, 0.5, 0.35], atol=0.015)
    np.testing.assert_allclose(boxes[1], [0.25, 0.2, 0.15], atol=0.015)


def test_boxplot_rejects_wrong_column_count():
    with pytest.raises(ValueError, match="one column per name") as info:
        plot_boxplots(np.zeros((3, 2)), ["a"])
    assert not isinstance(info.value, BundleInputError)


# --- plot_overlays -----------------------------------------------------------------------------------------------


def test_overlay_colours_land_where_the_labels_are():
    # RAS slice [x, y] = [8, 8]: reference label 1 in the patient's right-anterior quarter (x >= 4, y >= 4),
    # prediction label 2 in the patient's left-posterior quarter (x < 4, y < 4); a uniform mid-grey image.
    reference = np.zeros((8, 8), np.int64)
    reference[4:, 4:] = 1
    prediction = np.zeros((8, 8), np.int64)
    prediction[:4, :4] = 2
    case = OverlaySlice("case_a", np.full((8, 8), 0.5), reference, prediction, (0.0, 1.0), (3, 1))
    fig = plot_overlays([case], {1: "liver", 2: "spleen"}, title="overlays")
    rgb = png_pixels(fig)

    panels = overlay_panels(rgb, [BLUE, ORANGE])
    assert [len(row) for row in panels] == [3]  # one case: image | reference | prediction
    image_panel, reference_panel, prediction_panel = panels[0]
    for panel in panels[0]:
        assert abs(panel.shape[0] - panel.shape[1]) <= 2  # the 8x8 plane drawn square
    assert not label_pixels(image_panel, BLUE).any() and not label_pixels(image_panel, ORANGE).any()
    assert not label_pixels(reference_panel, ORANGE).any() and not label_pixels(prediction_panel, BLUE).any()

    # each label fills one quarter of its panel: patient's right on the viewer's left, anterior at the top
    for panel, colour in ((reference_panel, BLUE), (prediction_panel, ORANGE)):
        mask = label_pixels(panel, colour)
        half_r, half_c = panel.shape[0] // 2, panel.shape[1] // 2
        quarters = [mask[:half_r, :half_c], mask[:half_r, half_c:], mask[half_r:, :half_c], mask[half_r:, half_c:]]
        filled = [q.mean() for q in quarters]  # top-left, top-right, bottom-left, bottom-right
        where = 0 if colour is BLUE else 3  # reference: right-anterior; prediction: left-posterior
        assert filled[where] > 0.95, filled
        assert max(f for i, f in enumerate(filled) if i != where) < 0.02, filled

    assert fig.axes[0].get_ylabel() == "case_a\nframe t=1, axial slice z=3"


@pytest.mark.parametrize("n_cases", [1, 2, 4])
def test_overlay_panels_neither_overlap_nor_hide_the_legend(n_cases):
    """Found by decoding a 2-case report: the rows were drawn 12 pixels into each other, hiding part of case 0."""
    case = OverlaySlice("c", np.zeros((4, 4)), np.eye(4, dtype=np.int64), np.eye(4, dtype=np.int64), (0.0, 1.0))
    fig = plot_overlays([case] * n_cases, {v: f"organ {v}" for v in range(1, 8)})
    fig.canvas.draw()
    boxes = [ax.get_window_extent() for ax in fig.axes]
    assert len(boxes) == 3 * n_cases
    for i, a in enumerate(boxes):
        assert a.width == pytest.approx(a.height, abs=1)  # a 4x4 plane drawn square
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    legend = fig.legends[0].get_window_extent()
    assert legend.y1 < min(b.y0 for b in boxes)


def test_overlays_reject_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        plot_overlays([], {1: "a"})
    bad = OverlaySlice("x", np.zeros((4, 4)), np.zeros((4, 5), np.int64), np.zeros((4, 4), np.int64), (0.0, 1.0))
    with pytest.raises(ValueError, match="one shape") as info:
        plot_overlays([bad], {1: "a"})
    assert type(info.value) is ValueError
