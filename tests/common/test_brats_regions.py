"""common.metrics.brats_regions: BraTS regions and numberings, the healthy-brain mirroring and its specificity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.metrics.brats_regions import (
    brain_mask,
    mirror_healthy_hemisphere,
    region_masks,
    specificity,
    tumour_side,
)
from common.metrics.per_case_confusion import PerCaseConfusionMetric
from common.transforms.brats import BratsRegionsd


def test_regions_of_the_2015_labels():
    label = np.array([0, 1, 2, 3, 4])
    whole, core, enhancing = region_masks(label)
    assert whole.tolist() == [False, True, True, True, True]
    assert core.tolist() == [False, True, False, True, True]  # no edema in the core
    assert enhancing.tolist() == [False, False, False, False, True]


def test_which_cases_qualify_and_the_mirrored_image():
    # a 6-wide left-right axis: mid-plane between indices 2 and 3
    image = np.arange(2 * 6 * 2 * 1, dtype=np.float32).reshape(2, 6, 2, 1)  # two modalities
    label = np.zeros((6, 2, 1), np.uint8)
    assert tumour_side(label) == "none" and mirror_healthy_hemisphere(image, label) is None
    label[4, 0, 0] = 2  # edema on the high side only
    assert tumour_side(label) == "high"
    healthy = mirror_healthy_hemisphere(image, label)
    # the high half (indices 3, 4, 5) becomes the mirror of the low half (2, 1, 0); the low half is kept
    np.testing.assert_array_equal(healthy[:, 3:], image[:, [2, 1, 0]])
    np.testing.assert_array_equal(healthy[:, :3], image[:, :3])
    label[1, 1, 0] = 4  # now tumour on both sides: no synthetic healthy image
    assert tumour_side(label) == "both" and mirror_healthy_hemisphere(image, label) is None
    # an odd axis keeps its centre plane; a tumour on the plane itself crosses it
    odd = np.zeros((5, 1, 1), np.uint8)
    odd[0] = 1
    img = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1)
    assert mirror_healthy_hemisphere(img, odd)[0, :, 0, 0].tolist() == [4, 3, 2, 3, 4]
    odd[:] = 0
    odd[2] = 1
    assert tumour_side(odd) == "both"
    with pytest.raises(ValueError, match="whole or half index"):
        mirror_healthy_hemisphere(img, odd, midplane=1.3)


def test_specificity_counts_false_positives_in_the_brain_only():
    image = np.zeros((1, 4, 5, 1), np.float32)
    image[0, :, 1:] = 1.0  # a 4 x 4 "brain" of 16 voxels; column 0 is background
    prediction = np.zeros((4, 5, 1), np.uint8)
    prediction[0, 1, 0] = 2  # edema: whole only
    prediction[1, 1, 0] = 4  # enhancing: whole, core, enhancing
    prediction[2, 0, 0] = 4  # in the background: not counted
    spec = specificity(prediction, brain_mask(image))
    assert spec == pytest.approx({"whole": 1 - 2 / 16, "core": 1 - 1 / 16, "enhancing": 1 - 1 / 16})


def test_region_channels_from_label_maps_and_one_hot():
    label = torch.tensor([0, 1, 2, 3, 4, 2]).reshape(1, 6, 1, 1)
    out = BratsRegionsd(["label", "pred"], names=["label_r", "pred_r"])(
        {"label": MetaTensor(label), "pred": torch.nn.functional.one_hot(label[0], 5).movedim(-1, 0).float()}
    )
    expected = [[0, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 1, 0]]  # whole, core, enhancing
    assert out["label_r"].shape == (3, 6, 1, 1) and isinstance(out["label_r"], MetaTensor)
    assert out["label_r"][:, :, 0, 0].tolist() == expected
    assert out["pred_r"][:, :, 0, 0].tolist() == expected  # one-hot channels are argmax-ed first
    assert torch.equal(out["label"], MetaTensor(label))  # the source is kept
    with pytest.raises(ValueError, match="one name per key"):
        BratsRegionsd(["label", "pred"], names=["x"])


def test_precision_and_sensitivity_per_case_against_hand_counts():
    """Section 4.2: precision = TP / (TP + FP), sensitivity = TP / (TP + FN), per case and region."""
    # one region channel, 10 voxels; case 0: reference 4 voxels, prediction 5 of which 3 right
    ref = torch.zeros(2, 1, 10)
    pred = torch.zeros(2, 1, 10)
    ref[0, 0, :4] = 1
    pred[0, 0, 1:6] = 1
    ref[1, 0, :2] = 1  # case 1: nothing predicted: precision undefined, sensitivity 0
    precision, sensitivity = PerCaseConfusionMetric("precision"), PerCaseConfusionMetric("sensitivity")
    precision(pred, ref)
    sensitivity(pred, ref)
    p, s = precision.get_buffer(), sensitivity.get_buffer()
    assert p.shape == (2, 1) and p[0, 0].item() == pytest.approx(3 / 5) and torch.isnan(p[1, 0])
    assert s[:, 0].tolist() == pytest.approx([3 / 4, 0.0])
    assert precision.aggregate().item() == pytest.approx(3 / 5)  # the undefined case is left out of the mean
    assert sensitivity.aggregate().item() == pytest.approx(3 / 8)
