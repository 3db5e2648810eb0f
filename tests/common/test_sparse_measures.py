"""Sparse-annotation measures of the 4D CT tissue paper (sec. IV-A): hand-computed Dice, CMD, AVD, MVD and planes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.metrics.sparse_measures import (
    SPARSE_MEASURES,
    absolute_volume_difference,
    annotated_sections,
    contour_mean_distance,
    dice_on_annotated,
    mean_volume_difference,
    sparse_contour_mean_distance,
    sparse_segmentation_measures,
)


def _square(shape, rows, cols):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


# ---------------------------------------------------------------------------------------- contour mean distance
def test_cmd_of_squares_offset_by_one_voxel_isotropic():
    # A: rows 2..5, cols 2..5; B: rows 3..6, cols 2..5. Each 4x4 square's contour is its 12 border voxels.
    # A -> B: row 2 (4 points) is 1 voxel from B's top row; A's side points (3,2) (3,5) (4,2) (4,5) (5,2) (5,5) lie
    # on B's contour (0); (5,3) and (5,4) are inside B, 1 voxel from B's contour. Sum 4 + 2 = 6 voxels over 12
    # points = 0.5 voxel = 0.25 mm at 0.5 mm spacing; B -> A is the mirror image, so CMD = 0.25 mm.
    a, b = _square((10, 10), (2, 5), (2, 5)), _square((10, 10), (3, 6), (2, 5))
    assert contour_mean_distance(a, b, spacing=(0.5, 0.5)) == pytest.approx(0.25)
    assert contour_mean_distance(b, a, spacing=0.5) == pytest.approx(0.25)


def test_cmd_of_squares_offset_anisotropic_spacing():
    # A: rows 2..5, cols 2..5; B: cols 3..6. Spacing 0.5 mm along rows, 0.7 mm along columns.
    # A -> B: column 2 (4 points) is one column (0.7 mm) from B's contour column 3; (3,5) and (4,5) are inside B,
    # nearest B contour one row away (0.5 mm, closer than a column); the other 6 points lie on B's contour.
    # h = (4 * 0.7 + 2 * 0.5) / 12 = 3.8 / 12, the same both ways.
    a, b = _square((10, 10), (2, 5), (2, 5)), _square((10, 10), (2, 5), (3, 6))
    assert contour_mean_distance(a, b, spacing=(0.5, 0.7)) == pytest.approx(3.8 / 12)


def test_cmd_takes_the_larger_directed_mean():
    # A: one voxel (its own contour); B: a 3x3 square whose contour is the ring of 8 voxels around A.
    # h(A,B) = 1 (nearest ring voxel); h(B,A) = (4 * 1 + 4 * sqrt(2)) / 8. CMD is the max, not MONAI's symmetric
    # average of all 9 distances together.
    a, b = _square((9, 9), (5, 5), (5, 5)), _square((9, 9), (4, 6), (4, 6))
    h_ba = (4 + 4 * math.sqrt(2)) / 8
    assert contour_mean_distance(a, b) == pytest.approx(h_ba)
    assert contour_mean_distance(b, a) == pytest.approx(h_ba)
    assert contour_mean_distance(a, b) != pytest.approx((1 + 8 * h_ba) / 9)
    # spacing 2 mm along rows, 1 mm along columns: h(A,B) = 1 (the column neighbours); the ring is 2, 2, 1, 1 mm
    # (row, row, column, column neighbours) and 4 diagonals of sqrt(5) mm: h(B,A) = (6 + 4 sqrt(5)) / 8
    assert contour_mean_distance(a, b, spacing=(2.0, 1.0)) == pytest.approx((6 + 4 * math.sqrt(5)) / 8)


def test_cmd_in_3d_of_cubes_and_torch_inputs():
    # A 3x3x3 cube's contour is its 26 surface voxels; B is A shifted one voxel along axis 0. A -> B: the 9 voxels
    # of A's first face are 1 from B's surface; the 8 ring voxels of the middle layer lie on B's surface; A's last
    # face has 8 voxels on B's surface and its centre, inside B, is 1 from it: (9 + 1) / 26 both ways.
    a = np.zeros((8, 7, 7), dtype=bool)
    a[2:5, 2:5, 2:5] = True
    b = np.roll(a, 1, axis=0)
    assert contour_mean_distance(a, b) == pytest.approx(10 / 26)
    assert contour_mean_distance(torch.from_numpy(a), torch.from_numpy(b), spacing=2.0) == pytest.approx(20 / 26)


def test_cmd_empty_masks():
    empty, square = np.zeros((6, 6), dtype=bool), _square((6, 6), (1, 3), (1, 3))
    assert math.isnan(contour_mean_distance(empty, empty))
    assert contour_mean_distance(square, empty) == math.inf
    assert contour_mean_distance(empty, square) == math.inf


def test_annotated_contour_equals_plain_contour_when_everything_is_annotated():
    rng = np.random.default_rng(3)
    a = np.zeros((16, 16), dtype=bool)
    b = np.zeros((16, 16), dtype=bool)
    a[2:-2, 2:-2] = rng.random((12, 12)) < 0.5  # masks off the image border, where the two rules differ
    b[2:-2, 2:-2] = rng.random((12, 12)) < 0.5
    everything = np.ones((16, 16), dtype=bool)
    plain = contour_mean_distance(a, b, spacing=(0.4, 0.9))
    assert contour_mean_distance(a, b, spacing=(0.4, 0.9), annotated=everything) == pytest.approx(plain)


# --------------------------------------------------------------------------------------- sparse, per case
def _axial_case():
    """A (6, 10, 9) volume annotated in the axial plane z=4, rows 1..4, columns 2..7.

    Reference: WM (2) on columns 2..4, GM (3) on columns 5..7. Prediction: the WM/GM interface one column further
    (WM on columns 2..5), and other classes everywhere outside the annotated area.
    """
    label = np.zeros((6, 10, 9), dtype=np.int64)
    label[1:5, 2:5, 4] = 2
    label[1:5, 5:8, 4] = 3
    pred = np.ones_like(label)  # CSF outside the annotated area: must not matter
    pred[:, 2:6, :] = 2
    pred[:, 6:8, :] = 3
    return pred, label, (0.5, 0.7, 2.0)


def test_sparse_measures_hand_computed_axial_section():
    pred, label, spacing = _axial_case()
    found = sparse_segmentation_measures(pred, label, spacing=spacing)
    assert list(found) == [1, 2, 3, 4]
    # WM: reference 12 voxels, prediction 16 annotated voxels, 12 shared -> Dice 24/28. Contours run only along the
    # WM/GM interface (not along the annotated area's edge): reference column 4, prediction column 5, one column
    # (0.7 mm) apart both ways. Voxel volume 0.5 * 0.7 * 2 = 0.7 mm^3: MVD |16 - 12| * 0.7 = 2.8 mm^3, AVD 2.8 / 8.4.
    assert found[2]["dice"] == pytest.approx(24 / 28)
    assert found[2]["cmd_mm"] == pytest.approx(0.7)
    assert found[2]["mvd_mm3"] == pytest.approx(2.8)
    assert found[2]["avd_percent"] == pytest.approx(100 * 2.8 / 8.4)
    # GM: reference 12, prediction 8, shared 8 -> Dice 16/20; interface columns 5 and 6 -> 0.7 mm; MVD 2.8 mm^3.
    assert found[3]["dice"] == pytest.approx(0.8)
    assert found[3]["cmd_mm"] == pytest.approx(0.7)
    assert found[3]["mvd_mm3"] == pytest.approx(2.8)
    assert found[3]["avd_percent"] == pytest.approx(100 * 2.8 / 8.4)
    # CSF is predicted only outside the annotated area and vessels nowhere: neither is scored
    for absent in (1, 4):
        assert set(found[absent]) == set(SPARSE_MEASURES)
        assert all(math.isnan(v) for v in found[absent].values())


def test_sparse_measures_ignore_the_prediction_outside_annotations():
    pred, label, spacing = _axial_case()
    other = np.random.default_rng(0).integers(1, 5, size=pred.shape)
    other[label != 0] = pred[label != 0]
    first = sparse_segmentation_measures(pred, label, spacing=spacing, classes=(2, 3))
    second = sparse_segmentation_measures(other, label, spacing=spacing, classes=(2, 3))
    assert first == second


def test_sparse_measures_perfect_prediction_and_torch_input():
    _, label, spacing = _axial_case()
    pred = label.copy()
    pred[label == 0] = 4
    found = sparse_segmentation_measures(torch.from_numpy(pred).float()[None], torch.from_numpy(label), spacing)
    for c in (2, 3):
        assert found[c] == {"dice": 1.0, "cmd_mm": 0.0, "avd_percent": 0.0, "mvd_mm3": 0.0}


def test_sparse_measures_class_on_one_side_only():
    pred, label, spacing = _axial_case()
    pred[1:3, 2:4, 4] = 4  # a false vessel inside the annotated WM
    label_csf = label.copy()
    label_csf[4, 5:8, 4] = 1  # CSF in the reference that the prediction (GM there) misses
    found = sparse_segmentation_measures(pred, label_csf, spacing)
    # vessel: predicted (4 voxels = 2.8 mm^3), not annotated: Dice 0, no reference contour, AVD infinite
    assert found[4]["dice"] == 0.0 and found[4]["cmd_mm"] == math.inf
    assert found[4]["mvd_mm3"] == pytest.approx(2.8) and found[4]["avd_percent"] == math.inf
    # CSF: annotated (3 voxels), never predicted: MVD = the whole reference volume, AVD 100 %
    assert found[1]["dice"] == 0.0 and found[1]["cmd_mm"] == math.inf
    assert found[1]["mvd_mm3"] == pytest.approx(2.1) and found[1]["avd_percent"] == pytest.approx(100.0)


def test_sparse_measures_subset_of_measures():
    pred, label, spacing = _axial_case()
    found = sparse_segmentation_measures(pred, label, spacing, classes=(2,), measures=("dice",))
    assert found == {2: {"dice": pytest.approx(24 / 28)}}


def test_sparse_cmd_falls_back_to_other_sections_when_a_plane_lacks_the_class():
    # Two full axial planes z=1 and z=6 of an 8^3 volume, 1 mm voxels. z=1: rows 0..3 CSF, rows 4..7 WM in both.
    # z=6: the reference is all WM, the prediction has CSF on rows 0..3. Predicted CSF contours: row 3 at z=1 (on
    # the reference contour, 0) and row 3 at z=6, a plane without reference CSF, whose nearest reference CSF
    # contour point is straight down at z=1: 5 mm. h(pred, ref) = (8 * 0 + 8 * 5) / 16 = 2.5; h(ref, pred) = 0.
    label = np.zeros((8, 8, 8), dtype=np.int64)
    label[:, :, 1] = 2
    label[:4, :, 1] = 1
    label[:, :, 6] = 2
    pred = label.copy()
    pred[:4, :, 6] = 1
    assert annotated_sections(label) == [(2, 1), (2, 6)]
    assert sparse_contour_mean_distance(pred, label, class_index=1) == pytest.approx(2.5)
    assert sparse_segmentation_measures(pred, label, classes=(1,))[1]["cmd_mm"] == pytest.approx(2.5)


def test_sparse_cmd_region_filling_class_uses_its_edge():
    # 2D map, annotated area rows 2..5 x cols 2..5 (4x4), all reference class 1: it has no contour against another
    # annotated class, so its plain edge (12 voxels) stands in. Prediction: class 1 on columns 2..3, class 2 on
    # 4..5, contour column 3 (4 voxels). pred -> ref: (2,3) and (5,3) are on the edge, (3,3) and (4,3) one column
    # from it: 2/4. ref -> pred: top and bottom rows 1, 0, 1, 2 each; left column rows 3, 4: 1 each; right column
    # rows 3, 4: 2 each: 14/12. CMD = 7/6.
    label = np.zeros((10, 10), dtype=np.int64)
    label[2:6, 2:6] = 1
    pred = np.full((10, 10), 2)
    pred[2:6, 2:4] = 1
    assert sparse_contour_mean_distance(pred, label, class_index=1) == pytest.approx(7 / 6)


def test_observer_comparison_scores_voxels_annotated_by_both():
    _, label, spacing = _axial_case()
    second = label.copy()
    second[1, 2:8, 4] = 0  # the second observer left row 1 out, and labels one WM voxel GM
    second[2, 4, 4] = 3
    found = sparse_segmentation_measures(second, label, spacing, classes=(2, 3), pred_ignore_value=0)
    # rows 2..4 annotated by both: WM reference 9 voxels, second observer 8, shared 8 -> Dice 16/17
    assert found[2]["dice"] == pytest.approx(16 / 17)
    assert found[2]["mvd_mm3"] == pytest.approx(0.7)


# ------------------------------------------------------------------------------------------------ Dice, volumes
def test_dice_counts_annotated_voxels_only():
    label = np.zeros((5, 5, 5), dtype=np.int64)
    label[2, :2, :5] = 1  # 10 annotated voxels, 4 of class 3
    label[2, 0, 1:5] = 3
    pred = np.full_like(label, 3)  # class 3 predicted everywhere: 125 voxels, 10 of them annotated
    assert dice_on_annotated(pred, label, 3) == pytest.approx(2 * 4 / (10 + 4))
    assert math.isnan(dice_on_annotated(pred, label, 2))  # absent on both sides


def test_mean_and_absolute_volume_difference_general_form():
    # n = 2: |10-12| + |10-17| + |20-12| + |20-17| = 2 + 7 + 8 + 3 = 20, / 2^2 = 5; AVD = 5 / mean(10, 20) = 1/3
    assert mean_volume_difference([10.0, 20.0], [12.0, 17.0]) == pytest.approx(5.0)
    assert absolute_volume_difference([10.0, 20.0], [12.0, 17.0]) == pytest.approx(100 / 3)
    # n = 1: the plain difference, relative to the first (reference) side
    assert mean_volume_difference(8.4, 11.2) == pytest.approx(2.8)
    assert absolute_volume_difference(8.4, 11.2) == pytest.approx(100 * 2.8 / 8.4)
    assert absolute_volume_difference(11.2, 8.4) == pytest.approx(100 * 2.8 / 11.2)
    # sides of different sizes average over all pairs: (|10-12| + |10-17|) / 2
    assert mean_volume_difference([10.0], [12.0, 17.0]) == pytest.approx(4.5)
    assert math.isnan(absolute_volume_difference(0.0, 0.0))
    assert absolute_volume_difference(0.0, 1.0) == math.inf


# ---------------------------------------------------------------------------------------------- annotated planes
def test_annotated_sections_one_axial_one_sagittal_plane():
    label = np.zeros((12, 14, 16), dtype=np.int64)
    label[2:10, 3:12, 5] = 2  # axial plane z=5: 72 voxels
    label[4, 1:13, 2:14] = 3  # sagittal plane x=4: 144 voxels, crossing the axial one along a line
    assert annotated_sections(label) == [(0, 4), (2, 5)]
    assert annotated_sections(torch.from_numpy(label)[None]) == [(0, 4), (2, 5)]


def test_annotated_sections_three_planes_and_dense_volume():
    label = np.zeros((10, 11, 12), dtype=np.int64)
    label[7, 2:9, 2:10] = 1
    label[1:9, 6, 3:11] = 2
    label[2:8, 1:10, 3] = 3
    assert annotated_sections(label) == [(0, 7), (1, 6), (2, 3)]
    dense = np.ones((4, 6, 6), dtype=np.int64)  # a full label: all planes along the axis with the largest planes
    assert annotated_sections(dense) == [(0, i) for i in range(4)]
    assert annotated_sections(np.zeros((3, 3, 3), dtype=np.int64)) == []
    stray = label.copy()
    stray[0, 0, 0] = 4
    assert annotated_sections(stray, min_voxels=2) == [(0, 7), (1, 6), (2, 3)]
    assert (0, 0) in annotated_sections(stray)


# --------------------------------------------------------------------------------------------- argument checks
def test_bad_arguments_raise():
    pred, label, spacing = _axial_case()
    with pytest.raises(ValueError, match="one shape"):
        sparse_segmentation_measures(pred[:-1], label, spacing)
    with pytest.raises(ValueError, match="spacing"):
        sparse_segmentation_measures(pred, label, (0.5, -1.0, 2.0))
    with pytest.raises(ValueError, match="fractional"):
        sparse_segmentation_measures(pred + 0.5, label, spacing)
    with pytest.raises(ValueError, match="measures"):
        sparse_segmentation_measures(pred, label, spacing, measures=("hd95",))
    with pytest.raises(ValueError, match="ignore_value"):
        sparse_segmentation_measures(pred, label, spacing, classes=(0, 1))
    with pytest.raises(ValueError, match="section"):
        sparse_contour_mean_distance(pred, label, 2, spacing, sections=[(2, 9)])
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        sparse_segmentation_measures(pred.tolist(), label, spacing)
    with pytest.raises(ValueError, match="3 spatial"):
        annotated_sections(label[0])
    with pytest.raises(ValueError, match="volumes"):
        mean_volume_difference([], [1.0])
    with pytest.raises(ValueError, match="volumes"):
        mean_volume_difference([-1.0], [1.0])
