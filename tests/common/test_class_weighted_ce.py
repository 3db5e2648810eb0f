"""common.losses.class_weighted_ce: the weighted cross-entropy of the head CT paper, weights read on first use."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from common.data.class_weights import write_class_weights
from common.losses.class_weighted_ce import ClassWeightedCrossEntropyLoss


def test_weighted_mean_by_hand():
    # two pixels, classes 0 and 1; logits give p = softmax: pixel 0 [e^1, 1]/(e+1) for class 0, pixel 1 uniform
    logits = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])  # [B=1, C=2, 1, 2]
    label = torch.tensor([[[[0, 1]]]])
    loss = ClassWeightedCrossEntropyLoss(2, weights=[1.0, 3.0])
    ce0 = -math.log(math.e / (math.e + 1))
    ce1 = -math.log(0.5)
    expected = (1.0 * ce0 + 3.0 * ce1) / (1.0 + 3.0)
    assert loss(logits, label).item() == pytest.approx(expected, rel=1e-6)
    assert ClassWeightedCrossEntropyLoss(2, scheme="none")(logits, label).item() == pytest.approx((ce0 + ce1) / 2)


def test_equals_monai_dicece_without_dice_and_probability_inputs():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 8, 8)
    label = torch.randint(0, 4, (3, 1, 8, 8))
    weights = [0.5, 2.0, 1.0, 3.0]
    ours = ClassWeightedCrossEntropyLoss(4, weights=weights)(logits, label)
    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0, weight=torch.tensor(weights))
    assert ours.item() == pytest.approx(monai_loss(logits, label).item(), rel=1e-5)
    from_probs = ClassWeightedCrossEntropyLoss(4, weights=weights, inputs="probabilities")
    assert from_probs(torch.softmax(logits, 1), label).item() == pytest.approx(ours.item(), rel=1e-5)
    one_hot = torch.nn.functional.one_hot(label[:, 0], 4).permute(0, 3, 1, 2).float()
    assert from_probs(torch.softmax(logits, 1), one_hot).item() == pytest.approx(ours.item(), rel=1e-5)


def test_weights_are_read_on_first_use_not_at_construction(tmp_path):
    missing = tmp_path / "class_weights.json"
    loss = ClassWeightedCrossEntropyLoss(2, weight_file=missing, scheme="attenuated")  # no file yet: fine
    logits, label = torch.zeros(1, 2, 2, 2), torch.tensor([[[[0, 1], [1, 1]]]])
    with pytest.raises(FileNotFoundError, match="python -m common.data.class_weights"):
        loss(logits, label)
    nib.save(nib.Nifti1Image(np.array([[[0], [1]], [[1], [1]]], dtype=np.uint8), np.eye(4)), str(tmp_path / "l.nii.gz"))
    datalist = tmp_path / "dataset.json"
    datalist.write_text(json.dumps({"training": [{"image": "l.nii.gz", "label": "l.nii.gz"}]}))
    write_class_weights(datalist, n_classes=2, out=missing)
    # counts 1 and 3: balanced 4/(2*1)=2 and 4/(2*3)=2/3, attenuated their cube roots
    assert loss.class_weights() == pytest.approx([2 ** (1 / 3), (2 / 3) ** (1 / 3)])
    w0, w1 = loss.class_weights()
    expected = math.log(2) * (w0 + 3 * w1) / (w0 + 3 * w1)  # uniform logits: every voxel's CE is log 2
    assert loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="needs a weight_file"):
        ClassWeightedCrossEntropyLoss(2, scheme="balanced")
    with pytest.raises(ValueError, match="3 class weights given for 2 classes"):
        ClassWeightedCrossEntropyLoss(2, weights=[1, 1, 1])
    with pytest.raises(ValueError, match="inputs must be one of"):
        ClassWeightedCrossEntropyLoss(2, scheme="none", inputs="log")
    loss = ClassWeightedCrossEntropyLoss(3, scheme="none")
    with pytest.raises(ValueError, match="2 channels, the loss was built for 3 classes"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="label shape"):
        loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 5))
