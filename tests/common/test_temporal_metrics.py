"""Frame Dice, temporal smoothness, consecutive-frame surface distance and EF (cardiac 4D CNN paper, sec. 4)."""

import math

import numpy as np
import pytest
import torch

from common.metrics.temporal import (
    consecutive_frame_surface_distance,
    ef_detection,
    ejection_fraction,
    frame_dice,
    lv_volume_curve,
    temporal_smoothness_l2,
)

IGNORE = 255


# ----------------------------------------------------------------------------------------------------- frame Dice
def test_frame_dice_by_hand():
    label = np.zeros((2, 2, 1, 4), dtype=np.int64)
    pred = np.zeros_like(label)
    # frame 0: label class 1 at 2 voxels, class 2 at 1; pred class 1 at 1 of them + 1 other voxel, class 2 the same
    label[..., 0] = [[[1], [1]], [[2], [0]]]
    pred[..., 0] = [[[1], [0]], [[2], [1]]]
    # frame 1: not annotated (its prediction is anything)
    label[..., 1] = IGNORE
    pred[..., 1] = 2
    # frame 2: class 1 everywhere in both; class 2 in neither (empty-empty)
    label[..., 2] = 1
    pred[..., 2] = 1
    # frame 3: class 2 in the label only (1 voxel); class 1: label 3 voxels, pred 3 voxels, 2 shared
    label[..., 3] = [[[1], [1]], [[1], [2]]]
    pred[..., 3] = [[[1], [1]], [[0], [1]]]
    result = frame_dice(pred, label)
    assert result["frames"] == [0, 2, 3]
    # class 1: frame 0: 2*1/(2+2) = 0.5; frame 2: 1.0; frame 3: 2*2/(3+3) = 2/3
    assert result["per_frame"][1] == pytest.approx([0.5, 1.0, 2 / 3])
    assert result["dice"][1] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # class 2: frame 0: 2*1/(1+1) = 1; frame 2: both empty -> 1.0; frame 3: label only -> 0.0
    assert result["per_frame"][2] == pytest.approx([1.0, 1.0, 0.0])
    assert result["dice"][2] == pytest.approx(2 / 3)
    # torch input and a leading channel give the same
    again = frame_dice(torch.tensor(pred)[None], torch.tensor(label)[None].float(), classes=(2,))
    assert again["dice"] == {2: pytest.approx(2 / 3)}


def test_frame_dice_partially_ignored_frame_and_errors():
    label = np.ones((2, 2, 2, 3), dtype=np.int64)
    pred = np.ones_like(label)
    label[0, 0, 0, 1] = IGNORE  # frame 1 is not annotated as a whole
    pred[..., 1] = 0
    assert frame_dice(pred, label, classes=(1,))["frames"] == [0, 2]
    assert frame_dice(pred, label, classes=(1,))["dice"][1] == 1.0
    with pytest.raises(ValueError, match="no annotated frame"):
        frame_dice(pred, np.full_like(label, IGNORE))
    with pytest.raises(ValueError, match="one shape"):
        frame_dice(pred[..., :2], label)
    with pytest.raises(ValueError, match="4 spatial dimensions"):
        frame_dice(pred[..., 0], label[..., 0])
    with pytest.raises(ValueError, match="at least one class"):
        frame_dice(pred, label, classes=())


# ------------------------------------------------------------------------------------------- smoothness (L2 norm)
def growing_cube(n_frames: int = 4) -> np.ndarray:
    """Class 1: an x-run of 1 + t voxels by 2 x 2 in frame t (4 voxels added per step); class 2: fixed 2 x 2 x 2."""
    seq = np.zeros((6, 6, 6, n_frames), dtype=np.int64)
    for t in range(n_frames):
        seq[: 1 + t, :2, :2, t] = 1
        seq[4:6, 4:6, 4:6, t] = 2
    return seq


def test_smoothness_of_growing_cube():
    seq = growing_cube()
    # class 1: 4 voxels change per step, 3 steps: sqrt(12 * dV / 3); class 2 never changes
    assert temporal_smoothness_l2(seq) == {1: pytest.approx(2.0), 2: 0.0}  # voxels
    dv = 1.0 * 1.0 * 2.0 / 1000.0  # ml
    result = temporal_smoothness_l2(seq, spacing=(1.0, 1.0, 2.0))
    assert result[1] == pytest.approx(math.sqrt(12 * dv / 3))
    assert result[2] == 0.0


def test_smoothness_of_moving_cube_and_uneven_steps():
    seq = np.zeros((6, 3, 3, 3), dtype=np.int64)
    for t in range(3):
        seq[t : t + 2, :2, :2, t] = 1  # a 2x2x2 cube moving one voxel per frame: 4 leave, 4 arrive
    assert temporal_smoothness_l2(seq, classes=(1,))[1] == pytest.approx(math.sqrt(8.0))
    uneven = np.zeros((4, 4, 1, 4), dtype=np.int64)
    uneven[:1, :4, 0, 0] = 1  # 4 voxels
    uneven[:1, :4, 0, 1] = 1  # 4 voxels: 0 changed
    uneven[:3, :4, 0, 2] = 1  # 12 voxels: 8 changed
    uneven[:2, :4, 0, 3] = 1  # 8 voxels: 4 changed
    assert temporal_smoothness_l2(torch.tensor(uneven), classes=(1,))[1] == pytest.approx(math.sqrt(12 / 3))


def test_smoothness_errors():
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_smoothness_l2(np.zeros((2, 2, 2, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="spacing"):
        temporal_smoothness_l2(growing_cube(), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="4 spatial dimensions"):
        temporal_smoothness_l2(np.zeros((2, 2, 2), dtype=np.int64))


# --------------------------------------------------------------------------------- consecutive surface distance
def two_cubes(shift_axis: int = 0) -> np.ndarray:
    """Frame 0: a 2x2x2 cube at [1:3]^3; frame 1: the same shifted by one voxel along ``shift_axis`` (5^3 volume)."""
    seq = np.zeros((5, 5, 5, 2), dtype=np.int64)
    seq[1:3, 1:3, 1:3, 0] = 1
    box = [slice(1, 3)] * 3
    box[shift_axis] = slice(2, 4)
    seq[(*box, 1)] = 1
    return seq


def test_surface_distance_of_shifted_cube():
    # A 2x2x2 cube has no interior voxel (its cross erosion is empty): all 8 voxels are surface. Shifted by one
    # voxel along x, 4 of A's voxels lie in B (distance 0) and 4 are one step from B along x; the same from B's side.
    # The symmetric mean over the 16 distances is (8 * 0 + 8 * d) / 16 = d / 2, d the x spacing.
    assert consecutive_frame_surface_distance(two_cubes(0), classes=(1,), spacing=1.0)[1] == pytest.approx(0.5)
    assert consecutive_frame_surface_distance(two_cubes(0), classes=(1,), spacing=(2.0, 1.0, 1.0))[1] == (
        pytest.approx(1.0)
    )
    assert consecutive_frame_surface_distance(two_cubes(1), classes=(1,), spacing=(2.0, 1.0, 1.0))[1] == (
        pytest.approx(0.5)
    )


def test_surface_distance_of_grown_cube():
    # A = [1:3]^3 (8 surface voxels, coordinates in {1,2}^3); B = [1:4]^3, whose cross erosion keeps only its centre
    # (2,2,2), so B's surface is the other 26 voxels of {1,2,3}^3.
    # A -> B: 7 voxels are on B's surface (0); (2,2,2) is 1 from B's surface: sum 1 over 8 voxels.
    # B -> A: a voxel of B's surface with k coordinates equal to 3 is sqrt(k) from {1,2}^3; there are 7 with k = 0
    # (8 minus the centre), 12 with k = 1, 6 with k = 2 and 1 with k = 3: sum 12 + 6 sqrt(2) + sqrt(3) over 26.
    seq = np.zeros((5, 5, 5, 2), dtype=np.int64)
    seq[1:3, 1:3, 1:3, 0] = 2
    seq[1:4, 1:4, 1:4, 1] = 2
    expected = (1 + 12 + 6 * math.sqrt(2) + math.sqrt(3)) / (8 + 26)
    assert consecutive_frame_surface_distance(seq, classes=(2,), spacing=1.0)[2] == pytest.approx(expected)
    # time reversed: the same pair, the same symmetric distance
    assert consecutive_frame_surface_distance(seq[..., ::-1], classes=(2,), spacing=1.0)[2] == pytest.approx(expected)


def test_surface_distance_averages_pairs_and_skips_empty_frames():
    shifted = two_cubes(0)
    seq = np.zeros((5, 5, 5, 5), dtype=np.int64)
    seq[..., 0] = shifted[..., 0]
    seq[..., 1] = shifted[..., 0]  # pair (0, 1): identical, 0
    seq[..., 2] = shifted[..., 1]  # pair (1, 2): 0.5
    # frame 3 empty: pairs (2, 3) and (3, 4) skipped
    seq[..., 4] = shifted[..., 1]
    result = consecutive_frame_surface_distance(seq, classes=(1, 2), spacing=1.0)
    assert result[1] == pytest.approx((0.0 + 0.5) / 2)
    assert math.isnan(result[2])  # class 2 nowhere: no pair left
    with pytest.raises(ValueError, match="at least 2 frames"):
        consecutive_frame_surface_distance(seq[..., :1], spacing=1.0)
    with pytest.raises(ValueError, match="spacing"):
        consecutive_frame_surface_distance(seq, spacing=(1.0, 1.0))


# ------------------------------------------------------------------------------------------- ejection fraction
def test_ejection_fraction_of_a_curve():
    assert ejection_fraction([100.0, 40.0]) == pytest.approx(60.0)
    assert ejection_fraction(np.array([80.0, 100.0, 40.0, 60.0])) == pytest.approx(60.0)
    assert ejection_fraction(torch.tensor([50.0, 50.0])) == 0.0
    for bad, pattern in (
        ([], "at least 2 frames"),
        ([100.0], "at least 2 frames"),
        ([[100.0, 40.0]], "1D curve"),
        ([0.0, 0.0, 0.0], "all zero"),
        ([100.0, math.nan], "finite"),
        ([100.0, -1.0], ">= 0"),
    ):
        with pytest.raises(ValueError, match=pattern):
            ejection_fraction(bad)


def test_ejection_fraction_from_a_label_sequence():
    spacing = (2.0, 2.0, 2.5)  # 10 mm^3 = 0.01 ml per voxel
    counts = [100, 70, 40, 80]
    seq = np.zeros((10, 10, 2, 4), dtype=np.int64)
    seq[..., 1, :] = 2  # myocardium in the other slice: not counted
    for t, n in enumerate(counts):
        seq.reshape(100, 2, 4)[:n, 0, t] = 1
    assert [int((seq[..., t] == 1).sum()) for t in range(4)] == counts
    volumes = lv_volume_curve(seq, spacing=spacing)
    np.testing.assert_allclose(volumes, [1.0, 0.7, 0.4, 0.8])
    assert ejection_fraction(volumes) == pytest.approx(100 * (1.0 - 0.4) / 1.0)
    np.testing.assert_allclose(lv_volume_curve(torch.tensor(seq), lv_class=2, spacing=spacing), [1.0] * 4)
    with pytest.raises(ValueError, match="spacing"):
        lv_volume_curve(seq, spacing=None)


def test_ef_detection_table():
    predicted = [60.0, 50.0, 58.0, 45.0, 54.0]
    reference = [62.0, 52.0, 50.0, 40.0, 57.0]
    # reference reduced (< 55): cases 1, 2, 3; predicted reduced: cases 1, 3, 4
    # tp = {1, 3}, fn = {2}, tn = {0}, fp = {4}; errors 2, 2, 8, 5, 3
    result = ef_detection(predicted, reference)
    assert result["absolute_error"] == pytest.approx([2.0, 2.0, 8.0, 5.0, 3.0])
    assert result["mae"] == pytest.approx(4.0)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    assert (result["tp"], result["fn"], result["tn"], result["fp"]) == (2, 1, 1, 1)
    # 55 itself is not reduced; a different threshold moves cases
    assert ef_detection([55.0], [54.9])["fn"] == 1
    assert ef_detection(predicted, reference, threshold=51.0)["sensitivity"] == pytest.approx(1 / 2)


def test_ef_detection_without_positives_or_negatives():
    no_positive = ef_detection([60.0, 50.0], [60.0, 65.0])
    assert math.isnan(no_positive["sensitivity"]) and no_positive["specificity"] == pytest.approx(0.5)
    no_negative = ef_detection([40.0, 60.0], [30.0, 50.0])
    assert no_negative["sensitivity"] == pytest.approx(0.5) and math.isnan(no_negative["specificity"])
    with pytest.raises(ValueError, match="one non-zero length"):
        ef_detection([50.0, 60.0], [50.0])
    with pytest.raises(ValueError, match="one non-zero length"):
        ef_detection([], [])
    with pytest.raises(ValueError, match="finite"):
        ef_detection([math.nan], [50.0])
