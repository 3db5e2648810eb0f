"""The Jaccard distance of Kayalıbay et al. 2017 (section 2.2, Eq. 3-4) is MONAI's ``DiceLoss(jaccard=True)`` with
squared terms, no numerator smoothing, every class (background included) and the per-class distances summed: the
hand and BraTS bundles name that MONAI component instead of a loss of their own."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceLoss

# the configuration the bundles use: Eq. 3 per class, summed over the classes (paper: batch 1)
EQ3 = {"include_background": True, "squared_pred": True, "jaccard": True, "smooth_nr": 0.0, "smooth_dr": 1e-8,
       "reduction": "sum"}  # fmt: skip


def test_monai_jaccard_equals_eq3_summed_over_classes_by_hand():
    # 4 voxels, 2 classes; P the predicted probabilities, T the one-hot reference
    p1 = torch.tensor([0.9, 0.6, 0.2, 0.1])  # class 1 probability; class 0 = 1 - p1
    t1 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    probs = torch.stack([1 - p1, p1]).reshape(1, 2, 2, 2)
    label = t1.reshape(1, 1, 2, 2)
    # Eq. 3: Jacc = sum(PT) / (sum(P^2) + sum(T^2) - sum(PT)), per class; loss = sum_c (1 - Jacc_c)
    # class 1: PT = 0.9 + 0.6 = 1.5; P^2 = 0.81 + 0.36 + 0.04 + 0.01 = 1.22; T^2 = 2 -> 1.5 / 1.72
    # class 0: PT = 0.8 + 0.9 = 1.7; P^2 = 0.01 + 0.16 + 0.64 + 0.81 = 1.62; T^2 = 2 -> 1.7 / 1.92
    expected = (1 - 1.5 / 1.72) + (1 - 1.7 / 1.92)
    loss = DiceLoss(to_onehot_y=True, softmax=False, **EQ3)(probs, label)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Eq. 4: the same as (false positives + false negatives) / union for hard 0/1 maps
    hard = torch.stack([1 - t1, t1]).reshape(1, 2, 2, 2)
    assert DiceLoss(to_onehot_y=True, softmax=False, **EQ3)(hard, label).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([1.0, 0.0, 1.0, 0.0])  # class 1 predicted on voxels 0 and 2: 1 FP, 1 FN, union 3
    pred = torch.stack([1 - half, half]).reshape(1, 2, 2, 2)
    # class 1: (1 + 1) / 3; class 0 (voxels 1, 3 predicted; reference 2, 3): (1 + 1) / 3
    assert DiceLoss(to_onehot_y=True, softmax=False, **EQ3)(pred, label).item() == pytest.approx(4 / 3, rel=1e-6)


def test_the_default_smoothing_would_not_be_eq3():
    """MONAI's default smooth_nr = 1e-5 changes an empty class's distance from 1 to 0 (Eq. 3's 'poorly defined'
    case: the paper's loss is maximal, 1, when a class is absent and predicted nowhere)."""
    probs = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 2)  # class 1 predicted nowhere
    label = torch.zeros(1, 1, 2, 2)  # and absent
    eq3 = DiceLoss(to_onehot_y=True, softmax=False, **EQ3)(probs, label).item()
    default = DiceLoss(to_onehot_y=True, softmax=False, include_background=True, squared_pred=True, jaccard=True,
                       reduction="sum")(probs, label).item()  # fmt: skip
    assert eq3 == pytest.approx(1.0, abs=1e-6)  # class 0 perfect (0), class 1: 0 / (0 + 1e-8) -> distance 1
    assert default == pytest.approx(0.0, abs=1e-6)
