"""The sparse measures as a MONAI cumulative metric and an Ignite handler (paper Section IV-A)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from common.handlers import SparseSegmentationMeasure
from common.metrics.sparse_metric import SparseSegmentationMetric


def _case():
    """Reference: one annotated axial plane z=0 of a 4x4x2 volume, left half class 1, right half class 2.
    Prediction: class 1 everywhere except one voxel of the right half, plus class 2 in the unannotated plane."""
    ref = np.zeros((4, 4, 2), np.int64)
    ref[:2, :, 0], ref[2:, :, 0] = 1, 2
    pred = np.ones((4, 4, 2), np.int64)
    pred[2:, :, 0] = 2
    pred[3, 3, 0] = 1
    pred[:, :, 1] = 2  # not annotated: must not count
    return pred, ref


def test_dice_and_volumes_per_class_on_annotated_voxels_only():
    pred, ref = _case()
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    y_pred = MetaTensor(torch.as_tensor(pred)[None, None], affine=torch.as_tensor(affine))
    y = torch.as_tensor(ref)[None, None]
    dice = SparseSegmentationMetric("dice", classes=(1, 2))(y_pred, y)
    # class 1: pred 9 voxels, ref 8, overlap 8 -> 16/17; class 2: pred 7, ref 8, overlap 7 -> 14/15
    assert torch.allclose(dice, torch.tensor([[16 / 17, 14 / 15]]))
    mvd = SparseSegmentationMetric("mvd", classes=(1, 2))(y_pred, y)
    voxel = 0.5 * 0.5 * 2.0  # mm3
    assert torch.allclose(mvd, torch.tensor([[voxel, voxel]]))
    mvd_cm3 = SparseSegmentationMetric("mvd_cm3", classes=(1, 2))(y_pred, y)
    assert torch.allclose(mvd_cm3, torch.tensor([[voxel / 1000, voxel / 1000]]))  # 1 cm3 = 1000 mm3
    avd = SparseSegmentationMetric("avd", classes=(1, 2))(y_pred, y)
    assert torch.allclose(avd, torch.tensor([[100 / 8, 100 / 8]]))


def test_3d_plus_time_pools_the_annotated_frames():
    """[B, 1, X, Y, Z, T] with frames 1 and 3 not annotated (255): Dice pools frames 0 and 2; volumes count one frame
    per voxel along time; CMD is refused."""
    pred3, ref3 = _case()
    ref3[:, :, 1] = 255  # the plane the 3D case leaves unannotated (0 there) stays unannotated here
    pred = np.stack([pred3, pred3, np.ones_like(pred3), pred3], axis=-1)
    ref = np.stack([ref3, np.full_like(ref3, 255), ref3, np.full_like(ref3, 255)], axis=-1)
    pred[..., 1] = 0  # wrong everywhere in an unannotated frame: must not count
    y_pred = MetaTensor(torch.as_tensor(pred)[None, None], affine=torch.as_tensor(np.diag([0.5, 0.5, 2.0, 1.0])))
    y = torch.as_tensor(ref)[None, None]
    dice = SparseSegmentationMetric("dice", classes=(1, 2), ignore_value=255)(y_pred, y)
    # frame 0 as in the 3D case (class 1: 9/8/8, class 2: 7/8/7), frame 2 predicts class 1 on the annotated plane
    # (16 voxels; ref 8 of each class) and class 1 on the unannotated plane (not counted); class 2 not predicted
    # class 1: pred 9 + 16, ref 16, overlap 8 + 8 -> 32 / 41; class 2: pred 7, ref 16, overlap 7 -> 14 / 23
    assert torch.allclose(dice, torch.tensor([[32 / 41, 14 / 23]]))
    mvd = SparseSegmentationMetric("mvd", classes=(1, 2), ignore_value=255)(y_pred, y)
    voxel = 0.5 * 0.5 * 2.0  # mm3 per voxel and frame
    assert torch.allclose(mvd, torch.tensor([[9 * voxel, 9 * voxel]]))
    with pytest.raises(ValueError, match="CMD"):
        SparseSegmentationMetric("cmd", classes=(1, 2), ignore_value=255)(y_pred, y)


def test_absent_class_is_nan_and_aggregate_leaves_it_out():
    pred, ref = _case()
    metric = SparseSegmentationMetric("dice", classes=(1, 2, 3))
    metric(torch.as_tensor(pred)[None, None], torch.as_tensor(ref)[None, None])
    assert math.isnan(float(metric.get_buffer()[0, 2]))
    assert float(metric.aggregate()) == pytest.approx((16 / 17 + 14 / 15) / 2)


def test_handler_saves_details_for_the_report():
    pred, ref = _case()
    engine = Engine(lambda e, b: {"pred": torch.as_tensor(pred)[None, None], "label": torch.as_tensor(ref)[None, None]})
    handler = SparseSegmentationMeasure(
        "dice", classes=(1, 2), output_transform=lambda o: (o["pred"], o["label"]), save_details=True
    )
    handler.attach(engine, "val_mean_dice")
    engine.run([0, 1], max_epochs=1)
    assert engine.state.metrics["val_mean_dice"] == pytest.approx((16 / 17 + 14 / 15) / 2)
    assert tuple(engine.state.metric_details["val_mean_dice"].shape) == (2, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="measure"):
        SparseSegmentationMetric("hausdorff")
    with pytest.raises(ValueError, match="one shape"):
        SparseSegmentationMetric()(torch.zeros(1, 1, 4, 4, 2), torch.zeros(1, 1, 4, 4, 3))
