"""Tests of common.handlers.SegmentationReport on a real MONAI SupervisedEvaluator over 3 synthetic cases."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, from_engine
from monai.transforms import AsDiscreted, Compose

from common.data.errors import BundleInputError
from common.handlers import SegmentationReport

CLASS_NAMES = {"1": "liver", "2": "spleen"}
METRIC = "val_mean_dice"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _case(label_boxes, pred_boxes):
    """Label and prediction maps [4, 4, 4] from {value: box slices}."""
    label, pred = np.zeros((4, 4, 4), np.int64), np.zeros((4, 4, 4), np.int64)
    for value, box in label_boxes.items():
        label[box] = value
    for value, box in pred_boxes.items():
        pred[box] = value
    return label, pred


# Hand-computed Dice 2|A∩B| / (|A| + |B|) per case and class (liver = 1, spleen = 2):
CASES = [
    # liver identical (8 voxels) -> 1; spleen reference 4 voxels, prediction 2 of them -> 2*2/(4+2) = 2/3
    _case(
        {1: np.s_[0:2, 0:2, 0:2], 2: np.s_[2:4, 2:4, 0:1]},
        {1: np.s_[0:2, 0:2, 0:2], 2: np.s_[2:4, 2:3, 0:1]},
    ),
    # liver 8 vs 8 shifted by one slice, overlap 4 -> 2*4/16 = 0.5; spleen identical -> 1
    _case(
        {1: np.s_[0:2, 0:2, 0:2], 2: np.s_[2:4, 2:4, 3:4]},
        {1: np.s_[0:2, 0:2, 1:3], 2: np.s_[2:4, 2:4, 3:4]},
    ),
    # liver identical -> 1; spleen absent from reference and prediction -> NaN (skipped)
    _case({1: np.s_[1:3, 1:3, 1:3]}, {1: np.s_[1:3, 1:3, 1:3]}),
]
EXPECTED = np.array([[1.0, 2 / 3], [0.5, 1.0], [1.0, np.nan]])
FILENAMES = [f"/data/ct/case_{i}.nii.gz" for i in range(3)]


class PredictionFromImage(torch.nn.Module):
    """A "network" whose output is known: the image holds the prediction as value * 100 (a CT-like range)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.round(x[:, 0] / 100).long()
        return torch.nn.functional.one_hot(index, 3).permute(0, 4, 1, 2, 3).float()


def _evaluator(handler: SegmentationReport) -> SupervisedEvaluator:
    data = [
        {
            "image": MetaTensor(torch.from_numpy(pred[None] * 100.0).float(), meta={"filename_or_obj": name}),
            "label": MetaTensor(torch.from_numpy(label[None]).float(), meta={"filename_or_obj": name}),
        }
        for (label, pred), name in zip(CASES, FILENAMES)
    ]
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2, num_workers=0),  # batches of 2 then 1 case
        network=PredictionFromImage(),
        postprocessing=Compose(
            [AsDiscreted(keys="pred", argmax=True, to_onehot=3), AsDiscreted(keys="label", to_onehot=3)]
        ),
        key_val_metric={
            METRIC: MeanDice(
                include_background=False,
                reduction="mean",
                save_details=True,
                output_transform=from_engine(["pred", "label"]),
            )
        },
        val_handlers=[handler],
    )


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_report_of_a_real_evaluator(tmp_path, caplog):
    out = tmp_path / "eval"
    evaluator = _evaluator(SegmentationReport(out, CLASS_NAMES, title="3D FCN in testing", n_overlays=2))
    caplog.set_level(logging.INFO, logger="common.handlers.segmentation_report")
    evaluator.run()
    evaluator.run()  # a second epoch rewrites the report from scratch (3 cases, not 6)

    expected_files = {f"{METRIC}_per_case.csv", f"{METRIC}_summary.json", f"{METRIC}_boxplot.png", "overlays.png"}
    assert set(os.listdir(out)) == expected_files  # no temporary files left behind

    with open(out / f"{METRIC}_per_case.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "liver", "spleen", "mean"]
    assert [r[0] for r in rows[1:]] == FILENAMES
    got = np.array([[float(x) for x in r[1:3]] for r in rows[1:]])
    np.testing.assert_allclose(got, EXPECTED, atol=1e-4)

    doc = json.loads((out / f"{METRIC}_summary.json").read_text())
    assert doc["metric"] == METRIC and doc["n_cases"] == 3 and doc["std_ddof"] == 0
    liver, spleen, total = doc["summary"]["liver"], doc["summary"]["spleen"], doc["summary"]["Total Avg."]
    # liver 1, 0.5, 1: mean 5/6, deviations 1/6, -1/3, 1/6 -> population variance (1/36 + 1/9 + 1/36) / 3 = 1/18
    assert liver == pytest.approx({"avg": 5 / 6, "std": math.sqrt(1 / 18), "min": 0.5, "max": 1.0, "n": 3})
    # spleen 2/3, 1 (third case NaN): mean 5/6, population std 1/6
    assert spleen == pytest.approx({"avg": 5 / 6, "std": 1 / 6, "min": 2 / 3, "max": 1.0, "n": 2})
    assert total == pytest.approx(
        {"avg": 5 / 6, "std": (math.sqrt(1 / 18) + 1 / 6) / 2, "min": (0.5 + 2 / 3) / 2, "max": 1.0, "n": 2.5}
    )

    for name in (f"{METRIC}_boxplot.png", "overlays.png"):
        width, height = _png_size(out / name)
        assert width > 0 and height > 0

    assert "3D FCN in testing (n=3): val_mean_dice" in caplog.text
    assert "Total Avg." in caplog.text and "83.3%" in caplog.text
    assert str(out / "overlays.png") in caplog.text


def test_class_names_not_matching_metric_columns(tmp_path):
    out = tmp_path / "eval"
    handler = SegmentationReport(out, ["liver", "spleen", "pancreas"])
    with pytest.raises(BundleInputError, match=r"2 columns in metric_details\['val_mean_dice'\] but 3"):
        _evaluator(handler).run()
    assert not out.exists()  # checked before anything is written


def test_missing_metric_details(tmp_path):
    handler = SegmentationReport(tmp_path / "eval", CLASS_NAMES, metric_names=["val_hd95"])
    with pytest.raises(BundleInputError, match=r"no metric_details\['val_hd95'\]"):
        _evaluator(handler).run()


def test_collects_dict_of_batch_and_index_maps(tmp_path):
    """Non-decollated engine state (a dict of batches) with index-map prediction and reference [B, 1, H, W, D]."""
    label, pred = CASES[1]
    labels = torch.from_numpy(np.stack([label, label])[:, None]).float()
    preds = torch.from_numpy(np.stack([pred, pred])[:, None]).float()
    image = MetaTensor(preds * 100.0, meta={"filename_or_obj": ["/a/x.nii.gz", "/a/y.nii.gz"]})
    engine = SimpleNamespace(
        state=SimpleNamespace(
            batch={"image": image, "label": labels},
            output={"image": image, "label": labels, "pred": preds},
        )
    )
    handler = SegmentationReport(tmp_path, CLASS_NAMES, n_overlays=1)
    handler.iteration_completed(engine)
    assert handler._filenames == ["/a/x.nii.gz", "/a/y.nii.gz"]
    assert len(handler._overlays) == 1
    overlay = handler._overlays[0]
    # reference foreground area per axial slice z: 4, 4, 0, 4 -> first maximum z = 0
    assert overlay.index == 0 and overlay.name == "x.nii.gz"
    np.testing.assert_array_equal(overlay.reference, label[..., 0])
    np.testing.assert_array_equal(overlay.prediction, pred[..., 0])
    assert overlay.window == (0.0, 200.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_names": {}}, "non-empty"),
        ({"class_names": {"one": "liver"}}, "integer label values"),
        ({"class_names": {"0": "background"}}, "at least one label value > 0"),
        ({"class_names": CLASS_NAMES, "n_overlays": -1}, "n_overlays"),
        ({"class_names": CLASS_NAMES, "ratio_metrics": ["other"]}, "subset of metric_names"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(BundleInputError, match=match):
        SegmentationReport(tmp_path, **kwargs)
