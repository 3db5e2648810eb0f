"""Tests of the segmentation report: the plain function write_segmentation_report on hand-made arrays, and the
SegmentationReport handler on a real MONAI SupervisedEvaluator over 3 synthetic cases and on 2-D and 3-D + time
engine outputs. The PNGs are decoded and checked for what they show (tests/common/test_visualize.py helpers)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, from_engine
from monai.transforms import AsDiscreted, Compose

from common.handlers import SegmentationReport
from common.metrics import MetricSpec, write_segmentation_report
from common.visualize import OverlaySlice
from tests.common.test_visualize import BLUE, ORANGE, box_lines, label_pixels, overlay_panels, png_pixels

CLASS_NAMES = {"1": "liver", "2": "spleen"}
METRIC = "val_mean_dice"


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
        for (label, pred), name in zip(CASES, FILENAMES, strict=True)
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


def _read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def _assert_plain(error, kind=ValueError):
    """A programming or configuration mistake raises MONAI's plain types, not the bad-input BundleInputError."""
    assert type(error) is kind


def test_report_of_a_real_evaluator(tmp_path, caplog):
    out = tmp_path / "eval"
    evaluator = _evaluator(SegmentationReport(out, CLASS_NAMES, title="3D FCN in testing", n_overlays=2))
    caplog.set_level(logging.INFO, logger="common")
    evaluator.run()
    evaluator.run()  # a second epoch rewrites the report from scratch (3 cases, not 6)

    expected_files = {f"{METRIC}_per_case.csv", f"{METRIC}_summary.json", f"{METRIC}_boxplot.png", "overlays.png"}
    assert set(os.listdir(out)) == expected_files  # no temporary files left behind

    rows = _read_csv(out / f"{METRIC}_per_case.csv")
    assert rows[0] == ["filename", "liver", "spleen", "mean"]
    assert [r[0] for r in rows[1:]] == FILENAMES
    got = np.array([[float(x) for x in r[1:3]] for r in rows[1:]])
    np.testing.assert_allclose(got, EXPECTED, atol=1e-4)

    doc = json.loads((out / f"{METRIC}_summary.json").read_text())
    assert doc["metric"] == METRIC and doc["n_cases"] == 3 and doc["std_ddof"] == 0
    assert doc["measure"] == "Dice" and doc["unit"] is None  # a ratio
    liver, spleen, total = doc["summary"]["liver"], doc["summary"]["spleen"], doc["summary"]["Total Avg."]
    # liver 1, 0.5, 1: mean 5/6, deviations 1/6, -1/3, 1/6 -> population variance (1/36 + 1/9 + 1/36) / 3 = 1/18
    assert liver == pytest.approx({"avg": 5 / 6, "std": math.sqrt(1 / 18), "min": 0.5, "max": 1.0, "n": 3})
    # spleen 2/3, 1 (third case NaN): mean 5/6, population std 1/6
    assert spleen == pytest.approx({"avg": 5 / 6, "std": 1 / 6, "min": 2 / 3, "max": 1.0, "n": 2})
    assert total == pytest.approx(
        {"avg": 5 / 6, "std": (math.sqrt(1 / 18) + 1 / 6) / 2, "min": (0.5 + 2 / 3) / 2, "max": 1.0, "n": 2.5}
    )

    # box plot, y axis 0-1: liver 0.5, 1, 1 -> lower quartile 0.75, median = upper quartile = 1 (one line);
    # spleen 2/3, 1 -> quartiles 2/3 + 1/12 = 0.75 and 1 - 1/12, median 5/6
    boxes = box_lines(png_pixels(out / f"{METRIC}_boxplot.png"))
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], [1.0, 0.75], atol=0.015)
    np.testing.assert_allclose(boxes[1], [11 / 12, 5 / 6, 0.75], atol=0.015)

    # overlays: the first 2 cases, each at axial slice z=0 (the largest reference foreground, by hand);
    # rows case 0, case 1; columns image | reference | prediction; liver (1) blue, spleen (2) orange.
    panels = overlay_panels(png_pixels(out / "overlays.png"), [BLUE, ORANGE])
    assert [len(row) for row in panels] == [3, 3]
    voxels = {}  # (row, column, colour) -> drawn area in voxels of the 4x4 plane
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            for name, colour in (("liver", BLUE), ("spleen", ORANGE)):
                voxels[r, c, name] = label_pixels(panel, colour).sum() / (panel.shape[0] * panel.shape[1] / 16)
    expected = {  # z=0 of case 0: reference liver 4, spleen 4, prediction liver 4, spleen 2; case 1: liver 4 only
        (0, 1, "liver"): 4,
        (0, 1, "spleen"): 4,
        (0, 2, "liver"): 4,
        (0, 2, "spleen"): 2,
        (1, 1, "liver"): 4,
    }
    for key, area in voxels.items():
        assert area == pytest.approx(expected.get(key, 0), abs=0.3), key
    # case 0's reference: liver at x, y in 0:2 (patient's left-posterior: viewer's right, bottom), spleen at 2:4
    # (patient's right-anterior: viewer's left, top)
    reference = panels[0][1]
    h, w = reference.shape[0] // 2, reference.shape[1] // 2
    assert label_pixels(reference[h:, w:], BLUE).mean() > 0.9
    assert label_pixels(reference[:h, :w], ORANGE).mean() > 0.9

    assert "3D FCN in testing (n=3): val_mean_dice" in caplog.text
    assert "Dice (%)" in caplog.text and "Total Avg." in caplog.text and "83.3%" in caplog.text
    assert str(out / "overlays.png") in caplog.text


def test_class_names_not_matching_metric_columns(tmp_path):
    out = tmp_path / "eval"
    handler = SegmentationReport(out, ["liver", "spleen", "pancreas"])
    with pytest.raises(ValueError, match=r"metric 'val_mean_dice' has 2 columns but 3 column names") as info:
        _evaluator(handler).run()
    _assert_plain(info.value)
    assert not out.exists()  # checked before anything is written


def test_missing_metric_details(tmp_path):
    handler = SegmentationReport(tmp_path / "eval", CLASS_NAMES, metric_names=["val_hd95"])
    with pytest.raises(ValueError, match=r"no metric_details\['val_hd95'\]") as info:
        _evaluator(handler).run()
    _assert_plain(info.value)
    assert not (tmp_path / "eval").exists()


def _engine(batch, output, metric_details=None):
    return SimpleNamespace(state=SimpleNamespace(batch=batch, output=output, metric_details=metric_details or {}))


def test_collects_dict_of_batch_and_index_maps(tmp_path):
    """Non-decollated engine state (a dict of batches) with index-map prediction and reference [B, 1, H, W, D]."""
    label, pred = CASES[1]
    labels = torch.from_numpy(np.stack([label, label])[:, None]).float()
    preds = torch.from_numpy(np.stack([pred, pred])[:, None]).float()
    image = MetaTensor(preds * 100.0, meta={"filename_or_obj": ["/a/x.nii.gz", "/a/y.nii.gz"]})
    handler = SegmentationReport(tmp_path, CLASS_NAMES, n_overlays=1)
    handler.iteration_completed(
        _engine({"image": image, "label": labels}, {"image": image, "label": labels, "pred": preds})
    )
    assert handler._filenames == ["/a/x.nii.gz", "/a/y.nii.gz"]
    assert len(handler._overlays) == 1
    overlay = handler._overlays[0]
    # reference foreground area per axial slice z: 4, 4, 0, 4 -> first maximum z = 0
    assert overlay.index == (0,) and overlay.name == "x.nii.gz"
    np.testing.assert_array_equal(overlay.reference, label[..., 0])
    np.testing.assert_array_equal(overlay.prediction, pred[..., 0])
    assert overlay.window == (0.0, 200.0)


def test_overlays_of_2d_and_3d_plus_time_cases(tmp_path):
    # 2-D: [B, C, H, W] one-hot with 3 channels; the plane is the image itself
    label2d = np.zeros((5, 6), np.int64)
    label2d[1:3, 2:5] = 2
    onehot = torch.nn.functional.one_hot(torch.from_numpy(label2d), 3).permute(2, 0, 1)[None].float()
    image2d = MetaTensor(torch.rand(1, 1, 5, 6), meta={"filename_or_obj": ["/d/slice.png"]})
    handler = SegmentationReport(tmp_path, CLASS_NAMES, n_overlays=2)
    handler.iteration_completed(_engine({"image": image2d}, {"image": image2d, "label": onehot, "pred": onehot}))
    assert handler._overlays[0].index == () and handler._overlays[0].name == "slice.png"
    np.testing.assert_array_equal(handler._overlays[0].reference, label2d)

    # 3-D + time: [B, 1, H, W, D, T] index maps; frame t=2 of slice z=1 holds the largest foreground (6 voxels)
    label4d = np.zeros((4, 4, 3, 5), np.int64)
    label4d[0:2, 0:2, 0, 0] = 1  # z=0, t=0: 4 voxels
    label4d[0:2, 0:3, 1, 2] = 1  # z=1, t=2: 6 voxels
    label4d[3, 0:3, 2, 4] = 2  # z=2, t=4: 3 voxels
    pred4d = np.roll(label4d, 1, axis=0)
    image4d = np.arange(label4d.size, dtype=np.float32).reshape(label4d.shape)
    batch = [{"image": MetaTensor(torch.from_numpy(image4d)[None], meta={"filename_or_obj": "/d/cine.nii.gz"})}]
    output = [
        {
            "image": batch[0]["image"],
            "label": torch.from_numpy(label4d)[None].float(),
            "pred": torch.from_numpy(pred4d)[None].float(),
        }
    ]
    handler.iteration_completed(_engine(batch, output))
    overlay = handler._overlays[1]
    assert overlay.index == (1, 2) and overlay.name == "cine.nii.gz"
    np.testing.assert_array_equal(overlay.reference, label4d[:, :, 1, 2])
    np.testing.assert_array_equal(overlay.prediction, pred4d[:, :, 1, 2])
    np.testing.assert_array_equal(overlay.image, image4d[:, :, 1, 2])
    assert overlay.window == (0.0, float(label4d.size - 1))


def test_annotated_planes_of_a_sparse_reference_with_a_display_image(tmp_path):
    """Fig. 5 of van de Leemput et al.: one row per annotated cross-section (any axis) over a temporal average."""
    label = np.zeros((6, 7, 8), np.int64)  # 0 = not annotated
    label[2, :, :] = 1  # a sagittal plane x=2, all CSF
    label[:, :, 5] = 3  # an axial plane z=5, all GM (crosses the sagittal plane on a line)
    pred = np.where(label > 0, 2, 1)
    frames = np.stack([np.full(label.shape, float(t)) for t in range(4)])  # 4 "time points" of value t
    frames[:, 0] = -50.0  # x=0 differs, to check which axis the image plane is cut on
    image = MetaTensor(torch.from_numpy(frames), meta={"filename_or_obj": "/d/ctp.nii.gz"})
    batch = [{"image": image}]
    output = [{"image": image, "label": torch.from_numpy(label)[None], "pred": torch.from_numpy(pred)[None]}]
    handler = SegmentationReport(
        tmp_path,
        {"1": "csf", "2": "wm", "3": "gm"},
        n_overlays=1,
        overlay_planes="annotated",
        display_image=lambda x: x.mean(axis=0),
        display_window=(0.0, 3.0),
    )
    handler.iteration_completed(_engine(batch, output))
    handler.iteration_completed(_engine(batch, output))  # a second case: beyond n_overlays=1, no more rows
    assert [(o.axis, o.index) for o in handler._overlays] == [(0, (2,)), (2, (5,))]
    sagittal, axial = handler._overlays
    np.testing.assert_array_equal(sagittal.reference, label[2])
    np.testing.assert_array_equal(axial.prediction, pred[:, :, 5])
    assert sagittal.image.shape == (7, 8) and axial.image.shape == (6, 7)
    np.testing.assert_allclose(sagittal.image, 1.5)  # mean of 0, 1, 2, 3
    np.testing.assert_allclose(axial.image[0], -50.0) and np.testing.assert_allclose(axial.image[1:], 1.5)
    assert sagittal.window == (0.0, 3.0)
    # a display mask (the cranial cavity) hides the prediction outside it; here it is the batch's, not the output's
    mask = np.zeros((1, *label.shape), np.uint8)
    mask[:, 1:5] = 1
    masked = SegmentationReport(
        tmp_path, {"1": "csf", "2": "wm", "3": "gm"}, overlay_planes="annotated", display_mask_key="mask"
    )
    masked.iteration_completed(_engine([{"image": image, "mask": torch.from_numpy(mask)}], output))
    axial = masked._overlays[1]
    np.testing.assert_array_equal(axial.prediction[1:5], pred[1:5, :, 5])
    assert not axial.prediction[[0, 5]].any()
    np.testing.assert_array_equal(axial.reference, label[:, :, 5])  # the reference is drawn as it is
    with pytest.raises(ValueError, match="overlay_planes"):
        SegmentationReport(tmp_path, CLASS_NAMES, overlay_planes="sagittal")
    with pytest.raises(ValueError, match="display_window"):
        SegmentationReport(tmp_path, CLASS_NAMES, display_window=(1.0, 1.0))
    flat = [
        {
            "image": image[..., 0],
            "label": torch.from_numpy(label[..., 0])[None],
            "pred": torch.from_numpy(pred[..., 0])[None],
        }
    ]
    handler = SegmentationReport(tmp_path, CLASS_NAMES, overlay_planes="annotated")
    with pytest.raises(ValueError, match="3-D reference"):
        handler.iteration_completed(_engine([{"image": image[..., 0]}], flat))


def test_handler_with_units_and_own_columns(tmp_path, caplog):
    """A contour distance in mm (per class) and an ejection fraction in % (one column) through the handler."""
    handler = SegmentationReport(
        tmp_path,
        CLASS_NAMES,
        metric_names=["val_cmd", "val_ef"],
        metric_specs={
            "val_cmd": {"label": "CMD", "unit": "mm"},
            "val_ef": {"label": "EF", "unit": "%", "columns": ["EF"]},
        },
        n_overlays=0,
        prefix="test_",
    )
    handler.iteration_completed(
        _engine([{"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": f})} for f in "ab"], None)
    )
    details = {"val_cmd": torch.tensor([[1.5, 2.0], [2.5, 4.0]]), "val_ef": torch.tensor([55.0, 65.0])}
    caplog.set_level(logging.INFO, logger="common")
    handler(_engine(None, None, details))
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"test_{m}_{kind}" for m in ("val_cmd", "val_ef") for kind in ("per_case.csv", "summary.json", "boxplot.png")
    )
    assert _read_csv(tmp_path / "test_val_ef_per_case.csv") == [
        ["filename", "EF", "mean"],
        ["a", "55.0000", "55.0000"],
        ["b", "65.0000", "65.0000"],
    ]
    cmd = json.loads((tmp_path / "test_val_cmd_summary.json").read_text())
    assert cmd["measure"] == "CMD" and cmd["unit"] == "mm"
    # liver 1.5, 2.5 -> 2.0 (std 0.5); spleen 2.0, 4.0 -> 3.0 (std 1.0); total 2.5 (std 0.75), shown as is
    assert cmd["summary"]["Total Avg."]["avg"] == pytest.approx(2.5)
    table = caplog.text[caplog.text.index("(n=2): val_cmd") :]
    assert table.splitlines()[1].split()[:4] == ["CMD", "(mm)", "Avg.", "Std."]
    assert table.splitlines()[2].split()[:3] == ["liver", "2.0", "0.5"]
    assert "EF (%)" in caplog.text and "60.0" in caplog.text and "6000.0%" not in caplog.text


def test_background_column_named_when_the_metric_includes_it(tmp_path):
    handler = SegmentationReport(tmp_path, {"0": "background", "1": "liver"}, n_overlays=0)
    handler.iteration_completed(_engine([{"image": torch.zeros(1, 2, 2)}], None))
    handler(_engine(None, None, {METRIC: np.array([[0.99, 0.8]])}))
    assert _read_csv(tmp_path / f"{METRIC}_per_case.csv")[0] == ["filename", "background", "liver", "mean"]
    assert _read_csv(tmp_path / f"{METRIC}_per_case.csv")[1][0] == "case_0000"  # no file name in the meta data


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"class_names": {}}, ValueError, "at least one label value > 0"),
        ({"class_names": "liver"}, TypeError, "dict label value -> name or a list"),
        ({"class_names": {"one": "liver"}}, ValueError, "integer label values"),
        ({"class_names": {"0": "background"}}, ValueError, "at least one label value > 0"),
        ({"class_names": CLASS_NAMES, "metric_names": []}, ValueError, "at least one metric"),
        ({"class_names": CLASS_NAMES, "n_overlays": -1}, ValueError, "n_overlays"),
        ({"class_names": CLASS_NAMES, "save_rank": -1}, ValueError, "save_rank"),
        ({"class_names": CLASS_NAMES, "metric_specs": {"other": {"unit": "mm"}}}, ValueError, "not in metric_names"),
        ({"class_names": CLASS_NAMES, "metric_specs": {METRIC: {"units": "mm"}}}, TypeError, "'label', 'unit'"),
        ({"class_names": CLASS_NAMES, "metric_specs": {METRIC: "mm"}}, TypeError, "MetricSpec or a dict"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        SegmentationReport(tmp_path, **kwargs)
    _assert_plain(info.value, error)


# --- the plain function ------------------------------------------------------------------------------------------


def test_write_report_brats_regions_and_return_value(tmp_path, caplog):
    """Region Dice: whole/core/enhancing columns instead of classes; a ratio, so percent in the table."""
    values = np.array([[0.9, 0.8, 0.7], [0.7, 0.6, np.nan]])
    caplog.set_level(logging.INFO, logger="common")
    written = write_segmentation_report(
        tmp_path / "r",
        ["p1", "p2"],
        {"region_dice": values},
        column_names=[],
        metric_specs={"region_dice": MetricSpec(columns=("whole", "core", "enhancing"))},
        overlays=[OverlaySlice("p1", np.zeros((4, 4)), np.ones((4, 4), np.int64), np.ones((4, 4), np.int64), (0, 1))],
        label_names={1: "tumour"},
        title="BraTS",
        prefix="val_",
    )
    out = tmp_path / "r"
    assert written == [
        str(out / "val_region_dice_per_case.csv"),
        str(out / "val_region_dice_summary.json"),
        str(out / "val_region_dice_boxplot.png"),
        str(out / "val_overlays.png"),
    ]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in written)
    rows = _read_csv(out / "val_region_dice_per_case.csv")
    assert rows[0] == ["filename", "whole", "core", "enhancing", "mean"]
    assert rows[2] == ["p2", "0.7000", "0.6000", "nan", "0.6500"]  # mean of the values present
    summary = json.loads((out / "val_region_dice_summary.json").read_text())["summary"]
    assert summary["whole"]["avg"] == pytest.approx(0.8) and summary["enhancing"]["n"] == 1
    assert summary["Total Avg."]["avg"] == pytest.approx((0.8 + 0.7 + 0.7) / 3)
    assert "whole" in caplog.text and "80.0%" in caplog.text
    np.testing.assert_allclose(
        box_lines(png_pixels(out / "val_region_dice_boxplot.png"))[0], [0.85, 0.8, 0.75], atol=0.015
    )


@pytest.mark.parametrize(
    ("metrics", "specs", "error", "match"),
    [
        ({}, None, ValueError, "at least one metric"),
        ({"m": np.zeros((3, 2))}, None, ValueError, "3 rows but 2 file names"),
        ({"m": np.zeros((2, 3))}, None, ValueError, "3 columns but 2 column names"),
        ({"m": np.zeros((2, 2, 2))}, None, ValueError, r"must be \[n_cases, n_columns\]"),
        ({"m": np.zeros((2, 2))}, {"other": {}}, ValueError, "not reported"),
        ({"m": np.zeros((2, 2))}, {"m": {"columns": "EF"}}, TypeError, "list of names"),
        ({"m": np.zeros((2, 2))}, {"m": {"columns": ["a", "a"]}}, ValueError, "non-empty and unique"),
        ({"m": np.zeros((2, 2))}, {"m": {"unit": 3}}, TypeError, "unit must be a string"),
        ({"../m": np.zeros((2, 2))}, None, ValueError, "path separator"),
    ],
)
def test_write_report_checks_everything_before_writing(tmp_path, metrics, specs, error, match):
    # a valid first metric, so a failure on the second proves nothing was written before the checks ended
    all_metrics = {"dice": np.full((2, 2), 0.5), **metrics} if metrics else {}
    with pytest.raises(error, match=match) as info:
        write_segmentation_report(tmp_path / "r", ["a", "b"], all_metrics, ["x", "y"], metric_specs=specs)
    _assert_plain(info.value, error)
    assert not (tmp_path / "r").exists()


def test_write_report_bad_overlay_writes_nothing(tmp_path):
    bad = OverlaySlice("a", np.zeros((4, 4)), np.zeros((4, 5), np.int64), np.zeros((4, 4), np.int64), (0, 1))
    with pytest.raises(ValueError, match="one shape"):
        write_segmentation_report(tmp_path / "r", ["a"], {"dice": [[1.0]]}, ["x"], overlays=[bad])
    assert not (tmp_path / "r").exists()


def test_metric_spec_headings():
    assert MetricSpec().heading("val_mean_dice") == "Dice" and MetricSpec().is_ratio
    assert MetricSpec().heading("val_jaccard") == "val_jaccard"
    assert MetricSpec(label="AVD", unit="%").heading("x") == "AVD (%)"
    assert MetricSpec(label="smoothness", unit="").heading("x") == "smoothness"
    assert not MetricSpec(unit="").is_ratio
    assert MetricSpec.from_value({"columns": ["EF"]}).columns == ("EF",)
